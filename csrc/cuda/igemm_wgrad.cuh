// Implicit-GEMM convolution, wgrad: conv_wgrad_kernel (split-K over pixels into a workspace),
// wgrad_reduce_kernel and their host launch helpers, torch-free. Part of the igemm family
// (igemm.cuh); fprop/dgrad is igemm_fprop.cuh, the tile configurations are in igemm_common.cuh.
//
// ================================================================================================
// wgrad: conv_wgrad_kernel  (C[K/G, R*S*cpad] = sum over pixels of A[pix, k] * B[pix, col])
// ================================================================================================
// A[m = k, pix] = g[n, g*Kg + k, p, q] (masked), B[col = (r*S + s)*cpad + c, pix] =
// x[n, g*Cg + c, p*sh - ph + r*dh, q*sw - pw + s*dw]. Channels are contiguous in memory, pixels
// are the reduction, so tiles are stored MN-major ([pixel][channels], swizzled) and fragments come
// from ldmatrix.trans (16-bit), 32-bit shared loads (TF32, where allowed: ldmatrix.trans has no
// 32-bit form) or scalar shared loads (CUDA cores: exact fp32, fp64). Split-K: blockIdx.y takes a pixel
// range; each CTA stores its fp32 (fp64) partial tile to ws[split][g][m][col]; wgrad_reduce_kernel
// sums the splits in index order (deterministic) and writes dw in its own strides.
#pragma once

#include "cuda/common.cuh"
#include "cuda/conv2d_kernel.cuh"
#include "cuda/igemm_common.cuh"

namespace fastcnn {
namespace cuda {
namespace igemm {

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

  // Element (k, m) of an MN-major stage as 32 bits (TF32 operands).
  template <int ROWCH>
  __device__ __forceinline__ static uint32_t lds32(const unsigned char* s, int k, int m) {
    return *reinterpret_cast<const uint32_t*>(s + mnmajor_chunk<ROWCH, SWZ>(k, m >> 2) * 16 + (m & 3) * 4);
  }

