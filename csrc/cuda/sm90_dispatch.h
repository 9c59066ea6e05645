// The CUDA conv launchers' hooks into the Hopper path (fastcnn._C_sm90, see csrc/sm90_path.h).
//
// conv_engine.cpp calls one hook per pass, after its argument checks and before the existing
// kernels: a hook returns true when it computed the result into the tensor it was given, false to
// let the existing kernels run. It asks the pure rule (fastcnn::sm90::choose), then the kernel's own
// can_implement; with FASTCNN_SM90=force a rejection at either step raises ValueError with the
// reason instead of falling back. A valid input never errors because of the path otherwise.
//
// Operands the kernels need in another form are made here, once per call: weights packed to KRSC,
// the input zero-padded to whole 16-byte channel rows (the stem, cuda/channel_pad.h), the ReLU-masked
// output gradient (dgrad and wgrad then share it), workspaces from PyTorch's caching allocator.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "geometry.h"

namespace fastcnn {
namespace cuda {

// act(conv(input, weight) + bias + residual) into `out` (allocated by the caller in
// conv_memory_format(input, weight)). `tf32`: conv_engine.cpp's tf32_allowed(input).
bool sm90_conv_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act, bool tf32,
                       at::Tensor& out);

// The input and weight gradients of one backward call. Construct after the caller's checks; each
// pass decides on its own (dgrad may fall back, e.g. for stride 2, while wgrad takes the sm90 path).
class Sm90Backward {
 public:
  Sm90Backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
               const std::optional<at::Tensor>& output, const ConvGeom& g, Activation act, bool tf32);
  // dx into grad_input (the caller's allocation, the input's format).
  bool dgrad(at::Tensor& grad_input);
  // dw into grad_weight (any strides).
  bool wgrad(at::Tensor& grad_weight);

 private:
  const at::Tensor& grad();  // relu_mask(grad_output, output) or grad_output, TMA-ready; made once

  const at::Tensor& grad_output_;
  const at::Tensor& input_;
  const at::Tensor& weight_;
  const std::optional<at::Tensor>& output_;
  ConvGeom g_;
  Activation act_;
  bool tf32_;
  at::Tensor grad_;
};

}  // namespace cuda
}  // namespace fastcnn
