// CUDA max_pool2d kernels: memory-bound, grid-stride loops, int32 index math unless a tensor has
// 2^31 elements or more (then int64), 16-byte vectors along channels for channels_last.
//
// Sizing: a 3x3/2 pool reads each input element ~2.25 times (overlapping windows, served by L1/L2)
// and writes one value (+ one int64 index) per output, so DRAM traffic is about input + output +
// indices; the grid is capped at 8 blocks of 256 threads per SM (a full SM of threads, each with
// its 16-byte loads of a window in flight), the loops stride over the rest.
#include "cuda/max_pool2d_kernel.cuh"

#include <limits>

namespace fastcnn {
namespace cuda {

// Integer inputs (uint8 images, integer label maps; forward only, they have no gradient) are
// compared in their own type. Only this file instantiates Num for integers.
template <typename T>
struct IntNum {
  using acc_t = T;
  static __device__ __forceinline__ T to_acc(T v) { return v; }
  static __device__ __forceinline__ T from_acc(T v) { return v; }
};
template <>
struct Num<uint8_t> : IntNum<uint8_t> {};
template <>
struct Num<int8_t> : IntNum<int8_t> {};
template <>
struct Num<int16_t> : IntNum<int16_t> {};
template <>
struct Num<int32_t> : IntNum<int32_t> {};
template <>
struct Num<int64_t> : IntNum<int64_t> {};

namespace {

// n / d for the index type: a multiply-shift for int32 (FastDiv), a division for int64.
template <typename I>
struct Divider;
template <>
struct Divider<int32_t> {
  FastDiv f;
  int32_t d;
  static Divider make(int64_t d) { return Divider{make_fastdiv(uint32_t(d)), int32_t(d)}; }
  __device__ __forceinline__ int32_t div(int32_t n) const { return int32_t(fdiv(f, uint32_t(n))); }
};
template <>
struct Divider<int64_t> {
  int64_t d;
  static Divider make(int64_t d) { return Divider{d}; }
  __device__ __forceinline__ int64_t div(int64_t n) const { return n / d; }
};

template <typename I>
struct PoolArgs {
  I C, H, W, P, Q;
  I kh, kw, sh, sw, ph, pw, dh, dw;
  I total;  // work items
  I cvn;    // channel groups per pixel (NHWC: C / V)
  Divider<I> d_a, d_b, d_c;  // the three divisors of the work-item decomposition
};

template <typename I>
__device__ __forceinline__ void window(const PoolArgs<I>& a, I p, I q, I& hs, I& he, I& ws, I& we) {
  hs = p * a.sh - a.ph;
  ws = q * a.sw - a.pw;
  he = min(hs + (a.kh - 1) * a.dh + 1, a.H);
  we = min(ws + (a.kw - 1) * a.dw + 1, a.W);
  while (hs < 0) hs += a.dh;
  while (ws < 0) ws += a.dw;
}

// A window's starting maximum: -inf, or an integer type's lowest value (as ATen).
template <typename A>
__device__ __forceinline__ A lowest() {
  return std::numeric_limits<A>::has_infinity ? -std::numeric_limits<A>::infinity() : std::numeric_limits<A>::lowest();
}

template <typename A>
__device__ __forceinline__ bool takes(A v, A m) {
  if constexpr (std::numeric_limits<A>::is_integer)
    return v > m;
  else
    return v > m || v != v;  // larger, or NaN
}

// NCHW forward: one output element per work item; i -> (plane, p, q) with d_a = Q, d_b = P.
template <typename T, typename I>
__global__ void __launch_bounds__(256)
    pool_fwd_nchw(const T* __restrict__ x, T* __restrict__ y, int64_t* __restrict__ idx, const PoolArgs<I> a) {
  using A = typename Num<T>::acc_t;
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < a.total; i += I(gridDim.x) * I(blockDim.x)) {
    const I t = a.d_a.div(i);
    const I q = i - t * a.Q;
    const I plane = a.d_b.div(t);
    const I p = t - plane * a.P;
    I hs, he, ws, we;
    window(a, p, q, hs, he, ws, we);
    const T* xp = x + plane * a.H * a.W;
    A m = lowest<A>();
    I mi = hs * a.W + ws;
    for (I h = hs; h < he; h += a.dh)
      for (I w = ws; w < we; w += a.dw) {
        const A v = to_acc(xp[h * a.W + w]);
        if (takes(v, m)) {
          m = v;
          mi = h * a.W + w;
        }
      }
    y[i] = from_acc<T>(m);  // exact: m is one of the inputs (or the start value)
    if (idx != nullptr) idx[i] = int64_t(mi);
  }
}

// NHWC forward: V channels of one output pixel per work item; i -> (pixel, cv) with d_a = cvn,
// pixel -> (n, p, q) with d_b = Q, d_c = P. Output offset = pixel*C + cv*V = i*V.
template <typename T, typename I, int V>
__global__ void __launch_bounds__(256)
    pool_fwd_nhwc(const T* __restrict__ x, T* __restrict__ y, int64_t* __restrict__ idx, const PoolArgs<I> a) {
  using A = typename Num<T>::acc_t;
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < a.total; i += I(gridDim.x) * I(blockDim.x)) {
    const I pix = a.d_a.div(i);
    const I cv = i - pix * a.cvn;
    const I t = a.d_b.div(pix);
    const I q = pix - t * a.Q;
    const I n = a.d_c.div(t);
    const I p = t - n * a.P;
    I hs, he, ws, we;
    window(a, p, q, hs, he, ws, we);
    const T* xb = x + n * a.H * a.W * a.C + cv * V;
    A m[V];
    I mi[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      m[e] = lowest<A>();
      mi[e] = hs * a.W + ws;
    }
    for (I h = hs; h < he; h += a.dh)
      for (I w = ws; w < we; w += a.dw) {
        const I at = h * a.W + w;
        T v[V];
        if constexpr (V > 1) {
          const Vec16<T> vv = *reinterpret_cast<const Vec16<T>*>(xb + at * a.C);
#pragma unroll
          for (int e = 0; e < V; ++e) v[e] = vv.v[e];
        } else {
          v[0] = xb[at * a.C];
        }
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const A f = to_acc(v[e]);
          const bool tk = takes(f, m[e]);
          m[e] = tk ? f : m[e];
          mi[e] = tk ? at : mi[e];
        }
      }
    const I o = i * I(V);
    if constexpr (V > 1) {
      Vec16<T> ov;
#pragma unroll
      for (int e = 0; e < V; ++e) ov.v[e] = from_acc<T>(m[e]);
      *reinterpret_cast<Vec16<T>*>(y + o) = ov;
      if (idx != nullptr) {
#pragma unroll
        for (int e = 0; e < V; e += 2)
          *reinterpret_cast<longlong2*>(idx + o + e) = make_longlong2(int64_t(mi[e]), int64_t(mi[e + 1]));
      }
    } else {
      y[o] = from_acc<T>(m[0]);
      if (idx != nullptr) idx[o] = int64_t(mi[0]);
    }
  }
}

// First and one-past-last output row whose window (of extent (k-1)*d+1 from o*s - pad) covers h.
template <typename I>
__device__ __forceinline__ void covering(I h, I pad, I k, I d, I s, I n_out, I& lo, I& hi) {
  const I a = h + pad - (k - 1) * d;  // window start must be >= this
  lo = a <= 0 ? I(0) : (a - 1) / s + 1;
  hi = min((h + pad) / s + 1, n_out);
}

// Whether h is one of output row o's taps (o in covering()'s range: o*s - pad <= h), not a row
// between two dilated taps. Only a tap can be a window's argmax, except for a window that holds no
// input element (every tap in the padding or past the end): its -inf output carries PyTorch's
// index, which lies outside the window, and its gradient must go nowhere (as on the CPU backend).
template <typename I>
__device__ __forceinline__ bool on_tap(I h, I o, I pad, I d, I s) {
  return d == 1 || (h + pad - o * s) % d == 0;
}

// NCHW backward (gather): one input element per work item; i -> (plane, h, w), d_a = W, d_b = H.
template <typename T, typename I>
__global__ void __launch_bounds__(256) pool_bwd_nchw(const T* __restrict__ gy, const int64_t* __restrict__ idx,
                                                     T* __restrict__ gx, const PoolArgs<I> a) {
  using A = typename Num<T>::acc_t;
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < a.total; i += I(gridDim.x) * I(blockDim.x)) {
    const I t = a.d_a.div(i);
    const I w = i - t * a.W;
    const I plane = a.d_b.div(t);
    const I h = t - plane * a.H;
    I p0, p1, q0, q1;
    covering(h, a.ph, a.kh, a.dh, a.sh, a.P, p0, p1);
    covering(w, a.pw, a.kw, a.dw, a.sw, a.Q, q0, q1);
    const int64_t target = int64_t(h) * a.W + w;
    const I base = plane * a.P * a.Q;
    A s = A(0);
    for (I p = p0; p < p1; ++p)
      for (I q = q0; q < q1; ++q) {
        const I o = base + p * a.Q + q;
        if (idx[o] == target && on_tap(h, p, a.ph, a.dh, a.sh) && on_tap(w, q, a.pw, a.dw, a.sw))
          s += to_acc(gy[o]);
      }
    gx[i] = from_acc<T>(s);
  }
}

// NHWC backward (gather): V channels of one input pixel; i -> (pixel, cv), d_a = cvn, pixel ->
// (n, h, w) with d_b = W, d_c = H.
template <typename T, typename I, int V>
__global__ void __launch_bounds__(256) pool_bwd_nhwc(const T* __restrict__ gy, const int64_t* __restrict__ idx,
                                                     T* __restrict__ gx, const PoolArgs<I> a) {
  using A = typename Num<T>::acc_t;
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < a.total; i += I(gridDim.x) * I(blockDim.x)) {
    const I pix = a.d_a.div(i);
    const I cv = i - pix * a.cvn;
    const I t = a.d_b.div(pix);
    const I w = pix - t * a.W;
    const I n = a.d_c.div(t);
    const I h = t - n * a.H;
    I p0, p1, q0, q1;
    covering(h, a.ph, a.kh, a.dh, a.sh, a.P, p0, p1);
    covering(w, a.pw, a.kw, a.dw, a.sw, a.Q, q0, q1);
    const int64_t target = int64_t(h) * a.W + w;
    A s[V];
#pragma unroll
    for (int e = 0; e < V; ++e) s[e] = A(0);
    for (I p = p0; p < p1; ++p)
      for (I q = q0; q < q1; ++q) {
        const I o = ((n * a.P + p) * a.Q + q) * a.C + cv * V;
        int64_t iv[V];
        T gv[V];
        if constexpr (V > 1) {
#pragma unroll
          for (int e = 0; e < V; e += 2) {
            const longlong2 l = *reinterpret_cast<const longlong2*>(idx + o + e);
            iv[e] = l.x;
            iv[e + 1] = l.y;
          }
          const Vec16<T> g = *reinterpret_cast<const Vec16<T>*>(gy + o);
#pragma unroll
          for (int e = 0; e < V; ++e) gv[e] = g.v[e];
        } else {
          iv[0] = idx[o];
          gv[0] = gy[o];
        }
        const bool tap = on_tap(h, p, a.ph, a.dh, a.sh) && on_tap(w, q, a.pw, a.dw, a.sw);
#pragma unroll
        for (int e = 0; e < V; ++e)
          if (iv[e] == target && tap) s[e] += to_acc(gv[e]);
      }
    const I o = i * I(V);
    if constexpr (V > 1) {
      Vec16<T> ov;
#pragma unroll
      for (int e = 0; e < V; ++e) ov.v[e] = from_acc<T>(s[e]);
      *reinterpret_cast<Vec16<T>*>(gx + o) = ov;
    } else {
      gx[o] = from_acc<T>(s[0]);
    }
  }
}

template <typename I>
PoolArgs<I> make_args(const PoolGeom& g, int64_t total, int64_t cvn) {
  PoolArgs<I> a{};
  a.C = I(g.C);
  a.H = I(g.H);
  a.W = I(g.W);
  a.P = I(g.P);
  a.Q = I(g.Q);
  a.kh = I(g.kh);
  a.kw = I(g.kw);
  a.sh = I(g.sh);
  a.sw = I(g.sw);
  a.ph = I(g.ph);
  a.pw = I(g.pw);
  a.dh = I(g.dh);
  a.dw = I(g.dw);
  a.total = I(total);
  a.cvn = I(cvn);
  return a;
}

unsigned grid_for(int64_t work, int64_t num_sms) {
  const int64_t cap = 8 * (num_sms > 0 ? num_sms : 132);
  int64_t b = ceil_div64(work, 256);
  if (b > cap) b = cap;
  return unsigned(b < 1 ? 1 : b);
}

// int32 index math while every index and the grid-stride overshoot stay below 2^31.
// (cuda-sim's tests force the 64-bit and the scalar paths through FASTCNN_PICK.)
bool narrow(int64_t a, int64_t b) {
  const int64_t lim = (int64_t(1) << 31) - (int64_t(1) << 26);
  return a < lim && b < lim && FASTCNN_PICK("pool_index32", 1, 2);
}

template <typename T, typename I>
void forward_typed(const MaxPool2dParams& p, cudaStream_t stream) {
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  constexpr int V = 16 / int(sizeof(T));
  if (!p.channels_last) {
    const int64_t total = p.g.N * p.g.C * p.g.P * p.g.Q;
    PoolArgs<I> a = make_args<I>(p.g, total, p.g.C);
    a.d_a = Divider<I>::make(p.g.Q);
    a.d_b = Divider<I>::make(p.g.P);
    FASTCNN_LAUNCH(grid_for(total, p.num_sms), 256, 0, stream, pool_fwd_nchw<T, I>)(x, y, p.idx, a);
    return;
  }
  const bool vec = p.g.C % V == 0 && aligned16_host(p.x) && aligned16_host(p.y) &&
                   (p.idx == nullptr || aligned16_host(p.idx)) && FASTCNN_PICK("pool_vec", 1, 2);
  const int64_t cvn = vec ? p.g.C / V : p.g.C;
  const int64_t total = p.g.N * p.g.P * p.g.Q * cvn;
  PoolArgs<I> a = make_args<I>(p.g, total, cvn);
  a.d_a = Divider<I>::make(cvn);
  a.d_b = Divider<I>::make(p.g.Q);
  a.d_c = Divider<I>::make(p.g.P);
  if (vec)
    FASTCNN_LAUNCH(grid_for(total, p.num_sms), 256, 0, stream, pool_fwd_nhwc<T, I, V>)(x, y, p.idx, a);
  else
    FASTCNN_LAUNCH(grid_for(total, p.num_sms), 256, 0, stream, pool_fwd_nhwc<T, I, 1>)(x, y, p.idx, a);
}

