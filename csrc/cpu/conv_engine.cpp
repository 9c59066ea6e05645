#include "cpu/conv_engine.h"

#include "backend.h"
#include "cpu/onednn.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

namespace fastcnn::cpu {
namespace {

using at::MemoryFormat;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(new T[std::max<int64_t>(n, 1)]);
}

// MKL's threaded sgemm opens an OpenMP region on every call, even inside our at::parallel_for
// workers where nesting leaves it one thread: ~3 us each, 1024 regions per LeNet conv1 forward
// (4.2 ms on 2 threads against 0.97 ms on one). mkl_set_num_threads_local(1) makes MKL take its
// sequential path in the calling thread. It is looked up at run time in the library that holds
// ATen's CPU kernels (MKL is linked into libtorch_cpu, loaded without RTLD_GLOBAL); torch builds
// without MKL lack it and keep their BLAS's behaviour. (The lowercase symbol is MKL's Fortran
// interface, taking a pointer: the C entry point is MKL_Set_Num_Threads_Local.)
using MklSetLocal = int (*)(int);
MklSetLocal mkl_set_local() {
  static const MklSetLocal fn = [] {
    Dl_info info{};
    if (!dladdr(reinterpret_cast<void*>(&at::get_num_threads), &info) || !info.dli_fname) return MklSetLocal{nullptr};
    void* lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (!lib) return MklSetLocal{nullptr};
    return reinterpret_cast<MklSetLocal>(dlsym(lib, "MKL_Set_Num_Threads_Local"));
  }();
  return fn;
}

struct SequentialBlasInWorker {
  MklSetLocal fn = nullptr;
  int prev = 0;
  SequentialBlasInWorker() {
    if (at::in_parallel_region() && (fn = mkl_set_local())) prev = fn(1);
  }
  ~SequentialBlasInWorker() {
    if (fn) fn(prev);
  }
};

// Row-major GEMM, C[M,N] (+)= op(A)[M,K] * op(B)[K,N]; A is stored [M,K] ([K,M] when ta) with
// leading dimension lda, B likewise. ATen's CPU kernel (MKL sgemm/dgemm) is called directly,
// without dispatcher or autograd; inside at::parallel_for MKL runs sequentially in the worker.
template <typename T>
void gemm_once(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
               bool accumulate, T* C, int64_t ldc) {
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  T* a_ptr = const_cast<T*>(A);
  T* b_ptr = const_cast<T*>(B);
  at::Tensor a = ta ? at::from_blob(a_ptr, {K, M}, {lda, 1}, opts).t() : at::from_blob(a_ptr, {M, K}, {lda, 1}, opts);
  at::Tensor b = tb ? at::from_blob(b_ptr, {N, K}, {ldb, 1}, opts).t() : at::from_blob(b_ptr, {K, N}, {ldb, 1}, opts);
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  if (accumulate)
    at::cpu::addmm_(c, a, b);
  else
    at::cpu::mm_out(c, a, b);
}

// float32 GEMMs reduce over K in blocks of kAccurateK whose partial products are summed in float64.
// Why: for the small-M/N shapes of long channel reductions (a 1x1 conv over 102,400 channels, a
// 5x5 conv over 4,096) MKL's sgemm accumulates K sequentially: 8e-6 relative error against float64
// where oneDNN's convolution gives 4e-7 (tests/test_accuracy.py); 256-term blocks bring it to ~3e-7.
// Cost: one extra pass over the M x N tile per block, < 1% of the block's K x M x N FMAs.
constexpr int64_t kAccurateK = 256;

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
          bool accumulate, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  SequentialBlasInWorker sequential;
  if (K == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
    return;
  }
  if (!std::is_same_v<T, float> || K <= kAccurateK) {
    gemm_once(ta, tb, M, N, K, A, lda, B, ldb, accumulate, C, ldc);
    return;
  }
  std::vector<double> acc(static_cast<size_t>(M * N), 0.0);
  std::vector<T> part(static_cast<size_t>(M * N));
  if (accumulate)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) acc[i * N + j] = C[i * ldc + j];
  for (int64_t k0 = 0; k0 < K; k0 += kAccurateK) {
    const int64_t kk = std::min(kAccurateK, K - k0);
    gemm_once(ta, tb, M, N, kk, ta ? A + k0 * lda : A + k0, lda, tb ? B + k0 : B + k0 * ldb, ldb, false, part.data(),
              N);
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += part[i];
  }
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = static_cast<T>(acc[i * N + j]);
}

// Rows per chunk: the im2col panel (row_elems values per row) should stay in L2 while the GEMM
// reads it (512 KB measured ~5% faster than 256 KB or 1 MB on ResNet 3x3 layers with a 1 MB L2);
// at least 4 chunks per thread when there is enough work, for load balance.
int64_t chunk_rows(int64_t rows, int64_t row_elems, int64_t elem_size) {
  if (rows <= 0) return 1;
  const int64_t nt = at::get_num_threads();
  int64_t mc = (512 * 1024) / std::max<int64_t>(1, row_elems * elem_size);
  mc = std::clamp<int64_t>(mc, 32, 4096);
  mc = std::min(mc, std::max<int64_t>(32, ceil_div(rows, 4 * nt)));
  return std::max<int64_t>(1, std::min(mc, rows));
}

