// oneDNN through PyTorch's own operators, for the float32 convolutions where it measures faster
// than fastcnn's engine (conv_engine.cpp): the forward as at::convolution (what F.conv2d runs:
// mkldnn_convolution, the bias fused) then one pass for the residual add and the NaN-keeping
// ReLU; the backward as at::convolution_backward on the ReLU-masked gradient (the mask stays
// fastcnn's).
//
// Nothing here is required: a torch without oneDNN (or with torch.backends.mkldnn.enabled = False)
// runs every convolution on the own engine. The choice per geometry and pass is prefer_onednn().
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

#include "checks.h"

namespace fastcnn::cpu {

enum class ConvPass { Forward, Backward };

// oneDNN takes this float32 convolution pass (mkldnn ops present and enabled, geometry measured
// faster there).
bool prefer_onednn(const ConvGeom& g, ConvPass pass);

// out = act(conv(x, w) + bias + residual), float32, x (and residual) dense in fmt, w any layout;
// the result is dense in fmt with the strides of at::empty(..., fmt).
at::Tensor onednn_forward(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                          const std::optional<at::Tensor>& residual, const ConvGeom& g, Activation act,
                          at::MemoryFormat fmt);

// (grad_input, grad_weight, grad_bias) of the convolution for the pre-activation gradient gy
// (float32, dense in fmt); undefined where mask is false. grad_input dense in fmt, grad_weight in
// w's suggested format.
std::tuple<at::Tensor, at::Tensor, at::Tensor> onednn_backward(const at::Tensor& gy, const at::Tensor& x,
                                                               const at::Tensor& w, const ConvGeom& g,
                                                               at::MemoryFormat fmt, std::array<bool, 3> mask);

}  // namespace fastcnn::cpu
