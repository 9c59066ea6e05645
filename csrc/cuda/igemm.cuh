// The implicit-GEMM convolution family (device code + host launch helpers), torch-free, included
// by conv2d_kernel.cu (general geometry) and conv1x1_kernel.cu (k1x1 = true):
//   igemm_fprop.cuh   conv_kmajor_kernel: fprop and dgrad (K-major operands, one launch per
//                     stride phase for dgrad)
//   igemm_wgrad.cuh   conv_wgrad_kernel + wgrad_reduce_kernel: wgrad (MN-major operands, split-K)
//   igemm_common.cuh  the tile configurations of both, and their shared host helpers
// Tiles, pipelines and invariants are described at the top of each pass's header.
#pragma once

#include "cuda/igemm_fprop.cuh"
#include "cuda/igemm_wgrad.cuh"

namespace fastcnn {
namespace cuda {
namespace igemm {

// Instantiates the whole conv family for one dtype and 1x1-ness: used by the two .cu files.
template <typename T, bool k1x1>
struct ConvFamily {
  static bool tensor_core(bool tf32) { return sizeof(T) == 2 || (sizeof(T) == 4 && tf32); }
  static void fprop(const ConvFpropParams& p, cudaStream_t st) { run_fprop<T, k1x1>(p, tensor_core(p.tf32), st); }
  static void dgrad(const ConvDgradParams& p, cudaStream_t st) { run_dgrad<T, k1x1>(p, tensor_core(p.tf32), st); }
  static int64_t wgrad_ws(const ConvWgradParams& p) { return wgrad_workspace_bytes<T, k1x1>(p); }
  static void wgrad(const ConvWgradParams& p, cudaStream_t st) { run_wgrad<T, k1x1>(p, st); }
};

}  // namespace igemm
}  // namespace cuda
}  // namespace fastcnn