bool is_direct(const ConvGeom& g) {
  // 1x1, stride 1, no padding: the input itself is the GEMM operand.
  return g.R == 1 && g.S == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
}

// Calls f with compile-time flags so the epilogue loops vectorise without branches.
template <typename F>
void with_flags(bool a, bool b, bool c, F&& f) {
  auto c3 = [&](auto A, auto B) {
    if (c) f(A, B, std::true_type{}); else f(A, B, std::false_type{});
  };
  auto c2 = [&](auto A) {
    if (b) c3(A, std::true_type{}); else c3(A, std::false_type{});
  };
  if (a) c2(std::true_type{}); else c2(std::false_type{});
}

template <typename T>
inline T relu(T v) { return v < T(0) ? T(0) : v; }  // NaN stays NaN, as torch.relu

// NHWC epilogue over `rows` output rows of K channels, out's rows ldo apart (K, or the channels
// of the tensor a conv2d_into slice belongs to); the residual is dense.
template <typename T>
void epilogue_nhwc(T* __restrict out, int64_t rows, int64_t K, int64_t ldo, const T* __restrict bias,
                   const T* __restrict res, bool do_relu) {
  if (!bias && !res && !do_relu) return;
  with_flags(bias != nullptr, res != nullptr, do_relu, [&](auto HB, auto HR, auto RL) {
    for (int64_t i = 0; i < rows; ++i) {
      T* o = out + i * ldo;
      const T* r = HR ? res + i * K : nullptr;
      for (int64_t k = 0; k < K; ++k) {
        T v = o[k];
        if constexpr (decltype(HB)::value) v += bias[k];
        if constexpr (decltype(HR)::value) v += r[k];
        if constexpr (decltype(RL)::value) v = relu(v);
        o[k] = v;
      }
    }
  });
}

// NCHW epilogue over K channel rows of `cnt` pixels, row stride ld.
template <typename T>
void epilogue_nchw(T* __restrict out, int64_t K, int64_t ld, int64_t cnt, const T* __restrict bias,
                   const T* __restrict res, bool do_relu) {
  if (!bias && !res && !do_relu) return;
  with_flags(bias != nullptr, res != nullptr, do_relu, [&](auto HB, auto HR, auto RL) {
    for (int64_t k = 0; k < K; ++k) {
      T* o = out + k * ld;
      const T* r = HR ? res + k * ld : nullptr;
      const T b = HB ? bias[k] : T(0);
      for (int64_t j = 0; j < cnt; ++j) {
        T v = o[j];
        if constexpr (decltype(HB)::value) v += b;
        if constexpr (decltype(HR)::value) v += r[j];
        if constexpr (decltype(RL)::value) v = relu(v);
        o[j] = v;
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// im2col / col2im
// ---------------------------------------------------------------------------------------------

// NHWC: cols[i, (r*S + s)*Cg + c] = x[n, ih, iw, grp*Cg + c] for output rows m0..m0+rows.
// Without groups and dilation the S taps of a kernel row are one contiguous run of S*C input
// values, copied at once (for LeNet's 1-channel 5x5 conv1 the per-tap loop overhead dominated).
template <typename T>
void im2col_nhwc(const T* x, const ConvGeom& g, int64_t grp, int64_t m0, int64_t rows, T* cols) {
  const int64_t Cg = g.Cg(), CRS = g.R * g.S * Cg, PQ = g.P * g.Q;
  const bool runs = g.G == 1 && g.dw == 1;
  auto copy = [](T* d, const T* src, int64_t n) {
    if (n < 16)
      for (int64_t c = 0; c < n; ++c) d[c] = src[c];
    else
      std::memcpy(d, src, n * sizeof(T));
  };
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t m = m0 + i, n = m / PQ, pq = m % PQ, p = pq / g.Q, q = pq % g.Q;
    T* dst = cols + i * CRS;
    for (int64_t r = 0; r < g.R; ++r) {
      T* drow = dst + r * g.S * Cg;
      const int64_t ih = p * g.sh - g.ph + r * g.dh;
      if (ih < 0 || ih >= g.H) {
        std::fill(drow, drow + g.S * Cg, T(0));
        continue;
      }
      const T* xrow = x + (n * g.H + ih) * g.W * g.C + grp * Cg;
      const int64_t iw0 = q * g.sw - g.pw;
      if (runs) {
        const int64_t s0 = std::clamp<int64_t>(-iw0, 0, g.S), s1 = std::clamp<int64_t>(g.W - iw0, s0, g.S);
        std::fill(drow, drow + s0 * Cg, T(0));
        copy(drow + s0 * Cg, xrow + (iw0 + s0) * g.C, (s1 - s0) * Cg);
        std::fill(drow + s1 * Cg, drow + g.S * Cg, T(0));
        continue;
      }
      for (int64_t s = 0; s < g.S; ++s) {
        const int64_t iw = iw0 + s * g.dw;
        T* d = drow + s * Cg;
        if (iw < 0 || iw >= g.W)
          std::fill(d, d + Cg, T(0));
        else
          copy(d, xrow + iw * g.C, Cg);
      }
    }
  }
}

// NHWC scatter-add of dcols (same layout as im2col_nhwc) into dx.
template <typename T>
void col2im_nhwc(const T* cols, const ConvGeom& g, int64_t grp, int64_t m0, int64_t rows, T* dx) {
  const int64_t Cg = g.Cg(), CRS = g.R * g.S * Cg, PQ = g.P * g.Q;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t m = m0 + i, n = m / PQ, pq = m % PQ, p = pq / g.Q, q = pq % g.Q;
    const T* src = cols + i * CRS;
    for (int64_t r = 0; r < g.R; ++r) {
      const int64_t ih = p * g.sh - g.ph + r * g.dh;
      if (ih < 0 || ih >= g.H) continue;
      for (int64_t s = 0; s < g.S; ++s) {
        const int64_t iw = q * g.sw - g.pw + s * g.dw;
        if (iw < 0 || iw >= g.W) continue;
        T* d = dx + ((n * g.H + ih) * g.W + iw) * g.C + grp * Cg;
        const T* c = src + (r * g.S + s) * Cg;
        for (int64_t k = 0; k < Cg; ++k) d[k] += c[k];
      }
    }
  }
}

// Valid output columns q in [lo, hi) for which iw = q*sw + off lies in [0, W).
inline void valid_q(int64_t off, int64_t sw, int64_t W, int64_t Q, int64_t& lo, int64_t& hi) {
  lo = off >= 0 ? 0 : ceil_div(-off, sw);
  hi = (W - 1 - off) >= 0 ? (W - 1 - off) / sw + 1 : 0;
  lo = std::min(lo, Q);
  hi = std::clamp<int64_t>(hi, lo, Q);
}

// NCHW (Caffe) layout: colsT[(c*R + r)*S + s, j] = x[n, grp*Cg + c, ih(p), iw(q)] for the output
// pixels p0 + j, j < cnt, of image n: contiguous row runs when the stride is 1.
template <typename T>
void im2col_nchw(const T* x, const ConvGeom& g, int64_t n, int64_t grp, int64_t p0, int64_t cnt, T* cols) {
  const int64_t Cg = g.Cg(), HW = g.H * g.W;
  const int64_t step = g.sw;  // input elements between neighbouring output columns
  for (int64_t c = 0; c < Cg; ++c) {
    const T* plane = x + (n * g.C + grp * Cg + c) * HW;
    for (int64_t r = 0; r < g.R; ++r) {
      for (int64_t s = 0; s < g.S; ++s) {
        T* dst = cols + ((c * g.R + r) * g.S + s) * cnt;
        const int64_t off = s * g.dw - g.pw;
        int64_t qlo, qhi;
        valid_q(off, g.sw, g.W, g.Q, qlo, qhi);
        int64_t j = 0, p = p0 / g.Q, q0 = p0 % g.Q;
        while (j < cnt) {
          const int64_t len = std::min(g.Q - q0, cnt - j);
          const int64_t ih = p * g.sh - g.ph + r * g.dh;
          T* d = dst + j - q0;  // d[q] for q in [q0, q0+len)
          if (ih < 0 || ih >= g.H) {
            std::fill(d + q0, d + q0 + len, T(0));
          } else {
            const T* src = plane + ih * g.W + off;
            const int64_t a = std::clamp(qlo, q0, q0 + len), b = std::clamp(qhi, a, q0 + len);
            std::fill(d + q0, d + a, T(0));
            if (step == 1) {
              std::memcpy(d + a, src + a, (b - a) * sizeof(T));
            } else {
              for (int64_t q = a; q < b; ++q) d[q] = src[q * step];
            }
            std::fill(d + b, d + q0 + len, T(0));
          }
          j += len;
          ++p;
          q0 = 0;
        }
      }
    }
  }
}

template <typename T>
void col2im_nchw(const T* cols, const ConvGeom& g, int64_t n, int64_t grp, int64_t p0, int64_t cnt, T* dx) {
  const int64_t Cg = g.Cg(), HW = g.H * g.W;
  for (int64_t c = 0; c < Cg; ++c) {
    T* plane = dx + (n * g.C + grp * Cg + c) * HW;
    for (int64_t r = 0; r < g.R; ++r) {
      for (int64_t s = 0; s < g.S; ++s) {
        const T* src_row = cols + ((c * g.R + r) * g.S + s) * cnt;
        const int64_t off = s * g.dw - g.pw;
        int64_t qlo, qhi;
        valid_q(off, g.sw, g.W, g.Q, qlo, qhi);
        int64_t j = 0, p = p0 / g.Q, q0 = p0 % g.Q;
        while (j < cnt) {
          const int64_t len = std::min(g.Q - q0, cnt - j);
          const int64_t ih = p * g.sh - g.ph + r * g.dh;
          if (ih >= 0 && ih < g.H) {
            const T* s_ = src_row + j - q0;
            T* d = plane + ih * g.W + off;
            const int64_t a = std::clamp(qlo, q0, q0 + len), b = std::clamp(qhi, a, q0 + len);
            for (int64_t q = a; q < b; ++q) d[q * g.sw] += s_[q];
          }
          j += len;
          ++p;
          q0 = 0;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// forward
// ---------------------------------------------------------------------------------------------

// wp: weight as [K, R, S, Cg] (NHWC) or [K, Cg, R, S] (NCHW), contiguous.
// ldo: out's row stride (NHWC) or image stride (NCHW): g.K (g.K * P * Q) for a dense output.
template <typename T>
void forward_nhwc(const T* x, const T* wp, const T* bias, const T* res, const ConvGeom& g, bool do_relu, T* out,
                  int64_t ldo) {
  const int64_t M = g.N * g.P * g.Q, Cg = g.Cg(), Kg = g.Kg(), CRS = g.R * g.S * Cg;
  const bool direct = is_direct(g);
  const int64_t mc = chunk_rows(M, (direct ? 0 : CRS) + g.K, sizeof(T));
  at::parallel_for(0, ceil_div(M, mc), 1, [&](int64_t cb, int64_t ce) {
    auto cols = scratch<T>(direct ? 0 : mc * CRS);
    for (int64_t ci = cb; ci < ce; ++ci) {
      const int64_t m0 = ci * mc, rows = std::min(mc, M - m0);
      for (int64_t grp = 0; grp < g.G; ++grp) {
        const T* A = x + m0 * g.C + grp * Cg;
        int64_t lda = g.C;
        if (!direct) {
          im2col_nhwc(x, g, grp, m0, rows, cols.get());
          A = cols.get();
          lda = CRS;
        }
        gemm<T>(false, true, rows, Kg, CRS, A, lda, wp + grp * Kg * CRS, CRS, false, out + m0 * ldo + grp * Kg, ldo);
      }
      epilogue_nhwc(out + m0 * ldo, rows, g.K, ldo, bias, res ? res + m0 * g.K : nullptr, do_relu);
    }
  });
}

template <typename T>
void forward_nchw(const T* x, const T* wp, const T* bias, const T* res, const ConvGeom& g, bool do_relu, T* out,
                  int64_t ldo) {
  const int64_t PQ = g.P * g.Q, HW = g.H * g.W, Cg = g.Cg(), Kg = g.Kg(), CRS = Cg * g.R * g.S;
  const bool direct = is_direct(g);
  const int64_t mc = chunk_rows(PQ, (direct ? 0 : CRS) + g.K, sizeof(T));
  const int64_t per_img = ceil_div(PQ, mc);
  at::parallel_for(0, g.N * per_img, 1, [&](int64_t cb, int64_t ce) {
    auto cols = scratch<T>(direct ? 0 : mc * CRS);
    for (int64_t ci = cb; ci < ce; ++ci) {
      const int64_t n = ci / per_img, p0 = (ci % per_img) * mc, cnt = std::min(mc, PQ - p0);
      T* o = out + n * ldo + p0;
      for (int64_t grp = 0; grp < g.G; ++grp) {
        const T* B = x + (n * g.C + grp * Cg) * HW + p0;
        int64_t ldb = HW;
        if (!direct) {
          im2col_nchw(x, g, n, grp, p0, cnt, cols.get());
          B = cols.get();
          ldb = cnt;
        }
        gemm<T>(false, false, Kg, cnt, CRS, wp + grp * Kg * CRS, CRS, B, ldb, false, o + grp * Kg * PQ, PQ);
      }
      epilogue_nchw(o, g.K, PQ, cnt, bias, res ? res + n * g.K * PQ + p0 : nullptr, do_relu);
    }
  });
}

// NHWC with few output channels (LeNet's 6 and 16): MKL multiplies [rows, CRS] x [CRS, Kg] 4x
// slower than [Kg, CRS] x [CRS, rows] (66 vs 17 us at 2114x25x6, one core), so this path
// computes the [Kg, pixels] tile and transposes it into the output rows. wp as forward_nhwc's.
template <typename T>
void forward_nhwc_few(const T* x, const T* wp, const T* bias, const T* res, const ConvGeom& g, bool do_relu, T* out,
                      int64_t ldo) {
  const int64_t PQ = g.P * g.Q, Cg = g.Cg(), Kg = g.Kg(), CRS = Cg * g.R * g.S;
  const bool direct = is_direct(g);
  const int64_t mc = chunk_rows(PQ, (direct ? 0 : CRS) + g.K, sizeof(T));
  const int64_t per_img = ceil_div(PQ, mc);
  at::parallel_for(0, g.N * per_img, 1, [&](int64_t cb, int64_t ce) {
    auto cols = scratch<T>(direct ? 0 : mc * CRS);
    auto tile = scratch<T>(Kg * mc);
    for (int64_t ci = cb; ci < ce; ++ci) {
      const int64_t n = ci / per_img, p0 = (ci % per_img) * mc, cnt = std::min(mc, PQ - p0), m0 = n * PQ + p0;
      for (int64_t grp = 0; grp < g.G; ++grp) {
        if (g.C == 1 && !direct) {
          // One channel: NHWC memory is NCHW memory, and the transposed panel copies whole
          // row runs (3x faster than the row panel for LeNet's 1x28x28 5x5 conv1).
          im2col_nchw(x, g, n, 0, p0, cnt, cols.get());
          gemm<T>(false, false, Kg, cnt, CRS, wp, CRS, cols.get(), cnt, false, tile.get(), cnt);
        } else {
          const T* B = x + m0 * g.C + grp * Cg;
          int64_t ldb = g.C;
          if (!direct) {
            im2col_nhwc(x, g, grp, m0, cnt, cols.get());
            B = cols.get();
            ldb = CRS;
          }
          gemm<T>(false, true, Kg, cnt, CRS, wp + grp * Kg * CRS, CRS, B, ldb, false, tile.get(), cnt);
        }
        T* o = out + m0 * ldo + grp * Kg;
        for (int64_t j = 0; j < cnt; ++j)
          for (int64_t k = 0; k < Kg; ++k) o[j * ldo + k] = tile[k * cnt + j];
      }
      epilogue_nhwc(out + m0 * ldo, cnt, g.K, ldo, bias, res ? res + m0 * g.K : nullptr, do_relu);
    }
  });
}

at::Tensor prepare_weight(const at::Tensor& w, MemoryFormat fmt) {
  // NHWC wants [K, R, S, Cg] rows; NCHW wants [K, Cg, R, S] rows. A channels_last weight already
  // is the former, a contiguous one the latter: then no copy is made.
  return fmt == MemoryFormat::ChannelsLast ? w.permute({0, 2, 3, 1}).contiguous() : w.contiguous();
}

// Picks the kernel for the layout (and the few-output-channel NHWC variant) and the weight
// layout it wants.
template <typename T>
void forward_any(const T* x, const at::Tensor& w, const T* bias, const T* res, const ConvGeom& g, bool do_relu,
                 MemoryFormat fmt, T* out, int64_t ldo = -1) {
  const at::Tensor wp = prepare_weight(w, fmt);
  if (fmt != MemoryFormat::ChannelsLast) {
    forward_nchw<T>(x, wp.data_ptr<T>(), bias, res, g, do_relu, out, ldo < 0 ? g.K * g.P * g.Q : ldo);
  } else if (g.Kg() < 16) {
    forward_nhwc_few<T>(x, wp.data_ptr<T>(), bias, res, g, do_relu, out, ldo < 0 ? g.K : ldo);
  } else {
    forward_nhwc<T>(x, wp.data_ptr<T>(), bias, res, g, do_relu, out, ldo < 0 ? g.K : ldo);
  }
}

// ---------------------------------------------------------------------------------------------
// backward
// ---------------------------------------------------------------------------------------------

// Gradient of the pre-activation: grad where out > 0 (NaN output passes the gradient, as
// torch's threshold_backward). grad and out are dense in the same format.
template <typename T>
void relu_mask_range(const T* __restrict grad, const T* __restrict out, T* __restrict g, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T gv = grad[i], ov = out[i];  // both loaded unconditionally: a select, not a branch
    g[i] = ov <= T(0) ? T(0) : gv;
  }
}

template <typename T>
void relu_mask(const T* grad, const T* out, T* g, int64_t n) {
  // restrict + unconditional loads make this a vectorised select. As `g = out <= 0 ? 0 : grad[i]`
  // g++ emitted a branch per element: 15 ms instead of 0.5 ms on 3.2M floats (random signs).
  at::parallel_for(0, n, 32768, [&](int64_t b, int64_t e) { relu_mask_range(grad + b, out + b, g + b, e - b); });
}

// dW (in the engine's weight layout, [K, CRS]) and dbias from g and x, summed per thread and
// reduced in thread order.
template <typename T>
void wgrad(const T* x, const T* gy, const ConvGeom& g, MemoryFormat fmt, T* dw, T* db) {
  const int64_t Cg = g.Cg(), Kg = g.Kg(), CRS = g.R * g.S * Cg, K = g.K;
  const bool direct = is_direct(g), nhwc = fmt == MemoryFormat::ChannelsLast;
  const int64_t nt = at::get_num_threads();
  const int64_t rows_total = nhwc ? g.N * g.P * g.Q : g.P * g.Q;
  // Each chunk's GEMM reads and writes the thread's whole dW partial (K x CRS), so chunks are as
  // long as the im2col panel allows (<= 4 MB): ResNet's 512->512 3x3 wgrad went from 41 to 19 ms.
  const int64_t panel_rows = std::max<int64_t>(32, (4 << 20) / std::max<int64_t>(1, CRS * int64_t(sizeof(T))));
  const int64_t mc = std::max<int64_t>(1, std::min({rows_total, panel_rows, ceil_div(rows_total, nhwc ? nt : 1)}));
  const int64_t per_img = ceil_div(g.P * g.Q, mc);
  const int64_t nchunks = nhwc ? ceil_div(rows_total, mc) : g.N * per_img;
  const bool want_w = dw != nullptr;
  std::vector<T> part(want_w ? nt * K * CRS : 0, T(0));
  std::vector<double> bpart(db ? nt * K : 0, 0.0);
  const int64_t PQ = g.P * g.Q, HW = g.H * g.W;
  at::parallel_for(0, nchunks, 1, [&](int64_t cb, int64_t ce) {
    const int64_t tid = at::get_thread_num();
    T* acc = want_w ? part.data() + tid * K * CRS : nullptr;
    double* bacc = db ? bpart.data() + tid * K : nullptr;
    auto cols = scratch<T>(direct || !want_w ? 0 : mc * CRS);
    for (int64_t ci = cb; ci < ce; ++ci) {
      if (nhwc) {
        const int64_t m0 = ci * mc, rows = std::min(mc, rows_total - m0);
        const T* gc = gy + m0 * K;
        if (want_w) {
          for (int64_t grp = 0; grp < g.G; ++grp) {
            const T* A = x + m0 * g.C + grp * Cg;
            int64_t lda = g.C;
            if (!direct) {
              im2col_nhwc(x, g, grp, m0, rows, cols.get());
              A = cols.get();
              lda = CRS;
            }
            gemm<T>(true, false, Kg, CRS, rows, gc + grp * Kg, K, A, lda, true, acc + grp * Kg * CRS, CRS);
          }
        }
        if (bacc)
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t k = 0; k < K; ++k) bacc[k] += gc[i * K + k];
      } else {
        const int64_t n = ci / per_img, p0 = (ci % per_img) * mc, cnt = std::min(mc, PQ - p0);
        const T* gc = gy + n * K * PQ + p0;
        if (want_w) {
          for (int64_t grp = 0; grp < g.G; ++grp) {
            const T* B = x + (n * g.C + grp * Cg) * HW + p0;
            int64_t ldb = HW;
            if (!direct) {
              im2col_nchw(x, g, n, grp, p0, cnt, cols.get());
              B = cols.get();
              ldb = cnt;
            }
            gemm<T>(false, true, Kg, CRS, cnt, gc + grp * Kg * PQ, PQ, B, ldb, true, acc + grp * Kg * CRS, CRS);
          }
        }
        if (bacc)
          for (int64_t k = 0; k < K; ++k) {
            double s = 0;
            const T* row = gc + k * PQ;
            for (int64_t j = 0; j < cnt; ++j) s += row[j];
            bacc[k] += s;
          }
      }
    }
  });
  if (want_w) {
    const int64_t sz = K * CRS;
    at::parallel_for(0, sz, 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        T s = part[i];
        for (int64_t t = 1; t < nt; ++t) s += part[t * sz + i];
        dw[i] = s;
      }
    });
  }
  if (db)
    for (int64_t k = 0; k < K; ++k) {
      double s = 0;
      for (int64_t t = 0; t < nt; ++t) s += bpart[t * K + k];
      db[k] = static_cast<T>(s);
    }
}

// Strided dgrad: dcols = g * W, scattered into dx (zeroed). Windows that overlap make neighbouring
// chunks write the same input pixels, so then each image is one task.
template <typename T>
void dgrad_scatter(const T* gy, const T* wp, const ConvGeom& g, MemoryFormat fmt, T* dx) {
  const int64_t Cg = g.Cg(), Kg = g.Kg(), CRS = g.R * g.S * Cg, K = g.K, PQ = g.P * g.Q;
  const bool nhwc = fmt == MemoryFormat::ChannelsLast;
  const bool overlap = g.sh < g.dh * (g.R - 1) + 1 || g.sw < g.dw * (g.S - 1) + 1;
  const int64_t mc = chunk_rows(PQ, CRS + K, sizeof(T));
  const int64_t per_img = ceil_div(PQ, mc);
  auto run_chunk = [&](int64_t ci, T* dcols) {
    const int64_t n = ci / per_img, p0 = (ci % per_img) * mc, cnt = std::min(mc, PQ - p0);
    for (int64_t grp = 0; grp < g.G; ++grp) {
      if (nhwc) {
        const int64_t m0 = n * PQ + p0;
        gemm<T>(false, false, cnt, CRS, Kg, gy + m0 * K + grp * Kg, K, wp + grp * Kg * CRS, CRS, false, dcols, CRS);
        col2im_nhwc(dcols, g, grp, m0, cnt, dx);
      } else {
        gemm<T>(true, false, CRS, cnt, Kg, wp + grp * Kg * CRS, CRS, gy + (n * K + grp * Kg) * PQ + p0, PQ, false,
                dcols, cnt);
        col2im_nchw(dcols, g, n, grp, p0, cnt, dx);
      }
    }
  };
  if (overlap) {
    at::parallel_for(0, g.N, 1, [&](int64_t nb, int64_t ne) {
      auto dcols = scratch<T>(mc * CRS);
      for (int64_t ci = nb * per_img; ci < ne * per_img; ++ci) run_chunk(ci, dcols.get());
    });
  } else {
    at::parallel_for(0, g.N * per_img, 1, [&](int64_t cb, int64_t ce) {
      auto dcols = scratch<T>(mc * CRS);
      for (int64_t ci = cb; ci < ce; ++ci) run_chunk(ci, dcols.get());
    });
  }
}

template <typename T>
void backward_typed(const at::Tensor& gy, const at::Tensor& x, const at::Tensor& w, const ConvGeom& g, MemoryFormat fmt,
                    at::Tensor* gx, at::Tensor* gw, at::Tensor* gb) {
  const bool nhwc = fmt == MemoryFormat::ChannelsLast;
  if (gw || gb) {
    at::Tensor dw_eng;  // [K, R, S, Cg] (NHWC) or [K, Cg, R, S] (NCHW)
    if (gw) dw_eng = at::empty(nhwc ? at::IntArrayRef{g.K, g.R, g.S, g.Cg()} : at::IntArrayRef{g.K, g.Cg(), g.R, g.S},
                               x.options());
    wgrad<T>(x.data_ptr<T>(), gy.data_ptr<T>(), g, fmt, gw ? dw_eng.data_ptr<T>() : nullptr,
             gb ? gb->data_ptr<T>() : nullptr);
    if (gw) gw->copy_(nhwc ? dw_eng.permute({0, 3, 1, 2}) : dw_eng);
  }
  if (gx) {
    // Stride 1: dx is the forward conv of g with the flipped kernel, im2col over N*H*W rows of K*R*S
    // taps. The scatter path's im2col is over N*P*Q rows of C*R*S taps instead: when the layer
    // widens (K > C, LeNet's 6->16, GoogLeNet's 5x5 reductions) that panel is several times smaller
    // and wins despite the scatter-add (LeNet conv2 dgrad: 12544x400 vs 6400x150 values).
    const bool flip_is_bigger = g.H * g.W * g.K > 2 * g.P * g.Q * g.C;
    if (g.sh == 1 && g.sw == 1 && !flip_is_bigger) {
      // dx = conv(g, flip(W)^T) with padding d*(k-1) - p: the forward engine, fully parallel.
      const at::Tensor wt = w.reshape({g.G, g.Kg(), g.Cg(), g.R, g.S})
                                .transpose(1, 2)
                                .flip({3, 4})
                                .reshape({g.C, g.Kg(), g.R, g.S});
      ConvGeom t{};
      t.N = g.N; t.C = g.K; t.H = g.P; t.W = g.Q;
      t.K = g.C; t.R = g.R; t.S = g.S; t.P = g.H; t.Q = g.W; t.G = g.G;
      t.sh = 1; t.sw = 1; t.dh = g.dh; t.dw = g.dw;
      t.ph = g.dh * (g.R - 1) - g.ph;
      t.pw = g.dw * (g.S - 1) - g.pw;
      forward_any<T>(gy.data_ptr<T>(), wt, nullptr, nullptr, t, false, fmt, gx->data_ptr<T>());
    } else {
      gx->zero_();
      const at::Tensor wp = prepare_weight(w, fmt);
      dgrad_scatter<T>(gy.data_ptr<T>(), wp.data_ptr<T>(), g, fmt, gx->data_ptr<T>());
    }
  }
}

bool is_reduced(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

}  // namespace

void conv_forward(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act, MemoryFormat fmt,
                  at::Tensor& out) {
  if (out.numel() == 0) return;
  const int64_t L = slice_channels(out, fmt);  // out may be a channel slice (conv2d_into)
  const int64_t ldo = fmt == MemoryFormat::ChannelsLast ? L : L * g.P * g.Q;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastcnn_conv_forward_cpu", [&] {
    forward_any<scalar_t>(x.data_ptr<scalar_t>(), w, bias ? bias->data_ptr<scalar_t>() : nullptr,
                          residual ? residual->data_ptr<scalar_t>() : nullptr, g, act == Activation::ReLU, fmt,
                          out.data_ptr<scalar_t>(), ldo);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& out,
    const ConvGeom& g, Activation act, MemoryFormat fmt, std::array<bool, 4> mask, bool onednn) {
  const auto opts = x.options();
  at::Tensor gy = grad.contiguous(fmt);
  if (act == Activation::ReLU) {
    TORCH_CHECK_VALUE(out.has_value(), "conv backward: the forward output is needed for activation='relu'");
    const at::Tensor o = out->contiguous(fmt);
    at::Tensor masked = new_output(gy.sizes(), opts.memory_format(fmt));
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastcnn_relu_mask_cpu", [&] {
      relu_mask<scalar_t>(gy.data_ptr<scalar_t>(), o.data_ptr<scalar_t>(), masked.data_ptr<scalar_t>(), gy.numel());
    });
    gy = masked;
  }
  at::Tensor gx, gw, gb, ga;
  if (onednn && (mask[0] || mask[1] || mask[2])) {
    std::tie(gx, gw, gb) = onednn_backward(gy, x, w, g, fmt, {mask[0], mask[1], mask[2]});
  } else {
    if (mask[0]) gx = new_output({g.N, g.C, g.H, g.W}, opts.memory_format(fmt));
    if (mask[1]) gw = new_output(w.sizes(), opts.memory_format(w.suggest_memory_format()));
    if (mask[2]) gb = new_output({g.K}, opts);
    if (mask[0] || mask[1] || mask[2]) {
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastcnn_conv_backward_cpu", [&] {
        backward_typed<scalar_t>(gy, x, w, g, fmt, mask[0] ? &gx : nullptr, mask[1] ? &gw : nullptr,
                                 mask[2] ? &gb : nullptr);
      });
    }
  }
  if (mask[3]) {
    // The pre-activation gradient is also the residual's. It must not alias grad_output.
    ga = (act == Activation::ReLU) ? gy : new_output(gy.sizes(), opts.memory_format(fmt)).copy_(gy);
  }
  const auto empty = [&] { return at::empty({0}, opts); };
  return {mask[0] ? gx : empty(), mask[1] ? gw : empty(), mask[2] ? gb : empty(), mask[3] ? ga : empty()};
}

namespace {

// The engine runs in the layout that suits the geometry; results are returned in the op's format
// (PyTorch's choice for the inputs), converting when the two differ. Measured on 2 cores against
// oneDNN (bench_ops, fwd): the 3-channel stems run 0.44-0.55x in NCHW but 1.3-1.45x in NHWC (NHWC
// copies 3-value runs per tap), while k>1 convs with many channels run ~1.35x in NHWC and ~1.9x in
// NCHW (small maps make NCHW's per-image GEMMs narrow). 1x1 stride-1 convs need no im2col in
// either layout, so they stay in the op's format and skip the conversions.
MemoryFormat engine_format(const ConvGeom& g, MemoryFormat fmt) {
  if (g.G == 1 && g.Cg() <= 4) return MemoryFormat::Contiguous;
  if (is_direct(g)) return fmt;
  return MemoryFormat::ChannelsLast;
}

// What ran, for fastcnn.explain.
void note_engine(const ConvGeom& g, MemoryFormat efmt, at::ScalarType cdt, bool onednn) {
  trace_note("kernel", onednn ? "oneDNN convolution (PyTorch's at::convolution)"
                       : is_direct(g) ? "GEMM on the input (1x1 stride 1, no im2col)"
                                      : "im2col panels + GEMM");
  trace_note("layout", efmt == MemoryFormat::ChannelsLast ? "NHWC" : "NCHW");
  trace_note("compute", c10::toString(cdt));
}

// t converted to `fmt` and `dtype` in a fresh output tensor with exactly the strides the fake
// kernel declares.
at::Tensor finish(const at::Tensor& t, MemoryFormat fmt, at::ScalarType dtype, MemoryFormat efmt) {
  if (efmt == fmt && t.scalar_type() == dtype) return t;
  at::Tensor o = new_output(t.sizes(), t.options().dtype(dtype).memory_format(fmt));
  o.copy_(t);
  return o;
}

}  // namespace

