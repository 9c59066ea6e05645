// The public ops' kernels: validate once (checks.h), then route to the backend in force
// (backend.h). Registered for the CPU and CUDA dispatch keys in every build; which backends can run
// a call is the table's business, so this file names none.
#include <torch/library.h>

#include "backend.h"
#include "checks.h"

namespace fastcnn {
namespace {

using OptT = const std::optional<at::Tensor>&;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, OptT bias, OptT residual, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, c10::string_view activation) {
  parse_activation("conv2d", activation);
  check_conv2d("conv2d", input, weight, bias, residual, stride, padding, dilation, groups);
  return route<decltype(conv2d)>("conv2d", input.device(), input, weight, bias, residual, stride, padding, dilation,
                                 groups, activation);
}

Grads conv2d_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, OptT output,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                      c10::string_view activation, std::array<bool, 4> output_mask) {
  const char* op = "conv2d_backward";
  const Activation act = parse_activation(op, activation);
  const ConvGeom g = check_conv2d(op, input, weight, std::nullopt, std::nullopt, stride, padding, dilation, groups);
  check_conv_backward(op, input, grad_output, output, g, act);
  return route<decltype(conv2d_backward)>(op, input.device(), grad_output, input, weight, output, stride, padding,
                                          dilation, groups, activation, output_mask);
}

at::Tensor conv1x1(const at::Tensor& input, const at::Tensor& weight, OptT bias, OptT residual, at::IntArrayRef stride,
                   c10::string_view activation) {
  parse_activation("conv1x1", activation);
  check_conv1x1("conv1x1", input, weight, bias, residual, stride);
  return route<decltype(conv1x1)>("conv1x1", input.device(), input, weight, bias, residual, stride, activation);
}

Grads conv1x1_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, OptT output,
                       at::IntArrayRef stride, c10::string_view activation, std::array<bool, 4> output_mask) {
  const char* op = "conv1x1_backward";
  const Activation act = parse_activation(op, activation);
  const ConvGeom g = check_conv1x1(op, input, weight, std::nullopt, std::nullopt, stride);
  check_conv_backward(op, input, grad_output, output, g, act);
  return route<decltype(conv1x1_backward)>(op, input.device(), grad_output, input, weight, output, stride, activation,
                                           output_mask);
}

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode, bool with_indices) {
  check_max_pool2d("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode);
  return route<decltype(max_pool2d)>("max_pool2d", input.device(), input, kernel_size, stride, padding, dilation,
                                     ceil_mode, with_indices);
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_backward";
  check_max_pool2d_backward(op, grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode);
  return route<decltype(max_pool2d_backward)>(op, input.device(), grad_output, input, indices, kernel_size, stride,
                                              padding, dilation, ceil_mode);
}

at::Tensor add_relu(const at::Tensor& input, const at::Tensor& other) {
  check_add_relu("add_relu", input, other);
  return route<decltype(add_relu)>("add_relu", input.device(), input, other);
}

at::Tensor add_relu_backward(const at::Tensor& grad_output, const at::Tensor& output) {
  check_add_relu_backward("add_relu_backward", grad_output, output);
  return route<decltype(add_relu_backward)>("add_relu_backward", output.device(), grad_output, output);
}

void register_router(torch::Library& m) {
  m.impl("conv2d", &conv2d);
  m.impl("_conv2d_backward", &conv2d_backward);
  m.impl("conv1x1", &conv1x1);
  m.impl("_conv1x1_backward", &conv1x1_backward);
  m.impl("max_pool2d", &max_pool2d);
  m.impl("_max_pool2d_backward", &max_pool2d_backward);
  m.impl("add_relu", &add_relu);
  m.impl("_add_relu_backward", &add_relu_backward);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcnn, CPU, m) { register_router(m); }
TORCH_LIBRARY_IMPL(fastcnn, CUDA, m) { register_router(m); }

}  // namespace fastcnn
