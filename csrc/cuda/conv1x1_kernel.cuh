// Interface of the conv1x1 CUDA kernels: the bottleneck 1x1 convolution (no padding, no dilation,
// any stride) as a tensor-core GEMM over (N*P*Q, C) with the fused bias/residual/ReLU epilogue,
// and its backward. Same parameter structs as conv2d (conv2d_kernel.cuh): R = S = 1, ph = pw = 0,
// dh = dw = 1. Torch-free.
//
// The kernels are the implicit-GEMM templates of igemm.cuh compiled with k1x1 = true: a valid GEMM
// row's input pixel is always inside the input, so each A row is one fixed pointer (the GEMM reads
// the NHWC input in place, the stride only subsamples rows) and the loaders skip the per-tap
// coordinate arithmetic and bounds checks. conv1x1_into uses the same entry point: ConvFpropParams'
// segments route column ranges to their own outputs, its pool makes the loaders max-pool the input
// (the kPool instantiations, which only this family has).
#pragma once

#include "cuda/conv2d_kernel.cuh"

namespace fastcnn {
namespace cuda {

template <typename T>
void launch_conv1x1_fprop(const ConvFpropParams& p, cudaStream_t stream);
template <typename T>
void launch_conv1x1_dgrad(const ConvDgradParams& p, cudaStream_t stream);
template <typename T>
int64_t conv1x1_wgrad_workspace_bytes(const ConvWgradParams& p);
template <typename T>
void launch_conv1x1_wgrad(const ConvWgradParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastcnn
