// Argument checks and shape arithmetic shared by the CPU and CUDA entry points.
//
// Every check raises a Python ValueError (TORCH_CHECK_VALUE) that names the argument and the
// offending sizes. The Python layer (fastcnn/_checks.py) runs the same checks first, with the
// user's argument names; these are the guard for direct torch.ops.fastcnn.* calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <limits>
#include <optional>
#include <string>

#include "geometry.h"

namespace fastcnn {

inline Activation parse_activation(c10::string_view act) {
  if (act == "none" || act == "") return Activation::None;
  if (act == "relu") return Activation::ReLU;
  TORCH_CHECK_VALUE(false, "activation must be 'none' or 'relu', got '", std::string(act), "'");
}

inline bool is_float_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_pair(const char* op, const char* name, at::IntArrayRef v, int64_t min_value,
                       int64_t max_value = std::numeric_limits<int64_t>::max()) {
  TORCH_CHECK_VALUE(v.size() == 2, op, ": ", name, " must have 2 elements, got ", v);
  TORCH_CHECK_VALUE(v[0] >= min_value && v[1] >= min_value, op, ": ", name, " must be >= ", min_value,
                    ", got ", v);
  TORCH_CHECK_VALUE(v[0] <= max_value && v[1] <= max_value, op, ": ", name, " must be <= ", max_value,
                    ", got ", v);
}

inline void check_same(const char* op, const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK_VALUE(a.scalar_type() == b.scalar_type(), op, ": ", bn, " dtype ", b.scalar_type(),
                    " does not match ", an, " dtype ", a.scalar_type());
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": ", bn, " is on ", b.device(), " but ", an, " is on ",
                    a.device());
}

inline ConvGeom check_conv2d(const char* op, const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             int64_t groups) {
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be 4-d [N, C, H, W], got shape ", input.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4, op, ": weight must be 4-d [C_out, C_in/groups, kH, kW], got shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(is_float_type(input.scalar_type()), op, ": input must be a floating-point tensor, got ",
                    input.scalar_type());
  check_same(op, input, "input", weight, "weight");
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0, kMaxGeom);
  check_pair(op, "dilation", dilation, 1, kMaxGeom);
  TORCH_CHECK_VALUE(groups >= 1, op, ": groups must be >= 1, got ", groups);
  ConvGeom g{};
  g.N = input.size(0); g.C = input.size(1); g.H = input.size(2); g.W = input.size(3);
  g.K = weight.size(0); g.R = weight.size(2); g.S = weight.size(3);
  g.G = groups;
  g.sh = stride[0]; g.sw = stride[1]; g.ph = padding[0]; g.pw = padding[1]; g.dh = dilation[0]; g.dw = dilation[1];
  TORCH_CHECK_VALUE(g.C > 0 && g.K > 0 && g.R > 0 && g.S > 0, op, ": input channels, weight out-channels and "
                    "kernel size must be positive; input shape ", input.sizes(), ", weight shape ", weight.sizes());
  TORCH_CHECK_VALUE(g.C % groups == 0, op, ": input channels (", g.C, ") must be divisible by groups (", groups, ")");
  TORCH_CHECK_VALUE(g.K % groups == 0, op, ": weight out-channels (", g.K, ") must be divisible by groups (", groups,
                    ")");
  TORCH_CHECK_VALUE(weight.size(1) * groups == g.C, op, ": weight expects ", weight.size(1) * groups,
                    " input channels (weight shape ", weight.sizes(), ", groups=", groups, ") but input has ", g.C,
                    " (input shape ", input.sizes(), ")");
  const int64_t eff_h = g.dh * (g.R - 1) + 1, eff_w = g.dw * (g.S - 1) + 1;
  TORCH_CHECK_VALUE(g.H + 2 * g.ph >= eff_h && g.W + 2 * g.pw >= eff_w, op, ": kernel (", eff_h, "x", eff_w,
                    " with dilation) is larger than the padded input (", g.H + 2 * g.ph, "x", g.W + 2 * g.pw,
                    "); input shape ", input.sizes(), ", weight shape ", weight.sizes(), ", padding ", padding);
  g.P = conv_out_size(g.H, g.R, g.sh, g.ph, g.dh);
  g.Q = conv_out_size(g.W, g.S, g.sw, g.pw, g.dw);
  if (bias.has_value()) {
    check_same(op, input, "input", *bias, "bias");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == g.K, op, ": bias must have shape [", g.K, "], got ",
                      bias->sizes());
  }
  if (residual.has_value()) {
    check_same(op, input, "input", *residual, "residual");
    TORCH_CHECK_VALUE(residual->dim() == 4 && residual->size(0) == g.N && residual->size(1) == g.K &&
                          residual->size(2) == g.P && residual->size(3) == g.Q,
                      op, ": residual must have the output's shape [", g.N, ", ", g.K, ", ", g.P, ", ", g.Q,
                      "], got ", residual->sizes());
  }
  return g;
}

