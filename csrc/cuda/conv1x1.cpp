// fastcnn::_cuda_conv1x1 (and _cudasim_conv1x1): the bottleneck 1x1 convolution as a tensor-core GEMM
// over (N*H*W, C) with the fused bias/residual/ReLU epilogue (conv1x1_kernel.cu), forward and
// backward; conv1x1_into (segments routed to their outs, max pool on load). Arguments arrive
// validated (ops.cpp).
#include <torch/library.h>

#include <string>
#include <vector>

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

// conv1x1_into: one GEMM over all of weight's output channels, the epilogue routing each segment
// (bias + its activation) to its out; with `pool` the input is max-pooled as the GEMM loads it
// (the pooled tensor never exists; igemm_fprop.cuh, kPool).
void conv1x1_into(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, const std::vector<std::string>& activations, at::IntArrayRef pool,
                  at::TensorList out) {
  const Conv1x1IntoGeom r =
      check_conv1x1_into("conv1x1_into", input, weight, bias, stride, activations, pool, out, "out");
  ConvGeom g = r.g;  // the GEMM on the pooled input: P x Q pixels
  ConvPool pl{};
  if (r.has_pool) {  // the loader reads the unpooled input: its sizes, and the window
    g.H = r.pool.H;
    g.W = r.pool.W;
    pl = ConvPool{int(r.pool.kh), int(r.pool.kw), int(r.pool.sh), int(r.pool.sw), int(r.pool.ph), int(r.pool.pw)};
  }
  conv1x1_into_cuda(input, weight, bias, g, r.act, pl, out);
}

}  // namespace

FASTCNN_CUDA_LIBRARY_IMPL(m) {
  m.impl(FASTCNN_CUDA_OP("conv1x1"), &conv1x1);
  m.impl(FASTCNN_CUDA_OP("conv1x1_into"), &conv1x1_into);
  m.impl(FASTCNN_CUDA_OP("conv1x1_backward"), &conv1x1_backward);
}

}  // namespace cuda
}  // namespace fastcnn
