// Interface of the CUDA convolution kernels (conv2d and conv1x1): parameter structs of raw
// pointers, sizes and element strides, and the host launch functions. Torch-free: included by the
// kernels (conv2d_kernel.cu, conv1x1_kernel.cu) and by the torch-aware launchers (conv_engine.cpp).
// The 1x1 specialisations are declared in conv1x1_kernel.cuh.
//
// Every pass is an implicit GEMM on tensor cores (fp16/bf16 with fp32 accumulation; fp32 as TF32
// when allowed) or on CUDA cores (exact fp32 with FFMA, fp64 with DFMA):
//   fprop : rows = output pixels (n,p,q), cols = output channels of a group, K = taps x channels;
//   dgrad : the same kernel on grad_output and the transposed, flipped weight, one launch per
//           stride phase (input pixels with equal (h mod sh, w mod sw) use the same taps: no work
//           on taps that a strided convolution skips);
//   wgrad : rows = output channels, cols = taps x input channels, K = pixels; split-K over pixels
//           into an fp32 (fp64) workspace, reduced in a fixed order (deterministic).
// See igemm.cuh (and the pass headers it includes) for tiles, pipelines and invariants.
#pragma once

#include "cuda/common.cuh"
#include "geometry.h"

namespace fastcnn {
namespace cuda {

// The validated geometry of the call (geometry.h), shared with the argument checks and the CPU path.
using fastcnn::ConvGeom;

// Channels per (tap, group) padded to whole 16-byte chunks of T: the GEMM K index is
// tap * pad + channel, so a 16-byte load never straddles two taps. The packed weights carry zeros
// in the padding; activations are zero-filled there by the loaders.
inline int64_t conv_pad_channels(int64_t c, int64_t elem_size) {
  const int64_t v = 16 / elem_size;
  return (c + v - 1) / v * v;
}

// conv1x1_into's output segments: GEMM columns [previous k_end, k_end) go, with their own ReLU
// flag, to y (strides ys, channel 0 = the segment's first column). 8 segments fit the kernel
// parameter space easily (~48 bytes each); the launcher splits longer lists into several launches.
constexpr int kMaxOutSegs = 8;
struct ConvOutSeg {
  void* y;
  Strides4 ys;
  int64_t k_end;
  bool relu;
};

// A max pool (dilation 1, PyTorch semantics: -inf padding, NaN propagates) applied to the 1x1
// GEMM's A operand as it is loaded; kh == 0: none. The geometry's P, Q are the pool's output size.
struct ConvPool {
  int kh, kw, sh, sw, ph, pw;
};

// out = act(conv(x, w) + bias + residual). Any strides for x, residual and out (the fast path is
// channels-last with 16-byte aligned rows). `w` is the packed weight [K][R][S][cpad] (contiguous,
// zero beyond C/G channels), cpad = conv_pad_channels(C/G, sizeof(T)). With nseg > 0 (1x1, G = 1,
// no residual) the columns go to seg[0..nseg) instead of y; with pool.kh > 0 (1x1 kernels only,
// stride 1) A is the pooled input.
struct ConvFpropParams {
  ConvGeom s;
  const void* x;
  Strides4 xs;
  const void* w;
  int64_t cpad;
  const void* bias;  // [K] or null
  const void* res;   // [N, K, P, Q] or null
  Strides4 rs;
  void* y;
  Strides4 ys;
  bool relu;
  bool tf32;        // float only: TF32 tensor cores instead of exact FFMA
  int64_t num_sms;  // the device's multiprocessor count (tile choice)
  int nseg;
  ConvOutSeg seg[kMaxOutSegs];
  ConvPool pool;
};

// dx = conv_transpose(g, w) with g = relu_mask(grad_output, out) (mask fused into the loads).
// `w` is the packed weight [G][C/G][R][S][kpad], kpad = conv_pad_channels(K/G, sizeof(T)).
struct ConvDgradParams {
  ConvGeom s;
  const void* gy;
  Strides4 gys;
  const void* out;  // forward output for the ReLU mask, or null (no activation)
  Strides4 outs;
  const void* w;
  int64_t kpad;
  void* dx;
  Strides4 dxs;
  bool tf32;
  int64_t num_sms;
};

// dw[k, c, r, s] (any strides) = sum over pixels of g[n, k, p, q] * x[n, c, p*sh-ph+r*dh, ...].
// Needs a workspace of conv_wgrad_workspace_bytes<T>(p) bytes (16-byte aligned) in `ws`.
struct ConvWgradParams {
  ConvGeom s;
  const void* gy;
  Strides4 gys;
  const void* out;  // ReLU mask or null
  Strides4 outs;
  const void* x;
  Strides4 xs;
  void* dw;
  Strides4 dws;  // strides of dw as [K, C/G, R, S]
  void* ws;
  int64_t num_sms;  // the device's multiprocessor count: the split-K factor fills the device
  bool tf32;        // fp32 on tensor cores (TF32) allowed
};

// db[k] = sum over n, p, q of g[n, k, p, q]. Workspace conv_bias_grad_workspace_bytes<T>(p).
struct ConvBiasGradParams {
  int64_t N, K, P, Q;
  const void* gy;
  Strides4 gys;
  const void* out;  // ReLU mask or null
  Strides4 outs;
  void* db;
  void* ws;
  int64_t num_sms;
};

// T in {float, double, __half, __nv_bfloat16}. Launch on `stream`; errors are left in
// cudaGetLastError for the caller's check. Nothing is launched for empty problems (the callers
// handle empty batches: zero weight/bias gradients).
template <typename T>
void launch_conv2d_fprop(const ConvFpropParams& p, cudaStream_t stream);
template <typename T>
void launch_conv2d_dgrad(const ConvDgradParams& p, cudaStream_t stream);
template <typename T>
int64_t conv2d_wgrad_workspace_bytes(const ConvWgradParams& p);
template <typename T>
void launch_conv2d_wgrad(const ConvWgradParams& p, cudaStream_t stream);

// grad_bias (shared by conv2d and conv1x1).
template <typename T>
int64_t conv_bias_grad_workspace_bytes(const ConvBiasGradParams& p);
template <typename T>
void launch_conv_bias_grad(const ConvBiasGradParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastcnn
