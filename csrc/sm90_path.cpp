// The sm90 path choice (sm90_path.h): pure rules, no torch, no CUDA. Each rule is a limit of
// CUTLASS 4.2's SM90 kernels or of the TMA descriptors they use (../shared/design/hopper.md); the
// kernels' own can_implement checks the same again at run time, so a rule missing here costs a
// fallback, never a wrong result.
#include "sm90_path.h"

#include <algorithm>
#include <atomic>
#include <numeric>

#include "cuda/sm90_table.h"

namespace fastcnn {
namespace sm90 {
namespace {

constexpr int64_t kInt32Max = 2147483647;
// TMA im2col (2 spatial dims): corners in [-128, 127] (16 bits over two dims, signed), filter
// offsets (R-1)*dilation in [0, 255), padding <= 256 per side (CUTLASS's can_implement).
constexpr int64_t kCornerMin = -128, kCornerMax = 127, kOffsetLimit = 255, kPadLimit = 256;

std::string str(int64_t v) { return std::to_string(v); }

std::string strides_str(const TensorFacts& t) {
  return "(" + str(t.stride[0]) + ", " + str(t.stride[1]) + ", " + str(t.stride[2]) + ", " + str(t.stride[3]) + ")";
}

int64_t elem_bytes(DType t) {
  switch (t) {
    case DType::Float16:
    case DType::BFloat16: return 2;
    case DType::Float32: return 4;
    default: return 8;
  }
}

// Dense NHWC for sizes (n, c, h, w): strides (h*w*c, 1, w*c, c); a size-1 dim's stride is free.
bool channels_last_dense(const TensorFacts& t, int64_t n, int64_t c, int64_t h, int64_t w) {
  const int64_t size[4] = {n, c, h, w};
  const int64_t want[4] = {h * w * c, 1, w * c, c};
  for (int i = 0; i < 4; ++i)
    if (size[i] != 1 && t.stride[i] != want[i]) return false;
  return true;
}

// What TMA needs of an NHWC operand: channel stride 1, the other strides whole 16-byte units.
bool tma_strides_ok(const TensorFacts& t, int64_t n, int64_t c, int64_t h, int64_t w, int64_t gran) {
  const int64_t size[4] = {n, c, h, w};
  if (c != 1 && t.stride[1] != 1) return false;
  for (int i : {0, 2, 3})
    if (size[i] != 1 && (t.stride[i] <= 0 || t.stride[i] % gran != 0)) return false;
  return true;
}

// GEMM rows (n, p, q) -> one row stride: stride(h) = Q * stride(w), stride(n) = P * stride(h).
bool rows_uniform(const TensorFacts& t, int64_t n, int64_t h, int64_t w) {
  if (h != 1 && w != 1 && t.stride[2] != w * t.stride[3]) return false;
  const int64_t row_h = h != 1 ? t.stride[2] : w * t.stride[3];
  if (n != 1 && t.stride[0] != h * row_h) return false;
  return true;
}

const char* pass_name(Pass p) {
  switch (p) {
    case Pass::Fprop: return "fprop";
    case Pass::Dgrad: return "dgrad";
    default: return "wgrad";
  }
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Float32: return "float32";
    default: return "float64";
  }
}

// The dtypes with an sm90 kernel per pass: the translation units csrc/cuda/sm90/<pass>_<dtype>.cu
// (tests/test_sm90.py checks that this list and the files agree). Float32 means TF32 math.
bool built(Pass p, DType t) {
  switch (p) {
    case Pass::Fprop: return t == DType::BFloat16 || t == DType::Float16 || t == DType::Float32;
    case Pass::Dgrad: return t == DType::BFloat16 || t == DType::Float16;
    default: return t == DType::BFloat16;
  }
}

std::atomic<int> g_mode{static_cast<int>(Mode::Auto)};
std::atomic<const fastcnn_sm90_table*> g_table{nullptr};

}  // namespace

int64_t channel_granule(DType t) { return 16 / elem_bytes(t); }

const char* path_name(Path p) {
  switch (p) {
    case Path::Conv: return "sm90-conv";
    case Path::Gemm: return "sm90-gemm";
    default: return "cuda";
  }
}

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::Force: return "force";
    case Mode::Off: return "off";
    default: return "auto";
  }
}

bool parse_mode(const std::string& s, Mode& out) {
  if (s == "auto" || s.empty()) out = Mode::Auto;
  else if (s == "force") out = Mode::Force;
  else if (s == "off") out = Mode::Off;
  else return false;
  return true;
}

Mode current_mode() { return static_cast<Mode>(g_mode.load(std::memory_order_relaxed)); }
void set_current_mode(Mode m) { g_mode.store(static_cast<int>(m), std::memory_order_relaxed); }

const fastcnn_sm90_table* table() { return g_table.load(std::memory_order_acquire); }

// Used by the registration op (sm90_ops.cpp) once it has checked the table's abi and size.
void set_table(const fastcnn_sm90_table* t) { g_table.store(t, std::memory_order_release); }

std::vector<PhaseAxis> dgrad_phases(int64_t dx_rows, int64_t dy_rows, int64_t k, int64_t s, int64_t pad,
                                    int64_t d) {
  std::vector<PhaseAxis> out;
  const int64_t g = std::gcd(s, d);
  for (int64_t a = 0; a < s; ++a) {
    PhaseAxis ph;
    ph.first = a;
    ph.out = a < dx_rows ? (dx_rows - a + s - 1) / s : 0;
    ph.step = s / g;
    ph.dil = d / g;
    int64_t r0 = -1, taps = 0;
    for (int64_t r = 0; r < k; ++r)
      if (((a + pad - r * d) % s + s) % s == 0) {
        if (r0 < 0) r0 = r;
        ++taps;
      }
    if (ph.out > 0 && taps > 0) {
      const int64_t o0 = (a + pad - r0 * d) / s;  // exact: s divides it
      const int64_t base = o0 - (taps - 1) * ph.dil, last = ph.out - 1 + o0;
      ph.in_start = std::max<int64_t>(base, 0);
      ph.pad_lo = std::max<int64_t>(-base, 0);
      const int64_t end = std::min<int64_t>(last, dy_rows - 1);
      ph.pad_hi = std::max<int64_t>(last - (dy_rows - 1), 0);
      ph.in_len = end - ph.in_start + 1;
      if (ph.in_len > 0) {
        ph.taps = taps;
        ph.r0 = r0;
      } else {
        ph.in_len = ph.pad_lo = ph.pad_hi = ph.in_start = 0;
      }
    }
    out.push_back(ph);
  }
  return out;
}

namespace {

// The TMA im2col limits of one dgrad stride phase as an fprop problem (see the fprop rules below).
std::string phase_limits(const PhaseAxis& h, const PhaseAxis& w) {
  const int64_t off_h = (h.taps - 1) * h.dil, off_w = (w.taps - 1) * w.dil;
  const std::string at = "dgrad stride phase (" + str(h.first) + ", " + str(w.first) + "): ";
  if (off_h >= kOffsetLimit || off_w >= kOffsetLimit)
    return at + "(taps - 1) * dilation = (" + str(off_h) + ", " + str(off_w) + ") >= 255 (TMA im2col offsets)";
  if (h.pad_hi > kPadLimit || w.pad_hi > kPadLimit) return at + "padding > 256 (TMA im2col)";
  const int64_t corners[] = {-h.pad_lo, -w.pad_lo, h.pad_hi - off_h, w.pad_hi - off_w};
  for (int64_t c : corners)
    if (c < kCornerMin || c > kCornerMax) return at + "im2col corners outside [-128, 127] (TMA im2col)";
  return "";
}

}  // namespace

Choice choose(const Query& q, Pass pass) {
  const ConvGeom& g = q.g;
  Choice c;
  c.c_pad = g.C;
  auto no = [&](const std::string& why) {
    c.path = Path::Fallback;
    c.c_pad = g.C;
    c.reason = why;
    return c;
  };
  if (q.mode == Mode::Off) return no("FASTCNN_SM90=off");
  if (!q.available)
    return no("fastcnn._C_sm90 is not loaded (built without CUDA 12.3+, sm_90 in TORCH_CUDA_ARCH_LIST and the "
              "CUTLASS headers, or with FASTCNN_SM90_BUILD=0)");
  if (q.cc_major != 9 || q.cc_minor != 0)
    return no("compute capability " + str(q.cc_major) + "." + str(q.cc_minor) +
              ": the sm_90a kernels run on 9.0 only");
  if (q.dtype == DType::Float64) return no("float64: no tensor-core path");
  if (q.dtype == DType::Float32 && !q.tf32)
    return no("float32 with TF32 disallowed (needs torch.backends.cudnn.allow_tf32 and "
              "torch.backends.cuda.matmul.allow_tf32)");
  if (!built(pass, q.dtype))
    return no(std::string("no sm90 ") + pass_name(pass) + " kernel for " + dtype_name(q.dtype) + " is built");
  if (g.G != 1) return no("groups=" + str(g.G) + ": CUTLASS 4.2's SM90 conv has no grouped kernels");
  if (g.N * g.P * g.Q == 0 || g.N * g.H * g.W == 0) return no("empty problem");

  const int64_t gran = channel_granule(q.dtype);
  const std::string gran_s = str(gran);
  if (g.K % gran != 0)
    return no("K=" + str(g.K) + " is not a multiple of " + gran_s + " (16-byte TMA rows of " + dtype_name(q.dtype) +
              ")");
  if (g.C % gran != 0) {
    if (!q.pad_channels)
      return no("C=" + str(g.C) + " is not a multiple of " + gran_s + " (16-byte TMA rows of " + dtype_name(q.dtype) +
                ")");
    c.c_pad = (g.C + gran - 1) / gran * gran;
  }
  const bool padded = c.c_pad != g.C;

  // Layouts. The output (fprop y, dgrad dx) is written by TMA stores in the op's own format.
  if ((pass == Pass::Fprop || pass == Pass::Dgrad) && !q.out_channels_last)
    return no("the output format is not channels_last (input and weight are both NCHW)");
  if (!padded && pass != Pass::Dgrad) {  // dgrad does not read x
    if (!channels_last_dense(q.input, g.N, g.C, g.H, g.W))
      return no("input is not channels_last dense (strides " + strides_str(q.input) + ")");
    if (q.input.align != 0)
      return no("input data pointer is not 16-byte aligned (offset " + str(q.input.align) + " bytes)");
  }
  if (pass == Pass::Fprop && q.residual.present) {
    if (!tma_strides_ok(q.residual, g.N, g.K, g.P, g.Q, gran))
      return no("residual strides " + strides_str(q.residual) + " are not channels-contiguous 16-byte rows");
    if (q.residual.align != 0)
      return no("residual data pointer is not 16-byte aligned (offset " + str(q.residual.align) + " bytes)");
  }
  if (pass == Pass::Fprop && q.has_bias && ((g.K != 1 && q.bias_stride != 1) || q.bias_align != 0))
    return no("bias is not a contiguous 16-byte aligned vector");

  // TMA im2col limits (CUTLASS's can_implement) and its int32 GEMM extents.
  if (g.ph > kPadLimit || g.pw > kPadLimit)
    return no("padding (" + str(g.ph) + ", " + str(g.pw) + ") > " + str(kPadLimit) + " (TMA im2col)");
  const int64_t off_h = (g.R - 1) * g.dh, off_w = (g.S - 1) * g.dw;
  if (off_h >= kOffsetLimit || off_w >= kOffsetLimit)
    return no("(kernel - 1) * dilation = (" + str(off_h) + ", " + str(off_w) + ") >= " + str(kOffsetLimit) +
              " (TMA im2col offsets)");
  const bool phased = pass == Pass::Dgrad && (g.sh != 1 || g.sw != 1);
  int64_t phases = 0, zero_phases = 0;
  if (phased) {  // the fprop kernel per stride phase: its limits per phase
    for (const PhaseAxis& h : dgrad_phases(g.H, g.P, g.R, g.sh, g.ph, g.dh))
      for (const PhaseAxis& w : dgrad_phases(g.W, g.Q, g.S, g.sw, g.pw, g.dw)) {
        if (h.out == 0 || w.out == 0) continue;
        if (h.taps == 0 || w.taps == 0) {
          ++zero_phases;
          continue;
        }
        const std::string why = phase_limits(h, w);
        if (!why.empty()) return no(why);
        ++phases;
      }
  }
  int64_t lo_h, lo_w, hi_h, hi_w;  // im2col corners of the pass
  if (phased) {
    lo_h = lo_w = hi_h = hi_w = 0;  // checked per phase above
  } else if (pass == Pass::Dgrad) {
    lo_h = g.ph - off_h;
    lo_w = g.pw - off_w;
    hi_h = lo_h + g.H - g.P;
    hi_w = lo_w + g.W - g.Q;
  } else {
    lo_h = -g.ph;
    lo_w = -g.pw;
    hi_h = g.ph - off_h;
    hi_w = g.pw - off_w;
  }
  for (int64_t v : {lo_h, lo_w, hi_h, hi_w})
    if (v < kCornerMin || v > kCornerMax)
      return no(std::string(pass_name(pass)) + " im2col corners (" + str(lo_h) + ", " + str(lo_w) + ") / (" +
                str(hi_h) + ", " + str(hi_w) + ") outside [-128, 127] (TMA im2col)");
  const int64_t sizes[] = {g.N, g.H, g.W, c.c_pad, g.K, g.P, g.Q};
  for (int64_t v : sizes)
    if (v > kInt32Max) return no("a size exceeds int32 (CUTLASS's conv problem shape)");
  if (g.N * g.P * g.Q > kInt32Max || g.N * g.H * g.W > kInt32Max || g.K * g.R * g.S * c.c_pad > kInt32Max)
    return no("N*P*Q, N*H*W or K*R*S*C exceeds int32 (CUTLASS's GEMM extents)");

  // The forward of a 1x1, stride-1, unpadded conv runs as a persistent GEMM (bf16 is built) when the
  // residual rows have one stride; everything else as an implicit GEMM.
  const bool is_gemm = pass == Pass::Fprop && g.R == 1 && g.S == 1 && g.ph == 0 && g.pw == 0 && g.sh == 1 &&
                       g.sw == 1 && q.dtype == DType::BFloat16 &&
                       (!q.residual.present || rows_uniform(q.residual, g.N, g.P, g.Q));
  const Path path = is_gemm ? Path::Gemm : Path::Conv;
  std::string what = std::string(pass_name(pass)) + " " + dtype_name(q.dtype) +
                     (q.dtype == DType::Float32 ? " as TF32" : "") +
                     (is_gemm ? ": persistent 1x1 GEMM" : ": implicit GEMM (TMA im2col)");
  if (phased)
    what += ", stride (" + str(g.sh) + ", " + str(g.sw) + ") as " + str(phases) +
            " unit-stride phase convolutions on the fprop kernel" +
            (zero_phases ? " (" + str(zero_phases) + " phases zero)" : "");
  if (padded) what += ", input channels padded " + str(g.C) + " -> " + str(c.c_pad);
  if (q.mode == Mode::Auto && !kAutoValidated)
    return no("eligible (" + std::string(path_name(path)) + ": " + what +
              "), but FASTCNN_SM90=auto waits for a GPU validation record (fastcnn::sm90::kAutoValidated); "
              "FASTCNN_SM90=force opts in");
  c.path = path;
  c.reason = what;
  return c;
}

}  // namespace sm90
}  // namespace fastcnn