at::Tensor conv_forward_op(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act,
                           bool engine_layout) {
  const MemoryFormat fmt = conv_memory_format(input, weight);
  const auto dtype = input.scalar_type();
  const auto cdt = is_reduced(dtype) ? at::kFloat : dtype;  // float16/bfloat16 computed in float32
  const bool onednn = cdt == at::kFloat && prefer_onednn(g, ConvPass::Forward);
  const MemoryFormat efmt = onednn ? fmt : engine_format(g, fmt);
  if (trace_enabled()) note_engine(g, efmt, cdt, onednn);
  const at::Tensor x = input.to(cdt).contiguous(efmt);
  const at::Tensor w = weight.to(cdt);
  std::optional<at::Tensor> b, r;
  if (bias) b = bias->to(cdt).contiguous();
  if (residual) r = residual->to(cdt).contiguous(efmt);
  if (onednn) return finish(onednn_forward(x, w, b, r, g, act, fmt), fmt, dtype, fmt);
  at::Tensor out = new_output({g.N, g.K, g.P, g.Q}, x.options().memory_format(efmt));
  conv_forward(x, w, b, r, g, act, efmt, out);
  return finish(out, engine_layout ? efmt : fmt, dtype, efmt);
}

bool conv_forward_into(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act,
                       at::Tensor& out) {
  const MemoryFormat fmt = conv_memory_format(input, weight);
  const auto dtype = input.scalar_type();
  if (is_reduced(dtype) || (dtype == at::kFloat && prefer_onednn(g, ConvPass::Forward))) return false;
  if (engine_format(g, fmt) != fmt) return false;
  if (trace_enabled()) note_engine(g, fmt, dtype, false);
  std::optional<at::Tensor> b, r;
  if (bias) b = bias->contiguous();
  if (residual) r = residual->contiguous(fmt);
  conv_forward(input.contiguous(fmt), weight, b, r, g, act, fmt, out);
  return true;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_backward_op(
    const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& out,
    const ConvGeom& g, Activation act, std::array<bool, 4> mask) {
  const MemoryFormat fmt = conv_memory_format(input, weight);
  const auto dtype = input.scalar_type();
  const auto cdt = is_reduced(dtype) ? at::kFloat : dtype;
  const bool onednn = cdt == at::kFloat && prefer_onednn(g, ConvPass::Backward);
  const MemoryFormat efmt = onednn ? fmt : engine_format(g, fmt);
  if (trace_enabled()) note_engine(g, efmt, cdt, onednn);
  std::optional<at::Tensor> o;
  if (out) o = out->to(cdt);
  auto res = conv_backward(grad.to(cdt), input.to(cdt).contiguous(efmt), weight.to(cdt), o, g, act, efmt, mask,
                           onednn);
  const auto w_fmt = weight.suggest_memory_format();
  return {mask[0] ? finish(std::get<0>(res), fmt, dtype, efmt) : std::get<0>(res).to(dtype),
          mask[1] ? finish(std::get<1>(res), w_fmt, dtype, w_fmt) : std::get<1>(res).to(dtype),
          mask[2] ? finish(std::get<2>(res), MemoryFormat::Contiguous, dtype, MemoryFormat::Contiguous)
                  : std::get<2>(res).to(dtype),
          mask[3] ? finish(std::get<3>(res), fmt, dtype, efmt) : std::get<3>(res).to(dtype)};
}

// The GEMM and chunking above, for the in-place ops (conv_into.cpp).
template <typename T>
void worker_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                 bool accumulate, T* C, int64_t ldc) {
  gemm<T>(ta, tb, M, N, K, A, lda, B, ldb, accumulate, C, ldc);
}
template void worker_gemm<float>(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t,
                                 bool, float*, int64_t);
template void worker_gemm<double>(bool, bool, int64_t, int64_t, int64_t, const double*, int64_t, const double*,
                                  int64_t, bool, double*, int64_t);
int64_t panel_rows(int64_t rows, int64_t row_elems, int64_t elem_size) { return chunk_rows(rows, row_elems, elem_size); }

}  // namespace fastcnn::cpu
