// Host-side helpers of the sm90 kernels (sm90_conv.cuh): TMA operand rules, the CUTLASS problem
// shape from fastcnn's conv struct, the Params cache, and the per-TU entry-point macros.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>

#include "cute/tensor.hpp"
#include "cutlass/conv/convnd_problem_shape.hpp"
#include "cutlass/conv/convolution.h"

#include "cuda/sm90/sm90_kernels.h"
#include "cuda/sm90_table.h"

namespace fastcnn {
namespace sm90 {

using namespace cute;

constexpr int64_t kInt32Max = 2147483647;
constexpr int64_t kTmaMaxStrideBytes = int64_t(1) << 40;  // cuTensorMapEncode: strides < 2^40 bytes

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline int current_device() {
  int dev = 0;
  return cudaGetDevice(&dev) == cudaSuccess ? dev : -1;
}

// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) once per device and kernel (`done`: one bit per
// device, a static of the caller's kernel). Not a stream operation, so also legal while a stream is
// being captured; doing it once keeps it off the hot path.
template <class KernelFn>
bool ensure_smem(KernelFn fn, int smem_bytes, std::atomic<uint64_t>& done) {
  const int dev = current_device();
  if (dev < 0) return false;
  const uint64_t bit = uint64_t(1) << (dev & 63);
  if (done.load(std::memory_order_acquire) & bit) return true;
  if (smem_bytes >= (48 << 10) &&
      cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes) != cudaSuccess)
    return false;
  done.fetch_or(bit, std::memory_order_acq_rel);
  return true;
}

// The TMA rules of one NHWC operand: channel stride 1, 16-byte aligned base and strides, strides
// under the descriptor limit.
inline bool tma_nhwc_ok(const void* p, const int64_t st[3], int64_t elem_bytes) {
  if (!p || !aligned16(p)) return false;
  for (int i = 0; i < 3; ++i)
    if (st[i] < 0 || (st[i] * elem_bytes) % 16 != 0 || st[i] * elem_bytes >= kTmaMaxStrideBytes) return false;
  return true;
}

// A fixed-size table of CUTLASS Params keyed by the call's (device, arguments). Lookup is a linear
// compare over a few hundred bytes: far below the few microseconds of descriptor encoding it saves.
template <class Params, int kWords, int kEntries = 16>
class ParamsCache {
 public:
  using Key = std::array<int64_t, kWords>;
  template <class Make>
  bool get(const Key& key, Params& out, Make&& make) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int i = 0; i < used_; ++i)
        if (keys_[i] == key) {
          out = params_[i];
          return true;
        }
    }
    if (!make(out)) return false;
    std::lock_guard<std::mutex> lock(mu_);
    const int slot = used_ < kEntries ? used_++ : (next_++ % kEntries);
    keys_[slot] = key;
    params_[slot] = out;
    return true;
  }

 private:
  std::mutex mu_;
  Key keys_[kEntries];
  Params params_[kEntries];
  int used_ = 0;
  unsigned next_ = 0;
};

// Appends words to a cache key; a key longer than its array makes the call fail (BAD_ARGS), never
// a write past the end (a truncated key could alias another problem's Params).
template <size_t N>
struct KeyWriter {
  std::array<int64_t, N>& key;
  size_t n = 0;
  void put(int64_t v) {
    if (n < N) key[n] = v;
    ++n;
  }
  void put(const void* p) { put(static_cast<int64_t>(reinterpret_cast<uintptr_t>(p))); }
  void put(const fastcnn_sm90_conv& s) {
    const int64_t v[] = {s.N, s.H, s.W, s.C, s.K, s.R, s.S, s.P, s.Q, s.pad_h, s.pad_w, s.pad_h_end, s.pad_w_end,
                         s.stride_h, s.stride_w, s.dil_h, s.dil_w, s.dtype};
    for (int64_t x : v) put(x);
  }
  bool ok() const { return n <= N; }
};

// Sizes CUTLASS's ConvProblemShape holds as int, and its own output size, must agree with ours.
inline bool shape_ok(const fastcnn_sm90_conv& s) {
  const int64_t v[] = {s.N, s.H, s.W, s.C, s.K, s.R, s.S, s.P, s.Q};
  for (int64_t x : v)
    if (x <= 0 || x > kInt32Max) return false;
  if (s.stride_h < 1 || s.stride_w < 1 || s.dil_h < 1 || s.dil_w < 1 || s.stride_h > kInt32Max ||
      s.stride_w > kInt32Max)
    return false;
  const int64_t pads[] = {s.pad_h, s.pad_w, s.pad_h_end, s.pad_w_end};
  for (int64_t p : pads)
    if (p < 0 || p > 256) return false;  // TMA im2col (the corners are checked by can_implement)
  const int64_t off_h = s.dil_h * (s.R - 1), off_w = s.dil_w * (s.S - 1);
  if (off_h >= 255 || off_w >= 255) return false;
  const int64_t span_h = s.H + s.pad_h + s.pad_h_end, span_w = s.W + s.pad_w + s.pad_w_end;
  if (span_h < off_h + 1 || span_w < off_w + 1) return false;
  if ((span_h - off_h - 1) / s.stride_h + 1 != s.P || (span_w - off_w - 1) / s.stride_w + 1 != s.Q) return false;
  // GEMM extents CUTLASS indexes with int32: pixels of either side, and the reduction of wgrad.
  if (s.N * s.P * s.Q > kInt32Max || s.N * s.H * s.W > kInt32Max || s.K * s.R * s.S * s.C > kInt32Max) return false;
  return true;
}

