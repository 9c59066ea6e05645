// Argument checks of every fastcnn op: the one C++ copy of each rule.
//
// The router (ops.cpp) runs them once per call, before any backend is chosen, so every backend
// accepts exactly the same inputs and raises the same ValueError (TORCH_CHECK_VALUE) text. The
// native kernels call the same functions to obtain the validated geometry. The Python twin is
// fastcnn/_checks.py (the fake kernels and the Python API): its messages are these, character for
// character, which tests/test_routing.py asserts on every backend and under FakeTensorMode.
//
// Message conventions (shared with Python): "<op>: <argument> ...", shapes and pairs as [a, b],
// dtypes as torch names without the prefix (float32, int64), devices as torch prints them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "geometry.h"

namespace fastcnn {

// The activation names of the schema. The Python API also takes None (= "none").
inline Activation parse_activation(const char* op, c10::string_view act) {
  if (act == "none") return Activation::None;
  if (act == "relu") return Activation::ReLU;
  TORCH_CHECK_VALUE(false, op, ": activation must be 'none' or 'relu', got '", std::string(act), "'");
}

// torch's name of a dtype without the "torch." prefix, as Python prints it.
inline const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kByte: return "uint8";
    case at::kChar: return "int8";
    case at::kShort: return "int16";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kUInt16: return "uint16";
    case at::kUInt32: return "uint32";
    case at::kUInt64: return "uint64";
    case at::kBool: return "bool";
    case at::kComplexHalf: return "complex32";
    case at::kComplexFloat: return "complex64";
    case at::kComplexDouble: return "complex128";
    default: return c10::toString(t);
  }
}

// [a, b, c], as Python's fastcnn._checks.fmt.
inline std::string fmt(at::IntArrayRef v) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << "]";
  return s.str();
}

inline bool is_float_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_float(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(is_float_type(t.scalar_type()), op, ": ", name,
                    " must be a floating-point tensor (float32, float64, float16, bfloat16), got ",
                    dtype_name(t.scalar_type()));
}

// max_pool2d also takes the integer types PyTorch max-pools (uint8 images, integer label maps); they
// have no gradient, so every other op and every backward stays floating-point.
inline bool is_int_type(at::ScalarType t) {
  return t == at::kByte || t == at::kChar || t == at::kShort || t == at::kInt || t == at::kLong;
}

inline void check_pool_dtype(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(is_float_type(t.scalar_type()) || is_int_type(t.scalar_type()), op, ": ", name,
                    " must be a floating-point or integer tensor (float32, float64, float16, bfloat16, uint8, int8, "
                    "int16, int32, int64), got ",
                    dtype_name(t.scalar_type()));
}

// `b` (named bn) has the dtype and device of the reference `a` (named an).
inline void check_same(const char* op, const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK_VALUE(a.scalar_type() == b.scalar_type(), op, ": ", bn, " dtype ", dtype_name(b.scalar_type()),
                    " does not match ", an, " dtype ", dtype_name(a.scalar_type()));
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": ", bn, " is on ", b.device(), " but ", an, " is on ",
                    a.device());
}

inline void check_dim4(const char* op, const at::Tensor& t, const char* name, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == 4, op, ": ", name, " must be 4-d ", layout, ", got shape ", fmt(t.sizes()));
}

inline void check_pair(const char* op, const char* name, at::IntArrayRef v, int64_t min_value,
                       int64_t max_value = std::numeric_limits<int64_t>::max()) {
  TORCH_CHECK_VALUE(v.size() == 2, op, ": ", name, " must have 2 elements, got ", fmt(v));
  TORCH_CHECK_VALUE(v[0] >= min_value && v[1] >= min_value, op, ": ", name, " must be >= ", min_value, ", got ",
                    fmt(v));
  TORCH_CHECK_VALUE(v[0] <= max_value && v[1] <= max_value, op, ": ", name, " must be <= ", max_value, ", got ",
                    fmt(v));
}

inline void check_shape(const char* op, const at::Tensor& t, const char* name, at::IntArrayRef want,
                        const char* what = "") {
  TORCH_CHECK_VALUE(t.sizes() == want, op, ": ", name, " must have ", what, "shape ", fmt(want), ", got ",
                    fmt(t.sizes()));
}

