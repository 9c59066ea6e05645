// Implicit-GEMM convolution, fprop and dgrad: conv_kmajor_kernel (device code) and its host
// launch helpers (tile choice, stride phases, batch chunks), torch-free. Part of the igemm family
// (igemm.cuh); wgrad is igemm_wgrad.cuh, the tile configurations are in igemm_common.cuh.
// size: the kernel, its loader and math policies share the main loop's invariants (stated below).
//
// ================================================================================================
// fprop / dgrad: conv_kmajor_kernel  (C[M, N] = A[M, K] * B[N, K]^T, both operands K-contiguous)
// ================================================================================================
// One launch computes, for group g = group0 + blockIdx.z, a GEMM with
//   rows m < M      : pixels (n, yy, xx) of the output of this pass (fprop: (n, p, q); dgrad: the
//                     input pixels (n, h, w) of one stride phase, h = yo0 + yy*yo_mul),
//   cols n < Ngemm  : output channels of the group (fprop: K/G; dgrad: C/G),
//   K index kk      : tap (kr, ks) and channel c, kk = (kr*ns + ks)*cpad + c, c < a_cg valid.
// A[m, kk] = act[n, g*a_cg + c, ya0 + yy*ya_mul + kr*ya_kr, xa0 + xx*xa_mul + ks*xa_ks] (zero when
//   the coordinate leaves the tensor, c >= a_cg or kr >= nr), times the ReLU mask when dgrad has
//   an activation (mask[...] <= 0 -> 0, same coordinates/strides as act);
// B[n, kk] = packed weight row (g*Ngemm + n) at b_tap0 + kr*b_kr + ks*b_ks + c (zero padded).
// Epilogue: out[n, g*Ngemm + col, yo0 + yy*yo_mul, xo0 + xx*xo_mul] =
//   act(C + bias[g*Ngemm + col] + res[n, g*Ngemm + col, yy, xx]).
//
// Tiles: BM x BN outputs per CTA, BK = 64 bytes of K per stage (32 halves / 16 floats / 8 doubles),
// STAGES-deep cp.async ring (4 for tensor cores: ~3 tiles of loads in flight cover the ~600-800
// cycle global latency at 2 CTAs/SM). Tensor cores: warps of WM x WN (mma m16n8k16 f16/bf16,
// m16n8k8 tf32), fragments by ldmatrix.x4 from swizzled K-major tiles (common.cuh). CUDA cores:
// TM x TN outputs per thread, scalar shared loads, FFMA/DFMA.
//
// Operand loads:
//  * vector path (kVecA): each thread owns fixed 16-byte chunk slots (row = tid/4 + i*THREADS/4,
//    column tid%4), so its chunk column -- hence its K decomposition (kc, ks, kr) -- is shared by
//    all its A and B chunks and advances incrementally by BK per tile (no division in the loop).
//    Needs channels-contiguous activations with 16-byte aligned pixel rows and a_cg % 8-ish.
//  * scalar path (!kVecA: odd channel counts, NCHW, misaligned views): each thread owns one fixed
//    row (tid % BM) and K columns tid/BM + j*THREADS/BM; elements are loaded into registers before
//    the MMAs of the current stage and stored to shared memory after them (latency hidden behind
//    one stage of math). Consecutive threads take consecutive rows: coalesced along W for NCHW.
//  * B (packed weights, 16-byte aligned rows, zero-padded channels) always uses cp.async.
//  * pooled (kPool, conv1x1_into with a max pool; 1x1 only): each A element / chunk is the max over
//    its pool window (-inf padding, NaN wins), loaded to registers and stored after the MMAs as in
//    the scalar path; the pooled tensor never exists.
// Epilogue destinations: out/os, or (conv1x1_into, nseg > 0) per column segment its own pointer,
// strides and ReLU flag (epilogue_store_segs).
//
// Pipeline invariants (per iteration kt, stage s = kt % STAGES):
//   wait_group<STAGES-2>  -> this thread's copies of tile kt have landed;
//   mask own chunks       -> (dgrad + ReLU, vector path) each thread zeroes the gradient elements of
//                            the chunks it copied itself (its own cp.async writes are visible to it
//                            after the wait), using the forward output copied alongside;
//   __syncthreads         -> tile kt (all threads' copies/masks/register stores) visible, and every
//                            thread has finished the MMAs of tile kt-1, whose stage is refilled next;
//   issue tile kt+STAGES-1 into stage (kt-1) % STAGES, commit (an empty group when past the end,
//                            so the group count stays uniform);
//   MMAs on stage s; scalar path: store the registers of tile kt+STAGES-1.
// After the loop: wait_group<0> + __syncthreads before the epilogue reuses the ring as C tile.
#pragma once

#include <climits>
#include <limits>

#include "cuda/common.cuh"
#include "cuda/conv2d_kernel.cuh"
#include "cuda/igemm_common.cuh"

namespace fastcnn {
namespace cuda {
namespace igemm {

// ------------------------------------------------------------------------------------------------
// Parameters of one implicit-GEMM launch (filled by the host helpers below). All row indices are
// < 2^31 (the host cuts the batch into chunks), all memory offsets are int64.
// ------------------------------------------------------------------------------------------------
struct GemmParams {
  int M, Ngemm, Kgemm;
  int group0;
  int rY, rX;
  FastDiv fd_rX, fd_rYX;
  // A operand
  const void* a;
  Strides4 as;
  const void* mask;  // same strides as a, or null
  int aY, aX;
  int a_cg;
  int cpad;
  FastDiv fd_cpad;
  int nr, ns;
  FastDiv fd_ns;
  int ya0, ya_mul, ya_kr;
  int xa0, xa_mul, xa_ks;
  // B operand
  const void* b;
  int64_t ldb, b_tap0, b_kr, b_ks;
  // vector path: byte increments of the A/B tap offsets when the tap moves one step along S
  // (channel wrap included) and, on top, when S wraps into the next R (tap_increments)
  int64_t a_inc_s, a_inc_r, b_inc_s, b_inc_r;
  // epilogue
  void* out;
  Strides4 os;
  int yo0, yo_mul, xo0, xo_mul;
  const void* bias;
  const void* res;
  Strides4 rs;
  bool relu;
  bool out_vec, res_vec;
  int ntiles_n;
  // conv1x1_into (nseg > 0): column segments routed to their own outputs (replace out/os/relu);
  // pool (pkh > 0, k1x1 only): A[m, c] is the max over the pkh x pkw window at (ya0 + yy*ya_mul,
  // xa0 + xx*xa_mul), -inf outside the input.
  int nseg;
  struct Seg {
    void* out;
    Strides4 os;
    int end;  // one past its last column
    bool relu;
    bool vec;  // 16-byte stores: aligned, channels-contiguous, first column a multiple of the vector
  } seg[kMaxOutSegs];
  int pkh, pkw;
};

constexpr int kInvalidCoord = INT_MIN / 4;  // a row coordinate that stays out of range after taps

// Dynamic shared memory of conv_kmajor_kernel.
template <typename T, typename Cfg>
int kmajor_smem_bytes(bool mask) {
  using A = typename Num<T>::acc_t;
  const int pipe = Cfg::STAGES * (Cfg::BM + Cfg::BN + (mask ? Cfg::BM : 0)) * 64;
  const int ld_n = Cfg::BN + 8, ld_m = Cfg::BM + 8;
  const int ctile = (Cfg::BM * ld_n > Cfg::BN * ld_m ? Cfg::BM * ld_n : Cfg::BN * ld_m) * int(sizeof(A));
  return (pipe > ctile ? pipe : ctile) + 2 * Cfg::BM * int(sizeof(int64_t));
}

// ------------------------------------------------------------------------------------------------
// K-major operand loader (fprop/dgrad)
// ------------------------------------------------------------------------------------------------
template <typename T, int BM, int BN, int THREADS, bool kVecA, bool k1x1, bool kMask, bool kPool = false>
struct KMajorLoader {
  static constexpr int EPC = 16 / int(sizeof(T));  // elements per 16-byte chunk
  static constexpr int BKE = 64 / int(sizeof(T));  // K elements per tile
  static constexpr int A_CH = BM * 4 / THREADS;    // A chunks per thread (vector path)
  static constexpr int B_CH = (BN * 4 + THREADS - 1) / THREADS;
  static constexpr int A_EL = BM * BKE / THREADS;  // A elements per thread (scalar path)
  static constexpr int ROW_STEP = THREADS / 4;
  static_assert((BM * 4) % THREADS == 0 && A_CH >= 1, "A chunk slots");
  static_assert(THREADS % BM == 0, "scalar path: one fixed row per thread");
  // Rows ROW_STEP apart share the swizzle term (row >> 1) & 3: a thread's chunk i sits at
  // dst + i * ROW_STEP * 64 bytes of a stage (one precomputed offset, the rest immediates).
  static_assert(ROW_STEP % 8 == 0, "chunk rows share the swizzle");

