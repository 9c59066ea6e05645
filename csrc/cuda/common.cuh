// Torch-free helpers shared by the CUDA kernels of fastcnn.
//
// This header is included by the kernel files (.cu, compiled by nvcc) and, through the
// <op>_kernel.cuh interface headers, by the torch-aware launchers (.cpp, compiled by the host
// compiler). Everything that is device-only sits under FASTCNN_DEVICE_CODE: nvcc, and cuda-sim
// (FASTCNN_SIMT: the same kernels compiled by the host compiler against simt.h; its second bodies
// of the PTX wrappers below follow the PTX ISA, see ../shared/design/cuda-sim.md).
#pragma once

#ifdef FASTCNN_SIMT
#include "cuda/sim/simt.h"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__) || defined(FASTCNN_SIMT)
#define FASTCNN_DEVICE_CODE 1
#endif

// The three constructs a host compiler cannot parse. Under nvcc they expand to exactly the tokens
// they replace (the generated code is unchanged: ptxas reports the same resources); under cuda-sim
// a launch runs the CTAs on fibers and shared memory comes from the emulated CTA (0xFF-poisoned):
//   FASTCNN_LAUNCH(grid, block, smem, stream, kernel)(args...)  for  kernel<<<grid, block, smem, stream>>>(args...)
//   FASTCNN_DYNAMIC_SMEM(name)         for  extern __shared__ __align__(128) unsigned char name[]
//   FASTCNN_SHARED(type, name, dims)   for  __shared__ type name dims   (dims e.g. [8][33])
// FASTCNN_PICK(kind, choice, n) is a host-side dispatch choice among n (0: any value) that
// cuda-sim's tests can force, so every tile config and path is reached on small shapes; nvcc and
// the GPU build: (choice). Paths that need alignment are picked as `aligned && FASTCNN_PICK(.., 1, 2)`:
// a test can turn them off, never on.
#ifdef FASTCNN_SIMT
#define FASTCNN_LAUNCH(grid, block, smem, stream, ...) \
  ::fastcnn::simt::make_launch(grid, block, smem, stream, __VA_ARGS__, #__VA_ARGS__, FASTCNN_SIMT_HERE)
#define FASTCNN_DYNAMIC_SMEM(name) unsigned char* const name = ::fastcnn::simt::dynamic_smem()
#define FASTCNN_SHARED(type, name, dims) \
  type(&name) dims = *static_cast<type(*) dims>(::fastcnn::simt::static_smem(FASTCNN_SIMT_HERE, sizeof(type dims), alignof(type)))
#define FASTCNN_PICK(kind, choice, n) ::fastcnn::simt::pick(kind, choice, n)
#else
#define FASTCNN_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define FASTCNN_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#define FASTCNN_SHARED(type, name, dims) __shared__ type name dims
#define FASTCNN_PICK(kind, choice, n) (choice)
#endif

namespace fastcnn {
namespace cuda {

// Element strides of a logical [N, C, H, W] tensor (any memory format, views included).
struct Strides4 {
  int64_t n, c, h, w;
};

// Division by a run-time constant d >= 1 as a multiply and a shift: q = (n * m) >> s.
// Exact for every 0 <= n < 2^31 (m = ceil(2^s / d), s = 31 + ceil(log2 d): the rounding error of m,
// below d <= 2^(s-31), keeps n*m/2^s below floor(n/d) + 1). The launchers keep every divided index
// below 2^31 (batches are cut into chunks when N*P*Q would pass it). One IMAD.WIDE + shift instead
// of the ~20 instructions of an integer division, in loops that run once per tile per element.
struct FastDiv {
  uint32_t d;
  uint32_t s;
  uint64_t m;
};

inline FastDiv make_fastdiv(uint32_t d) {
  FastDiv f;
  f.d = d < 1 ? 1 : d;
  uint32_t l = 0;
  while ((uint64_t(1) << l) < f.d) ++l;
  f.s = 31 + l;
  f.m = ((uint64_t(1) << f.s) + f.d - 1) / f.d;
  return f;
}

inline int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool aligned16_host(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

#ifdef FASTCNN_DEVICE_CODE

__device__ __forceinline__ uint32_t fdiv(const FastDiv& f, uint32_t n) {
  return static_cast<uint32_t>((static_cast<uint64_t>(n) * f.m) >> f.s);
}

// ------------------------------------------------------------------------------------------------
// Numeric types: T is the storage type, acc_t the accumulation/epilogue type (float for the 16-bit
// types and float, double for double).
// ------------------------------------------------------------------------------------------------
template <typename T>
struct Num;

template <>
struct Num<float> {
  using acc_t = float;
  static __device__ __forceinline__ float to_acc(float v) { return v; }
  static __device__ __forceinline__ float from_acc(float v) { return v; }
};
template <>
struct Num<double> {
  using acc_t = double;
  static __device__ __forceinline__ double to_acc(double v) { return v; }
  static __device__ __forceinline__ double from_acc(double v) { return v; }
};
template <>
struct Num<__half> {
  using acc_t = float;
  static __device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_acc(float v) { return __float2half_rn(v); }
};
template <>
struct Num<__nv_bfloat16> {
  using acc_t = float;
  static __device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_acc(float v) { return __float2bfloat16_rn(v); }
};

template <typename T>
__device__ __forceinline__ typename Num<T>::acc_t to_acc(T v) {
  return Num<T>::to_acc(v);
}
template <typename T>
__device__ __forceinline__ T from_acc(typename Num<T>::acc_t v) {
  return Num<T>::from_acc(v);
}

// relu that keeps NaN (as torch.relu): NaN < 0 is false.
template <typename A>
__device__ __forceinline__ A relu_keep_nan(A v) {
  return v < A(0) ? A(0) : v;
}

// The ReLU backward mask of fastcnn: the gradient passes unless out <= 0 (NaN output passes, as
// torch's threshold_backward).
template <typename T>
__device__ __forceinline__ T relu_grad(T g, T out) {
  return to_acc(out) <= typename Num<T>::acc_t(0) ? from_acc<T>(typename Num<T>::acc_t(0)) : g;
}

// 16 bytes of T, for vectorised global accesses.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

// relu_grad over a 16-byte chunk. Packed halves (nvcc): one unordered greater-than mask per pair
// (0xFFFF where out > 0 or NaN, __hgtu2_mask) and an AND -- 2 instructions per pair where the
// compare is native (fp16; bf16 on sm_90) against ~9 through fp32 (SASS of the bf16 masked dgrad
// loop: 145 of its 372 instructions). cuda-sim runs the element-wise rule, which is the definition.
template <typename T>
__device__ __forceinline__ Vec16<T> relu_grad_chunk(Vec16<T> g, const Vec16<T>& o) {
#if !defined(FASTCNN_SIMT)
  if constexpr (std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value) {
    using T2 = typename std::conditional<std::is_same<T, __half>::value, __half2, __nv_bfloat162>::type;
    uint32_t* gw = reinterpret_cast<uint32_t*>(g.v);
    const T2* o2 = reinterpret_cast<const T2*>(o.v);
    const T2 zero = T2{};
#pragma unroll
    for (int i = 0; i < 4; ++i) gw[i] &= __hgtu2_mask(o2[i], zero);
  } else
#endif
  {
#pragma unroll
    for (int e = 0; e < Vec16<T>::N; ++e) g.v[e] = relu_grad(g.v[e], o.v[e]);
  }
  return g;
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// ------------------------------------------------------------------------------------------------
// cp.async (sm_80+): global -> shared without registers. cg = cache in L2 only (operands are
// streamed once per CTA; L1 would only evict the pipeline). src_bytes 0 zero-fills the 16 bytes
// without reading the source, which is how halo taps, tails and padding rows are produced; the
// source must still be a valid address, so callers pass the tensor base then.
// ------------------------------------------------------------------------------------------------
// cuda-sim (simt.cpp): the copy is deferred to the wait_group that retires its group and the
// destination reads as 0xFF until then; alignment and the shared window are checked at issue.
#ifndef FASTCNN_SIMT
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n) : "memory");
}

// The same, zero-filling unless (bits & mask) != 0: the test stays inside the asm, so ptxas makes
// it one predicate (LOP3.LUT P) -- from `valid ? 16 : 0` on a bit of a mask NVVM built a shift, an
// AND and a compare per chunk (KMajorLoader's validity bits).
__device__ __forceinline__ void cp_async16_bits(uint32_t dst, const void* src, uint32_t bits, uint32_t mask) {
  asm volatile(
      "{\n .reg .pred p;\n .reg .b32 t, n;\n and.b32 t, %2, %3;\n setp.ne.b32 p, t, 0;\n"
      " selp.b32 n, 16, 0, p;\n cp.async.cg.shared.global [%0], [%1], 16, n;\n}\n" ::"r"(dst),
      "l"(src), "r"(bits), "r"(mask)
      : "memory");
}

// x, as a value ptxas keeps in a register: near the register cap it recomputes values derived from
// the thread index (S2R + the swizzle arithmetic) at every use instead, ~40 instructions per tile
// in the 64x64-warp conv loop; a shuffle of a lane's own value (once, at kernel start, all lanes
// active) is not something it rematerialises.
__device__ __forceinline__ uint32_t pinned(uint32_t x) { return __shfl_sync(0xffffffffu, x, int(threadIdx.x & 31)); }

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#else
inline uint32_t smem_addr(const void* p, FASTCNN_SIMT_SITE_ARGS) { return simt::shared_addr(p, FASTCNN_SIMT_SITE); }

inline void cp_async16(uint32_t dst, const void* src, bool valid, FASTCNN_SIMT_SITE_ARGS) {
  simt::cp_async16(dst, src, valid ? 16 : 0, FASTCNN_SIMT_SITE);
}

inline void cp_async16_bits(uint32_t dst, const void* src, uint32_t bits, uint32_t mask, FASTCNN_SIMT_SITE_ARGS) {
  simt::cp_async16(dst, src, (bits & mask) != 0 ? 16 : 0, FASTCNN_SIMT_SITE);
}

inline uint32_t pinned(uint32_t x) { return x; }

inline void cp_async_commit(FASTCNN_SIMT_SITE_ARGS) { simt::cp_async_commit(FASTCNN_SIMT_SITE); }

template <int N>
inline void cp_async_wait(FASTCNN_SIMT_SITE_ARGS) {
  simt::cp_async_wait(N, FASTCNN_SIMT_SITE);
}
#endif

// ------------------------------------------------------------------------------------------------
// ldmatrix / mma.sync (sm_80+). Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16" and
// "mma.m16n8k8 .tf32"), g = lane / 4, t = lane % 4:
//   f16/bf16 m16n8k16: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//                       b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   tf32     m16n8k8 : a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4], a3 = A[g+8][t+4]
//                       b0 = B[t][g], b1 = B[t+4][g]
//   both             : c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
// ldmatrix.x4 (no .trans) hands lane L, for matrix i, the 32-bit word L%4 of row L/4 of matrix i,
// the rows of matrix i being addressed by lanes 8i..8i+7. A 16-row x 32-byte slab whose matrices are
// ordered (rows 0-7, bytes 0-15), (rows 8-15, bytes 0-15), (rows 0-7, bytes 16-31), (rows 8-15,
// bytes 16-31) therefore yields a0..a3 for both f16 (8 halves = 16 bytes) and tf32 (4 floats): the
// same addressing serves both. .trans hands lane L the 16-bit elements [2t][g] and [2t+1][g]: the
// fragment of an operand stored with its M (or N) dimension contiguous (used by wgrad, 16-bit only).
// ------------------------------------------------------------------------------------------------
#ifndef FASTCNN_SIMT
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                              uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

__device__ __forceinline__ uint32_t to_tf32(uint32_t bits) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(bits)));
  return r;
}
#else
inline void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                    FASTCNN_SIMT_SITE_ARGS) {
  uint32_t r[4];
  simt::ldmatrix_x4(addr, false, r, FASTCNN_SIMT_SITE);
  r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}