// conv2d and conv1x1 (one1x1: the weight must be [C_out, C_in, 1, 1]; no padding, dilation, groups).
inline ConvGeom check_conv(const char* op, bool one1x1, const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                           int64_t groups) {
  check_float(op, input, "input");
  check_dim4(op, input, "input", "[N, C, H, W]");
  check_same(op, input, "input", weight, "weight");
  if (one1x1) {
    TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(2) == 1 && weight.size(3) == 1, op,
                      ": weight must be 4-d [C_out, C_in, 1, 1], got shape ", fmt(weight.sizes()));
  } else {
    check_dim4(op, weight, "weight", "[C_out, C_in/groups, kH, kW]");
  }
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0, kMaxGeom);
  check_pair(op, "dilation", dilation, 1, kMaxGeom);
  TORCH_CHECK_VALUE(groups >= 1, op, ": groups must be >= 1, got ", groups);
  ConvGeom g{};
  g.N = input.size(0); g.C = input.size(1); g.H = input.size(2); g.W = input.size(3);
  g.K = weight.size(0); g.R = weight.size(2); g.S = weight.size(3);
  g.G = groups;
  g.sh = stride[0]; g.sw = stride[1]; g.ph = padding[0]; g.pw = padding[1]; g.dh = dilation[0]; g.dw = dilation[1];
  TORCH_CHECK_VALUE(g.C > 0 && g.K > 0 && g.R > 0 && g.S > 0, op,
                    ": input channels, weight out-channels and kernel size must be positive; input shape ",
                    fmt(input.sizes()), ", weight shape ", fmt(weight.sizes()));
  TORCH_CHECK_VALUE(g.C % groups == 0, op, ": input channels (", g.C, ") must be divisible by groups (", groups, ")");
  TORCH_CHECK_VALUE(g.K % groups == 0, op, ": weight out-channels (", g.K, ") must be divisible by groups (", groups,
                    ")");
  TORCH_CHECK_VALUE(weight.size(1) * groups == g.C, op, ": weight expects ", weight.size(1) * groups,
                    " input channels (weight shape ", fmt(weight.sizes()), ", groups=", groups, ") but input has ",
                    g.C, " (input shape ", fmt(input.sizes()), ")");
  const int64_t eff_h = g.dh * (g.R - 1) + 1, eff_w = g.dw * (g.S - 1) + 1;
  TORCH_CHECK_VALUE(g.H + 2 * g.ph >= eff_h && g.W + 2 * g.pw >= eff_w, op, ": kernel (", eff_h, "x", eff_w,
                    " with dilation) is larger than the padded input (", g.H + 2 * g.ph, "x", g.W + 2 * g.pw,
                    "); input shape ", fmt(input.sizes()), ", weight shape ", fmt(weight.sizes()), ", padding ",
                    fmt(padding));
  g.P = conv_out_size(g.H, g.R, g.sh, g.ph, g.dh);
  g.Q = conv_out_size(g.W, g.S, g.sw, g.pw, g.dw);
  if (bias.has_value()) {
    check_same(op, input, "input", *bias, "bias");
    check_shape(op, *bias, "bias", {g.K});
  }
  if (residual.has_value()) {
    check_same(op, input, "input", *residual, "residual");
    check_shape(op, *residual, "residual", {g.N, g.K, g.P, g.Q}, "the output's ");
  }
  return g;
}

inline ConvGeom check_conv2d(const char* op, const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             int64_t groups) {
  return check_conv(op, false, input, weight, bias, residual, stride, padding, dilation, groups);
}

inline ConvGeom check_conv1x1(const char* op, const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                              at::IntArrayRef stride) {
  const int64_t zero[2] = {0, 0}, one[2] = {1, 1};
  return check_conv(op, true, input, weight, bias, residual, stride, zero, one, 1);
}

// The conv backward's grad_output (and, with ReLU, the forward output whose mask it applies) match the
// geometry, dtype and device of the forward: the kernels index them with the forward's sizes.
inline void check_conv_backward(const char* op, const at::Tensor& input, const at::Tensor& grad_output,
                                const std::optional<at::Tensor>& output, const ConvGeom& g, Activation act) {
  check_same(op, input, "input", grad_output, "grad_output");
  check_shape(op, grad_output, "grad_output", {g.N, g.K, g.P, g.Q});
  if (act == Activation::ReLU) {
    TORCH_CHECK_VALUE(output.has_value() && output->defined(), op,
                      ": activation 'relu' needs the forward output (its mask), got none");
    check_same(op, input, "input", *output, "output");
    check_shape(op, *output, "output", {g.N, g.K, g.P, g.Q});
  }
}

