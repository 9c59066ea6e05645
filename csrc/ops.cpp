// The public ops' kernels: validate once (checks.h), then route to the backend in force
// (backend.h). Registered for the CPU and CUDA dispatch keys in every build; which backends can run
// a call is the table's business, so this file names none.
#include <ATen/ATen.h>
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

void conv2d_into(const at::Tensor& input, const at::Tensor& weight, OptT bias, OptT residual, at::IntArrayRef stride,
                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, c10::string_view activation,
                 const at::Tensor& out) {
  parse_activation("conv2d_into", activation);
  check_conv2d_into("conv2d_into", input, weight, bias, residual, stride, padding, dilation, groups, out);
  route<decltype(conv2d_into)>("conv2d_into", input.device(), input, weight, bias, residual, stride, padding, dilation,
                               groups, activation, out);
}

void conv1x1_into(const at::Tensor& input, const at::Tensor& weight, OptT bias, at::IntArrayRef stride,
                  const std::vector<std::string>& activations, at::IntArrayRef pool, at::TensorList out) {
  check_conv1x1_into("conv1x1_into", input, weight, bias, stride, activations, pool, out, "out");
  route<decltype(conv1x1_into)>("conv1x1_into", input.device(), input, weight, bias, stride, activations,
                                pool, out);
}

// Not routed as a whole: built of routed ops, so it is every backend's.
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv1x1_into_backward(
    at::TensorList grad_outputs, const at::Tensor& input, const at::Tensor& weight, at::TensorList outputs,
    at::IntArrayRef stride, const std::vector<std::string>& activations, at::IntArrayRef pool,
    std::array<bool, 3> output_mask) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // a kernel: the ATen ops below record no graph
  const char* op = "conv1x1_into_backward";
  const Conv1x1IntoGeom r =
      check_conv1x1_into(op, input, weight, std::nullopt, stride, activations, pool, grad_outputs, "grad_outputs",
                         /*slices=*/false);
  TORCH_CHECK_VALUE(outputs.size() == grad_outputs.size(), op, ": outputs must have one tensor per tensor of "
                    "grad_outputs (", grad_outputs.size(), "), got ", outputs.size());
  const ConvGeom& g = r.g;
  const at::MemoryFormat mf = conv_memory_format(input, weight);
  for (size_t s = 0; s < outputs.size(); ++s) {
    if (r.act[s] == Activation::ReLU) {
      const std::string name = "outputs[" + std::to_string(s) + "]";
      check_same(op, input, "input", outputs[s], name.c_str());
      check_shape(op, outputs[s], name.c_str(), grad_outputs[s].sizes(), "grad_outputs' ");
    }
  }
  const auto empty = [&] { return at::empty({0}, input.options()); };
  if (!output_mask[0] && !output_mask[1] && !output_mask[2]) return {empty(), empty(), empty()};
  // The pre-activation gradient of all segments as one dense operand: the ReLU mask has to be
  // materialised anyway, and writing it into one buffer makes the dgrad one GEMM over K = sum K_s.
  at::Tensor gy = at::empty({g.N, g.K, g.P, g.Q}, input.options().memory_format(mf));
  int64_t off = 0;
  for (size_t s = 0; s < grad_outputs.size(); ++s) {
    at::Tensor dst = gy.narrow(1, off, r.seg_k[s]);
    if (r.act[s] == Activation::ReLU) at::threshold_backward_out(dst, grad_outputs[s], outputs[s], 0);
    else dst.copy_(grad_outputs[s]);
    off += r.seg_k[s];
  }
  const int64_t one[2] = {1, 1};
  at::Tensor x = input;
  if (r.has_pool) {  // the GEMM's operand: the pooled input, recomputed (the forward never stored it)
    x = std::get<0>(route<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                                             at::IntArrayRef, at::IntArrayRef, bool, bool)>(
        "max_pool2d", input.device(), input, pool.slice(0, 2), pool.slice(2, 2), pool.slice(4, 2),
        at::IntArrayRef(one), pool[6] != 0, false));
  }
  using Bwd = Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, OptT, at::IntArrayRef,
                    c10::string_view, std::array<bool, 4>);
  auto [gx, gw, gb, ga] = route<Bwd>("conv1x1_backward", input.device(), gy, x, weight, std::optional<at::Tensor>(),
                                     stride, c10::string_view("none"),
                                     std::array<bool, 4>{output_mask[0], output_mask[1], output_mask[2], false});
  (void)ga;
  if (r.has_pool && output_mask[0]) {
    using PoolBwd = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                               at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool);
    gx = route<PoolBwd>("max_pool2d_backward", input.device(), gx, input, at::empty({0}, input.options().dtype(at::kLong)),
                        pool.slice(0, 2), pool.slice(2, 2), pool.slice(4, 2), at::IntArrayRef(one), pool[6] != 0);
  }
  return {gx, gw, gb};
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
  m.impl("conv2d_into", &conv2d_into);
  m.impl("conv1x1_into", &conv1x1_into);
  m.impl("_conv1x1_into_backward", &conv1x1_into_backward);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastcnn, CPU, m) { register_router(m); }
TORCH_LIBRARY_IMPL(fastcnn, CUDA, m) { register_router(m); }

}  // namespace fastcnn
