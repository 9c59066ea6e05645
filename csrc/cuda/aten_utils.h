// The ATen side of the CUDA launchers (csrc/cuda/*.cpp, compiled by the host compiler against the
// CUDA headers): ATen scalar type -> CUDA type dispatch, tensor strides, device facts (stream, SM
// count), the device check, and at::TensorIterator -> EwParams.
//
// Only c10-level CUDA headers are used (stream, guard, launch check): ATen/cuda/CUDAContext.h
// pulls in cuBLAS/cuSPARSE/cuSOLVER headers, which a CUDA toolkit without those libraries (this
// repository's GPU-less check machine) lacks, and nothing here needs them.
//
// cuda-sim (FASTCNN_SIMT) builds the same launchers against thin shims instead: no stream (kernels
// run to completion at their launch), device guards that do nothing, CPU tensors accepted, the SM
// count from FASTCNN_SIM_SMS (default 132, an H100/H200, so tile and split-K plans are the GPU's).
#pragma once

#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>
#include <c10/util/Exception.h>
#ifndef FASTCNN_SIMT
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <array>
#include <atomic>
#include <cstdlib>

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

#ifdef FASTCNN_SIMT
inline cudaStream_t current_stream() { return nullptr; }

inline int64_t num_sms() {
  static const int64_t v = [] {
    const char* e = std::getenv("FASTCNN_SIM_SMS");
    const long n = e ? std::atol(e) : 0;
    return int64_t(n > 0 ? n : 132);
  }();
  return v;
}

// The device the launchers run on: cuda-sim's is the CPU.
struct DeviceGuard {
  explicit DeviceGuard(const c10::Device&) {}
};

inline void check_cuda(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor for cuda-sim (the CUDA kernels "
                    "emulated on the CPU), got ", t.device());
}

// Findings of the emulator arrive as exceptions from the launch itself.
#define FASTCNN_KERNEL_LAUNCH_CHECK() \
  do {                                \
  } while (0)
#else
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

using DeviceGuard = c10::cuda::CUDAGuard;

#define FASTCNN_KERNEL_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()

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
#endif  // FASTCNN_SIMT

// TensorIterator (output 0, inputs 1 and 2, one dtype) -> EwParams. False when it has more
// dimensions than the kernel takes (the caller then computes on dense copies).
inline bool ew_params(const at::TensorIteratorBase& iter, EwParams& p) {
  p = EwParams{};
  p.numel = iter.numel();
  p.out = iter.data_ptr(0);
  p.a = iter.data_ptr(1);
  p.b = iter.data_ptr(2);
  p.num_sms = num_sms();
  if (iter.is_contiguous() && FASTCNN_PICK("ew_flat", 1, 2)) {  // cuda-sim's tests force the strided path
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
