// fastcnn::_cuda_conv2d (and, built with FASTCNN_SIMT, _cudasim_conv2d): act(conv2d(input, weight) +
// bias + residual), forward and backward. Arguments arrive validated (ops.cpp); layouts, packing and
// launches in conv_engine.cpp; kernels in conv2d_kernel.cu / conv1x1_kernel.cu (a 1x1 kernel without
// padding takes the 1x1 GEMM kernels). conv2d_into: the same into a given channel slice.
#include <torch/library.h>

#include "backend.h"
#include "checks.h"
#include "cuda/conv_engine.h"

namespace fastcnn {
namespace cuda {
namespace {

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const std::optional<at::Tensor>& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                  at::IntArrayRef dilation, int64_t groups, c10::string_view activation) {
  const Activation act = parse_activation("conv2d", activation);
  const ConvGeom g = check_conv2d("conv2d", input, weight, bias, residual, stride, padding, dilation, groups);
  return conv_forward_cuda(input, weight, bias, residual, g, act);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const std::optional<at::Tensor>& output, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, c10::string_view activation, std::array<bool, 4> output_mask) {
  const Activation act = parse_activation("conv2d_backward", activation);
  const ConvGeom g = check_conv2d("conv2d_backward", input, weight, std::nullopt, std::nullopt, stride, padding,
                                  dilation, groups);
  return conv_backward_cuda(grad_output, input, weight, output, g, act, output_mask);
}

// conv2d_into: conv2d's result written into `out`, a channel slice (the epilogue stores with its
// strides; 16-byte stores only where the slice's offset and row strides allow them).
void conv2d_into(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                 const std::optional<at::Tensor>& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                 at::IntArrayRef dilation, int64_t groups, c10::string_view activation, const at::Tensor& out) {
  const Activation act = parse_activation("conv2d_into", activation);
  const ConvGeom g =
      check_conv2d_into("conv2d_into", input, weight, bias, residual, stride, padding, dilation, groups, out);
  conv_forward_into_cuda(input, weight, bias, residual, g, act, out);
}

}  // namespace

FASTCNN_CUDA_LIBRARY_IMPL(m) {
  m.impl(FASTCNN_CUDA_OP("conv2d"), &conv2d);
  m.impl(FASTCNN_CUDA_OP("conv2d_into"), &conv2d_into);
  m.impl(FASTCNN_CUDA_OP("conv2d_backward"), &conv2d_backward);
}

}  // namespace cuda
}  // namespace fastcnn
