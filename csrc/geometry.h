// Geometry of fastcnn's ops: the one C++ definition of the conv and pool output sizes, and the
// structs that carry a validated problem from the argument checks (checks.h) to the kernels.
//
// Torch-free and host/device neutral (plain int64 arithmetic), so the same structs reach the CUDA
// kernels' parameter blocks, the CPU engine and the cuda-sim build unchanged. The Python twin of
// the formulas is fastcnn/_checks.py (conv_out_size, pool_out_size); tests/test_rules.py checks
// that each language defines them once.
#pragma once

#include <cstdint>

namespace fastcnn {

// The fused epilogue's activation. Schema spellings: "none", "relu" (checks.h parse_activation).
enum class Activation : int { None = 0, ReLU = 1 };

// Padding, dilation and pool kernel sizes past 2^31 - 1 can only describe an impossible output, and
// bounding them keeps the geometry arithmetic (H + 2 * pad, dil * (R - 1)) far from int64 overflow.
constexpr int64_t kMaxGeom = (int64_t{1} << 31) - 1;

// Output size of a convolution along one axis (floor mode), as PyTorch. Callers have checked that
// the dilated kernel fits the padded input, so the numerator is >= 0.
inline int64_t conv_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

// Output size of a pool along one axis, as PyTorch's pooling_output_shape: with ceil_mode the last
// window must start inside the input or the left padding. May be < 1 (the caller rejects that).
inline int64_t pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t num = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
  int64_t out = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

// A 2-d convolution. Input [N, C, H, W], weight [K, C/G, R, S], output [N, K, P, Q].
struct ConvGeom {
  int64_t N, C, H, W;
  int64_t K, R, S;
  int64_t P, Q;
  int64_t G;
  int64_t sh, sw, ph, pw, dh, dw;
  int64_t Cg() const { return C / G; }
  int64_t Kg() const { return K / G; }
};

// A 2-d max-pool. Input [N, C, H, W], output [N, C, P, Q].
struct PoolGeom {
  int64_t N, C, H, W;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t P, Q;
};

}  // namespace fastcnn