// ConvProblemShape from PyTorch-style sizes. act = the NHWC activation (x for fprop/wgrad, dx for
// dgrad) with strides act_st; xformed = the NPQK side (y for fprop, dy for dgrad/wgrad).
template <cutlass::conv::Operator Op>
cutlass::conv::ConvProblemShape<Op, 2> make_problem(const fastcnn_sm90_conv& s, const int64_t act_st[3],
                                                    const int64_t xformed_st[3]) {
  using PS = cutlass::conv::ConvProblemShape<Op, 2>;
  typename PS::TensorExtent shape_act{int(s.N), int(s.H), int(s.W), int(s.C)};
  typename PS::TensorStride stride_act{act_st[0], act_st[1], act_st[2], 1};
  typename PS::TensorExtent shape_flt{int(s.K), int(s.R), int(s.S), int(s.C)};
  typename PS::TensorStride stride_flt{s.R * s.S * s.C, s.S * s.C, s.C, 1};
  typename PS::TensorStride stride_xformed{xformed_st[0], xformed_st[1], xformed_st[2], 1};
  typename PS::ShapePadding pad{int(s.pad_h), int(s.pad_w)};
  typename PS::ShapePadding pad_end{int(s.pad_h_end), int(s.pad_w_end)};
  typename PS::TraversalStride tstride{int(s.stride_h), int(s.stride_w)};
  typename PS::ShapeDilation dil{int(s.dil_h), int(s.dil_w)};
  return PS(cutlass::conv::Mode::kCrossCorrelation, shape_act, stride_act, shape_flt, stride_flt, stride_xformed,
            pad, pad_end, tstride, dil, 1);
}

// The epilogue's NHWC stride ((w, h, n), 1, 0) set by hand: no make_cute_packed_stride overload
// takes general output strides for fprop/dgrad.
template <class Stride>
Stride nhwc_epilogue_stride(const int64_t st[3]) {
  Stride d{};
  get<0, 0>(d) = st[2];
  get<0, 1>(d) = st[1];
  get<0, 2>(d) = st[0];
  return d;
}

inline int32_t launch_status() {
  return cudaPeekAtLastError() == cudaSuccess ? FASTCNN_SM90_OK : FASTCNN_SM90_CUDA_ERROR;
}

}  // namespace sm90
}  // namespace fastcnn

// Facts of a TU's kernel as one string in the object's read-only data, read by tools/sm90_check.py:
// the dynamic shared memory a launch requests is a compile-time constant that the SASS does not show.
namespace fastcnn {
namespace sm90 {
struct KernelInfo {
  char text[160];
  constexpr KernelInfo(const char* tag, long long smem, long long threads, long long stages, long long tm,
                       long long tn, long long tk)
      : text() {
    int i = 0;
    auto put = [&](const char* s) {
      while (*s && i < 150) text[i++] = *s++;
    };
    auto num = [&](long long v) {
      char d[24] = {};
      int n = 0;
      do {
        d[n++] = char('0' + v % 10);
        v /= 10;
      } while (v && n < 20);
      while (n && i < 150) text[i++] = d[--n];
    };
    put("FASTCNN_SM90_INFO tu=");
    put(tag);
    put(" smem=");
    num(smem);
    put(" threads=");
    num(threads);
    put(" stages=");
    num(stages);
    put(" tile=");
    num(tm);
    put("x");
    num(tn);
    put("x");
    num(tk);
  }
};
}  // namespace sm90
}  // namespace fastcnn

#define FASTCNN_SM90_KERNEL_INFO(NAME, KERNEL)                                                                \
  extern "C" __attribute__((used)) const fastcnn::sm90::KernelInfo fastcnn_sm90_info_##NAME{                 \
      #NAME, KERNEL::SharedStorageSize, KERNEL::MaxThreadsPerBlock, KERNEL::DispatchPolicy::Stages,           \
      cute::size<0>(typename KERNEL::TileShape{}), cute::size<1>(typename KERNEL::TileShape{}),               \
      cute::size<2>(typename KERNEL::TileShape{})};

// One TU's entry points, C linkage, named fastcnn_sm90_<pass>_<tag>_<fn>; sm90_kernels.h declares them
// (a signature that drifts from the declaration is a compile error: C functions cannot overload).
#define FASTCNN_SM90_ENTRY_POINTS(PASS, TAG, IMPL, ARGS)                                                   \
  FASTCNN_SM90_KERNEL_INFO(PASS##_##TAG, IMPL::Kernel)                                                    \
  extern "C" int32_t fastcnn_sm90_##PASS##_##TAG##_can_implement(const ARGS* a) {                         \
    return IMPL::can_implement(a);                                                                        \
  }                                                                                                       \
  extern "C" int32_t fastcnn_sm90_##PASS##_##TAG##_workspace_bytes(const ARGS* a, size_t* bytes) {        \
    return IMPL::workspace_bytes(a, bytes);                                                               \
  }                                                                                                       \
  extern "C" int32_t fastcnn_sm90_##PASS##_##TAG##_run(const ARGS* a, void* ws, size_t ws_bytes,          \
                                                       struct CUstream_st* stream) {                      \
    return IMPL::run(a, ws, ws_bytes, stream);                                                            \
  }
