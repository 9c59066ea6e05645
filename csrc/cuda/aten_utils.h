// The ATen side of the CUDA launchers (csrc/cuda/*.cpp, compiled by the host compiler against the
// CUDA headers): ATen scalar type -> CUDA type dispatch, tensor strides, device facts (stream, SM
// count), the device check, and at::TensorIterator -> EwParams.
//
// Only c10-level CUDA headers are used (stream, guard, launch check): ATen/cuda/CUDAContext.h
// pulls in cuBLAS/cuSPARSE/cuSOLVER headers, which a CUDA toolkit without those libraries (this
// repository's GPU-less check machine) lacks, and nothing here needs them.
#pragma once

#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <array>
#include <atomic>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/add_relu_kernel.cuh"
#include "cuda/common.cuh"

namespace fastcnn {
namespace cuda {

// at::Half / at::BFloat16 have the bit layout of __half / __nv_bfloat16.
template <typename scalar_t>
struct CudaType {
  using type = scalar_t;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};

// Dispatch over float, double, half, bfloat16 with `T` the CUDA type.
#define FASTCNN_CUDA_DISPATCH(DTYPE, NAME, ...)                                                  \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, DTYPE, NAME, [&] {                  \
    using T = typename ::fastcnn::cuda::CudaType<scalar_t>::type;                               \
    __VA_ARGS__();                                                                              \
  })

inline Strides4 strides4(const at::Tensor& t) {
  TORCH_INTERNAL_ASSERT(t.dim() == 4);
  return Strides4{t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Multiprocessor count of the current device (cached per device; tile and split-K choices).
inline int64_t num_sms() {
  static std::array<std::atomic<int>, 64> cache{};
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) dev = 0;
  int v = cache[dev].load(std::memory_order_relaxed);
  if (v <= 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
    cache[dev].store(v, std::memory_order_relaxed);
  }
  return v;
}

inline void check_cuda(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got ", t.device());
}

// TensorIterator (output 0, inputs 1 and 2, one dtype) -> EwParams. False when it has more
// dimensions than the kernel takes (the caller then computes on dense copies).
inline bool ew_params(const at::TensorIteratorBase& iter, EwParams& p) {
  p = EwParams{};
  p.numel = iter.numel();
  p.out = iter.data_ptr(0);
  p.a = iter.data_ptr(1);
  p.b = iter.data_ptr(2);
  p.num_sms = num_sms();
  if (iter.is_contiguous()) {
    p.flat = true;
    p.ndim = 0;
    return true;
  }
  p.flat = false;
  p.ndim = iter.ndim();
  if (p.ndim > kEwMaxDims) return false;
  const int64_t es = static_cast<int64_t>(iter.element_size(0));
  for (int d = 0; d < p.ndim; ++d) {
    p.sizes[d] = iter.shape()[d];
    for (int o = 0; o < 3; ++o) p.strides[o][d] = iter.strides(o)[d] / es;
  }
  return true;
}

}  // namespace cuda
}  // namespace fastcnn
