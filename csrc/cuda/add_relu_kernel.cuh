// Interface of the CUDA add_relu kernels: out = relu(a + b) (NaN kept) and its backward
// out = (b <= 0) ? 0 : a with a = grad_output, b = forward output. Torch-free.
//
// The launcher describes the three operands the way at::TensorIterator lays them out: either
// `flat` (all three dense in the same order: one run of numel elements) or up to kEwMaxDims
// dimensions, fastest first, with element strides per operand (stride 0 = broadcast).
#pragma once

#include "cuda/common.cuh"

namespace fastcnn {
namespace cuda {

constexpr int kEwMaxDims = 12;

struct EwParams {
  int64_t numel;
  bool flat;
  int ndim;
  int64_t sizes[kEwMaxDims];       // fastest dimension first
  int64_t strides[3][kEwMaxDims];  // element strides of out, a, b
  void* out;
  const void* a;
  const void* b;
  int64_t num_sms;
};

template <typename T>
void launch_add_relu_forward(const EwParams& p, cudaStream_t stream);
template <typename T>
void launch_add_relu_backward(const EwParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastcnn
