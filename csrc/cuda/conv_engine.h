// The CUDA conv engine: torch-aware drivers of the CUDA convolution kernels, shared by the conv2d
// and conv1x1 entry points (the CUDA twin of csrc/cpu/conv_engine.h): operand layout, weight
// packing, allocation (fastcnn::new_output), parameter structs, stream and device guard. The
// arguments arrive validated (checks.h, once per call, before any backend runs).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "checks.h"
#include "cuda/conv2d_kernel.cuh"

namespace fastcnn {
namespace cuda {

// act(conv(input, weight) + bias + residual). Output in conv_memory_format(input, weight).
at::Tensor conv_forward_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act);

// conv2d_into: the same result written into `out`, a channel slice of a dense tensor in the op's
// memory format (any strides; nothing outside the slice is written).
void conv_forward_into_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act,
                            const at::Tensor& out);

// conv1x1_into: one 1x1 GEMM over weight [K, C, 1, 1] whose output channels are split into
// segments, segment i (outs[i].size(1) channels, activation acts[i]) written into outs[i]; with
// pool.kh > 0 the input is max-pooled as it is loaded (g: stride 1, P x Q the pool's output size).
void conv1x1_into_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       const ConvGeom& g, const std::vector<Activation>& acts, const ConvPool& pool,
                       at::TensorList outs);

// Gradients (input, weight, bias, pre-activation) for output_mask; empty tensors where not asked.
// Formats as the CPU kernels: grad_input and the pre-activation gradient in the conv's format,
// grad_weight in weight.suggest_memory_format(), grad_bias contiguous.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const std::optional<at::Tensor>& output, const ConvGeom& g, Activation act, std::array<bool, 4> output_mask);

}  // namespace cuda
}  // namespace fastcnn