inline void ldsm_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                          FASTCNN_SIMT_SITE_ARGS) {
  uint32_t r[4];
  simt::ldmatrix_x4(addr, true, r, FASTCNN_SIMT_SITE);
  r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}

// cvt.rna.tf32.f32: round to 10 mantissa bits, to nearest, ties away from zero (adding half an ulp
// to the magnitude); NaN stays NaN (a payload in the low 13 bits alone would otherwise become inf).
inline uint32_t to_tf32(uint32_t bits) {
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) return 0x7fffffffu;
  return (bits + 0x1000u) & 0xffffe000u;
}
#endif

// Tensor-core traits per storage type: the mma instruction and the K it consumes per 32 bytes of
// a row (one k-step = 32 bytes = two 16-byte ldmatrix columns).
template <typename T>
struct Mma;

template <>
struct Mma<__half> {
  static __device__ __forceinline__ void prep(uint32_t (&)[4]) {}
  static __device__ __forceinline__ void prep_b(uint32_t (&)[2]) {}
#ifndef FASTCNN_SIMT
  static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], FASTCNN_SIMT_SITE_ARGS) {
    simt::mma(0, d, a, b, FASTCNN_SIMT_SITE);
  }
#endif
};

template <>
struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ void prep(uint32_t (&)[4]) {}
  static __device__ __forceinline__ void prep_b(uint32_t (&)[2]) {}