template <typename T, typename I>
void backward_typed(const MaxPool2dBackwardParams& p, cudaStream_t stream) {
  const T* gy = static_cast<const T*>(p.gy);
  T* gx = static_cast<T*>(p.gx);
  constexpr int V = 16 / int(sizeof(T));
  if (!p.channels_last) {
    const int64_t total = p.g.N * p.g.C * p.g.H * p.g.W;
    PoolArgs<I> a = make_args<I>(p.g, total, p.g.C);
    a.d_a = Divider<I>::make(p.g.W);
    a.d_b = Divider<I>::make(p.g.H);
    FASTCNN_LAUNCH(grid_for(total, p.num_sms), 256, 0, stream, pool_bwd_nchw<T, I>)(gy, p.idx, gx, a);
    return;
  }
  const bool vec = p.g.C % V == 0 && aligned16_host(p.gy) && aligned16_host(p.gx) && aligned16_host(p.idx) &&
                   FASTCNN_PICK("pool_vec", 1, 2);
  const int64_t cvn = vec ? p.g.C / V : p.g.C;
  const int64_t total = p.g.N * p.g.H * p.g.W * cvn;
  PoolArgs<I> a = make_args<I>(p.g, total, cvn);
  a.d_a = Divider<I>::make(cvn);
  a.d_b = Divider<I>::make(p.g.W);
  a.d_c = Divider<I>::make(p.g.H);
  if (vec)
    FASTCNN_LAUNCH(grid_for(total, p.num_sms), 256, 0, stream, pool_bwd_nhwc<T, I, V>)(gy, p.idx, gx, a);
  else
    FASTCNN_LAUNCH(grid_for(total, p.num_sms), 256, 0, stream, pool_bwd_nhwc<T, I, 1>)(gy, p.idx, gx, a);
}

}  // namespace

template <typename T>
void launch_max_pool2d_forward(const MaxPool2dParams& p, cudaStream_t stream) {
  const int64_t in = p.g.N * p.g.C * p.g.H * p.g.W, out = p.g.N * p.g.C * p.g.P * p.g.Q;
  if (out == 0) return;
  if (narrow(in, out))
    forward_typed<T, int32_t>(p, stream);
  else
    forward_typed<T, int64_t>(p, stream);
}

template <typename T>
void launch_max_pool2d_backward(const MaxPool2dBackwardParams& p, cudaStream_t stream) {
  const int64_t in = p.g.N * p.g.C * p.g.H * p.g.W, out = p.g.N * p.g.C * p.g.P * p.g.Q;
  if (in == 0) return;
  if (narrow(in, out))
    backward_typed<T, int32_t>(p, stream);
  else
    backward_typed<T, int64_t>(p, stream);
}

#define FASTCNN_INSTANTIATE_POOL(T)                                                          \
  template void launch_max_pool2d_forward<T>(const MaxPool2dParams&, cudaStream_t);          \
  template void launch_max_pool2d_backward<T>(const MaxPool2dBackwardParams&, cudaStream_t);

FASTCNN_INSTANTIATE_POOL(float)
FASTCNN_INSTANTIATE_POOL(double)
FASTCNN_INSTANTIATE_POOL(__half)
FASTCNN_INSTANTIATE_POOL(__nv_bfloat16)
// Integers: forward only (checks.h rejects their backward).
template void launch_max_pool2d_forward<uint8_t>(const MaxPool2dParams&, cudaStream_t);
template void launch_max_pool2d_forward<int8_t>(const MaxPool2dParams&, cudaStream_t);
template void launch_max_pool2d_forward<int16_t>(const MaxPool2dParams&, cudaStream_t);
template void launch_max_pool2d_forward<int32_t>(const MaxPool2dParams&, cudaStream_t);
template void launch_max_pool2d_forward<int64_t>(const MaxPool2dParams&, cudaStream_t);

#undef FASTCNN_INSTANTIATE_POOL

}  // namespace cuda
}  // namespace fastcnn
