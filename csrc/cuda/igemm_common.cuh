// Shared by the implicit-GEMM conv passes (igemm_fprop.cuh, igemm_wgrad.cuh): the tile
// configurations of both passes, and host helpers also used by the grad_bias reduction
// (conv2d_kernel.cu): the shared-memory attribute (set once), the 16-byte operand test, batch
// chunks below 2^31 GEMM rows, pointer offsets. Torch-free.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "cuda/common.cuh"

namespace fastcnn {
namespace cuda {
namespace igemm {

// ------------------------------------------------------------------------------------------------
// Configurations
// ------------------------------------------------------------------------------------------------
template <int BM_, int BN_, int WM_, int WN_, int STAGES_, int MIN_BLOCKS_ = 1>
struct TcCfg {
  static constexpr bool kTensorCore = true;
  static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_, STAGES = STAGES_;
  static constexpr int WARPS_M = BM / WM, WARPS_N = BN / WN;
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
  static constexpr int MIN_BLOCKS = MIN_BLOCKS_;  // register cap 65536 / (THREADS * MIN_BLOCKS)
  static constexpr int MI = WM / 16, NI = WN / 8;
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 16 == 0, "warp tiling");
};

template <int BM_, int BN_, int TM_, int TN_, int STAGES_, int MIN_BLOCKS_ = 1>
struct SimtCfg {
  static constexpr bool kTensorCore = false;
  static constexpr int BM = BM_, BN = BN_, TM = TM_, TN = TN_, STAGES = STAGES_;
  static constexpr int THREADS_M = BM / TM, THREADS_N = BN / TN;
  static constexpr int THREADS = THREADS_M * THREADS_N;
  static constexpr int MIN_BLOCKS = MIN_BLOCKS_;  // register cap 65536 / (THREADS * MIN_BLOCKS)
  // Warps are 4 (M) x 8 (N) threads: at a fixed k a warp reads 4 distinct A rows and 8 distinct B
  // rows, each group inside one aligned 8-row block -> distinct banks under either swizzle.
  static_assert(THREADS_M % 4 == 0 && THREADS_N % 8 == 0, "SIMT thread tiling");
};

// Tensor-core tiles for fprop/dgrad. TcL: 128x128 with 4 warps of 64x64 (CUTLASS's 128x128_32x4
// shape): 128 fp32 accumulators and up to 255 registers per thread, 2 CTAs/SM (64 KB of stages,
// 96 KB with the ReLU mask's), 32 MMAs per 8 ldmatrix.x4 per k-step. With 8 warps of 64x32 (16
// MMAs per 6 ldmatrix, 128-register cap for 2 CTAs/SM) the bf16 loop was 236 instructions per 32
// HMMA, 13.6% (sm_90 SASS; bench/results/sass_mainloop.csv, label precomputed-iterator).
// Narrower N tiles for layers with few output channels (64: ResNet layer1; 32: LeNet, grouped
// convs), where a 128-wide tile would be mostly padding.
using TcL = TcCfg<128, 128, 64, 64, 4, 2>;
using TcM = TcCfg<128, 64, 64, 32, 4, 4>;
using TcS = TcCfg<128, 32, 32, 32, 4>;
// CUDA-core tiles (exact fp32, fp64). fp32 8x8 per thread (16 shared loads per 64 FFMA): ~158
// registers, 1 CTA (8 warps) per SM; a 128-register cap for 2 CTAs/SM (MIN_BLOCKS = 2) spilled
// 160-244 bytes per thread, so it is left uncapped. fp64 4x4 per thread (2-register doubles).
using SimtFL = SimtCfg<128, 128, 8, 8, 3>;
using SimtFS = SimtCfg<128, 32, 8, 4, 3>;
using SimtDL = SimtCfg<64, 64, 4, 4, 3>;
using SimtDS = SimtCfg<64, 32, 4, 4, 3>;

// wgrad tiles (MN-major stages of BKP pixels).
template <int BM_, int BN_, int WM_, int WN_, int BKP_, int STAGES_>
struct WTcCfg {
  static constexpr bool kTensorCore = true;
  static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_, BKP = BKP_, STAGES = STAGES_;
  static constexpr int WARPS_M = BM / WM, WARPS_N = BN / WN;
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
  static constexpr int MI = WM / 16, NI = WN / 8;
  static_assert(BKP % 16 == 0, "k-steps of 16 pixels");
};
template <int BM_, int BN_, int TM_, int TN_, int BKP_, int STAGES_>
struct WSimtCfg {
  static constexpr bool kTensorCore = false;
  static constexpr int BM = BM_, BN = BN_, TM = TM_, TN = TN_, BKP = BKP_, STAGES = STAGES_;
  static constexpr int THREADS_M = BM / TM, THREADS_N = BN / TN;
  static constexpr int THREADS = THREADS_M * THREADS_N;
  static_assert(THREADS_M % 4 == 0 && THREADS_N % 8 == 0, "SIMT thread tiling");
};

// 16-bit: 128x128 (8 warps of 64x32) over 32 pixels per stage, 4 stages (64 KB + 32 KB mask);
// 64x128 for layers with <= 64 output channels per group.
using WTcL = WTcCfg<128, 128, 64, 32, 32, 4>;
using WTcS = WTcCfg<64, 128, 32, 64, 32, 4>;
// WTcS's tile for calls with both operands on the scalar loaders (NCHW or odd channels on both
// sides): the same 64x128x32 tile (the split plan and workspace are the tile's), 8 warps of 32x32,
// so the staged elements per thread halve -- on 4 warps that variant took 255 registers and
// spilled (sm_80: 68 spill instructions); here 172 registers, none.
using WTcSScalar = WTcCfg<64, 128, 32, 32, 32, 4>;
// fp32 under TF32: 128x128 (8 warps of 64x32) over 16 pixels per stage (two m16n8k8 k-steps),
// 3 stages: 48 KB, 72 KB with the mask's -- 2 CTAs/SM on sm_80 too.
using WTcF = WTcCfg<128, 128, 64, 32, 16, 3>;
using WSimtF = WSimtCfg<128, 64, 8, 4, 16, 3>;
using WSimtFS = WSimtCfg<64, 64, 4, 4, 16, 3>;
using WSimtD = WSimtCfg<64, 64, 4, 4, 8, 3>;

// ------------------------------------------------------------------------------------------------
// Host helpers
// ------------------------------------------------------------------------------------------------
// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) once per kernel and device (the attribute
// persists in the context; the call took ~1-2 us of host time on every launch). Returns false when
// it fails: the error is left for the launcher's cudaGetLastError check (FASTCNN_KERNEL_LAUNCH_CHECK
// raises it) and the caller skips the launch, which would fail less legibly.
template <typename Kernel>
bool allow_dynamic_smem(Kernel* kernel, int bytes) {
  if (bytes <= 48 * 1024) return true;
  int dev = 0;
#ifndef FASTCNN_SIMT
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
#endif
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int>* done = new std::map<std::pair<const void*, int>, int>();
  const std::pair<const void*, int> key(reinterpret_cast<const void*>(kernel), dev);
  std::lock_guard<std::mutex> lock(mu);
  const auto it = done->find(key);
  if (it != done->end() && it->second >= bytes) return true;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess) return false;
  (*done)[key] = bytes;
  return true;
}

// 16-byte accesses along channels are allowed for a [N, C, Y, X] tensor view.
template <typename T>
bool vec_ok(const void* ptr, const Strides4& s, int64_t channels) {
  constexpr int64_t E = 16 / int64_t(sizeof(T));
  return ptr != nullptr && (reinterpret_cast<uintptr_t>(ptr) & 15) == 0 && s.c == 1 && channels % E == 0 &&
         s.n % E == 0 && s.h % E == 0 && s.w % E == 0;
}

inline int64_t gcd64(int64_t a, int64_t b) {
  while (b) {
    const int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// Images per launch so that rows (images x pixels) stay below 2^31 with a tile of slack.
// (cuda-sim's tests force a few images per launch to run the chunk loops on small batches.)
inline int64_t images_per_chunk(int64_t rows_per_image) {
  const int64_t lim = (int64_t(1) << 31) - 1024;
  const int64_t nb = rows_per_image <= 0 ? 1 : (lim / rows_per_image > 0 ? lim / rows_per_image : 1);
  const int64_t forced = FASTCNN_PICK("conv_images", 0, 0);
  return forced > 0 && forced < nb ? forced : nb;
}

template <typename T>
const T* advance_ptr(const void* p, int64_t elems) {
  return p == nullptr ? nullptr : static_cast<const T*>(p) + elems;
}
template <typename T>
T* advance_ptr(void* p, int64_t elems) {
  return p == nullptr ? nullptr : static_cast<T*>(p) + elems;
}

}  // namespace igemm
}  // namespace cuda
}  // namespace fastcnn
