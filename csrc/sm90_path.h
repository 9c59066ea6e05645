// Which convolution path a call takes on CUDA: the Hopper-native kernels of fastcnn._C_sm90
// (CUTLASS SM90: wgmma + TMA im2col) or the existing CUDA kernels. One pure function of the call's
// facts (shapes, strides, pointer alignment, dtype, compute capability, TF32 flags, the
// FASTCNN_SM90 mode), per pass, with the reason. Torch-free and CUDA-free: compiled into fastcnn._C
// in every build (CPU-only included), unit-tested in tests/test_sm90.py, printed per network layer
// by `python -m fastcnn.sm90`. The CUDA launchers (csrc/cuda/sm90_dispatch.cpp) ask it per call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "geometry.h"

struct fastcnn_sm90_table;  // csrc/cuda/sm90_table.h

namespace fastcnn {
namespace sm90 {

// FASTCNN_SM90: auto (default), force (take it or raise ValueError with the reason), off.
enum class Mode : int { Auto = 0, Force = 1, Off = 2 };

// Whether `auto` may take the sm90 path. False until a committed GPU validation record
// (bench/gpu_validate.py) covers the sm90 path: until then `auto` behaves as `off` and the path is
// opt-in through FASTCNN_SM90=force. Flip it in the commit that adds that record.
constexpr bool kAutoValidated = false;

enum class DType : int { Float16 = 0, BFloat16 = 1, Float32 = 2, Float64 = 3 };

enum class Pass : int { Fprop = 0, Dgrad = 1, Wgrad = 2 };

// sm90-conv: the implicit-GEMM conv kernels; sm90-gemm: the 1x1 (stride 1, no padding) forward as a
// persistent GEMM; cuda: the existing kernels (fallback).
enum class Path : int { Fallback = 0, Conv = 1, Gemm = 2 };

// A 4-d tensor as the call sees it, strides in PyTorch's index order (n, c, h, w).
struct TensorFacts {
  bool present = false;
  int64_t stride[4] = {0, 0, 0, 0};
  int64_t align = 0;  // data pointer modulo 16, in bytes (0: 16-byte aligned)
};

struct Query {
  ConvGeom g{};
  DType dtype = DType::Float32;
  TensorFacts input;     // x
  TensorFacts residual;  // forward only
  bool out_channels_last = false;  // the op's output format (conv_memory_format(input, weight))
  bool has_bias = false;
  int64_t bias_stride = 1;
  int64_t bias_align = 0;
  int cc_major = 0, cc_minor = 0;  // compute capability of the tensors' device
  bool tf32 = false;       // TF32 allowed for this call (see conv_engine.cpp's tf32_allowed)
  bool available = false;  // fastcnn._C_sm90 registered its kernels
  bool pad_channels = true;  // pad C up to the 16-byte granule inside the op (the stem: C = 3)
  Mode mode = Mode::Auto;
};

struct Choice {
  Path path = Path::Fallback;
  int64_t c_pad = 0;   // input channels the kernels see (C rounded up when the op pads them)
  std::string reason;  // why the fallback, or what the sm90 path does
};

// dgrad with stride s > 1, per axis, as s unit-stride cross-correlations: phase a holds the input
// rows h = a + s*i. The taps r with (a + pad - r*d) % s == 0 reach it, from the output-gradient rows
// i + (a + pad - r*d) / s: an arithmetic progression, so in reverse they form a filter of `taps`
// taps with dilation `dil` over the dy rows [in_start, in_start + in_len), zero-padded by (pad_lo,
// pad_hi). A 2-d phase (a, b) is the product of the axes' phases, run by the fprop kernel
// (cuda/sm90_dispatch.cpp); CUTLASS 4.2's SM90 dgrad kernel itself is unit-stride only.
struct PhaseAxis {
  int64_t first = 0;         // a: the phase's first input (dx) row
  int64_t out = 0;           // its dx rows: ceil((dx_rows - a) / s), 0 when a >= dx_rows
  int64_t taps = 0;          // 0: no tap (or no dy row) reaches the phase: its dx rows are zero
  int64_t r0 = 0, step = 1;  // the taps r0 + j * step, j < taps (the phase filter runs them in reverse)
  int64_t dil = 1;           // d / gcd(s, d)
  int64_t in_start = 0, in_len = 0, pad_lo = 0, pad_hi = 0;
};
std::vector<PhaseAxis> dgrad_phases(int64_t dx_rows, int64_t dy_rows, int64_t k, int64_t s, int64_t pad, int64_t d);

// The channel granule of the 16-byte TMA rows: 8 for fp16/bf16, 4 for fp32 (TF32).
int64_t channel_granule(DType t);

Choice choose(const Query& q, Pass pass);

const char* path_name(Path p);  // "cuda", "sm90-conv", "sm90-gemm"
const char* mode_name(Mode m);  // "auto", "force", "off"
bool parse_mode(const std::string& s, Mode& out);

// The kernels registered by fastcnn._C_sm90 (null until its import registered them).
const struct ::fastcnn_sm90_table* table();

// The process-wide mode (initialised from FASTCNN_SM90 by fastcnn's import; C++ default auto).
Mode current_mode();
void set_current_mode(Mode m);

}  // namespace sm90
}  // namespace fastcnn
