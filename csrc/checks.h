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

// Channels-last when the input (or the weight) is, as PyTorch's CPU and cuDNN convolutions decide.
inline at::MemoryFormat conv_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  if (input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
      weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast)
    return at::MemoryFormat::ChannelsLast;
  return at::MemoryFormat::Contiguous;
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



// ---- the in-place ops (conv2d_into, conv1x1_into): where they may write ----

// Whether `out` [N, K, P, Q] is laid out as a channel slice of a dense tensor in `fmt`, the only
// layout the kernels write: NCHW strides (L*P*Q, P*Q, Q, 1), channels_last (P*Q*L, 1, Q*L, L), L >= K
// (the channels of the tensor it is a slice of). Strides of size-1 dims are free, as in PyTorch's
// own contiguity test.
// The channels L of the dense tensor `out` is a slice of (read from the first dim that fixes it).
inline int64_t slice_channels(const at::Tensor& out, at::MemoryFormat fmt) {
  const int64_t N = out.size(0), K = out.size(1), P = out.size(2), Q = out.size(3);
  const auto st = out.strides();
  if (fmt == at::MemoryFormat::ChannelsLast) {
    if (Q > 1) return st[3];
    if (P > 1) return st[2] / Q;
    if (N > 1) return st[0] / (P * Q);
    return K;
  }
  return N > 1 ? st[0] / (P * Q) : K;
}

inline bool is_channel_slice(const at::Tensor& out, at::MemoryFormat fmt) {
  const int64_t N = out.size(0), K = out.size(1), P = out.size(2), Q = out.size(3);
  const auto st = out.strides();
  if (fmt == at::MemoryFormat::ChannelsLast) {
    const int64_t L = slice_channels(out, fmt);
    return L >= K && (K == 1 || st[1] == 1) && (Q == 1 || st[3] == L) && (P == 1 || st[2] == Q * L) &&
           (N == 1 || st[0] == P * Q * L);
  }
  return (Q == 1 || st[3] == 1) && (P == 1 || st[2] == Q) && (K == 1 || st[1] == P * Q) &&
         (N == 1 || (st[0] >= K * P * Q && st[0] % (P * Q) == 0));
}

// `out` (named name) can receive a conv result of shape [N, K, P, Q] for `input`: dtype, device,
// shape and the channel-slice layout of the op's memory format.
inline void check_conv_out(const char* op, const at::Tensor& input, const at::Tensor& out, const std::string& name,
                           at::IntArrayRef shape, at::MemoryFormat mf) {
  check_same(op, input, "input", out, name.c_str());
  check_shape(op, out, name.c_str(), shape, "the output's ");
  if (out.numel() == 0) return;
  TORCH_CHECK_VALUE(is_channel_slice(out, mf), op, ": ", name, " must be a channel slice of a dense ",
                    mf == at::MemoryFormat::ChannelsLast ? "channels_last" : "contiguous (NCHW)",
                    " tensor (the op's memory format), got strides ", fmt(out.strides()));
}

inline ConvGeom check_conv2d_into(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups, const at::Tensor& out) {
  const ConvGeom g = check_conv2d(op, input, weight, bias, residual, stride, padding, dilation, groups);
  check_conv_out(op, input, out, "out", {g.N, g.K, g.P, g.Q}, conv_memory_format(input, weight));
  return g;
}

// conv1x1_into's validated problem: the 1x1 GEMM's geometry (on the pooled input when pool is
// given), the pool, and the segments' channel counts and activations.
struct Conv1x1IntoGeom {
  ConvGeom g;
  bool has_pool = false;
  PoolGeom pool{};
  std::vector<int64_t> seg_k;
  std::vector<Activation> act;
};

// `segs` are the outputs (forward; slices: the channel-slice layout is required) or the gradients
// (backward, any strides): one per segment.
inline Conv1x1IntoGeom check_conv1x1_into(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                          const std::vector<std::string>& activations, at::IntArrayRef pool,
                                          at::ArrayRef<at::Tensor> segs, const char* seg_name,
                                          bool slices = true) {
  Conv1x1IntoGeom r;
  TORCH_CHECK_VALUE(pool.empty() || pool.size() == 7, op,
                    ": pool must be [] or [kH, kW, sH, sW, padH, padW, ceil_mode], got ", fmt(pool));
  if (!pool.empty()) {
    TORCH_CHECK_VALUE(pool[6] == 0 || pool[6] == 1, op, ": pool's ceil_mode (last element) must be 0 or 1, got ",
                      pool[6]);
    check_pair(op, "stride", stride, 1);
    TORCH_CHECK_VALUE(stride[0] == 1 && stride[1] == 1, op, ": stride must be [1, 1] with a pool, got ", fmt(stride));
    check_float(op, input, "input");
    const int64_t one[2] = {1, 1};
    r.pool = check_max_pool2d(op, input, pool.slice(0, 2), pool.slice(2, 2), pool.slice(4, 2), one, pool[6] != 0);
    r.has_pool = true;
  }
  // The 1x1 conv's checks on the input as it enters the GEMM (pooled sizes when pooling).
  const int64_t zero[2] = {0, 0}, one[2] = {1, 1};
  r.g = check_conv(op, true, input, weight, bias, std::nullopt, stride, zero, one, 1);
  if (r.has_pool) {
    r.g.H = r.pool.P; r.g.W = r.pool.Q;
    r.g.P = r.pool.P; r.g.Q = r.pool.Q;
  }
  TORCH_CHECK_VALUE(!segs.empty(), op, ": ", seg_name, " must hold at least one tensor, got none");
  TORCH_CHECK_VALUE(activations.size() == segs.size(), op, ": activations must have one name per tensor of ",
                    seg_name, " (", segs.size(), "), got ", activations.size());
  const at::MemoryFormat mf = conv_memory_format(input, weight);
  int64_t total = 0;
  for (size_t s = 0; s < segs.size(); ++s) {
    const std::string name = std::string(seg_name) + "[" + std::to_string(s) + "]";
    r.act.push_back(parse_activation(op, activations[s]));
    check_dim4(op, segs[s], name.c_str(), "[N, K_s, P, Q]");
    const int64_t k = segs[s].size(1);
    TORCH_CHECK_VALUE(k > 0, op, ": ", name, " must have at least one channel, got shape ", fmt(segs[s].sizes()));
    if (slices) {
      check_conv_out(op, input, segs[s], name, {r.g.N, k, r.g.P, r.g.Q}, mf);
    } else {  // gradients: any strides
      check_same(op, input, "input", segs[s], name.c_str());
      check_shape(op, segs[s], name.c_str(), {r.g.N, k, r.g.P, r.g.Q}, "the output's ");
    }
    r.seg_k.push_back(k);
    total += k;
  }
  TORCH_CHECK_VALUE(total == r.g.K, op, ": the channels of ", seg_name, " (", total,
                    ") must add up to weight's out-channels (weight shape ", fmt(weight.sizes()), ")");
  return r;
}

}  // namespace fastcnn
