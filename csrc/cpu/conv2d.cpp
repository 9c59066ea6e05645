// fastcnn::_cpu_conv2d: act(conv2d(input, weight) + bias + residual) on the CPU, forward and backward.
// Arguments arrive validated (ops.cpp); the check functions only recompute the geometry here.
#include <torch/library.h>

#include "backend.h"
#include "checks.h"
#include "cpu/conv_engine.h"

namespace fastcnn::cpu {
namespace {

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                  at::IntArrayRef dilation, int64_t groups, c10::string_view activation) {
  const Activation act = parse_activation("conv2d", activation);
  const ConvGeom g = check_conv2d("conv2d", input, weight, bias, residual, stride, padding, dilation, groups);
  return conv_forward_op(input, weight, bias, residual, g, act);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const std::optional<at::Tensor>& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, c10::string_view activation, std::array<bool, 4> output_mask) {
  const Activation act = parse_activation("conv2d_backward", activation);
  const ConvGeom g = check_conv2d("conv2d_backward", input, weight, std::nullopt, std::nullopt, stride, padding,
                                  dilation, groups);
  return conv_backward_op(grad_output, input, weight, output, g, act, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcnn, CPU, m) {
  m.impl(FASTCNN_IMPL_OP("cpu", "conv2d"), &conv2d);
  m.impl(FASTCNN_IMPL_OP("cpu", "conv2d_backward"), &conv2d_backward);
}

}  // namespace fastcnn::cpu