  __device__ __forceinline__ void compute(const unsigned char* sA, const unsigned char* sB, int tid) {
    const int lane = tid & 31, warp = tid >> 5;
    const int wm0 = (warp / Cfg::WARPS_N) * Cfg::WM, wn0 = (warp % Cfg::WARPS_N) * Cfg::WN;
    if constexpr (sizeof(T) == 4) {
      // TF32 (mma m16n8k8): ldmatrix.trans has no 32-bit form, so each fragment element is a 32-bit
      // shared load of its (pixel, channel): A a0..a3 = (k, m), (k, m+8), (k+4, m), (k+4, m+8) with
      // k = lane % 4, m = lane / 4; B b0, b1 = (k, n), (k+4, n). Under the stage swizzle the 4 pixel
      // rows of a load share banks pairwise: 2-way conflicts, where the FFMA path it replaces does
      // 8x the math instructions.
      const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
      for (int kst = 0; kst < Cfg::BKP / 8; ++kst) {
        uint32_t af[MI][4], bf[NI][2];
        const int k = kst * 8 + tq;
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          const int m = wm0 + mi * 16 + gq;
          af[mi][0] = lds32<ROWCH_A>(sA, k, m);
          af[mi][1] = lds32<ROWCH_A>(sA, k, m + 8);
          af[mi][2] = lds32<ROWCH_A>(sA, k + 4, m);
          af[mi][3] = lds32<ROWCH_A>(sA, k + 4, m + 8);
          Mma<T>::prep(af[mi]);
        }
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const int n = wn0 + ni * 8 + gq;
          bf[ni][0] = lds32<ROWCH_B>(sB, k, n);
          bf[ni][1] = lds32<ROWCH_B>(sB, k + 4, n);
          Mma<T>::prep_b(bf[ni]);
        }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int ni = 0; ni < NI; ++ni) Mma<T>::run(acc[mi][ni], af[mi], bf[ni]);
      }
    } else {
      static_assert(sizeof(T) == 2, "ldmatrix.trans is 16-bit only");
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

  FASTCNN_DYNAMIC_SMEM(smem);
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
WgradPlan plan_wgrad(const ConvGeom& s, int64_t cpad, int64_t num_sms, bool tf32) {
  WgradPlan pl{};
  const int64_t Kg = s.K / s.G, Ng = s.R * s.S * cpad;
  // (cuda-sim's tests force each tile and the split count through FASTCNN_PICK.)
  if constexpr (sizeof(T) == 2) {
    if (FASTCNN_PICK("wgrad_tile", Kg <= 64 ? 1 : 0, 2) == 1) {
      pl.cfg = 1; pl.BM = WTcS::BM; pl.BN = WTcS::BN; pl.BKP = WTcS::BKP;
    } else {
      pl.cfg = 0; pl.BM = WTcL::BM; pl.BN = WTcL::BN; pl.BKP = WTcL::BKP;
    }
  } else if constexpr (sizeof(T) == 4) {
    if (tf32 && FASTCNN_PICK("wgrad_tc", 1, 2)) {
      pl.cfg = 2; pl.BM = WTcF::BM; pl.BN = WTcF::BN; pl.BKP = WTcF::BKP;
    } else if (FASTCNN_PICK("wgrad_tile", Kg <= 64 ? 1 : 0, 2) == 1) {
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
  want = FASTCNN_PICK("wgrad_splits", int(want), 0);
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
  // WTcS sends its scalar/scalar calls to WTcSScalar (igemm_common.cuh), which has only that variant.
  constexpr bool kS = std::is_same<Cfg, WTcS>::value, kSS = std::is_same<Cfg, WTcSScalar>::value;
  static_assert(WTcSScalar::BM == WTcS::BM && WTcSScalar::BN == WTcS::BN && WTcSScalar::BKP == WTcS::BKP,
                "one split plan for both");
  if constexpr (kS) {
    if (!vec_a && !vec_b) return launch_wgrad_cfg<T, WTcSScalar, k1x1>(wp, false, false, splits, groups, stream);
  }
  auto kernel = conv_wgrad_kernel<T, Cfg, kSS ? false : true, kSS ? false : true, k1x1>;
  if constexpr (!kSS) {
    if (!vec_a || !vec_b) kernel = vec_a ? conv_wgrad_kernel<T, Cfg, true, false, k1x1> : conv_wgrad_kernel<T, Cfg, false, true, k1x1>;
    if constexpr (!kS) {
      if (!vec_a && !vec_b) kernel = conv_wgrad_kernel<T, Cfg, false, false, k1x1>;
    }
  }
  if (!allow_dynamic_smem(kernel, smem)) return;  // the error stays for the launcher's check
  for (int g0 = 0; g0 < groups; g0 += 65535) {
    wp.group0 = g0;
    const int gz = groups - g0 < 65535 ? groups - g0 : 65535;
    FASTCNN_LAUNCH(dim3(unsigned(tm * tn), unsigned(splits), unsigned(gz)), Cfg::THREADS, smem, stream, kernel)(wp);
  }
}

template <typename T, bool k1x1>
int64_t wgrad_workspace_bytes(const ConvWgradParams& p) {
  const int64_t cpad = conv_pad_channels(p.s.C / p.s.G, sizeof(T));
  const WgradPlan pl = plan_wgrad<T>(p.s, cpad, p.num_sms, p.tf32);
  return pl.ws_elems * int64_t(sizeof(typename Num<T>::acc_t));
}

template <typename T, bool k1x1>
void run_wgrad(const ConvWgradParams& p, cudaStream_t stream) {
  using A = typename Num<T>::acc_t;
  const ConvGeom& s = p.s;
  const int64_t Cg = s.C / s.G, Kg = s.K / s.G;
  const int64_t cpad = conv_pad_channels(Cg, sizeof(T));
  const WgradPlan pl = plan_wgrad<T>(s, cpad, p.num_sms, p.tf32);
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
    bool vec_a = vec_ok<T>(wp.gy, wp.gys, Kg) && FASTCNN_PICK("wgrad_vec_a", 1, 2);
    if (wp.mask != nullptr) vec_a = vec_a && (reinterpret_cast<uintptr_t>(wp.mask) & 15) == 0;
    const bool vec_b = vec_ok<T>(wp.x, wp.xs, Cg) && FASTCNN_PICK("wgrad_vec_b", 1, 2);
    // Splits of the last (short) chunk past its pixels still write zero tiles: keep them.
    const int64_t splits = pl.splits_per_chunk;
    if constexpr (sizeof(T) == 2) {
      if (pl.cfg == 1)
        launch_wgrad_cfg<T, WTcS, k1x1>(wp, vec_a, vec_b, splits, int(s.G), stream);
      else
        launch_wgrad_cfg<T, WTcL, k1x1>(wp, vec_a, vec_b, splits, int(s.G), stream);
    } else if constexpr (sizeof(T) == 4) {
      if (pl.cfg == 2)
        launch_wgrad_cfg<T, WTcF, k1x1>(wp, vec_a, vec_b, splits, int(s.G), stream);
      else if (pl.cfg == 1)
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
  FASTCNN_LAUNCH(unsigned(blocks), threads, 0, stream, wgrad_reduce_kernel<T>)(
      static_cast<const A*>(p.ws), int(pl.total_splits), int(s.G), int(Kg), int(Cg), int(s.R * s.S), int(s.S),
      int(cpad), static_cast<T*>(p.dw), p.dws);
}

}  // namespace igemm
}  // namespace cuda
}  // namespace fastcnn
