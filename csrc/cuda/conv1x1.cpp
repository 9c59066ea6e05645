// fastcnn::conv1x1 on CUDA: the bottleneck 1x1 convolution as a tensor-core GEMM over (N*H*W, C)
// with the fused bias/residual/ReLU epilogue (conv1x1_kernel.cu), forward and backward.
#include <torch/library.h>

#include "backend.h"
#include "checks.h"
#include "cuda/conv_engine.h"

namespace fastcnn {
namespace cuda {
namespace {

ConvGeom check_conv1x1(const char* op, const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                       at::IntArrayRef stride) {
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(2) == 1 && weight.size(3) == 1, op,
                    ": weight must be [C_out, C_in, 1, 1], got shape ", weight.sizes());
  const int64_t zero[2] = {0, 0}, one[2] = {1, 1};
  return check_conv2d(op, input, weight, bias, residual, stride, zero, one, 1);
}

at::Tensor conv1x1(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   const std::optional<at::Tensor>& residual, at::IntArrayRef stride, c10::string_view activation) {
  if (use_triton("conv1x1", input.device(), /*native_is_cuda=*/true))
    return call_triton<decltype(conv1x1)>("conv1x1", input, weight, bias, residual, stride, activation);
  const Activation act = parse_activation(activation);
  const ConvGeom g = check_conv1x1("conv1x1", input, weight, bias, residual, stride);
  return conv_forward_cuda(input, weight, bias, residual, g, act);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv1x1_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const std::optional<at::Tensor>& output, at::IntArrayRef stride, c10::string_view activation,
    std::array<bool, 4> output_mask) {
  if (use_triton("conv1x1_backward", input.device(), /*native_is_cuda=*/true))
    return call_triton<decltype(conv1x1_backward)>("conv1x1_backward", grad_output, input, weight, output, stride,
                                                   activation, output_mask);
  const Activation act = parse_activation(activation);
  const ConvGeom g = check_conv1x1("conv1x1_backward", input, weight, std::nullopt, std::nullopt, stride);
  TORCH_CHECK_VALUE(grad_output.dim() == 4 && grad_output.size(0) == g.N && grad_output.size(1) == g.K &&
                        grad_output.size(2) == g.P && grad_output.size(3) == g.Q,
                    "conv1x1_backward: grad_output must have shape [", g.N, ", ", g.K, ", ", g.P, ", ", g.Q,
                    "], got ", grad_output.sizes());
  return conv_backward_cuda(grad_output, input, weight, output, g, act, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcnn, CUDA, m) {
  m.impl("conv1x1", &conv1x1);
  m.impl("_conv1x1_backward", &conv1x1_backward);
}

}  // namespace cuda
}  // namespace fastcnn
