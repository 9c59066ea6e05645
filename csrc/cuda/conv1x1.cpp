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
                  at::IntArrayRef stride, c10::ArrayRef<std::string> activations, at::IntArrayRef pool,
                  at::TensorList out) {
  std::vector<Activation> acts;
  for (const std::string& a : activations) acts.push_back(parse_activation("conv1x1_into", a));
  ConvGeom g = check_conv1x1("conv1x1_into", input, weight, bias, std::nullopt, stride);
  ConvPool pl{};
  if (!pool.empty()) {  // [kh, kw, sh, sw, ph, pw, ceil_mode]; stride 1 (the router checked)
    pl = ConvPool{int(pool[0]), int(pool[1]), int(pool[2]), int(pool[3]), int(pool[4]), int(pool[5])};
    g.P = pool_out_size(g.H, pool[0], pool[2], pool[4], 1, pool[6] != 0);
    g.Q = pool_out_size(g.W, pool[1], pool[3], pool[5], 1, pool[6] != 0);
  }
  conv1x1_into_cuda(input, weight, bias, g, acts, pl, out);
}

}  // namespace

FASTCNN_CUDA_LIBRARY_IMPL(m) {
  m.impl(FASTCNN_CUDA_OP("conv1x1"), &conv1x1);
  m.impl(FASTCNN_CUDA_OP("conv1x1_into"), &conv1x1_into);
  m.impl(FASTCNN_CUDA_OP("conv1x1_backward"), &conv1x1_backward);
}

// TEMP(issue 18): the schemas until main's contract commit defines them.
TORCH_LIBRARY_FRAGMENT(fastcnn, m) {
  m.def(FASTCNN_CUDA_OP("conv2d_into") "(Tensor input, Tensor weight, Tensor? bias, Tensor? residual, int[2] stride, "
        "int[2] padding, int[2] dilation, int groups, str activation, Tensor(a!) out) -> ()");
  m.def(FASTCNN_CUDA_OP("conv1x1_into") "(Tensor input, Tensor weight, Tensor? bias, int[2] stride, str[] activations, "
        "int[] pool, Tensor(a!)[] out) -> ()");
}

}  // namespace cuda
}  // namespace fastcnn
