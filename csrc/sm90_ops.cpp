// The sm90 path's private ops, in every build of fastcnn._C (CPU-only included): the mode switch,
// the registration of fastcnn._C_sm90's kernel table, and the pure path choice (sm90_path.h) on
// plain sizes and strides, so Python can print and test it without a GPU. A TORCH_LIBRARY_FRAGMENT
// of the fastcnn namespace: the schemas of the public ops stay in csrc/fastcnn.cpp.
#include <torch/library.h>

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <string>
#include <vector>

#include "cuda/sm90_table.h"
#include "geometry.h"
#include "sm90_path.h"

namespace fastcnn {
namespace sm90 {

void set_table(const fastcnn_sm90_table* t);  // sm90_path.cpp

namespace {

Mode mode_arg(const std::string& s, const char* what) {
  Mode m;
  TORCH_CHECK_VALUE(parse_mode(s, m), what, " must be 'auto', 'force' or 'off', got '", s, "'");
  return m;
}

void set_mode_op(c10::string_view mode) { set_current_mode(mode_arg(std::string(mode), "FASTCNN_SM90")); }

std::string mode_op() { return mode_name(current_mode()); }

bool available_op() { return table() != nullptr; }

std::string build_op() { return table() ? std::string(table()->build ? table()->build : "") : std::string(); }

// The address of fastcnn._C_sm90's table (its PyCapsule pointer), checked and kept. The table lives
// in _C_sm90's static storage, which stays mapped for the life of the process.
std::string register_op(int64_t address) {
  TORCH_CHECK_VALUE(address != 0, "_sm90_register: null table");
  const auto* t = reinterpret_cast<const fastcnn_sm90_table*>(static_cast<uintptr_t>(address));
  TORCH_CHECK_VALUE(t->abi == FASTCNN_SM90_ABI && t->size == sizeof(fastcnn_sm90_table),
                    "fastcnn._C_sm90 has table ABI ", t->abi, " (size ", t->size, "), fastcnn._C expects ",
                    FASTCNN_SM90_ABI, " (size ", sizeof(fastcnn_sm90_table), "): rebuild both extensions");
  TORCH_CHECK_VALUE(t->fprop_can_implement && t->fprop_workspace_bytes && t->fprop_run && t->dgrad_can_implement &&
                        t->dgrad_workspace_bytes && t->dgrad_run && t->wgrad_can_implement &&
                        t->wgrad_workspace_bytes && t->wgrad_run && t->gemm_can_implement &&
                        t->gemm_workspace_bytes && t->gemm_run,
                    "fastcnn._C_sm90's table has a null entry");
  set_table(t);
  return t->build ? t->build : "";
}

DType dtype_of(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Half: return DType::Float16;
    case c10::ScalarType::BFloat16: return DType::BFloat16;
    case c10::ScalarType::Float: return DType::Float32;
    case c10::ScalarType::Double: return DType::Float64;
    default: TORCH_CHECK_VALUE(false, "_sm90_conv_path: dtype must be a floating type, got ", t);
  }
}

void facts_from(TensorFacts& f, at::IntArrayRef stride, int64_t align, const char* name) {
  TORCH_CHECK_VALUE(stride.size() == 4, "_sm90_conv_path: ", name, " stride must have 4 elements, got ", stride);
  f.present = true;
  for (int i = 0; i < 4; ++i) f.stride[i] = stride[i];
  f.align = align;
}

void pair(at::IntArrayRef v, const char* name, int64_t min_value) {
  TORCH_CHECK_VALUE(v.size() == 2 && v[0] >= min_value && v[1] >= min_value && v[0] <= kMaxGeom && v[1] <= kMaxGeom,
                    "_sm90_conv_path: ", name, " must be 2 values >= ", min_value, ", got ", v);
}

// [fprop path, reason, dgrad path, reason, wgrad path, reason].
std::vector<std::string> conv_path_op(at::IntArrayRef input_size, at::IntArrayRef input_stride, int64_t input_align,
                                      at::IntArrayRef weight_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups, c10::ScalarType dtype,
                                      bool output_channels_last, bool has_bias, int64_t bias_stride,
                                      int64_t bias_align, at::OptionalIntArrayRef residual_stride,
                                      int64_t residual_align, at::IntArrayRef capability, bool tf32,
                                      c10::string_view mode, bool available, bool pad_channels) {
  TORCH_CHECK_VALUE(input_size.size() == 4 && weight_size.size() == 4,
                    "_sm90_conv_path: input and weight sizes must have 4 elements, got ", input_size, " and ",
                    weight_size);
  TORCH_CHECK_VALUE(capability.size() == 2, "_sm90_conv_path: capability must be (major, minor), got ", capability);
  pair(stride, "stride", 1);
  pair(padding, "padding", 0);
  pair(dilation, "dilation", 1);
  TORCH_CHECK_VALUE(groups >= 1, "_sm90_conv_path: groups must be >= 1, got ", groups);
  Query q;
  ConvGeom& g = q.g;
  g.N = input_size[0]; g.C = input_size[1]; g.H = input_size[2]; g.W = input_size[3];
  g.K = weight_size[0]; g.R = weight_size[2]; g.S = weight_size[3];
  g.G = groups;
  g.sh = stride[0]; g.sw = stride[1]; g.ph = padding[0]; g.pw = padding[1]; g.dh = dilation[0]; g.dw = dilation[1];
  TORCH_CHECK_VALUE(g.N >= 0 && g.C > 0 && g.H > 0 && g.W > 0 && g.K > 0 && g.R > 0 && g.S > 0 && g.C % g.G == 0 &&
                        g.K % g.G == 0 && weight_size[1] * g.G == g.C,
                    "_sm90_conv_path: inconsistent sizes: input ", input_size, ", weight ", weight_size, ", groups ",
                    groups);
  TORCH_CHECK_VALUE(g.H + 2 * g.ph >= g.dh * (g.R - 1) + 1 && g.W + 2 * g.pw >= g.dw * (g.S - 1) + 1,
                    "_sm90_conv_path: the dilated kernel is larger than the padded input");
  g.P = conv_out_size(g.H, g.R, g.sh, g.ph, g.dh);
  g.Q = conv_out_size(g.W, g.S, g.sw, g.pw, g.dw);
  q.dtype = dtype_of(dtype);
  facts_from(q.input, input_stride, input_align, "input");
  if (residual_stride.has_value()) facts_from(q.residual, *residual_stride, residual_align, "residual");
  q.out_channels_last = output_channels_last;
  q.has_bias = has_bias;
  q.bias_stride = bias_stride;
  q.bias_align = bias_align;
  q.cc_major = static_cast<int>(capability[0]);
  q.cc_minor = static_cast<int>(capability[1]);
  q.tf32 = tf32;
  q.available = available;
  q.pad_channels = pad_channels;
  q.mode = mode_arg(std::string(mode), "mode");
  std::vector<std::string> out;
  for (Pass p : {Pass::Fprop, Pass::Dgrad, Pass::Wgrad}) {
    const Choice c = choose(q, p);
    out.emplace_back(path_name(c.path));
    out.push_back(c.reason);
  }
  return out;
}

// dgrad_phases flattened, 10 values per phase (the PhaseAxis fields in order), for the tests that
// rebuild a strided dgrad from its phases with F.conv2d.
std::vector<int64_t> dgrad_phases_op(int64_t dx_rows, int64_t dy_rows, int64_t k, int64_t s, int64_t pad, int64_t d) {
  TORCH_CHECK_VALUE(dx_rows > 0 && dy_rows > 0 && k > 0 && s > 0 && pad >= 0 && d > 0 && s <= 4096,
                    "_sm90_dgrad_phases: sizes must be positive (stride <= 4096), padding >= 0");
  std::vector<int64_t> out;
  for (const PhaseAxis& p : dgrad_phases(dx_rows, dy_rows, k, s, pad, d))
    for (int64_t v : {p.first, p.out, p.taps, p.r0, p.step, p.dil, p.in_start, p.in_len, p.pad_lo, p.pad_hi})
      out.push_back(v);
  return out;
}

}  // namespace
}  // namespace sm90
}  // namespace fastcnn

TORCH_LIBRARY_FRAGMENT(fastcnn, m) {
  m.def("_sm90_set_mode(str mode) -> ()", &fastcnn::sm90::set_mode_op);
  m.def("_sm90_mode() -> str", &fastcnn::sm90::mode_op);
  m.def("_sm90_available() -> bool", &fastcnn::sm90::available_op);
  m.def("_sm90_build() -> str", &fastcnn::sm90::build_op);
  m.def("_sm90_register(int table) -> str", &fastcnn::sm90::register_op);
  m.def("_sm90_dgrad_phases(int dx_rows, int dy_rows, int k, int stride, int padding, int dilation) -> int[]",
        &fastcnn::sm90::dgrad_phases_op);
  m.def("_sm90_conv_path(int[] input_size, int[] input_stride, int input_align, int[] weight_size, int[] stride, "
        "int[] padding, int[] dilation, int groups, ScalarType dtype, bool output_channels_last, bool has_bias, "
        "int bias_stride, int bias_align, int[]? residual_stride, int residual_align, int[] capability, bool tf32, "
        "str mode, bool available, bool pad_channels) -> str[]",
        &fastcnn::sm90::conv_path_op);
}