inline PoolGeom check_max_pool2d(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 bool ceil_mode) {
  check_pool_dtype(op, input, "input");
  check_dim4(op, input, "input", "[N, C, H, W]");
  check_pair(op, "kernel_size", kernel_size, 1, kMaxGeom);
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0, kMaxGeom);
  check_pair(op, "dilation", dilation, 1, kMaxGeom);
  PoolGeom g{};
  g.N = input.size(0); g.C = input.size(1); g.H = input.size(2); g.W = input.size(3);
  g.kh = kernel_size[0]; g.kw = kernel_size[1]; g.sh = stride[0]; g.sw = stride[1];
  g.ph = padding[0]; g.pw = padding[1]; g.dh = dilation[0]; g.dw = dilation[1];
  TORCH_CHECK_VALUE(g.ph <= g.kh / 2 && g.pw <= g.kw / 2, op,
                    ": padding must be at most half the kernel size, got padding ", fmt(padding), " for kernel_size ",
                    fmt(kernel_size));
  TORCH_CHECK_VALUE(g.C > 0 && g.H > 0 && g.W > 0, op,
                    ": input channels and spatial sizes must be positive, got input shape ", fmt(input.sizes()));
  g.P = pool_out_size(g.H, g.kh, g.sh, g.ph, g.dh, ceil_mode);
  g.Q = pool_out_size(g.W, g.kw, g.sw, g.pw, g.dw, ceil_mode);
  TORCH_CHECK_VALUE(g.P >= 1 && g.Q >= 1, op, ": output size is too small: input shape ", fmt(input.sizes()),
                    ", kernel_size ", fmt(kernel_size), ", stride ", fmt(stride), ", padding ", fmt(padding),
                    ", dilation ", fmt(dilation), " give output ", g.P, "x", g.Q);
  return g;
}

// Empty `indices` mean "recompute the argmax from input".
inline PoolGeom check_max_pool2d_backward(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& indices, at::IntArrayRef kernel_size,
                                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                          bool ceil_mode) {
  const PoolGeom g = check_max_pool2d(op, input, kernel_size, stride, padding, dilation, ceil_mode);
  TORCH_CHECK_VALUE(is_float_type(input.scalar_type()), op,
                    ": input must be a floating-point tensor (float32, float64, float16, bfloat16), got ",
                    dtype_name(input.scalar_type()), ": an integer max_pool2d has no gradient");
  const int64_t shape[4] = {g.N, g.C, g.P, g.Q};
  check_same(op, input, "input", grad_output, "grad_output");
  check_shape(op, grad_output, "grad_output", shape);
  if (indices.numel() > 0) {
    TORCH_CHECK_VALUE(indices.sizes() == at::IntArrayRef(shape) && indices.scalar_type() == at::kLong &&
                          indices.device() == input.device(),
                      op, ": indices must be int64 with shape ", fmt(shape), " on ", input.device(), ", got ",
                      dtype_name(indices.scalar_type()), " ", fmt(indices.sizes()), " on ", indices.device());
  }
  return g;
}

inline void check_add_relu(const char* op, const at::Tensor& input, const at::Tensor& other) {
  check_float(op, input, "input");
  check_same(op, input, "input", other, "other");
  const int64_t nd = std::max(input.dim(), other.dim());
  for (int64_t i = 0; i < nd; ++i) {
    const int64_t sa = i < input.dim() ? input.size(input.dim() - 1 - i) : 1;
    const int64_t sb = i < other.dim() ? other.size(other.dim() - 1 - i) : 1;
    TORCH_CHECK_VALUE(sa == sb || sa == 1 || sb == 1, op, ": shapes ", fmt(input.sizes()), " (input) and ",
                      fmt(other.sizes()), " (other) cannot be broadcast together");
  }
}

inline void check_add_relu_backward(const char* op, const at::Tensor& grad_output, const at::Tensor& output) {
  check_float(op, output, "output");
  check_same(op, output, "output", grad_output, "grad_output");
  check_shape(op, grad_output, "grad_output", output.sizes(), "the output's ");
}

// Channels-last when the input (or the weight) is, as PyTorch's CPU and cuDNN convolutions decide.
inline at::MemoryFormat conv_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  if (input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
      weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast)
    return at::MemoryFormat::ChannelsLast;
  return at::MemoryFormat::Contiguous;
}

}  // namespace fastcnn