  // Precomputed iterator (CUTLASS's idea). Vector path, per thread: one byte pointer per A chunk
  // row, already at the current tap and channel, one B pointer (its rows are ROW_STEP * ldb apart),
  // and per A row the taps that stay inside the input as bitmasks (tap_ok: bit r for R, bit
  // 16 + s for S, CUTLASS's filter masks). A tile is per chunk a 64-bit add, a predicate and a
  // cp.async; a tap change adds the host's increments (tap_increments) and tests each row's
  // bitmask against the tap's two bits. Every offset stays 64-bit.
  // Before (row offsets + tap offset recombined and bounds-checked per chunk per tile, 8 warps of
  // 64x32): bf16 TcL loop 236 instructions per 32 HMMA (sm_90, bench/results/sass_mainloop.csv).
  static constexpr int kMaxTaps = 16;  // per filter dimension (the host takes the scalar path beyond)
  int col;          // this thread's chunk column (0..3)
  int kc, ks, kr;   // K decomposition of the chunk column at the next tile to load
  uint32_t ok;      // bit i: A chunk i loads at this tap; bit A_CH + i: B chunk i
  uint32_t b_rows;  // bit A_CH + i: B row i exists (constant)
  uint32_t dst;     // byte offset of this thread's first chunk in a stage
  // vector path: per A chunk row, its pointer at the next tile (outside the tensor when the tap
  // lies in the padding; never dereferenced there) and its tap bitmask (0: no such row)
  const unsigned char* a_ptr[kVecA ? A_CH : 1];
  uint32_t tap_ok[kVecA ? A_CH : 1];
  int a_y[kPool ? A_CH : 1], a_x[kPool ? A_CH : 1];  // pooled: the window origins
  const unsigned char* b_ptr;                        // B row 0 at the next tile
  // scalar path: this thread's single row, and the staged elements
  int64_t s_base;
  int s_y, s_x;
  T regs[kVecA ? 1 : A_EL];
  Vec16<T> vregs[kVecA && kPool ? A_CH : 1];  // pooled vector path: the chunks, staged like regs

  // Pixel decomposition of row m (< M) into its A base offset and first tap coordinates.
  __device__ __forceinline__ void row_info(const GemmParams& p, int m, int g, int64_t& base, int& y, int& x) const {
    if (m >= p.M) {
      base = 0;
      y = kInvalidCoord;
      x = kInvalidCoord;
      return;
    }
    const uint32_t n = fdiv(p.fd_rYX, uint32_t(m));
    const uint32_t rem = uint32_t(m) - n * uint32_t(p.rY * p.rX);
    const uint32_t yy = fdiv(p.fd_rX, rem);
    const uint32_t xx = rem - yy * uint32_t(p.rX);
    base = int64_t(n) * p.as.n + int64_t(g) * p.a_cg * p.as.c;
    y = p.ya0 + int(yy) * p.ya_mul;
    x = p.xa0 + int(xx) * p.xa_mul;
  }

  __device__ __forceinline__ void init(const GemmParams& p, int m0, int n0, int g, int tid) {
    col = tid & 3;
    const int kk0 = col * EPC;
    kc = kk0 % p.cpad;
    const int j = kk0 / p.cpad;
    ks = p.ns > 0 ? j % p.ns : 0;
    kr = p.ns > 0 ? j / p.ns : 0;
    if constexpr (kVecA) {
      const unsigned char* a = static_cast<const unsigned char*>(p.a);
      const int64_t tap = int64_t(kr) * p.ya_kr * p.as.h + int64_t(ks) * p.xa_ks * p.as.w + kc;
#pragma unroll
      for (int i = 0; i < A_CH; ++i) {
        const int row = (tid >> 2) + i * ROW_STEP;
        int64_t base;
        int y, x;
        row_info(p, m0 + row, g, base, y, x);
        uint32_t bits = 0;
        if (y != kInvalidCoord) {
          base += int64_t(y) * p.as.h + int64_t(x) * p.as.w;
          if (k1x1 || kPool) {  // 1x1 without padding / pooled: the row's only tap is always loaded
            bits = 1u | (1u << kMaxTaps);
          } else {
            for (int r = 0; r < p.nr; ++r) bits |= uint32_t(unsigned(y + r * p.ya_kr) < unsigned(p.aY)) << r;
            for (int t = 0; t < p.ns; ++t) bits |= uint32_t(unsigned(x + t * p.xa_ks) < unsigned(p.aX)) << (kMaxTaps + t);
          }
        }
        tap_ok[i] = bits;
        if constexpr (kPool) {
          a_y[i] = y;
          a_x[i] = x;
        }
        a_ptr[i] = a + (base + tap) * int64_t(sizeof(T));
      }
    } else {
      row_info(p, m0 + tid % BM, g, s_base, s_y, s_x);
    }
    b_rows = 0;
#pragma unroll
    for (int i = 0; i < B_CH; ++i) {
      const int row = (tid >> 2) + i * ROW_STEP;
      b_rows |= uint32_t(row < BN && n0 + row < p.Ngemm) << (A_CH + i);
    }
    b_ptr = static_cast<const unsigned char*>(p.b) +
            ((int64_t(g) * p.Ngemm + n0 + (tid >> 2)) * p.ldb + p.b_tap0 + int64_t(kr) * p.b_kr +
             int64_t(ks) * p.b_ks + kc) * int64_t(sizeof(T));
    b_rows = pinned(b_rows);
    dst = pinned(uint32_t(kmajor_chunk(tid >> 2, col) * 16));
    set_ok(p);
  }

  // The chunks' validity at the current tap (vector path; the scalar path checks per element).
  __device__ __forceinline__ void set_ok(const GemmParams& p) {
    if (kr >= p.nr) {  // past the last tap (a K tail): zero fill
      ok = 0;
      return;
    }
    uint32_t v = b_rows;
    if constexpr (kVecA) {
      const uint32_t sel = (1u << kr) | (1u << (kMaxTaps + ks));
#pragma unroll
      for (int i = 0; i < A_CH; ++i) v |= uint32_t((tap_ok[i] & sel) == sel) << i;
    }
    ok = v;
  }

  __device__ __forceinline__ void step_a(int64_t d) {
    if constexpr (kVecA) {
#pragma unroll
      for (int i = 0; i < A_CH; ++i) a_ptr[i] += d;
    }
  }

  // Next tile: BKE further along the channels of the tap; past cpad, the next tap(s), by the
  // host's increments (one tile may cross several taps when cpad < BKE).
  __device__ __forceinline__ void advance(const GemmParams& p) {
    kc += BKE;
    step_a(64);
    b_ptr += 64;
    if (kc >= p.cpad) {
      do {
        kc -= p.cpad;
        int64_t da = p.a_inc_s, db = p.b_inc_s;
        if (++ks == p.ns) {
          ks = 0;
          ++kr;
          da += p.a_inc_r;
          db += p.b_inc_r;
        }
        step_a(da);
        b_ptr += db;
      } while (kc >= p.cpad);
      set_ok(p);
    }
  }

  // B chunks of the next tile -> the stage at shared address sB (cp.async).
  __device__ __forceinline__ void load_b(const GemmParams& p, uint32_t sB, int tid) const {
    const uint32_t s = sB + dst;
    const int64_t rs = int64_t(ROW_STEP) * p.ldb * int64_t(sizeof(T));
#pragma unroll
    for (int i = 0; i < B_CH; ++i) {
      const int row = (tid >> 2) + i * ROW_STEP;
      if (B_CH * THREADS > BN * 4 && row >= BN) break;
      cp_async16_bits(s + uint32_t(i * ROW_STEP * 64), b_ptr + i * rs, ok, 1u << (A_CH + i));
    }
  }

  // Vector path: A chunks (and the mask's, at the same offsets from p.mask) of the next tile ->
  // stage (cp.async).
  __device__ __forceinline__ void load_a_async(const GemmParams& p, uint32_t sA, uint32_t sM) const {
    const uint32_t sa = sA + dst;
    [[maybe_unused]] const uint32_t sm = sM + dst;
    [[maybe_unused]] const int64_t mdelta =
        kMask ? static_cast<const unsigned char*>(p.mask) - static_cast<const unsigned char*>(p.a) : 0;
#pragma unroll
    for (int i = 0; i < A_CH; ++i) {
      const uint32_t d = uint32_t(i * ROW_STEP * 64);
      cp_async16_bits(sa + d, a_ptr[i], ok, 1u << i);
      if constexpr (kMask) cp_async16_bits(sm + d, a_ptr[i] + mdelta, ok, 1u << i);
    }
  }

  // Vector path, ReLU mask: zero the gradient where the forward output is <= 0, in the chunks
  // this thread copied itself (after its wait_group, before the CTA barrier).
  __device__ __forceinline__ void mask_own(unsigned char* sA, const unsigned char* sM) const {
#pragma unroll
    for (int i = 0; i < A_CH; ++i) {
      const int d = int(dst) + i * ROW_STEP * 64;
      const Vec16<T> gv = *reinterpret_cast<const Vec16<T>*>(sA + d);
      const Vec16<T> ov = *reinterpret_cast<const Vec16<T>*>(sM + d);
      *reinterpret_cast<Vec16<T>*>(sA + d) = relu_grad_chunk(gv, ov);
    }
  }

  // max_pool2d's rule: larger, or NaN (a NaN anywhere in the window gives NaN).
  template <typename A>
  __device__ __forceinline__ static A pool_max(A m, A v) {
    return (v > m || v != v) ? v : m;
  }

  // Pooled element: the max over the window whose origin (y, x) is at offset off (-inf padding).
  __device__ __forceinline__ T pooled(const GemmParams& p, const T* a, int64_t off, int y, int x) const {
    using A = typename Num<T>::acc_t;
    A m = -std::numeric_limits<A>::infinity();
    for (int wy = 0; wy < p.pkh; ++wy) {
      if (unsigned(y + wy) >= unsigned(p.aY)) continue;
      for (int wx = 0; wx < p.pkw; ++wx)
        if (unsigned(x + wx) < unsigned(p.aX)) m = pool_max(m, to_acc(a[off + int64_t(wy) * p.as.h + int64_t(wx) * p.as.w]));
    }
    return from_acc<T>(m);
  }

  // Pooled vector path: A chunks of the next tile -> registers, each the elementwise max of the
  // window's 16-byte chunks (zero for padding rows and past the last tap, as cp.async's zero fill).
  __device__ __forceinline__ void load_a_pool_vec(const GemmParams& p) {
    using A = typename Num<T>::acc_t;
#pragma unroll
    for (int i = 0; i < A_CH; ++i) {
      Vec16<T> r;
      if ((ok & (1u << i)) == 0) {
#pragma unroll
        for (int e = 0; e < EPC; ++e) r.v[e] = from_acc<T>(A(0));
      } else {
        A m[EPC];
#pragma unroll
        for (int e = 0; e < EPC; ++e) m[e] = -std::numeric_limits<A>::infinity();
        const T* src = reinterpret_cast<const T*>(a_ptr[i]);
        for (int wy = 0; wy < p.pkh; ++wy) {
          if (unsigned(a_y[i] + wy) >= unsigned(p.aY)) continue;
          for (int wx = 0; wx < p.pkw; ++wx) {
            if (unsigned(a_x[i] + wx) >= unsigned(p.aX)) continue;
            const Vec16<T> v = *reinterpret_cast<const Vec16<T>*>(src + int64_t(wy) * p.as.h + int64_t(wx) * p.as.w);
#pragma unroll
            for (int e = 0; e < EPC; ++e) m[e] = pool_max(m[e], to_acc(v.v[e]));
          }
        }
#pragma unroll
        for (int e = 0; e < EPC; ++e) r.v[e] = from_acc<T>(m[e]);
      }
      vregs[i] = r;
    }
  }

  __device__ __forceinline__ void store_a_pool_vec(unsigned char* sA) const {
#pragma unroll
    for (int i = 0; i < A_CH; ++i) *reinterpret_cast<Vec16<T>*>(sA + dst + i * ROW_STEP * 64) = vregs[i];
  }

  // Scalar path: A elements of the tile starting at K index k0 -> registers (masked).
  __device__ __forceinline__ void load_a_regs(const GemmParams& p, int k0, int tid) {
    const T* a = static_cast<const T*>(p.a);
    [[maybe_unused]] const T* mk = static_cast<const T*>(p.mask);
    constexpr int KSTEP = THREADS / BM;
#pragma unroll
    for (int e = 0; e < A_EL; ++e) {
      const int kk = k0 + tid / BM + e * KSTEP;
      const uint32_t j = fdiv(p.fd_cpad, uint32_t(kk));
      const int c = kk - int(j) * p.cpad;
      const uint32_t r = fdiv(p.fd_ns, j);
      const int s = int(j) - int(r) * p.ns;
      const int y = s_y + int(r) * p.ya_kr, x = s_x + s * p.xa_ks;
      // Pooled: (y, x) is the window's origin, which may lie in the padding.
      const bool ok = int(r) < p.nr && c < p.a_cg &&
                      (kPool ? s_y != kInvalidCoord : unsigned(y) < unsigned(p.aY) && unsigned(x) < unsigned(p.aX));
      T v = from_acc<T>(typename Num<T>::acc_t(0));
      if (ok) {
        const int64_t off = s_base + int64_t(y) * p.as.h + int64_t(x) * p.as.w + int64_t(c) * p.as.c;
        if constexpr (kPool)
          v = pooled(p, a, off, y, x);
        else
          v = a[off];
        if constexpr (kMask) v = relu_grad(v, mk[off]);
      }
      regs[e] = v;
    }
  }

  __device__ __forceinline__ void store_a_regs(unsigned char* sA, int tid) const {
    constexpr int KSTEP = THREADS / BM;
    const int row = tid % BM;
#pragma unroll
    for (int e = 0; e < A_EL; ++e) {
      const int kcol = tid / BM + e * KSTEP;
      *reinterpret_cast<T*>(sA + kmajor_chunk(row, kcol / EPC) * 16 + (kcol % EPC) * int(sizeof(T))) = regs[e];
    }
  }
};

// ------------------------------------------------------------------------------------------------
// Math policies on K-major stages
// ------------------------------------------------------------------------------------------------
template <typename T, typename Cfg>
struct TcMathK {
  static constexpr int MI = Cfg::MI, NI = Cfg::NI;
  float acc[MI][NI][4];
  // This lane's ldmatrix row chunks in a stage at k-step 0 (bytes). Rows 16 apart share the
  // swizzle (+1024 bytes, an immediate); k-step 1 is chunk column bit 1, i.e. byte-address bit 5,
  // which row * 64 and the stage bases leave clear: offset ^ 32. (Recomputed from the thread index
  // every tile before: S2R + the swizzle in every loop.)
  uint32_t a_ld, b_ld;

  __device__ __forceinline__ void init(int tid) {
    const int lane = tid & 31, warp = tid >> 5;
    const int wm0 = (warp / Cfg::WARPS_N) * Cfg::WM, wn0 = (warp % Cfg::WARPS_N) * Cfg::WN;
    a_ld = pinned(uint32_t(kmajor_chunk(wm0 + (lane & 15), lane >> 4) * 16));
    b_ld = pinned(uint32_t(kmajor_chunk(wn0 + (lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1) * 16));
  }

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
  }

  // (sA, sB: the stage as pointers; a_s, b_s: as shared addresses, converted once per kernel)
  __device__ __forceinline__ void compute(const unsigned char*, const unsigned char*, uint32_t a_s, uint32_t b_s, int) {
#pragma unroll
    for (int kst = 0; kst < 2; ++kst) {  // two 32-byte k-steps per 64-byte stage
      uint32_t af[MI][4], bf[NI][2];
      const uint32_t ka = a_s + (a_ld ^ uint32_t(kst * 32)), kb = b_s + (b_ld ^ uint32_t(kst * 32));
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        ldsm_x4(ka + uint32_t(mi * 16 * 64), af[mi][0], af[mi][1], af[mi][2], af[mi][3]);
        Mma<T>::prep(af[mi]);
      }
#pragma unroll
      for (int nj = 0; nj < NI / 2; ++nj) {
        ldsm_x4(kb + uint32_t(nj * 16 * 64), bf[2 * nj][0], bf[2 * nj][1], bf[2 * nj + 1][0], bf[2 * nj + 1][1]);
        Mma<T>::prep_b(bf[2 * nj]);
        Mma<T>::prep_b(bf[2 * nj + 1]);
      }
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) Mma<T>::run(acc[mi][ni], af[mi], bf[ni]);
    }
  }

  // acc -> C tile: element (row, col) at cs[mk ? col*ld_m + row : row*ld_n + col].
  template <typename A>
  __device__ __forceinline__ void store(A* cs, bool mk, int ld_n, int ld_m, int tid) const {
    const int lane = tid & 31, warp = tid >> 5;
    const int wm0 = (warp / Cfg::WARPS_N) * Cfg::WM, wn0 = (warp % Cfg::WARPS_N) * Cfg::WN;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = wm0 + mi * 16 + (lane >> 2) + (e >> 1) * 8;
          const int col = wn0 + ni * 8 + (lane & 3) * 2 + (e & 1);
          cs[mk ? col * ld_m + row : row * ld_n + col] = acc[mi][ni][e];
        }
  }
};

template <typename T, typename Cfg>
struct SimtMathK {
  using A = typename Num<T>::acc_t;
  static constexpr int TM = Cfg::TM, TN = Cfg::TN;
  A acc[TM][TN];

  __device__ __forceinline__ void init(int) {}

  __device__ __forceinline__ static void coords(int tid, int& tm, int& tn) {
    const int lane = tid & 31, warp = tid >> 5;
    constexpr int NWN = Cfg::THREADS_N / 8;
    tm = (warp / NWN) * 4 + (lane >> 3);
    tn = (warp % NWN) * 8 + (lane & 7);
  }

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = A(0);
  }

  // The thread's rows are tm + i*THREADS_M with THREADS_M % 8 == 0, so they share the swizzle
  // term (row >> 1) & 3 (likewise for B): one XOR per chunk column, the rows are immediate offsets.
  // (Addressing each (row, k) element separately made ptxas hoist 256 addresses: 254 registers.)
  __device__ __forceinline__ void compute(const unsigned char* sA, const unsigned char* sB, uint32_t, uint32_t, int tid) {
    static_assert(Cfg::THREADS_M % 8 == 0 && Cfg::THREADS_N % 8 == 0, "shared swizzle term");
    constexpr int EPC = 16 / int(sizeof(T));
    constexpr int ROW = 64 / int(sizeof(T));  // elements per K-major row
    int tm, tn;
    coords(tid, tm, tn);
    const unsigned char* a_row = sA + tm * 64;
    const unsigned char* b_row = sB + tn * 64;
    const int swa = (tm >> 1) & 3, swb = (tn >> 1) & 3;
#pragma unroll
    for (int kc = 0; kc < 4; ++kc) {
      const T* a = reinterpret_cast<const T*>(a_row + ((kc ^ swa) << 4));
      const T* b = reinterpret_cast<const T*>(b_row + ((kc ^ swb) << 4));
#pragma unroll
      for (int w = 0; w < EPC; ++w) {
        A av[TM], bv[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) av[i] = to_acc(a[i * Cfg::THREADS_M * ROW + w]);
#pragma unroll
        for (int j = 0; j < TN; ++j) bv[j] = to_acc(b[j * Cfg::THREADS_N * ROW + w]);
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
      }
    }
  }

  __device__ __forceinline__ void store(A* cs, bool mk, int ld_n, int ld_m, int tid) const {
    int tm, tn;
    coords(tid, tm, tn);
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int row = tm + i * Cfg::THREADS_M, col = tn + j * Cfg::THREADS_N;
        cs[mk ? col * ld_m + row : row * ld_n + col] = acc[i][j];
      }
  }
};

template <typename T, typename Cfg, bool TC = Cfg::kTensorCore>
struct MathK;
template <typename T, typename Cfg>
struct MathK<T, Cfg, true> {
  using type = TcMathK<T, Cfg>;
};
template <typename T, typename Cfg>
struct MathK<T, Cfg, false> {
  using type = SimtMathK<T, Cfg>;
};

