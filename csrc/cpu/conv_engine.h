// CPU convolution engine shared by fastcnn::conv2d and fastcnn::conv1x1.
//
// Forward: the output is computed in row chunks; each thread builds the im2col panel of its chunk
// (sized to stay in L2), multiplies it with the weight (one BLAS GEMM per chunk and group, run
// single-threaded inside at::parallel_for) and applies bias + residual + ReLU to the chunk while it
// is still in cache. 1x1 stride-1 convolutions skip im2col: the input already is the GEMM operand.
// NHWC (channels_last): rows are output pixels, C = cols[rows, R*S*Cg] * W[K, R*S*Cg]^T.
// NCHW: per image, C[K, pixels] = W[K, Cg*R*S] * colsT[Cg*R*S, pixels] (the Caffe layout).
//
// Backward: g = grad * (out > 0) once; wgrad accumulates g^T * cols per thread and reduces in
// thread order (deterministic for a fixed thread count); dgrad of a stride-1 convolution is the
// forward engine run on g with the flipped, transposed weight; strided dgrad is GEMM + col2im.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

#include "checks.h"

namespace fastcnn::cpu {

// out = act(conv(x, w) + bias + residual). x and residual dense in `fmt`; out allocated by the
// caller, dense in `fmt`. float32 and float64. Padding may be negative (used by dgrad).
void conv_forward(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act,
                  at::MemoryFormat fmt, at::Tensor& out);

// Gradients (input, weight, bias, pre-activation) for the mask; empty tensors where not asked.
// onednn: the conv's gradients by onednn_backward (float32) instead of the engine.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& out,
    const ConvGeom& g, Activation act, at::MemoryFormat fmt, std::array<bool, 4> mask, bool onednn = false);

// The CPU entry points of conv2d / conv1x1 share this wrapper: Triton routing is done by the
// caller; this checks dtypes (float16/bfloat16 computed in float32), allocates and runs.
at::Tensor conv_forward_op(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act);
// conv_forward_op's result written into `out` (a channel slice, conv2d_into) when the engine runs
// the case in the op's own layout and dtype (float64, float32 without oneDNN); false (nothing
// written) otherwise.
bool conv_forward_into(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act,
                       at::Tensor& out);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_backward_op(
    const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& out,
    const ConvGeom& g, Activation act, std::array<bool, 4> mask);

// For other CPU kernels built on the engine (conv_into.cpp): its GEMM (row-major, C (+)= op(A) op(B),
// single-threaded inside at::parallel_for workers, float32 K-blocked for accuracy; float and double)
// and its chunk size (rows whose panel of row_elems values stays in L2).
template <typename T>
void worker_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                 bool accumulate, T* C, int64_t ldc);
int64_t panel_rows(int64_t rows, int64_t row_elems, int64_t elem_size);

}  // namespace fastcnn::cpu
