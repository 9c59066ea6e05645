// CUDA add_relu kernels (forward and backward), memory-bound elementwise:
//  * flat + 16-byte aligned: one Vec16 of each operand per thread per step (8 halves / 4 floats /
//    2 doubles), grid-stride; the grid is capped at 8 blocks x 256 threads per SM, i.e. a full SM of
//    threads with 2 x 16 bytes of loads in flight each (~64 KB/SM, above the ~25-30 KB per SM that
//    H100's HBM latency x bandwidth needs); the < 1-vector tail is done by the first threads;
//  * flat, misaligned (views with a storage offset): the same with scalar accesses;
//  * strided / broadcast: TensorIterator's dimensions (fastest first), int32 offsets unless an
//    operand's extent passes 2^31 elements.
#include "cuda/add_relu_kernel.cuh"

namespace fastcnn {
namespace cuda {
namespace {

struct AddReluOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return from_acc<T>(relu_keep_nan(to_acc(a) + to_acc(b)));  // fp32 (fp64) math, one rounding
  }
};

struct ReluBackwardOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T g, T out) const {
    return relu_grad(g, out);
  }
};

template <typename T, typename Op>
__global__ void __launch_bounds__(256)
    ew_flat_vec_kernel(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, int64_t nvec,
                       int64_t numel) {
  constexpr int V = Vec16<T>::N;
  const Op op;
  const int64_t gid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = gid; i < nvec; i += stride) {
    const Vec16<T> va = reinterpret_cast<const Vec16<T>*>(a)[i];
    const Vec16<T> vb = reinterpret_cast<const Vec16<T>*>(b)[i];
    Vec16<T> vo;
#pragma unroll
    for (int e = 0; e < V; ++e) vo.v[e] = op(va.v[e], vb.v[e]);
    reinterpret_cast<Vec16<T>*>(out)[i] = vo;
  }
  const int64_t t = nvec * V + gid;  // tail: fewer than V elements
  if (t < numel) out[t] = op(a[t], b[t]);
}

template <typename T, typename Op, typename I>
__global__ void __launch_bounds__(256)
    ew_flat_kernel(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, I numel) {
  const Op op;
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < numel; i += I(gridDim.x) * I(blockDim.x))
    out[i] = op(a[i], b[i]);
}

template <typename I>
struct EwDims {
  int ndim;
  I numel;
  I sizes[kEwMaxDims];
  FastDiv fd[kEwMaxDims];  // used when I is int32
  I strides[3][kEwMaxDims];
};

template <typename I>
__device__ __forceinline__ I div_dim(const EwDims<I>& d, int k, I n) {
  if constexpr (sizeof(I) == 4)
    return I(fdiv(d.fd[k], uint32_t(n)));
  else
    return n / d.sizes[k];
}

template <typename T, typename Op, typename I>
__global__ void __launch_bounds__(256)
    ew_strided_kernel(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, const EwDims<I> d) {
  const Op op;
  for (I i = I(blockIdx.x) * I(blockDim.x) + I(threadIdx.x); i < d.numel; i += I(gridDim.x) * I(blockDim.x)) {
    I rem = i, oo = 0, oa = 0, ob = 0;
#pragma unroll
    for (int k = 0; k < kEwMaxDims; ++k) {
      if (k >= d.ndim) break;
      const I q = div_dim(d, k, rem);
      const I c = rem - q * d.sizes[k];
      oo += c * d.strides[0][k];
      oa += c * d.strides[1][k];
      ob += c * d.strides[2][k];
      rem = q;
    }
    out[oo] = op(a[oa], b[ob]);
  }
}

unsigned ew_grid(int64_t work, int64_t num_sms) {
  const int64_t cap = 8 * (num_sms > 0 ? num_sms : 132);
  int64_t blocks = ceil_div64(work, 256);
  if (blocks > cap) blocks = cap;
  return unsigned(blocks < 1 ? 1 : blocks);
}

// Largest element offset an operand reaches (strides may be negative in principle: abs).
int64_t max_extent(const EwParams& p, int op) {
  int64_t e = 0;
  for (int k = 0; k < p.ndim; ++k) {
    const int64_t s = p.strides[op][k] < 0 ? -p.strides[op][k] : p.strides[op][k];
    e += (p.sizes[k] - 1) * s;
  }
  return e;
}

template <typename T, typename Op>
void launch_ew(const EwParams& p, cudaStream_t stream) {
  if (p.numel == 0) return;
  T* out = static_cast<T*>(p.out);
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  // int32 index math while indices and the grid-stride overshoot stay below 2^31.
  const int64_t lim = (int64_t(1) << 31) - (int64_t(1) << 26);
  // (cuda-sim's tests force the scalar and the 64-bit paths through FASTCNN_PICK.)
  const bool index32 = FASTCNN_PICK("ew_index32", 1, 2) == 1;
  if (p.flat) {
    if (aligned16_host(out) && aligned16_host(a) && aligned16_host(b) && FASTCNN_PICK("ew_vec", 1, 2)) {
      const int64_t nvec = p.numel / Vec16<T>::N;
      const unsigned grid = ew_grid(nvec > 0 ? nvec : 1, p.num_sms);
      FASTCNN_LAUNCH(grid, 256, 0, stream, ew_flat_vec_kernel<T, Op>)(out, a, b, nvec, p.numel);
    } else if (p.numel < lim && index32) {
      FASTCNN_LAUNCH(ew_grid(p.numel, p.num_sms), 256, 0, stream, ew_flat_kernel<T, Op, int32_t>)(out, a, b, int32_t(p.numel));
    } else {
      FASTCNN_LAUNCH(ew_grid(p.numel, p.num_sms), 256, 0, stream, ew_flat_kernel<T, Op, int64_t>)(out, a, b, p.numel);
    }
    return;
  }
  const bool narrow =
      index32 && p.numel < lim && max_extent(p, 0) < lim && max_extent(p, 1) < lim && max_extent(p, 2) < lim;
  if (narrow) {
    EwDims<int32_t> d{};
    d.ndim = p.ndim;
    d.numel = int32_t(p.numel);
    for (int k = 0; k < p.ndim; ++k) {
      d.sizes[k] = int32_t(p.sizes[k]);
      d.fd[k] = make_fastdiv(uint32_t(p.sizes[k]));
      for (int o = 0; o < 3; ++o) d.strides[o][k] = int32_t(p.strides[o][k]);
    }
    FASTCNN_LAUNCH(ew_grid(p.numel, p.num_sms), 256, 0, stream, ew_strided_kernel<T, Op, int32_t>)(out, a, b, d);
  } else {
    EwDims<int64_t> d{};
    d.ndim = p.ndim;
    d.numel = p.numel;
    for (int k = 0; k < p.ndim; ++k) {
      d.sizes[k] = p.sizes[k];
      for (int o = 0; o < 3; ++o) d.strides[o][k] = p.strides[o][k];
    }
    FASTCNN_LAUNCH(ew_grid(p.numel, p.num_sms), 256, 0, stream, ew_strided_kernel<T, Op, int64_t>)(out, a, b, d);
  }
}

}  // namespace

template <typename T>
void launch_add_relu_forward(const EwParams& p, cudaStream_t stream) {
  launch_ew<T, AddReluOp>(p, stream);
}

template <typename T>
void launch_add_relu_backward(const EwParams& p, cudaStream_t stream) {
  launch_ew<T, ReluBackwardOp>(p, stream);
}

#define FASTCNN_INSTANTIATE_ADD_RELU(T)                                          \
  template void launch_add_relu_forward<T>(const EwParams&, cudaStream_t);       \
  template void launch_add_relu_backward<T>(const EwParams&, cudaStream_t);

FASTCNN_INSTANTIATE_ADD_RELU(float)
FASTCNN_INSTANTIATE_ADD_RELU(double)
FASTCNN_INSTANTIATE_ADD_RELU(__half)
FASTCNN_INSTANTIATE_ADD_RELU(__nv_bfloat16)

#undef FASTCNN_INSTANTIATE_ADD_RELU

}  // namespace cuda
}  // namespace fastcnn