// The conv backward's grad_output (and, with ReLU, the forward output whose mask it applies) must match
// the geometry, dtype and device of the forward: the kernels index them with the forward's sizes.
inline void check_conv_backward(const char* op, const at::Tensor& input, const at::Tensor& grad_output,
                                const std::optional<at::Tensor>& output, const ConvGeom& g, Activation act) {
  TORCH_CHECK_VALUE(grad_output.dim() == 4 && grad_output.size(0) == g.N && grad_output.size(1) == g.K &&
                        grad_output.size(2) == g.P && grad_output.size(3) == g.Q,
                    op, ": grad_output must have shape [", g.N, ", ", g.K, ", ", g.P, ", ", g.Q, "], got ",
                    grad_output.sizes());
  check_same(op, input, "input", grad_output, "grad_output");
  if (act == Activation::ReLU) {
    TORCH_CHECK_VALUE(output.has_value() && output->defined(), op,
                      ": activation 'relu' needs the forward output (its mask), got none");
    check_same(op, input, "input", *output, "output");
    TORCH_CHECK_VALUE(output->sizes() == grad_output.sizes(), op, ": output must have shape [", g.N, ", ", g.K,
                      ", ", g.P, ", ", g.Q, "], got ", output->sizes());
  }
}

inline PoolGeom check_max_pool2d(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 bool ceil_mode) {
  TORCH_CHECK_VALUE(input.dim() == 4, op, ": input must be 4-d [N, C, H, W], got shape ", input.sizes());
  TORCH_CHECK_VALUE(is_float_type(input.scalar_type()), op, ": input must be a floating-point tensor, got ",
                    input.scalar_type());
  check_pair(op, "kernel_size", kernel_size, 1, kMaxGeom);
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0, kMaxGeom);
  check_pair(op, "dilation", dilation, 1, kMaxGeom);
  PoolGeom g{};
  g.N = input.size(0); g.C = input.size(1); g.H = input.size(2); g.W = input.size(3);
  g.kh = kernel_size[0]; g.kw = kernel_size[1]; g.sh = stride[0]; g.sw = stride[1];
  g.ph = padding[0]; g.pw = padding[1]; g.dh = dilation[0]; g.dw = dilation[1];
  TORCH_CHECK_VALUE(g.ph <= g.kh / 2 && g.pw <= g.kw / 2, op, ": padding must be at most half the kernel size, got "
                    "padding ", padding, " for kernel_size ", kernel_size);
  TORCH_CHECK_VALUE(g.C > 0 && g.H > 0 && g.W > 0, op, ": input channels and spatial sizes must be positive, got "
                    "input shape ", input.sizes());
  g.P = pool_out_size(g.H, g.kh, g.sh, g.ph, g.dh, ceil_mode);
  g.Q = pool_out_size(g.W, g.kw, g.sw, g.pw, g.dw, ceil_mode);
  TORCH_CHECK_VALUE(g.P >= 1 && g.Q >= 1, op, ": output size is too small: input shape ", input.sizes(),
                    ", kernel_size ", kernel_size, ", stride ", stride, ", padding ", padding, ", dilation ", dilation,
                    " give output ", g.P, "x", g.Q);
  return g;
}

// Channels-last when the input (or the weight) is, as PyTorch's CPU and cuDNN convolutions decide.
inline at::MemoryFormat conv_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  if (input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
      weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast)
    return at::MemoryFormat::ChannelsLast;
  return at::MemoryFormat::Contiguous;
}

}  // namespace fastcnn
