// Interface of the CUDA max_pool2d kernels (forward with optional int64 indices, backward).
// Torch-free. Operands are dense, NCHW (contiguous) or NHWC (channels_last); the launcher makes
// them so.
//
// Semantics (as PyTorch): a window's maximum is the first one met in row-major tap order; a NaN
// replaces the running maximum (`v > m || isnan(v)`), so the value is NaN and the index the last NaN
// of the window; indices are flat positions h*W + w in the input plane. The backward gathers: each
// input element sums, in (p, q) order, the gradients of the windows whose index points at it -- no
// atomics, deterministic, the same summation order as the CPU kernel.
#pragma once

#include "cuda/common.cuh"
#include "geometry.h"

namespace fastcnn {
namespace cuda {

struct MaxPool2dParams {
  PoolGeom g;
  bool channels_last;
  const void* x;  // [N, C, H, W]
  void* y;        // [N, C, P, Q]
  int64_t* idx;   // [N, C, P, Q] or null
  int64_t num_sms;
};

struct MaxPool2dBackwardParams {
  PoolGeom g;
  bool channels_last;
  const void* gy;      // [N, C, P, Q]
  const int64_t* idx;  // [N, C, P, Q]
  void* gx;            // [N, C, H, W], fully written
  int64_t num_sms;
};

template <typename T>
void launch_max_pool2d_forward(const MaxPool2dParams& p, cudaStream_t stream);
template <typename T>
void launch_max_pool2d_backward(const MaxPool2dBackwardParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastcnn
