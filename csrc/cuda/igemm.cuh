// Implicit-GEMM convolution kernels (device code + host launch helpers), torch-free.
// Included by conv2d_kernel.cu (general geometry) and conv1x1_kernel.cu (k1x1 = true).
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
//
// ================================================================================================
// wgrad: conv_wgrad_kernel  (C[K/G, R*S*cpad] = sum over pixels of A[pix, k] * B[pix, col])
// ================================================================================================
// A[m = k, pix] = g[n, g*Kg + k, p, q] (masked), B[col = (r*S + s)*cpad + c, pix] =
// x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw]. Channels are contiguous in memory, pixels
// are the reduction, so tiles are stored MN-major ([pixel][channels], swizzled) and fragments come
// from ldmatrix.trans (16-bit) or scalar shared loads (CUDA cores: fp32 and fp64; TF32 has no
// transposing ldmatrix, so fp32 wgrad always runs exact FFMA). Split-K: blockIdx.y takes a pixel
// range; each CTA stores its fp32 (fp64) partial tile to ws[split][g][m][col]; wgrad_reduce_kernel
// sums the splits in index order (deterministic) and writes dw in its own strides.
#pragma once

#include <climits>

#include "cuda/common.cuh"
#include "cuda/conv2d_kernel.cuh"

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
};

constexpr int kInvalidCoord = INT_MIN / 4;  // a row coordinate that stays out of range after taps

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

// Tensor-core tiles for fprop/dgrad. 128x128 with 8 warps of 64x32: 64 fp32 accumulators per
// thread, 2 CTAs/SM (~100 KB shared with the ReLU-mask stages; registers capped at 128 -- the 1x1
// variant took 154 uncapped, i.e. 1 CTA/SM, and fits 125 capped without spills), 16 MMAs per
// 6 ldmatrix.x4 per k-step. Narrower N tiles for layers with few output channels (64: ResNet layer1; 32: LeNet,
// grouped convs), where a 128-wide tile would be mostly padding.
using TcL = TcCfg<128, 128, 64, 32, 4, 2>;
using TcM = TcCfg<128, 64, 64, 32, 4, 4>;
using TcS = TcCfg<128, 32, 32, 32, 4>;
// CUDA-core tiles (exact fp32, fp64). fp32 8x8 per thread (16 shared loads per 64 FFMA): ~158
// registers, 1 CTA (8 warps) per SM; a 128-register cap for 2 CTAs/SM (MIN_BLOCKS = 2) spilled
// 160-244 bytes per thread, so it is left uncapped. fp64 4x4 per thread (2-register doubles).
using SimtFL = SimtCfg<128, 128, 8, 8, 3>;
using SimtFS = SimtCfg<128, 32, 8, 4, 3>;
using SimtDL = SimtCfg<64, 64, 4, 4, 3>;
using SimtDS = SimtCfg<64, 32, 4, 4, 3>;

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
template <typename T, int BM, int BN, int THREADS, bool kVecA, bool k1x1>
struct KMajorLoader {
  static constexpr int EPC = 16 / int(sizeof(T));  // elements per 16-byte chunk
  static constexpr int BKE = 64 / int(sizeof(T));  // K elements per tile
  static constexpr int A_CH = BM * 4 / THREADS;    // A chunks per thread (vector path)
  static constexpr int B_CH = (BN * 4 + THREADS - 1) / THREADS;
  static constexpr int A_EL = BM * BKE / THREADS;  // A elements per thread (scalar path)
  static constexpr int ROW_STEP = THREADS / 4;
  static_assert((BM * 4) % THREADS == 0 && A_CH >= 1, "A chunk slots");
  static_assert(THREADS % BM == 0, "scalar path: one fixed row per thread");

  int col;         // this thread's chunk column (0..3)
  int kc, ks, kr;  // K decomposition of the chunk column at the next tile to load
  // vector path: per A chunk row
  int64_t a_base[kVecA ? A_CH : 1];
  int a_y[kVecA ? A_CH : 1], a_x[kVecA ? A_CH : 1];
  // B rows
  int64_t b_base[B_CH];
  bool b_ok[B_CH];
  // scalar path: this thread's single row, and the staged elements
  int64_t s_base;
  int s_y, s_x;
  T regs[kVecA ? 1 : A_EL];

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
#pragma unroll
      for (int i = 0; i < A_CH; ++i) {
        const int row = (tid >> 2) + i * ROW_STEP;
        row_info(p, m0 + row, g, a_base[i], a_y[i], a_x[i]);
        if constexpr (k1x1) {
          // 1x1 without padding: a valid row's coordinate is always inside the input (fprop:
          // p*sh < H; dgrad phase (0,0): h/sh < P), so the whole offset is fixed per row.
          if (a_y[i] != kInvalidCoord) a_base[i] += int64_t(a_y[i]) * p.as.h + int64_t(a_x[i]) * p.as.w;
        }
      }
    } else {
      row_info(p, m0 + tid % BM, g, s_base, s_y, s_x);
    }