#ifndef FASTCNN_SIMT
  static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], FASTCNN_SIMT_SITE_ARGS) {
    simt::mma(1, d, a, b, FASTCNN_SIMT_SITE);
  }
#endif
};

// TF32: the operands stay fp32 in shared memory and are rounded (to nearest, ties away: cvt.rna,
// as cuBLAS/cuDNN) per fragment; passing raw fp32 bits would truncate instead (twice the error).
template <>
struct Mma<float> {
  static __device__ __forceinline__ void prep(uint32_t (&a)[4]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = to_tf32(a[i]);
  }
  static __device__ __forceinline__ void prep_b(uint32_t (&b)[2]) {
    b[0] = to_tf32(b[0]);
    b[1] = to_tf32(b[1]);
  }
#ifndef FASTCNN_SIMT
  static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  static void run(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], FASTCNN_SIMT_SITE_ARGS) {
    simt::mma(2, d, a, b, FASTCNN_SIMT_SITE);
  }
#endif
};

// ------------------------------------------------------------------------------------------------
// Shared-memory tile layouts, addressed in 16-byte chunks.
//
// K-major tile (fprop/dgrad operands): one row per GEMM row (M or N), 64 bytes of the GEMM K
// dimension per row = 4 chunks. Physical chunk = c ^ ((row >> 1) & 3). Why: with a plain 64-byte
// row pitch rows r and r+2 share banks, so an ldmatrix phase (8 rows, one chunk column) would be a
// 4-way conflict; with the XOR the 8 rows of any aligned group of 8 fall on 8 distinct 16-byte bank
// groups: (row & 1) picks the 64-byte half of the 128-byte bank window and (row >> 1) & 3 permutes
// the 4 chunks inside it. A quarter-warp of cp.async stores (2 rows x 4 chunks) is conflict-free too.
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ int kmajor_chunk(int row, int c) { return row * 4 + (c ^ ((row >> 1) & 3)); }

// MN-major tile (wgrad operands): one row per K index (pixel), ROWCH chunks of M (or N) per row,
// ROWCH a multiple of 8. Swizzled (tensor cores): physical chunk = c ^ (row & 7), so the 8
// consecutive rows an ldmatrix.trans phase reads (same logical chunk) land in 8 distinct bank
// groups; cp.async stores write 8 consecutive chunks of one row per quarter-warp, a permutation
// inside one 128-byte window. Unswizzled (CUDA cores): a warp reads one row at a time (4 or 8
// consecutive columns), conflict-free as is, and plain addressing keeps the per-k address
// arithmetic out of the registers.
template <int ROWCH, bool SWZ>
__device__ __forceinline__ int mnmajor_chunk(int row, int c) {
  static_assert(ROWCH % 8 == 0, "MN-major tiles need at least 8 chunks per row");
  return row * ROWCH + (SWZ ? (c ^ (row & 7)) : c);
}

#endif  // FASTCNN_DEVICE_CODE

}  // namespace cuda
}  // namespace fastcnn
