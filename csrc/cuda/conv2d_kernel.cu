// CUDA conv2d kernels (any kernel size, stride, padding, dilation, groups): the implicit-GEMM
// family of igemm.cuh instantiated for general geometry, and the grad_bias reduction shared with
// conv1x1. Torch-free.
#include "cuda/conv2d_kernel.cuh"

#include "cuda/igemm.cuh"

namespace fastcnn {
namespace cuda {

// ------------------------------------------------------------------------------------------------
// grad_bias: db[k] = sum over pixels of relu_mask(g)[n, k, p, q].
// Pass 1 sums a pixel range per (split, k) into ws[split][k]; pass 2 adds the splits in index order.
// Both passes have a fixed reduction tree (no atomics): the result does not depend on timing.
// Channels-contiguous g (NHWC): a block is 32 channels x 8 pixel rows, consecutive threads on
// consecutive channels (coalesced). Otherwise (NCHW): 8 channels x 32 pixels, consecutive threads
// on consecutive pixels (coalesced along W), reduced with a fixed shuffle tree.
// ------------------------------------------------------------------------------------------------
namespace {

struct BiasArgs {
  int K;
  int npix;
  int pix_per_split;
  int split0;
  int P, Q;
  FastDiv fd_PQ, fd_Q;
  const void* gy;
  Strides4 gys;
  const void* mask;  // same strides as gy, or null
  void* ws;
};

template <typename T>
__device__ __forceinline__ typename Num<T>::acc_t bias_term(const BiasArgs& a, int pix, int k) {
  const int n = int(fdiv(a.fd_PQ, uint32_t(pix)));
  const int rem = pix - n * a.P * a.Q;
  const int p = int(fdiv(a.fd_Q, uint32_t(rem)));
  const int q = rem - p * a.Q;
  const int64_t off = int64_t(n) * a.gys.n + int64_t(k) * a.gys.c + int64_t(p) * a.gys.h + int64_t(q) * a.gys.w;
  T v = static_cast<const T*>(a.gy)[off];
  if (a.mask != nullptr) v = relu_grad(v, static_cast<const T*>(a.mask)[off]);
  return to_acc(v);
}

template <typename T, bool kChanInner>
__global__ void __launch_bounds__(256) bias_grad_partial_kernel(const BiasArgs a) {
  using A = typename Num<T>::acc_t;
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int split = blockIdx.y;
  const int b = split * a.pix_per_split;
  const int e = a.npix - b < a.pix_per_split ? a.npix : b + a.pix_per_split;
  A* ws = static_cast<A*>(a.ws) + int64_t(a.split0 + split) * a.K;
  if constexpr (kChanInner) {
    FASTCNN_SHARED(A, red, [8][33]);
    const int k = blockIdx.x * 32 + tx;
    A s = A(0);
    if (k < a.K)
      for (int pix = b + ty; pix < e; pix += 8) s += bias_term<T>(a, pix, k);
    red[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && k < a.K) {
      A t = red[0][tx];
#pragma unroll
      for (int i = 1; i < 8; ++i) t += red[i][tx];
      ws[k] = t;
    }
  } else {
    const int k = blockIdx.x * 8 + ty;  // one warp per channel
    A s = A(0);
    if (k < a.K)
      for (int pix = b + tx; pix < e; pix += 32) s += bias_term<T>(a, pix, k);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (tx == 0 && k < a.K) ws[k] = s;
  }
}

template <typename T>
__global__ void bias_grad_final_kernel(const typename Num<T>::acc_t* __restrict__ ws, int splits, int K,
                                       T* __restrict__ db) {
  using A = typename Num<T>::acc_t;
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= K) return;
  A s = A(0);
  for (int i = 0; i < splits; ++i) s += ws[int64_t(i) * K + k];
  db[k] = from_acc<T>(s);
}

struct BiasPlan {
  int64_t nb, pix_per_split, splits_per_chunk, total_splits;
  bool chan_inner;
  int64_t kblocks;
};

BiasPlan plan_bias(const ConvBiasGradParams& p) {
  BiasPlan pl{};
  const int64_t PQ = p.P * p.Q;
  pl.nb = igemm::images_per_chunk(PQ);
  if (pl.nb > p.N) pl.nb = p.N > 0 ? p.N : 1;
  pl.chan_inner = FASTCNN_PICK("bias_chan_inner", p.gys.c == 1 ? 1 : 0, 2) == 1;  // either reads any strides
  pl.kblocks = ceil_div64(p.K, pl.chan_inner ? 32 : 8);
  const int64_t npix = pl.nb * PQ;
  // ~4 blocks per SM, each summing at least 512 pixels per thread row.
  int64_t want = ceil_div64(4 * (p.num_sms > 0 ? p.num_sms : 132), pl.kblocks);
  int64_t maxs = npix / 4096 > 1 ? npix / 4096 : 1;
  if (maxs > 1024) maxs = 1024;
  if (want > maxs) want = maxs;
  if (want < 1) want = 1;
  want = FASTCNN_PICK("bias_splits", int(want), 0);
  pl.pix_per_split = ceil_div64(npix, want);
  if (pl.pix_per_split < 1) pl.pix_per_split = 1;
  pl.splits_per_chunk = ceil_div64(npix, pl.pix_per_split);
  pl.total_splits = (p.N > 0 ? ceil_div64(p.N, pl.nb) : 0) * pl.splits_per_chunk;
  return pl;
}

}  // namespace

template <typename T>
int64_t conv_bias_grad_workspace_bytes(const ConvBiasGradParams& p) {
  return plan_bias(p).total_splits * p.K * int64_t(sizeof(typename Num<T>::acc_t));
}

template <typename T>
void launch_conv_bias_grad(const ConvBiasGradParams& p, cudaStream_t stream) {
  using A = typename Num<T>::acc_t;
  const BiasPlan pl = plan_bias(p);
  if (pl.total_splits == 0 || p.K == 0) return;  // empty batch: the caller zeroes db
  BiasArgs a{};
  a.K = int(p.K);
  a.pix_per_split = int(pl.pix_per_split);
  a.P = int(p.P);
  a.Q = int(p.Q);
  a.fd_PQ = make_fastdiv(uint32_t(p.P * p.Q));
  a.fd_Q = make_fastdiv(uint32_t(p.Q));
  a.gys = p.gys;
  a.ws = p.ws;
  int64_t split0 = 0;
  for (int64_t n0 = 0; n0 < p.N; n0 += pl.nb) {
    const int64_t cnt = p.N - n0 < pl.nb ? p.N - n0 : pl.nb;
    a.npix = int(cnt * p.P * p.Q);
    a.split0 = int(split0);
    a.gy = static_cast<const T*>(p.gy) + n0 * p.gys.n;
    a.mask = p.out == nullptr ? nullptr : static_cast<const T*>(p.out) + n0 * p.outs.n;
    const dim3 grid(unsigned(pl.kblocks), unsigned(pl.splits_per_chunk));
    if (pl.chan_inner)
      FASTCNN_LAUNCH(grid, 256, 0, stream, bias_grad_partial_kernel<T, true>)(a);
    else
      FASTCNN_LAUNCH(grid, 256, 0, stream, bias_grad_partial_kernel<T, false>)(a);
    split0 += pl.splits_per_chunk;
  }
  FASTCNN_LAUNCH(unsigned(ceil_div64(p.K, 256)), 256, 0, stream, bias_grad_final_kernel<T>)(
      static_cast<const A*>(p.ws), int(pl.total_splits), int(p.K), static_cast<T*>(p.db));
}

// ------------------------------------------------------------------------------------------------
// conv2d passes
// ------------------------------------------------------------------------------------------------
template <typename T>
void launch_conv2d_fprop(const ConvFpropParams& p, cudaStream_t stream) {
  igemm::ConvFamily<T, false>::fprop(p, stream);
}
template <typename T>
void launch_conv2d_dgrad(const ConvDgradParams& p, cudaStream_t stream) {
  igemm::ConvFamily<T, false>::dgrad(p, stream);
}
template <typename T>
int64_t conv2d_wgrad_workspace_bytes(const ConvWgradParams& p) {
  return igemm::ConvFamily<T, false>::wgrad_ws(p);
}
template <typename T>
void launch_conv2d_wgrad(const ConvWgradParams& p, cudaStream_t stream) {
  igemm::ConvFamily<T, false>::wgrad(p, stream);
}

#define FASTCNN_INSTANTIATE_CONV2D(T)                                                   \
  template void launch_conv2d_fprop<T>(const ConvFpropParams&, cudaStream_t);           \
  template void launch_conv2d_dgrad<T>(const ConvDgradParams&, cudaStream_t);           \
  template int64_t conv2d_wgrad_workspace_bytes<T>(const ConvWgradParams&);             \
  template void launch_conv2d_wgrad<T>(const ConvWgradParams&, cudaStream_t);           \
  template int64_t conv_bias_grad_workspace_bytes<T>(const ConvBiasGradParams&);        \
  template void launch_conv_bias_grad<T>(const ConvBiasGradParams&, cudaStream_t);

FASTCNN_INSTANTIATE_CONV2D(float)
FASTCNN_INSTANTIATE_CONV2D(double)
FASTCNN_INSTANTIATE_CONV2D(__half)
FASTCNN_INSTANTIATE_CONV2D(__nv_bfloat16)

#undef FASTCNN_INSTANTIATE_CONV2D

}  // namespace cuda
}  // namespace fastcnn