// ------------------------------------------------------------------------------------------------
// Epilogue: C tile (shared, acc type) -> act(C + bias + residual) -> out, with the row offsets
// computed once per row. Channels-contiguous outputs (NHWC) go by 16-byte chunks along N when
// aligned; other layouts (NCHW) go element-wise with consecutive threads on consecutive rows
// (coalesced along W there), reading the C tile transposed (mk) to stay conflict-free.
// ------------------------------------------------------------------------------------------------
template <typename T, int BM, int BN, int THREADS>
__device__ __forceinline__ void epilogue_store(const GemmParams& p, const typename Num<T>::acc_t* cs, bool mk,
                                               const int64_t* row_out, const int64_t* row_res, int m0, int n0,
                                               int g, int tid) {
  using A = typename Num<T>::acc_t;
  constexpr int EV = 16 / int(sizeof(T));
  constexpr int ld_n = BN + 8, ld_m = BM + 8;
  T* out = static_cast<T*>(p.out);
  const T* bias = static_cast<const T*>(p.bias);
  const T* res = static_cast<const T*>(p.res);
  const int64_t ch0 = int64_t(g) * p.Ngemm;
  if (!mk) {
    constexpr int CPR = BN / EV;
    for (int id = tid; id < BM * CPR; id += THREADS) {
      const int ml = id / CPR, nl = (id % CPR) * EV;
      const int n = n0 + nl;
      if (m0 + ml >= p.M || n >= p.Ngemm) continue;
      A v[EV];
#pragma unroll
      for (int e = 0; e < EV; ++e) v[e] = cs[ml * ld_n + nl + e];
      const int nv = p.Ngemm - n < EV ? p.Ngemm - n : EV;  // valid elements of this chunk
      if (bias != nullptr) {
#pragma unroll
        for (int e = 0; e < EV; ++e)
          if (e < nv) v[e] += to_acc(bias[ch0 + n + e]);
      }
      if (res != nullptr) {
        const int64_t ro = row_res[ml] + (ch0 + n) * p.rs.c;
        if (p.res_vec) {
          const Vec16<T> rv = *reinterpret_cast<const Vec16<T>*>(res + ro);
#pragma unroll
          for (int e = 0; e < EV; ++e) v[e] += to_acc(rv.v[e]);
        } else {
#pragma unroll
          for (int e = 0; e < EV; ++e)
            if (e < nv) v[e] += to_acc(res[ro + e * p.rs.c]);
        }
      }
      if (p.relu) {
#pragma unroll
        for (int e = 0; e < EV; ++e) v[e] = relu_keep_nan(v[e]);
      }
      const int64_t oo = row_out[ml] + (ch0 + n) * p.os.c;
      if (p.out_vec) {
        Vec16<T> ov;
#pragma unroll
        for (int e = 0; e < EV; ++e) ov.v[e] = from_acc<T>(v[e]);
        *reinterpret_cast<Vec16<T>*>(out + oo) = ov;
      } else {
#pragma unroll
        for (int e = 0; e < EV; ++e)
          if (e < nv) out[oo + e * p.os.c] = from_acc<T>(v[e]);
      }
    }
  } else {
    for (int id = tid; id < BM * BN; id += THREADS) {
      const int ml = id % BM, nl = id / BM;
      const int n = n0 + nl;
      if (m0 + ml >= p.M || n >= p.Ngemm) continue;
      A v = cs[nl * ld_m + ml];
      if (bias != nullptr) v += to_acc(bias[ch0 + n]);
      if (res != nullptr) v += to_acc(res[row_res[ml] + (ch0 + n) * p.rs.c]);
      if (p.relu) v = relu_keep_nan(v);
      out[row_out[ml] + (ch0 + n) * p.os.c] = from_acc<T>(v);
    }
  }
}

// conv1x1_into's epilogue: column n goes to the segment s with seg[s-1].end <= n < seg[s].end, at
// that segment's strides (row_n: the row's image, row_yx: its (yy << 32) | xx). A 16-byte chunk
// inside one vector-capable segment is one store; chunks across a boundary go element-wise.
__device__ __forceinline__ int seg_of(const GemmParams& p, int n, int s) {
  while (s + 1 < p.nseg && n >= p.seg[s].end) ++s;
  return s;
}

template <typename T>
__device__ __forceinline__ T* seg_dst(const GemmParams& p, int s, int64_t row_n, int64_t row_yx, int n) {
  const auto& sg = p.seg[s];
  const int col0 = s > 0 ? p.seg[s - 1].end : 0;
  return static_cast<T*>(sg.out) + row_n * sg.os.n + (row_yx >> 32) * sg.os.h + (row_yx & 0xffffffff) * sg.os.w +
         int64_t(n - col0) * sg.os.c;
}

template <typename T, int BM, int BN, int THREADS>
__device__ __forceinline__ void epilogue_store_segs(const GemmParams& p, const typename Num<T>::acc_t* cs, bool mk,
                                                    const int64_t* row_n, const int64_t* row_yx, int m0, int n0,
                                                    int tid) {
  using A = typename Num<T>::acc_t;
  constexpr int EV = 16 / int(sizeof(T));
  constexpr int ld_n = BN + 8, ld_m = BM + 8;
  const T* bias = static_cast<const T*>(p.bias);
  if (!mk) {
    constexpr int CPR = BN / EV;
    for (int id = tid; id < BM * CPR; id += THREADS) {
      const int ml = id / CPR, nl = (id % CPR) * EV;
      const int n = n0 + nl;
      if (m0 + ml >= p.M || n >= p.Ngemm) continue;
      A v[EV];
#pragma unroll
      for (int e = 0; e < EV; ++e) v[e] = cs[ml * ld_n + nl + e];
      const int nv = p.Ngemm - n < EV ? p.Ngemm - n : EV;
      if (bias != nullptr) {
#pragma unroll
        for (int e = 0; e < EV; ++e)
          if (e < nv) v[e] += to_acc(bias[n + e]);
      }
      int s = seg_of(p, n, 0);
      if (p.seg[s].vec && n + EV <= p.seg[s].end) {
        Vec16<T> ov;
#pragma unroll
        for (int e = 0; e < EV; ++e) ov.v[e] = from_acc<T>(p.seg[s].relu ? relu_keep_nan(v[e]) : v[e]);
        *reinterpret_cast<Vec16<T>*>(seg_dst<T>(p, s, row_n[ml], row_yx[ml], n)) = ov;
      } else {
#pragma unroll
        for (int e = 0; e < EV; ++e) {
          if (e >= nv) break;
          s = seg_of(p, n + e, s);
          *seg_dst<T>(p, s, row_n[ml], row_yx[ml], n + e) = from_acc<T>(p.seg[s].relu ? relu_keep_nan(v[e]) : v[e]);
        }
      }
    }
  } else {
    for (int id = tid; id < BM * BN; id += THREADS) {
      const int ml = id % BM, nl = id / BM;
      const int n = n0 + nl;
      if (m0 + ml >= p.M || n >= p.Ngemm) continue;
      A v = cs[nl * ld_m + ml];
      if (bias != nullptr) v += to_acc(bias[n]);
      const int s = seg_of(p, n, 0);
      *seg_dst<T>(p, s, row_n[ml], row_yx[ml], n) = from_acc<T>(p.seg[s].relu ? relu_keep_nan(v) : v);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// The fprop/dgrad kernel
// ------------------------------------------------------------------------------------------------
// The register cap (MIN_BLOCKS CTAs/SM) applies to the cp.async path; the scalar fallback keeps
// its staged elements in registers and would spill under it. kMask (dgrad after a ReLU: p.mask is
// the forward output) is a template parameter so that the no-mask main loop holds nothing of it:
// as a run-time branch it cost the bf16 TcL loop 97 of its 382 instructions (SASS, sm_90).
// kPool (conv1x1_into with a pool; k1x1 only): A is staged through registers like the scalar path
// (the window max cannot be a cp.async), by 16-byte chunks when kVecA. The cap holds for pooled
// tiles whose threads stage at most 2 chunks (TcL: 151 -> 125 registers, 0 spills, 2 CTAs/SM); TcM
// stages 4 and spilled 32-280 bytes under it (ptxas, sm_80/sm_90), so it stays uncapped.
template <typename T, typename Cfg, bool kVecA, bool k1x1, bool kMask, bool kPool = false>
__global__ void __launch_bounds__(Cfg::THREADS,
                                  kVecA && (!kPool || Cfg::BM * 4 / Cfg::THREADS <= 2) ? Cfg::MIN_BLOCKS : 1)
    conv_kmajor_kernel(const GemmParams p) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, THREADS = Cfg::THREADS, STAGES = Cfg::STAGES;
  constexpr int BKE = 64 / int(sizeof(T));
  constexpr bool kAsyncA = kVecA && !kPool;
  static_assert(!kPool || (k1x1 && !kMask), "pool on load: 1x1 fprop only");
  using Loader = KMajorLoader<T, BM, BN, THREADS, kVecA, k1x1, kMask, kPool>;
  using Math = typename MathK<T, Cfg>::type;
  using A = typename Num<T>::acc_t;

  FASTCNN_DYNAMIC_SMEM(smem);
  unsigned char* sA = smem;
  unsigned char* sB = sA + STAGES * BM * 64;
  unsigned char* sM = sB + STAGES * BN * 64;  // ReLU-mask stages (only with kMask)
  // The same as shared addresses: converted once (per use it cost the loop 10 uniform
  // instructions, S2UR SR_CgaCtaId included, twice per tile).
  const uint32_t aA = smem_addr(smem), aB = aA + STAGES * BM * 64, aM = aB + STAGES * BN * 64;

  const int tid = threadIdx.x;
  const int tile_m = blockIdx.x / p.ntiles_n, tile_n = blockIdx.x % p.ntiles_n;  // N fastest: the
  // CTAs sharing an A tile run together and read it from L2
  const int m0 = tile_m * BM, n0 = tile_n * BN;
  const int g = p.group0 + blockIdx.z;

  Loader ld;
  ld.init(p, m0, n0, g, tid);
  Math math;
  math.init(tid);
  math.zero();

  const int num_k = (p.Kgemm + BKE - 1) / BKE;

  // Prologue: tiles 0 .. STAGES-2.
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < num_k) {
      ld.load_b(p, aB + s * BN * 64, tid);
      if constexpr (kAsyncA) {
        ld.load_a_async(p, aA + s * BM * 64, aM + s * BM * 64);
      } else if constexpr (kPool && kVecA) {
        ld.load_a_pool_vec(p);
        ld.store_a_pool_vec(sA + s * BM * 64);
      } else {
        ld.load_a_regs(p, s * BKE, tid);
        ld.store_a_regs(sA + s * BM * 64, tid);
      }
      ld.advance(p);
    }
    cp_async_commit();
  }

  for (int kt = 0; kt < num_k; ++kt) {
    const int stage = kt % STAGES;
    cp_async_wait<STAGES - 2>();
    if constexpr (kAsyncA) {
      if constexpr (kMask) ld.mask_own(sA + stage * BM * 64, sM + stage * BM * 64);
    }
    __syncthreads();
    const int lt = kt + STAGES - 1;
    const int lstage = lt % STAGES;
    if (lt < num_k) {
      ld.load_b(p, aB + lstage * BN * 64, tid);
      if constexpr (kAsyncA)
        ld.load_a_async(p, aA + lstage * BM * 64, aM + lstage * BM * 64);
      else if constexpr (kPool && kVecA)
        ld.load_a_pool_vec(p);
      else
        ld.load_a_regs(p, lt * BKE, tid);
      ld.advance(p);
    }
    cp_async_commit();
    math.compute(sA + stage * BM * 64, sB + stage * BN * 64, aA + stage * BM * 64, aB + stage * BN * 64, tid);
    if constexpr (kPool && kVecA) {
      if (lt < num_k) ld.store_a_pool_vec(sA + lstage * BM * 64);
    } else if constexpr (!kVecA) {
      if (lt < num_k) ld.store_a_regs(sA + lstage * BM * 64, tid);
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  // Epilogue. The C tile reuses the ring; the row offsets live past it.
  const bool mk = p.os.c != 1;
  constexpr int ld_n = BN + 8, ld_m = BM + 8;
  A* cs = reinterpret_cast<A*>(smem);
  // Same layout as kmajor_smem_bytes: [max(ring, C tile)][row_out: BM int64][row_res: BM int64].
  constexpr int ring = STAGES * (BM + BN + (kMask ? BM : 0)) * 64;
  constexpr int ctile = (BM * ld_n > BN * ld_m ? BM * ld_n : BN * ld_m) * int(sizeof(A));
  int64_t* row_out = reinterpret_cast<int64_t*>(smem + (ring > ctile ? ring : ctile));
  int64_t* row_res = row_out + BM;
  if (tid < BM) {
    const int m = m0 + tid;
    int64_t ro = 0, rr = 0;
    if (m < p.M) {
      const uint32_t n = fdiv(p.fd_rYX, uint32_t(m));
      const uint32_t rem = uint32_t(m) - n * uint32_t(p.rY * p.rX);
      const uint32_t yy = fdiv(p.fd_rX, rem);
      const uint32_t xx = rem - yy * uint32_t(p.rX);
      if (p.nseg > 0) {  // segments: the coordinates (each segment has its own strides)
        ro = int64_t(n);
        rr = int64_t(yy) << 32 | int64_t(xx);
      } else {
        ro = int64_t(n) * p.os.n + int64_t(p.yo0 + int(yy) * p.yo_mul) * p.os.h +
             int64_t(p.xo0 + int(xx) * p.xo_mul) * p.os.w;
        rr = int64_t(n) * p.rs.n + int64_t(yy) * p.rs.h + int64_t(xx) * p.rs.w;
      }
    }
    row_out[tid] = ro;
    row_res[tid] = rr;
  }
  math.store(cs, mk, ld_n, ld_m, tid);
  __syncthreads();
  if (p.nseg > 0)
    epilogue_store_segs<T, BM, BN, THREADS>(p, cs, mk, row_out, row_res, m0, n0, tid);
  else
    epilogue_store<T, BM, BN, THREADS>(p, cs, mk, row_out, row_res, m0, n0, g, tid);
}

// ------------------------------------------------------------------------------------------------
// Host: launch one GemmParams with a given configuration.
// ------------------------------------------------------------------------------------------------
// Whether a tile has scalar-loader variants: the scalar loader stages BM * BKE / THREADS elements
// per thread in registers (32 for TcL), which next to 64x64 warps' 128 accumulators spilled
// (ptxas, sm_80: every bf16/fp16 TcL scalar variant; sm_90: the pooled ones); those calls run on
// TcM, whose 64x32 warps leave the room.
template <typename Cfg>
constexpr bool kScalarLoader() {
  if constexpr (Cfg::kTensorCore)
    return Cfg::WM * Cfg::WN <= 64 * 32;
  else
    return true;
}

template <typename T, typename Cfg, bool k1x1>
void launch_kmajor_cfg(GemmParams gp, bool vec_a, int groups, cudaStream_t stream) {
  const int smem = kmajor_smem_bytes<T, Cfg>(gp.mask != nullptr);
  const int64_t tm = ceil_div64(gp.M, Cfg::BM), tn = ceil_div64(gp.Ngemm, Cfg::BN);
  gp.ntiles_n = int(tn);
  const bool mask = gp.mask != nullptr;
  auto kernel = mask ? conv_kmajor_kernel<T, Cfg, true, k1x1, true> : conv_kmajor_kernel<T, Cfg, true, k1x1, false>;
  if constexpr (k1x1) {
    if (gp.pkh > 0) kernel = conv_kmajor_kernel<T, Cfg, true, true, false, true>;
  }
  if constexpr (kScalarLoader<Cfg>()) {  // (launch_kmajor sends no scalar-loader call to the others)
    if (!vec_a) {
      kernel = mask ? conv_kmajor_kernel<T, Cfg, false, k1x1, true> : conv_kmajor_kernel<T, Cfg, false, k1x1, false>;
      if constexpr (k1x1) {
        if (gp.pkh > 0) kernel = conv_kmajor_kernel<T, Cfg, false, true, false, true>;
      }
    }
  }
  if (!allow_dynamic_smem(kernel, smem)) return;  // the error stays for the launcher's check
  // gridDim.z <= 65535: launch the groups in slices.
  for (int g0 = 0; g0 < groups; g0 += 65535) {
    gp.group0 = g0;
    const int gz = groups - g0 < 65535 ? groups - g0 : 65535;
    FASTCNN_LAUNCH(dim3(unsigned(tm * tn), 1, unsigned(gz)), Cfg::THREADS, smem, stream, kernel)(gp);
  }
}

// KMajorLoader::advance's byte increments: one step along S (the channel offset wraps from cpad
// back to 0) and, added on top when S wraps, the step into the next R (S rewinds to 0).
template <typename T>
void tap_increments(GemmParams& gp) {
  const int64_t es = int64_t(sizeof(T));
  gp.a_inc_s = (int64_t(gp.xa_ks) * gp.as.w - gp.cpad) * es;
  gp.a_inc_r = (int64_t(gp.ya_kr) * gp.as.h - int64_t(gp.ns) * gp.xa_ks * gp.as.w) * es;
  gp.b_inc_s = (gp.b_ks - gp.cpad) * es;
  gp.b_inc_r = (gp.b_kr - int64_t(gp.ns) * gp.b_ks) * es;
}

// Picks the tile for the math type and the GEMM shape (cuda-sim's tests force each one through
// FASTCNN_PICK; under nvcc the choice is the natural one).
template <typename T, bool k1x1>
void launch_kmajor(GemmParams gp, bool vec_a, bool tensor_core, int groups, int64_t num_sms,
                   cudaStream_t stream) {
  if (gp.M <= 0 || gp.Ngemm <= 0) return;
  tap_increments<T>(gp);
  // The vector path's tap bitmasks hold 16 taps per filter dimension (KMajorLoader::kMaxTaps).
  if (gp.nr > 16 || gp.ns > 16) vec_a = false;
  if constexpr (sizeof(T) == 8) {
    if (FASTCNN_PICK("conv_tile", gp.Ngemm <= 32 ? 0 : 1, 2) == 0)
      launch_kmajor_cfg<T, SimtDS, k1x1>(gp, vec_a, groups, stream);
    else
      launch_kmajor_cfg<T, SimtDL, k1x1>(gp, vec_a, groups, stream);
  } else {
    if constexpr (sizeof(T) == 4) {
      if (!tensor_core) {
        if (FASTCNN_PICK("conv_tile", gp.Ngemm <= 32 ? 0 : 1, 2) == 0)
          launch_kmajor_cfg<T, SimtFS, k1x1>(gp, vec_a, groups, stream);
        else
          launch_kmajor_cfg<T, SimtFL, k1x1>(gp, vec_a, groups, stream);
        return;
      }
    }
    // Tensor cores: the widest tile that still gives about one wave of CTAs.
    const int64_t ctas_l = ceil_div64(gp.M, 128) * ceil_div64(gp.Ngemm, 128) * groups;
    const int cfg = FASTCNN_PICK("conv_tile", gp.Ngemm <= 32 ? 0 : (gp.Ngemm <= 64 || ctas_l < num_sms) ? 1 : 2, 3);
    static_assert(kScalarLoader<TcS>() && kScalarLoader<TcM>(), "the scalar loader's tiles");
    if (cfg == 0)
      launch_kmajor_cfg<T, TcS, k1x1>(gp, vec_a, groups, stream);
    else if (cfg == 1 || !vec_a)
      launch_kmajor_cfg<T, TcM, k1x1>(gp, vec_a, groups, stream);
    else
      launch_kmajor_cfg<T, TcL, k1x1>(gp, vec_a, groups, stream);
  }
}

template <typename T, bool k1x1>
void run_fprop(const ConvFpropParams& p, bool tensor_core, cudaStream_t stream) {
  const ConvGeom& s = p.s;
  const int64_t Cg = s.C / s.G, Kg = s.K / s.G;
  if (s.N == 0 || s.P * s.Q == 0) return;
  GemmParams gp{};
  gp.Ngemm = int(Kg);
  gp.Kgemm = int(s.R * s.S * p.cpad);
  gp.rY = int(s.P);
  gp.rX = int(s.Q);
  gp.fd_rX = make_fastdiv(uint32_t(s.Q));
  gp.fd_rYX = make_fastdiv(uint32_t(s.P * s.Q));
  gp.as = p.xs;
  gp.mask = nullptr;
  gp.aY = int(s.H);
  gp.aX = int(s.W);
  gp.a_cg = int(Cg);
  gp.cpad = int(p.cpad);
  gp.fd_cpad = make_fastdiv(uint32_t(p.cpad));
  gp.nr = int(s.R);
  gp.ns = int(s.S);
  gp.fd_ns = make_fastdiv(uint32_t(s.S));
  gp.ya0 = int(-s.ph);
  gp.ya_mul = int(s.sh);
  gp.ya_kr = int(s.dh);
  gp.xa0 = int(-s.pw);
  gp.xa_mul = int(s.sw);
  gp.xa_ks = int(s.dw);
  gp.b = p.w;
  gp.ldb = s.R * s.S * p.cpad;
  gp.b_tap0 = 0;
  gp.b_kr = s.S * p.cpad;
  gp.b_ks = p.cpad;
  gp.os = p.ys;
  gp.yo0 = 0;
  gp.yo_mul = 1;
  gp.xo0 = 0;
  gp.xo_mul = 1;
  gp.bias = p.bias;
  gp.rs = p.rs;
  gp.relu = p.relu;
  if (p.pool.kh > 0) {  // rows are the pool's output pixels; (ya0 + yy*ya_mul, ...) their window origins
    gp.pkh = p.pool.kh;
    gp.pkw = p.pool.kw;
    gp.ya0 = -p.pool.ph;
    gp.ya_mul = p.pool.sh;
    gp.xa0 = -p.pool.pw;
    gp.xa_mul = p.pool.sw;
  }
  gp.nseg = p.nseg;
  const int64_t nb = images_per_chunk(s.P * s.Q);
  for (int64_t n0 = 0; n0 < s.N; n0 += nb) {
    const int64_t cnt = s.N - n0 < nb ? s.N - n0 : nb;
    gp.M = int(cnt * s.P * s.Q);
    gp.a = advance_ptr<T>(p.x, n0 * p.xs.n);
    gp.out = advance_ptr<T>(p.y, n0 * p.ys.n);
    gp.res = advance_ptr<T>(p.res, n0 * p.rs.n);
    const bool vec_a = vec_ok<T>(gp.a, gp.as, Cg) && FASTCNN_PICK("conv_vec", 1, 2);
    gp.out_vec = vec_ok<T>(gp.out, gp.os, Kg) && FASTCNN_PICK("conv_epi_vec", 1, 2);
    gp.res_vec = gp.res != nullptr && vec_ok<T>(gp.res, gp.rs, Kg) && FASTCNN_PICK("conv_epi_vec", 1, 2);
    for (int i = 0; i < p.nseg; ++i) {
      constexpr int64_t EV = 16 / int64_t(sizeof(T));
      const int64_t col0 = i > 0 ? p.seg[i - 1].k_end : 0;
      auto& sg = gp.seg[i];
      sg.out = advance_ptr<T>(p.seg[i].y, n0 * p.seg[i].ys.n);
      sg.os = p.seg[i].ys;
      sg.end = int(p.seg[i].k_end);
      sg.relu = p.seg[i].relu;
      sg.vec = col0 % EV == 0 && vec_ok<T>(sg.out, sg.os, p.seg[i].k_end - col0) && FASTCNN_PICK("conv_epi_vec", 1, 2);
    }
    launch_kmajor<T, k1x1>(gp, vec_a, tensor_core, int(s.G), p.num_sms, stream);
  }
}

// dgrad: one launch per stride phase (yph, xph): the input pixels h = yph + hh*sh see exactly the
// taps r with (yph + ph - r*dh) % sh == 0, i.e. r = r0 + j*rstep, rstep = sh / gcd(sh, dh), and
// grad_output row p = (h + ph - r*dh) / sh = ya0 + hh - j*(rstep*dh/sh). Stride 1 is one phase with
// every tap; a 1x1 stride-2 conv has one phase with a tap and three whose pixels get zeros (the
// kernel runs with Kgemm = 0 there and writes the zeros).
template <typename T, bool k1x1>
void run_dgrad(const ConvDgradParams& p, bool tensor_core, cudaStream_t stream) {
  const ConvGeom& s = p.s;
  const int64_t Cg = s.C / s.G, Kg = s.K / s.G;
  if (s.N == 0 || s.H * s.W == 0) return;
  for (int64_t yph = 0; yph < s.sh; ++yph) {
    for (int64_t xph = 0; xph < s.sw; ++xph) {
      const int64_t Hp = yph < s.H ? (s.H - 1 - yph) / s.sh + 1 : 0;
      const int64_t Wp = xph < s.W ? (s.W - 1 - xph) / s.sw + 1 : 0;
      if (Hp == 0 || Wp == 0) continue;
      auto taps = [](int64_t ph_, int64_t pad, int64_t stride, int64_t dil, int64_t R, int64_t& r0, int64_t& step,
                     int64_t& nr) {
        r0 = -1;
        for (int64_t r = 0; r < R; ++r) {
          const int64_t v = ph_ + pad - r * dil;
          if (((v % stride) + stride) % stride == 0) {
            r0 = r;
            break;
          }
        }
        step = stride / gcd64(stride, dil);
        nr = r0 < 0 ? 0 : (R - 1 - r0) / step + 1;
      };
      int64_t r0, rstep, nr, s0, sstep, ns;
      taps(yph, s.ph, s.sh, s.dh, s.R, r0, rstep, nr);
      taps(xph, s.pw, s.sw, s.dw, s.S, s0, sstep, ns);
      if (nr == 0 || ns == 0) nr = ns = 0;
      GemmParams gp{};
      gp.Ngemm = int(Cg);
      gp.Kgemm = int(nr * ns * p.kpad);
      gp.rY = int(Hp);
      gp.rX = int(Wp);
      gp.fd_rX = make_fastdiv(uint32_t(Wp));
      gp.fd_rYX = make_fastdiv(uint32_t(Hp * Wp));
      gp.as = p.gys;
      gp.aY = int(s.P);
      gp.aX = int(s.Q);
      gp.a_cg = int(Kg);
      gp.cpad = int(p.kpad);
      gp.fd_cpad = make_fastdiv(uint32_t(p.kpad));
      gp.nr = int(nr);
      gp.ns = int(ns);
      gp.fd_ns = make_fastdiv(uint32_t(ns > 0 ? ns : 1));
      gp.ya0 = nr > 0 ? int((yph + s.ph - r0 * s.dh) / s.sh) : 0;  // exact division (may be negative)
      gp.ya_mul = 1;
      gp.ya_kr = int(-(rstep * s.dh / s.sh));
      gp.xa0 = ns > 0 ? int((xph + s.pw - s0 * s.dw) / s.sw) : 0;
      gp.xa_mul = 1;
      gp.xa_ks = int(-(sstep * s.dw / s.sw));
      gp.b = p.w;
      gp.ldb = s.R * s.S * p.kpad;
      gp.b_tap0 = nr > 0 ? (r0 * s.S + s0) * p.kpad : 0;
      gp.b_kr = rstep * s.S * p.kpad;
      gp.b_ks = sstep * p.kpad;
      gp.os = p.dxs;
      gp.yo0 = int(yph);
      gp.yo_mul = int(s.sh);
      gp.xo0 = int(xph);
      gp.xo_mul = int(s.sw);
      gp.bias = nullptr;
      gp.res = nullptr;
      gp.rs = Strides4{0, 0, 0, 0};
      gp.relu = false;
      const int64_t nb = images_per_chunk(Hp * Wp);
      for (int64_t n0 = 0; n0 < s.N; n0 += nb) {
        const int64_t cnt = s.N - n0 < nb ? s.N - n0 : nb;
        gp.M = int(cnt * Hp * Wp);
        gp.a = advance_ptr<T>(p.gy, n0 * p.gys.n);
        gp.mask = advance_ptr<T>(p.out, n0 * p.outs.n);  // out shares gy's strides (launcher contract)
        gp.out = advance_ptr<T>(p.dx, n0 * p.dxs.n);
        bool vec_a = vec_ok<T>(gp.a, gp.as, Kg) && FASTCNN_PICK("conv_vec", 1, 2);
        if (gp.mask != nullptr) vec_a = vec_a && (reinterpret_cast<uintptr_t>(gp.mask) & 15) == 0;
        gp.out_vec = vec_ok<T>(gp.out, gp.os, Cg) && FASTCNN_PICK("conv_epi_vec", 1, 2);
        gp.res_vec = false;
        launch_kmajor<T, k1x1>(gp, vec_a, tensor_core, int(s.G), p.num_sms, stream);
      }
    }
  }
}

}  // namespace igemm
}  // namespace cuda
}  // namespace fastcnn
