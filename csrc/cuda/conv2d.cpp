// fastcnn::conv2d on CUDA: act(conv2d(input, weight) + bias + residual), forward and backward.
// Routing and argument checks here; layouts, packing and launches in conv_engine.cpp; kernels in
// conv2d_kernel.cu / conv1x1_kernel.cu (a 1x1 kernel without padding takes the 1x1 GEMM kernels).
#include <torch/library.h>

#include "backend.h"
#include "checks.h"
#include "cuda/conv_engine.h"

namespace fastcnn {
namespace cuda {
namespace {

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                  at::IntArrayRef dilation, int64_t groups, c10::string_view activation) {
  if (use_triton("conv2d", input.device(), /*native_is_cuda=*/true))
    return call_triton<decltype(conv2d)>("conv2d", input, weight, bias, residual, stride, padding, dilation, groups,
                                         activation);
  const Activation act = parse_activation(activation);
  const ConvGeom g = check_conv2d("conv2d", input, weight, bias, residual, stride, padding, dilation, groups);
  return conv_forward_cuda(input, weight, bias, residual, g, act);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const std::optional<at::Tensor>& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, c10::string_view activation, std::array<bool, 4> output_mask) {
  if (use_triton("conv2d_backward", input.device(), /*native_is_cuda=*/true))
    return call_triton<decltype(conv2d_backward)>("conv2d_backward", grad_output, input, weight, output, stride,
                                                  padding, dilation, groups, activation, output_mask);
  const Activation act = parse_activation(activation);
  const ConvGeom g = check_conv2d("conv2d_backward", input, weight, std::nullopt, std::nullopt, stride, padding,
                                  dilation, groups);
  TORCH_CHECK_VALUE(grad_output.dim() == 4 && grad_output.size(0) == g.N && grad_output.size(1) == g.K &&
                        grad_output.size(2) == g.P && grad_output.size(3) == g.Q,
                    "conv2d_backward: grad_output must have shape [", g.N, ", ", g.K, ", ", g.P, ", ", g.Q, "], got ",
                    grad_output.sizes());
  return conv_backward_cuda(grad_output, input, weight, output, g, act, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcnn, CUDA, m) {
  m.impl("conv2d", &conv2d);
  m.impl("_conv2d_backward", &conv2d_backward);
}

}  // namespace cuda
}  // namespace fastcnn
