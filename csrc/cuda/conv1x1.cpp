// fastcnn::_cuda_conv1x1 (and _cudasim_conv1x1): the bottleneck 1x1 convolution as a tensor-core GEMM
// over (N*H*W, C) with the fused bias/residual/ReLU epilogue (conv1x1_kernel.cu), forward and
// backward. Arguments arrive validated (ops.cpp).
#include <torch/library.h>

#include "backend.h"
#include "checks.h"
#include "cuda/conv_engine.h"

namespace fastcnn {
namespace cuda {
namespace {

at::Tensor conv1x1(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   const std::optional<at::Tensor>& residual, at::IntArrayRef stride, c10::string_view activation) {
  const Activation act = parse_activation("conv1x1", activation);
  const ConvGeom g = check_conv1x1("conv1x1", input, weight, bias, residual, stride);
  return conv_forward_cuda(input, weight, bias, residual, g, act);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv1x1_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const std::optional<at::Tensor>& output, at::IntArrayRef stride, c10::string_view activation,
    std::array<bool, 4> output_mask) {
  const Activation act = parse_activation("conv1x1_backward", activation);
  const ConvGeom g = check_conv1x1("conv1x1_backward", input, weight, std::nullopt, std::nullopt, stride);
  return conv_backward_cuda(grad_output, input, weight, output, g, act, output_mask);
}

}  // namespace

FASTCNN_CUDA_LIBRARY_IMPL(m) {
  m.impl(FASTCNN_CUDA_OP("conv1x1"), &conv1x1);
  m.impl(FASTCNN_CUDA_OP("conv1x1_backward"), &conv1x1_backward);
}

}  // namespace cuda
}  // namespace fastcnn