#pragma unroll
    for (int i = 0; i < B_CH; ++i) {
      const int row = (tid >> 2) + i * ROW_STEP;
      const int n = n0 + row;
      b_ok[i] = row < BN && n < p.Ngemm;
      b_base[i] = b_ok[i] ? (int64_t(g) * p.Ngemm + n) * p.ldb : 0;
    }
  }

  __device__ __forceinline__ void advance(const GemmParams& p) {
    kc += BKE;
    while (kc >= p.cpad) {
      kc -= p.cpad;
      if (++ks == p.ns) {
        ks = 0;
        ++kr;
      }
    }
  }

  // B chunks of the next tile -> stage sB (cp.async).
  __device__ __forceinline__ void load_b(const GemmParams& p, unsigned char* sB, int tid) const {
    const T* b = static_cast<const T*>(p.b);
    const int64_t tap = p.b_tap0 + int64_t(kr) * p.b_kr + int64_t(ks) * p.b_ks + kc;
#pragma unroll
    for (int i = 0; i < B_CH; ++i) {
      const int row = (tid >> 2) + i * ROW_STEP;
      if (B_CH * THREADS > BN * 4 && row >= BN) break;
      const bool ok = b_ok[i] && kr < p.nr;
      cp_async16(smem_addr(sB + kmajor_chunk(row, col) * 16), ok ? b + b_base[i] + tap : b, ok);
    }
  }

  // Vector path: A chunks (and the mask's) of the next tile -> stage (cp.async).
  __device__ __forceinline__ void load_a_async(const GemmParams& p, unsigned char* sA, unsigned char* sM,
                                               int tid) const {
    const T* a = static_cast<const T*>(p.a);
    const T* mk = static_cast<const T*>(p.mask);
#pragma unroll
    for (int i = 0; i < A_CH; ++i) {
      const int row = (tid >> 2) + i * ROW_STEP;
      bool ok;
      int64_t off;
      if constexpr (k1x1) {
        ok = a_y[i] != kInvalidCoord && kr < p.nr;
        off = a_base[i] + kc;
      } else {
        const int y = a_y[i] + kr * p.ya_kr, x = a_x[i] + ks * p.xa_ks;
        ok = kr < p.nr && unsigned(y) < unsigned(p.aY) && unsigned(x) < unsigned(p.aX);
        off = a_base[i] + int64_t(y) * p.as.h + int64_t(x) * p.as.w + kc;
      }
      const int dst = kmajor_chunk(row, col) * 16;
      cp_async16(smem_addr(sA + dst), ok ? a + off : a, ok);
      if (mk != nullptr) cp_async16(smem_addr(sM + dst), ok ? mk + off : mk, ok);
    }
  }

  // Vector path, ReLU mask: zero the gradient where the forward output is <= 0, in the chunks
  // this thread copied itself (after its wait_group, before the CTA barrier).
  __device__ __forceinline__ void mask_own(unsigned char* sA, const unsigned char* sM, int tid) const {
#pragma unroll
    for (int i = 0; i < A_CH; ++i) {
      const int row = (tid >> 2) + i * ROW_STEP;
      const int dst = kmajor_chunk(row, col) * 16;
      Vec16<T> gv = *reinterpret_cast<const Vec16<T>*>(sA + dst);
      const Vec16<T> ov = *reinterpret_cast<const Vec16<T>*>(sM + dst);
#pragma unroll
      for (int e = 0; e < EPC; ++e) gv.v[e] = relu_grad(gv.v[e], ov.v[e]);
      *reinterpret_cast<Vec16<T>*>(sA + dst) = gv;
    }
  }

  // Scalar path: A elements of the tile starting at K index k0 -> registers (masked).
  __device__ __forceinline__ void load_a_regs(const GemmParams& p, int k0, int tid) {
    const T* a = static_cast<const T*>(p.a);
    const T* mk = static_cast<const T*>(p.mask);
    constexpr int KSTEP = THREADS / BM;
#pragma unroll
    for (int e = 0; e < A_EL; ++e) {
      const int kk = k0 + tid / BM + e * KSTEP;
      const uint32_t j = fdiv(p.fd_cpad, uint32_t(kk));
      const int c = kk - int(j) * p.cpad;
      const uint32_t r = fdiv(p.fd_ns, j);
      const int s = int(j) - int(r) * p.ns;
      const int y = s_y + int(r) * p.ya_kr, x = s_x + s * p.xa_ks;
      const bool ok = int(r) < p.nr && c < p.a_cg && unsigned(y) < unsigned(p.aY) && unsigned(x) < unsigned(p.aX);
      T v = from_acc<T>(typename Num<T>::acc_t(0));
      if (ok) {
        const int64_t off = s_base + int64_t(y) * p.as.h + int64_t(x) * p.as.w + int64_t(c) * p.as.c;
        v = a[off];
        if (mk != nullptr) v = relu_grad(v, mk[off]);
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

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
  }

  __device__ __forceinline__ void compute(const unsigned char* sA, const unsigned char* sB, int tid) {
    const int lane = tid & 31, warp = tid >> 5;
    const int wm0 = (warp / Cfg::WARPS_N) * Cfg::WM, wn0 = (warp % Cfg::WARPS_N) * Cfg::WN;
    const uint32_t a_s = smem_addr(sA), b_s = smem_addr(sB);
#pragma unroll
    for (int kst = 0; kst < 2; ++kst) {  // two 32-byte k-steps per 64-byte stage
      uint32_t af[MI][4], bf[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        const int row = wm0 + mi * 16 + (lane & 15);
        ldsm_x4(a_s + kmajor_chunk(row, kst * 2 + (lane >> 4)) * 16, af[mi][0], af[mi][1], af[mi][2], af[mi][3]);
        Mma<T>::prep(af[mi]);
      }
#pragma unroll
      for (int nj = 0; nj < NI / 2; ++nj) {
        const int row = wn0 + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
        ldsm_x4(b_s + kmajor_chunk(row, kst * 2 + ((lane >> 3) & 1)) * 16, bf[2 * nj][0], bf[2 * nj][1],
                bf[2 * nj + 1][0], bf[2 * nj + 1][1]);
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
  __device__ __forceinline__ void compute(const unsigned char* sA, const unsigned char* sB, int tid) {
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

// ------------------------------------------------------------------------------------------------
// The fprop/dgrad kernel
// ------------------------------------------------------------------------------------------------
// The register cap (MIN_BLOCKS CTAs/SM) applies to the cp.async path; the scalar fallback keeps
// its staged elements in registers and would spill under it.
template <typename T, typename Cfg, bool kVecA, bool k1x1>
__global__ void __launch_bounds__(Cfg::THREADS, kVecA ? Cfg::MIN_BLOCKS : 1) conv_kmajor_kernel(const GemmParams p) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, THREADS = Cfg::THREADS, STAGES = Cfg::STAGES;
  constexpr int BKE = 64 / int(sizeof(T));
  using Loader = KMajorLoader<T, BM, BN, THREADS, kVecA, k1x1>;
  using Math = typename MathK<T, Cfg>::type;
  using A = typename Num<T>::acc_t;

  extern __shared__ __align__(128) unsigned char smem[];
  const bool has_mask = p.mask != nullptr;
  unsigned char* sA = smem;
  unsigned char* sB = sA + STAGES * BM * 64;
  unsigned char* sM = sB + STAGES * BN * 64;  // ReLU-mask stages (only when has_mask)

  const int tid = threadIdx.x;
  const int tile_m = blockIdx.x / p.ntiles_n, tile_n = blockIdx.x % p.ntiles_n;  // N fastest: the
  // CTAs sharing an A tile run together and read it from L2
  const int m0 = tile_m * BM, n0 = tile_n * BN;
  const int g = p.group0 + blockIdx.z;

  Loader ld;
  ld.init(p, m0, n0, g, tid);
  Math math;
  math.zero();

  const int num_k = (p.Kgemm + BKE - 1) / BKE;

  // Prologue: tiles 0 .. STAGES-2.
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < num_k) {
      ld.load_b(p, sB + s * BN * 64, tid);
      if constexpr (kVecA) {
        ld.load_a_async(p, sA + s * BM * 64, sM + s * BM * 64, tid);
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
    if constexpr (kVecA) {
      if (has_mask) ld.mask_own(sA + stage * BM * 64, sM + stage * BM * 64, tid);
    }
    __syncthreads();
    const int lt = kt + STAGES - 1;
    const int lstage = lt % STAGES;
    if (lt < num_k) {
      ld.load_b(p, sB + lstage * BN * 64, tid);
      if constexpr (kVecA)
        ld.load_a_async(p, sA + lstage * BM * 64, sM + lstage * BM * 64, tid);
      else
        ld.load_a_regs(p, lt * BKE, tid);
      ld.advance(p);
    }
    cp_async_commit();
    math.compute(sA + stage * BM * 64, sB + stage * BN * 64, tid);
    if constexpr (!kVecA) {
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
  const int ring = STAGES * (BM + BN + (has_mask ? BM : 0)) * 64;
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
      ro = int64_t(n) * p.os.n + int64_t(p.yo0 + int(yy) * p.yo_mul) * p.os.h +
           int64_t(p.xo0 + int(xx) * p.xo_mul) * p.os.w;
      rr = int64_t(n) * p.rs.n + int64_t(yy) * p.rs.h + int64_t(xx) * p.rs.w;
    }
    row_out[tid] = ro;
    row_res[tid] = rr;
  }
  math.store(cs, mk, ld_n, ld_m, tid);
  __syncthreads();
  epilogue_store<T, BM, BN, THREADS>(p, cs, mk, row_out, row_res, m0, n0, g, tid);
}

// ------------------------------------------------------------------------------------------------
// Host: launch one GemmParams with a given configuration.
// ------------------------------------------------------------------------------------------------
template <typename T, typename Cfg, bool k1x1>
void launch_kmajor_cfg(GemmParams gp, bool vec_a, int groups, cudaStream_t stream) {
  const int smem = kmajor_smem_bytes<T, Cfg>(gp.mask != nullptr);
  const int64_t tm = ceil_div64(gp.M, Cfg::BM), tn = ceil_div64(gp.Ngemm, Cfg::BN);
  gp.ntiles_n = int(tn);
  auto kernel = vec_a ? conv_kmajor_kernel<T, Cfg, true, k1x1> : conv_kmajor_kernel<T, Cfg, false, k1x1>;
  if (smem > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  // gridDim.z <= 65535: launch the groups in slices.
  for (int g0 = 0; g0 < groups; g0 += 65535) {
    gp.group0 = g0;
    const int gz = groups - g0 < 65535 ? groups - g0 : 65535;
    kernel<<<dim3(unsigned(tm * tn), 1, unsigned(gz)), Cfg::THREADS, smem, stream>>>(gp);
  }
}

// Picks the tile for the math type and the GEMM shape.
template <typename T, bool k1x1>
void launch_kmajor(const GemmParams& gp, bool vec_a, bool tensor_core, int groups, int64_t num_sms,
                   cudaStream_t stream) {
  if (gp.M <= 0 || gp.Ngemm <= 0) return;
  if constexpr (sizeof(T) == 8) {
    if (gp.Ngemm <= 32)
      launch_kmajor_cfg<T, SimtDS, k1x1>(gp, vec_a, groups, stream);
    else
      launch_kmajor_cfg<T, SimtDL, k1x1>(gp, vec_a, groups, stream);
  } else {
    if constexpr (sizeof(T) == 4) {
      if (!tensor_core) {
        if (gp.Ngemm <= 32)
          launch_kmajor_cfg<T, SimtFS, k1x1>(gp, vec_a, groups, stream);
        else
          launch_kmajor_cfg<T, SimtFL, k1x1>(gp, vec_a, groups, stream);
        return;
      }
    }
    // Tensor cores: the widest tile that still gives about one wave of CTAs.
    const int64_t ctas_l = ceil_div64(gp.M, 128) * ceil_div64(gp.Ngemm, 128) * groups;
    if (gp.Ngemm <= 32)
      launch_kmajor_cfg<T, TcS, k1x1>(gp, vec_a, groups, stream);
    else if (gp.Ngemm <= 64 || ctas_l < num_sms)
      launch_kmajor_cfg<T, TcM, k1x1>(gp, vec_a, groups, stream);
    else
      launch_kmajor_cfg<T, TcL, k1x1>(gp, vec_a, groups, stream);
  }
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
inline int64_t images_per_chunk(int64_t rows_per_image) {
  const int64_t lim = (int64_t(1) << 31) - 1024;
  return rows_per_image <= 0 ? 1 : (lim / rows_per_image > 0 ? lim / rows_per_image : 1);
}

template <typename T>
const T* advance_ptr(const void* p, int64_t elems) {
  return p == nullptr ? nullptr : static_cast<const T*>(p) + elems;
}
template <typename T>
T* advance_ptr(void* p, int64_t elems) {
  return p == nullptr ? nullptr : static_cast<T*>(p) + elems;
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
  const int64_t nb = images_per_chunk(s.P * s.Q);
  for (int64_t n0 = 0; n0 < s.N; n0 += nb) {
    const int64_t cnt = s.N - n0 < nb ? s.N - n0 : nb;
    gp.M = int(cnt * s.P * s.Q);
    gp.a = advance_ptr<T>(p.x, n0 * p.xs.n);
    gp.out = advance_ptr<T>(p.y, n0 * p.ys.n);
    gp.res = advance_ptr<T>(p.res, n0 * p.rs.n);
    const bool vec_a = vec_ok<T>(gp.a, gp.as, Cg);
    gp.out_vec = vec_ok<T>(gp.out, gp.os, Kg);
    gp.res_vec = gp.res != nullptr && vec_ok<T>(gp.res, gp.rs, Kg);
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
        bool vec_a = vec_ok<T>(gp.a, gp.as, Kg);
        if (gp.mask != nullptr) vec_a = vec_a && (reinterpret_cast<uintptr_t>(gp.mask) & 15) == 0;
        gp.out_vec = vec_ok<T>(gp.out, gp.os, Cg);
        gp.res_vec = false;
        launch_kmajor<T, k1x1>(gp, vec_a, tensor_core, int(s.G), p.num_sms, stream);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// wgrad
// ------------------------------------------------------------------------------------------------
struct WgradGemmParams {
  int Mg, Ng;          // K/G rows, R*S*cpad columns
  int npix;            // pixels of this launch (batch chunk), < 2^31
  int pix_per_split;   // multiple of the tile's BK
  int split0;          // workspace split of blockIdx.y == 0
  int group0;
  int ntiles_n;
  int G;
  int P, Q, H, W, S, RS;
  FastDiv fd_PQ, fd_Q, fd_cpad, fd_S;
  int sh, sw, ph, pw, dh, dw;
  int Kg, Cg, cpad;
  const void* gy;
  Strides4 gys;
  const void* mask;  // same strides as gy, or null
  const void* x;
  Strides4 xs;
  void* ws;  // acc_t [splits][G][Mg][Ng]
};

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
using WSimtF = WSimtCfg<128, 64, 8, 4, 16, 3>;
using WSimtFS = WSimtCfg<64, 64, 4, 4, 16, 3>;
using WSimtD = WSimtCfg<64, 64, 4, 4, 8, 3>;

template <typename T, typename Cfg>
int wgrad_smem_bytes(bool mask) {
  return Cfg::STAGES * Cfg::BKP * ((Cfg::BM * (mask ? 2 : 1)) + Cfg::BN) * int(sizeof(T));
}

// Loader of MN-major stages. Vector path: 16-byte chunks along channels, fixed chunk column per
// thread (THREADS % ROWCH == 0), rows (pixels) tid/ROWCH + i*THREADS/ROWCH. Scalar path: fixed
// pixel row per thread (tid % BKP), columns tid/BKP + j*THREADS/BKP.
template <typename T, typename Cfg, bool kVecA, bool kVecB, bool k1x1>
struct WgradLoader {
  static constexpr int EPC = 16 / int(sizeof(T));
  static constexpr int BM = Cfg::BM, BN = Cfg::BN, BKP = Cfg::BKP, THREADS = Cfg::THREADS;
  static constexpr int ROWCH_A = BM / EPC, ROWCH_B = BN / EPC;
  static constexpr int A_CH = BKP * ROWCH_A / THREADS, B_CH = BKP * ROWCH_B / THREADS;
  static constexpr int A_EL = BKP * BM / THREADS, B_EL = BKP * BN / THREADS;
  static constexpr bool SWZ = Cfg::kTensorCore;
  static_assert(THREADS % ROWCH_A == 0 && THREADS % ROWCH_B == 0 && A_CH >= 1 && B_CH >= 1, "vector slots");
  static_assert(THREADS % BKP == 0 && (BKP * BM) % THREADS == 0 && (BKP * BN) % THREADS == 0, "scalar slots");

  // A (vector): channel column
  bool a_col_ok;
  int64_t a_col_off;  // (g*Kg + k) * gys.c
  // B (vector): this thread's column (r, s, c)
  bool b_col_ok;
  int b_r, b_s;
  int64_t b_col_off;  // (g*Cg + c) * xs.c
  int g;
  T ra[kVecA ? 1 : A_EL];
  T rb[kVecB ? 1 : B_EL];

  __device__ __forceinline__ void init(const WgradGemmParams& p, int m0, int n0, int g_, int tid) {
    g = g_;
    const int ka = m0 + (tid % ROWCH_A) * EPC;
    a_col_ok = ka < p.Mg;
    a_col_off = (int64_t(g) * p.Kg + ka) * p.gys.c;
    const int nn = n0 + (tid % ROWCH_B) * EPC;
    const int rs = nn / p.cpad, c = nn - rs * p.cpad;
    b_col_ok = nn < p.Ng && rs < p.RS;
    b_r = rs / p.S;
    b_s = rs - b_r * p.S;
    b_col_off = (int64_t(g) * p.Cg + c) * p.xs.c;
  }

  // pixel -> (n, p, q); false past the range end.
  __device__ __forceinline__ static bool pixel(const WgradGemmParams& p, int pix, int pix_end, int& n, int& pp,
                                               int& q) {
    if (pix >= pix_end) return false;
    n = int(fdiv(p.fd_PQ, uint32_t(pix)));
    const int rem = pix - n * p.P * p.Q;
    pp = int(fdiv(p.fd_Q, uint32_t(rem)));
    q = rem - pp * p.Q;
    return true;
  }

  __device__ __forceinline__ void load_async(const WgradGemmParams& p, int pix0, int pix_end, unsigned char* sA,
                                             unsigned char* sM, unsigned char* sB, int tid) const {
    const T* gy = static_cast<const T*>(p.gy);
    const T* mk = static_cast<const T*>(p.mask);
    const T* x = static_cast<const T*>(p.x);
    if constexpr (kVecA) {
#pragma unroll
      for (int i = 0; i < A_CH; ++i) {
        const int row = tid / ROWCH_A + i * (THREADS / ROWCH_A);
        int n = 0, pp = 0, q = 0;
        const bool ok = pixel(p, pix0 + row, pix_end, n, pp, q) && a_col_ok;
        const int64_t off = int64_t(n) * p.gys.n + int64_t(pp) * p.gys.h + int64_t(q) * p.gys.w + a_col_off;
        const int dst = mnmajor_chunk<ROWCH_A, SWZ>(row, tid % ROWCH_A) * 16;
        cp_async16(smem_addr(sA + dst), ok ? gy + off : gy, ok);
        if (mk != nullptr) cp_async16(smem_addr(sM + dst), ok ? mk + off : mk, ok);
      }
    }
    if constexpr (kVecB) {
#pragma unroll
      for (int i = 0; i < B_CH; ++i) {
        const int row = tid / ROWCH_B + i * (THREADS / ROWCH_B);
        int n = 0, pp = 0, q = 0;
        bool ok = pixel(p, pix0 + row, pix_end, n, pp, q) && b_col_ok;
        int64_t off = 0;
        if constexpr (k1x1) {
          off = int64_t(n) * p.xs.n + int64_t(pp * p.sh) * p.xs.h + int64_t(q * p.sw) * p.xs.w + b_col_off;
        } else {
          const int iy = pp * p.sh - p.ph + b_r * p.dh, ix = q * p.sw - p.pw + b_s * p.dw;
          ok = ok && unsigned(iy) < unsigned(p.H) && unsigned(ix) < unsigned(p.W);
          off = int64_t(n) * p.xs.n + int64_t(iy) * p.xs.h + int64_t(ix) * p.xs.w + b_col_off;
        }
        cp_async16(smem_addr(sB + mnmajor_chunk<ROWCH_B, SWZ>(row, tid % ROWCH_B) * 16), ok ? x + off : x, ok);
      }
    }
  }

  __device__ __forceinline__ void mask_own(unsigned char* sA, const unsigned char* sM, int tid) const {
    if constexpr (kVecA) {
#pragma unroll
      for (int i = 0; i < A_CH; ++i) {
        const int row = tid / ROWCH_A + i * (THREADS / ROWCH_A);
        const int dst = mnmajor_chunk<ROWCH_A, SWZ>(row, tid % ROWCH_A) * 16;
        Vec16<T> gv = *reinterpret_cast<const Vec16<T>*>(sA + dst);
        const Vec16<T> ov = *reinterpret_cast<const Vec16<T>*>(sM + dst);
#pragma unroll
        for (int e = 0; e < EPC; ++e) gv.v[e] = relu_grad(gv.v[e], ov.v[e]);
        *reinterpret_cast<Vec16<T>*>(sA + dst) = gv;
      }
    }
  }

  // Scalar operands -> registers.
  __device__ __forceinline__ void load_regs(const WgradGemmParams& p, int m0, int n0, int pix0, int pix_end,
                                            int tid) {
    const int row = tid % BKP;
    int n = 0, pp = 0, q = 0;
    const bool pix_ok = pixel(p, pix0 + row, pix_end, n, pp, q);
    const T zero = from_acc<T>(typename Num<T>::acc_t(0));
    if constexpr (!kVecA) {
      const T* gy = static_cast<const T*>(p.gy);
      const T* mk = static_cast<const T*>(p.mask);
      const int64_t pix_off = int64_t(n) * p.gys.n + int64_t(pp) * p.gys.h + int64_t(q) * p.gys.w;
#pragma unroll
      for (int e = 0; e < A_EL; ++e) {
        const int k = m0 + tid / BKP + e * (THREADS / BKP);
        T v = zero;
        if (pix_ok && k < p.Mg) {
          const int64_t off = pix_off + (int64_t(g) * p.Kg + k) * p.gys.c;
          v = gy[off];
          if (mk != nullptr) v = relu_grad(v, mk[off]);
        }
        ra[e] = v;
      }
    }
    if constexpr (!kVecB) {
      const T* x = static_cast<const T*>(p.x);
#pragma unroll
      for (int e = 0; e < B_EL; ++e) {
        const int nn = n0 + tid / BKP + e * (THREADS / BKP);
        const int rs = int(fdiv(p.fd_cpad, uint32_t(nn)));
        const int c = nn - rs * p.cpad;
        const int r = int(fdiv(p.fd_S, uint32_t(rs)));
        const int s = rs - r * p.S;
        const int iy = pp * p.sh - p.ph + r * p.dh, ix = q * p.sw - p.pw + s * p.dw;
        T v = zero;
        if (pix_ok && nn < p.Ng && rs < p.RS && c < p.Cg && unsigned(iy) < unsigned(p.H) &&
            unsigned(ix) < unsigned(p.W))
          v = x[int64_t(n) * p.xs.n + int64_t(iy) * p.xs.h + int64_t(ix) * p.xs.w + (int64_t(g) * p.Cg + c) * p.xs.c];
        rb[e] = v;
      }
    }
  }

  __device__ __forceinline__ void store_regs(unsigned char* sA, unsigned char* sB, int tid) const {
    const int row = tid % BKP;
    if constexpr (!kVecA) {
#pragma unroll
      for (int e = 0; e < A_EL; ++e) {
        const int col = tid / BKP + e * (THREADS / BKP);
        *reinterpret_cast<T*>(sA + mnmajor_chunk<ROWCH_A, SWZ>(row, col / EPC) * 16 + (col % EPC) * int(sizeof(T))) = ra[e];
      }
    }
    if constexpr (!kVecB) {
#pragma unroll
      for (int e = 0; e < B_EL; ++e) {
        const int col = tid / BKP + e * (THREADS / BKP);
        *reinterpret_cast<T*>(sB + mnmajor_chunk<ROWCH_B, SWZ>(row, col / EPC) * 16 + (col % EPC) * int(sizeof(T))) = rb[e];
      }
    }
  }
};

template <typename T, typename Cfg>
struct TcMathMN {
  static constexpr int MI = Cfg::MI, NI = Cfg::NI;
  static constexpr int EPC = 16 / int(sizeof(T));
  static constexpr int ROWCH_A = Cfg::BM / EPC, ROWCH_B = Cfg::BN / EPC;
  static constexpr bool SWZ = true;
  float acc[MI][NI][4];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
  }

  __device__ __forceinline__ void compute(const unsigned char* sA, const unsigned char* sB, int tid) {
    static_assert(sizeof(T) == 2, "ldmatrix.trans is 16-bit only");
    const int lane = tid & 31, warp = tid >> 5;
    const int wm0 = (warp / Cfg::WARPS_N) * Cfg::WM, wn0 = (warp % Cfg::WARPS_N) * Cfg::WN;
    const uint32_t a_s = smem_addr(sA), b_s = smem_addr(sB);
#pragma unroll
    for (int kst = 0; kst < Cfg::BKP / 16; ++kst) {
      uint32_t af[MI][4], bf[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        const int k = kst * 16 + (lane & 7) + ((lane >> 4) << 3);
        const int ch = (wm0 + mi * 16) / 8 + ((lane >> 3) & 1);
        ldsm_x4_trans(a_s + mnmajor_chunk<ROWCH_A, SWZ>(k, ch) * 16, af[mi][0], af[mi][1], af[mi][2], af[mi][3]);
      }
#pragma unroll
      for (int nj = 0; nj < NI / 2; ++nj) {
        const int k = kst * 16 + (lane & 15);
        const int ch = (wn0 + nj * 16) / 8 + (lane >> 4);
        ldsm_x4_trans(b_s + mnmajor_chunk<ROWCH_B, SWZ>(k, ch) * 16, bf[2 * nj][0], bf[2 * nj][1], bf[2 * nj + 1][0],
                      bf[2 * nj + 1][1]);
      }
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) Mma<T>::run(acc[mi][ni], af[mi], bf[ni]);
    }
  }

  // Partial tile -> workspace rows m < Mg, cols n < Ng (Ng even: both values of a pair are valid).
  __device__ __forceinline__ void store_ws(float* ws, int Mg, int Ng, int m0, int n0, int tid) const {
    const int lane = tid & 31, warp = tid >> 5;
    const int wm0 = (warp / Cfg::WARPS_N) * Cfg::WM, wn0 = (warp % Cfg::WARPS_N) * Cfg::WN;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int m = m0 + wm0 + mi * 16 + (lane >> 2) + h * 8;
          const int n = n0 + wn0 + ni * 8 + (lane & 3) * 2;
          if (m < Mg && n < Ng)
            *reinterpret_cast<float2*>(ws + int64_t(m) * Ng + n) = make_float2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
        }
  }
};


template <typename T, typename Cfg>
struct SimtMathMN {
  using A = typename Num<T>::acc_t;
  static constexpr int TM = Cfg::TM, TN = Cfg::TN;
  static constexpr int EPC = 16 / int(sizeof(T));
  static constexpr int ROWCH_A = Cfg::BM / EPC, ROWCH_B = Cfg::BN / EPC;
  A acc[TM][TN];

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

  // Unswizzled MN-major stages: element (k, col) at byte (k*BM + col)*sizeof(T) (B: k*BN + col).
  __device__ __forceinline__ void compute(const unsigned char* sA, const unsigned char* sB, int tid) {
    int tm, tn;
    coords(tid, tm, tn);
    const T* a = reinterpret_cast<const T*>(sA) + tm;
    const T* b = reinterpret_cast<const T*>(sB) + tn;
#pragma unroll
    for (int k = 0; k < Cfg::BKP; ++k) {
      A av[TM], bv[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) av[i] = to_acc(a[k * Cfg::BM + i * Cfg::THREADS_M]);
#pragma unroll
      for (int j = 0; j < TN; ++j) bv[j] = to_acc(b[k * Cfg::BN + j * Cfg::THREADS_N]);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
  }

  __device__ __forceinline__ void store_ws(A* ws, int Mg, int Ng, int m0, int n0, int tid) const {
    int tm, tn;
    coords(tid, tm, tn);
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int m = m0 + tm + i * Cfg::THREADS_M, n = n0 + tn + j * Cfg::THREADS_N;
        if (m < Mg && n < Ng) ws[int64_t(m) * Ng + n] = acc[i][j];
      }
  }
};

template <typename T, typename Cfg, bool TC = Cfg::kTensorCore>
struct MathMN;
template <typename T, typename Cfg>
struct MathMN<T, Cfg, true> {
  using type = TcMathMN<T, Cfg>;
};
template <typename T, typename Cfg>
struct MathMN<T, Cfg, false> {
  using type = SimtMathMN<T, Cfg>;
};

template <typename T, typename Cfg, bool kVecA, bool kVecB, bool k1x1>
__global__ void __launch_bounds__(Cfg::THREADS) conv_wgrad_kernel(const WgradGemmParams p) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BKP = Cfg::BKP, STAGES = Cfg::STAGES;
  constexpr int A_BYTES = BKP * BM * int(sizeof(T)), B_BYTES = BKP * BN * int(sizeof(T));
  using Loader = WgradLoader<T, Cfg, kVecA, kVecB, k1x1>;
  using Math = typename MathMN<T, Cfg>::type;
  using A = typename Num<T>::acc_t;

  extern __shared__ __align__(128) unsigned char smem[];
  const bool has_mask = p.mask != nullptr;
  unsigned char* sA = smem;
  unsigned char* sB = sA + STAGES * A_BYTES;
  unsigned char* sM = sB + STAGES * B_BYTES;

  const int tid = threadIdx.x;
  const int tile_m = blockIdx.x / p.ntiles_n, tile_n = blockIdx.x % p.ntiles_n;
  const int m0 = tile_m * BM, n0 = tile_n * BN;
  const int split = blockIdx.y;
  const int g = p.group0 + blockIdx.z;
  const int pix_begin = split * p.pix_per_split;
  const int pix_end = p.npix - pix_begin < p.pix_per_split ? p.npix : pix_begin + p.pix_per_split;
  const int num_k = pix_end > pix_begin ? (pix_end - pix_begin + BKP - 1) / BKP : 0;

  Loader ld;
  ld.init(p, m0, n0, g, tid);
  Math math;
  math.zero();
  constexpr bool kScalar = !kVecA || !kVecB;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < num_k) {
      const int pix0 = pix_begin + s * BKP;
      ld.load_async(p, pix0, pix_end, sA + s * A_BYTES, sM + s * A_BYTES, sB + s * B_BYTES, tid);
      if constexpr (kScalar) {
        ld.load_regs(p, m0, n0, pix0, pix_end, tid);
        ld.store_regs(sA + s * A_BYTES, sB + s * B_BYTES, tid);
      }
    }
    cp_async_commit();
  }

  for (int kt = 0; kt < num_k; ++kt) {
    const int stage = kt % STAGES;
    cp_async_wait<STAGES - 2>();
    if (has_mask) ld.mask_own(sA + stage * A_BYTES, sM + stage * A_BYTES, tid);
    __syncthreads();
    const int lt = kt + STAGES - 1;
    const int ls = lt % STAGES;
    if (lt < num_k) {
      const int pix0 = pix_begin + lt * BKP;
      ld.load_async(p, pix0, pix_end, sA + ls * A_BYTES, sM + ls * A_BYTES, sB + ls * B_BYTES, tid);
      if constexpr (kScalar) ld.load_regs(p, m0, n0, pix0, pix_end, tid);
    }
    cp_async_commit();
    math.compute(sA + stage * A_BYTES, sB + stage * B_BYTES, tid);
    if constexpr (kScalar) {
      if (lt < num_k) ld.store_regs(sA + ls * A_BYTES, sB + ls * B_BYTES, tid);
    }
  }
  cp_async_wait<0>();

  // Every split writes its whole tile (zeros for an empty pixel range), so the reduction never
  // reads an unwritten workspace element.
  A* ws = static_cast<A*>(p.ws) + (int64_t(p.split0 + split) * p.G + g) * int64_t(p.Mg) * p.Ng;
  math.store_ws(ws, p.Mg, p.Ng, m0, n0, tid);
}

// dw[g*Kg + k, c, r, s] = sum over splits (in order) of ws[split][g][k][(r*S + s)*cpad + c].
template <typename T>
__global__ void wgrad_reduce_kernel(const typename Num<T>::acc_t* __restrict__ ws, int splits, int G, int Kg,
                                    int Cg, int RS, int S, int cpad, T* __restrict__ dw, Strides4 dws) {
  using A = typename Num<T>::acc_t;
  const int64_t total = int64_t(G) * Kg * RS * Cg;
  const int64_t Ng = int64_t(RS) * cpad;
  const int64_t split_stride = int64_t(G) * Kg * Ng;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % Cg;
    const int64_t rs = (i / Cg) % RS;
    const int64_t gk = i / (int64_t(Cg) * RS);  // g*Kg + k
    const int64_t src = gk * Ng + rs * cpad + c;
    A v = A(0);
    for (int sp = 0; sp < splits; ++sp) v += ws[sp * split_stride + src];
    const int64_t r = rs / S, s = rs % S;
    dw[gk * dws.n + c * dws.c + r * dws.h + s * dws.w] = from_acc<T>(v);
  }
}

// The split-K plan, shared by the workspace query and the launch (they must agree).
struct WgradPlan {
  int cfg;  // index into the config list of the dtype
  int BM, BN, BKP;
  int64_t tiles;        // (m tiles) x (n tiles) x groups
  int64_t nb;           // images per launch (rows < 2^31)
  int64_t pix_per_split;
  int64_t splits_per_chunk;
  int64_t total_splits;
  int64_t ws_elems;
};

template <typename T>
WgradPlan plan_wgrad(const ConvGeom& s, int64_t cpad, int64_t num_sms) {
  WgradPlan pl{};
  const int64_t Kg = s.K / s.G, Ng = s.R * s.S * cpad;
  if constexpr (sizeof(T) == 2) {
    if (Kg <= 64) {
      pl.cfg = 1; pl.BM = WTcS::BM; pl.BN = WTcS::BN; pl.BKP = WTcS::BKP;
    } else {
      pl.cfg = 0; pl.BM = WTcL::BM; pl.BN = WTcL::BN; pl.BKP = WTcL::BKP;
    }
  } else if constexpr (sizeof(T) == 4) {
    if (Kg <= 64) {
      pl.cfg = 1; pl.BM = WSimtFS::BM; pl.BN = WSimtFS::BN; pl.BKP = WSimtFS::BKP;
    } else {
      pl.cfg = 0; pl.BM = WSimtF::BM; pl.BN = WSimtF::BN; pl.BKP = WSimtF::BKP;
    }
  } else {
    pl.cfg = 0; pl.BM = WSimtD::BM; pl.BN = WSimtD::BN; pl.BKP = WSimtD::BKP;
  }
  pl.tiles = ceil_div64(Kg, pl.BM) * ceil_div64(Ng, pl.BN) * s.G;
  const int64_t PQ = s.P * s.Q;
  pl.nb = images_per_chunk(PQ);
  if (pl.nb > s.N) pl.nb = s.N > 0 ? s.N : 1;
  const int64_t npix = pl.nb * PQ;                     // pixels of a full chunk
  const int64_t ktiles = ceil_div64(npix, pl.BKP);
  // About two waves of CTAs, each split at least 8 k-tiles long (the pipeline prologue and the
  // partial-tile store amortised), at most 128 splits (workspace and reduction stay small).
  int64_t want = ceil_div64(2 * (num_sms > 0 ? num_sms : 132), pl.tiles);
  int64_t maxs = ktiles / 8 > 1 ? ktiles / 8 : 1;
  if (maxs > 128) maxs = 128;
  if (want > maxs) want = maxs;
  if (want < 1) want = 1;
  pl.pix_per_split = ceil_div64(ktiles, want) * pl.BKP;
  pl.splits_per_chunk = ceil_div64(npix, pl.pix_per_split);
  const int64_t chunks = s.N > 0 ? ceil_div64(s.N, pl.nb) : 0;
  pl.total_splits = chunks * pl.splits_per_chunk;
  pl.ws_elems = pl.total_splits * s.G * Kg * Ng;
  return pl;
}

template <typename T, typename Cfg, bool k1x1>
void launch_wgrad_cfg(WgradGemmParams wp, bool vec_a, bool vec_b, int64_t splits, int groups, cudaStream_t stream) {
  const int smem = wgrad_smem_bytes<T, Cfg>(wp.mask != nullptr);
  const int64_t tm = ceil_div64(wp.Mg, Cfg::BM), tn = ceil_div64(wp.Ng, Cfg::BN);
  wp.ntiles_n = int(tn);
  auto kernel = vec_a ? (vec_b ? conv_wgrad_kernel<T, Cfg, true, true, k1x1> : conv_wgrad_kernel<T, Cfg, true, false, k1x1>)
                      : (vec_b ? conv_wgrad_kernel<T, Cfg, false, true, k1x1> : conv_wgrad_kernel<T, Cfg, false, false, k1x1>);
  if (smem > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  for (int g0 = 0; g0 < groups; g0 += 65535) {
    wp.group0 = g0;
    const int gz = groups - g0 < 65535 ? groups - g0 : 65535;
    kernel<<<dim3(unsigned(tm * tn), unsigned(splits), unsigned(gz)), Cfg::THREADS, smem, stream>>>(wp);
  }
}

template <typename T, bool k1x1>
int64_t wgrad_workspace_bytes(const ConvWgradParams& p) {
  const int64_t cpad = conv_pad_channels(p.s.C / p.s.G, sizeof(T));
  const WgradPlan pl = plan_wgrad<T>(p.s, cpad, p.num_sms);
  return pl.ws_elems * int64_t(sizeof(typename Num<T>::acc_t));
}

template <typename T, bool k1x1>
void run_wgrad(const ConvWgradParams& p, cudaStream_t stream) {
  using A = typename Num<T>::acc_t;
  const ConvGeom& s = p.s;
  const int64_t Cg = s.C / s.G, Kg = s.K / s.G;
  const int64_t cpad = conv_pad_channels(Cg, sizeof(T));
  const WgradPlan pl = plan_wgrad<T>(s, cpad, p.num_sms);
  if (pl.total_splits == 0) return;  // empty batch: the caller zeroes dw
  WgradGemmParams wp{};
  wp.Mg = int(Kg);
  wp.Ng = int(s.R * s.S * cpad);
  wp.pix_per_split = int(pl.pix_per_split);
  wp.G = int(s.G);
  wp.P = int(s.P);
  wp.Q = int(s.Q);
  wp.H = int(s.H);
  wp.W = int(s.W);
  wp.S = int(s.S);
  wp.RS = int(s.R * s.S);
  wp.fd_PQ = make_fastdiv(uint32_t(s.P * s.Q));
  wp.fd_Q = make_fastdiv(uint32_t(s.Q));
  wp.fd_cpad = make_fastdiv(uint32_t(cpad));
  wp.fd_S = make_fastdiv(uint32_t(s.S));
  wp.sh = int(s.sh);
  wp.sw = int(s.sw);
  wp.ph = int(s.ph);
  wp.pw = int(s.pw);
  wp.dh = int(s.dh);
  wp.dw = int(s.dw);
  wp.Kg = int(Kg);
  wp.Cg = int(Cg);
  wp.cpad = int(cpad);
  wp.gys = p.gys;
  wp.xs = p.xs;
  wp.ws = p.ws;
  int64_t split0 = 0;
  for (int64_t n0 = 0; n0 < s.N; n0 += pl.nb) {
    const int64_t cnt = s.N - n0 < pl.nb ? s.N - n0 : pl.nb;
    wp.npix = int(cnt * s.P * s.Q);
    wp.split0 = int(split0);
    wp.gy = advance_ptr<T>(p.gy, n0 * p.gys.n);
    wp.mask = advance_ptr<T>(p.out, n0 * p.outs.n);  // out shares gy's strides (launcher contract)
    wp.x = advance_ptr<T>(p.x, n0 * p.xs.n);
    bool vec_a = vec_ok<T>(wp.gy, wp.gys, Kg);
    if (wp.mask != nullptr) vec_a = vec_a && (reinterpret_cast<uintptr_t>(wp.mask) & 15) == 0;
    const bool vec_b = vec_ok<T>(wp.x, wp.xs, Cg);
    // Splits of the last (short) chunk past its pixels still write zero tiles: keep them.
    const int64_t splits = pl.splits_per_chunk;
    if constexpr (sizeof(T) == 2) {
      if (pl.cfg == 1)
        launch_wgrad_cfg<T, WTcS, k1x1>(wp, vec_a, vec_b, splits, int(s.G), stream);
      else
        launch_wgrad_cfg<T, WTcL, k1x1>(wp, vec_a, vec_b, splits, int(s.G), stream);
    } else if constexpr (sizeof(T) == 4) {
      if (pl.cfg == 1)
        launch_wgrad_cfg<T, WSimtFS, k1x1>(wp, vec_a, vec_b, splits, int(s.G), stream);
      else
        launch_wgrad_cfg<T, WSimtF, k1x1>(wp, vec_a, vec_b, splits, int(s.G), stream);
    } else {
      launch_wgrad_cfg<T, WSimtD, k1x1>(wp, vec_a, vec_b, splits, int(s.G), stream);
    }
    split0 += splits;
  }
  const int64_t total = s.K * Cg * s.R * s.S;
  const int threads = 256;
  int64_t blocks = ceil_div64(total, threads);
  if (blocks > 65535 * 4) blocks = 65535 * 4;
  wgrad_reduce_kernel<T><<<unsigned(blocks), threads, 0, stream>>>(
      static_cast<const A*>(p.ws), int(pl.total_splits), int(s.G), int(Kg), int(Cg), int(s.R * s.S), int(s.S),
      int(cpad), static_cast<T*>(p.dw), p.dws);
}

// Instantiates the whole conv family for one dtype and 1x1-ness: used by the two .cu files.
template <typename T, bool k1x1>
struct ConvFamily {
  static bool tensor_core(bool tf32) { return sizeof(T) == 2 || (sizeof(T) == 4 && tf32); }
  static void fprop(const ConvFpropParams& p, cudaStream_t st) { run_fprop<T, k1x1>(p, tensor_core(p.tf32), st); }
  static void dgrad(const ConvDgradParams& p, cudaStream_t st) { run_dgrad<T, k1x1>(p, tensor_core(p.tf32), st); }
  static int64_t wgrad_ws(const ConvWgradParams& p) { return wgrad_workspace_bytes<T, k1x1>(p); }
  static void wgrad(const ConvWgradParams& p, cudaStream_t st) { run_wgrad<T, k1x1>(p, st); }
};

}  // namespace igemm
}  // namespace cuda
}  // namespace fastcnn
