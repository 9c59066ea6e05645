"""Triton conv1x1: the bottleneck 1x1 convolution as a GEMM over (N*P*Q, C) with the fused epilogue.

The kernels are conv2d's implicit GEMMs (kernels/conv2d.py) specialised to R = S = 1 (compile-time
constants), where they reduce to plain GEMMs:
* forward: y[m, k] = act(sum_c x[n, c, p*sh, q*sw] * w[k, c] + bias[k] + residual[m, k]); the
  stride (ResNet's stride-2 downsampling shortcut) only changes which input rows are read, with no
  gather pass and no padding checks (one tap, always inside the input);
* dgrad: dx[n, c, h, w] = sum_k g[n, k, h/sh, w/sw] * w[k, c] on the stride phase (0, 0); the
  other stride_h*stride_w - 1 phases get no tap and are written as zeros by the same launch;
* wgrad: dw[k, c] = sum_m g[m, k] * x[m, c], split over m when the [K, C] tiles cannot fill the
  GPU, with grad_bias (row sums of g) and grad_act from the same loaded gradient tiles.
The ReLU mask is applied as the gradient is loaded. Launch configs: the conv candidate lists, with
this op's own pick tables (kernels/configs/conv1x1_{fwd,dgrad,wgrad}.json): a 1x1 GEMM has no
im2col address math in its loop and is tuned separately from the k > 1 convolutions.
"""

from __future__ import annotations

from . import conv2d as _conv

_PAD = (0, 0)
_DIL = (1, 1)


# Arguments arrive validated (the router runs csrc/checks.h before any backend).
# Defaults as the schema's: the dispatcher drops trailing arguments equal to their default.
def conv1x1(input, weight, bias=None, residual=None, stride=(1, 1), activation="relu"):
    with _conv.device_guard(input):
        return _conv.conv_forward(input, weight, bias, residual, tuple(stride), _PAD, _DIL, 1, activation,
                                  family="conv1x1")


def conv1x1_backward(grad_output, input, weight, output, stride, activation, output_mask):
    with _conv.device_guard(input):
        return _conv.conv_backward(grad_output, input, weight, output, tuple(stride), _PAD, _DIL, 1, activation,
                                   list(output_mask), family="conv1x1")


IMPLS = {"conv1x1": conv1x1, "conv1x1_backward": conv1x1_backward}
