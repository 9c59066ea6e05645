"""Argument normalisation and validation for the public API and the fake (meta) kernels.

Every failure is a ``ValueError`` that names the argument and the offending sizes. The C++ entry
points repeat the checks that guard memory safety (csrc/checks.h), for direct torch.ops calls.
"""

from __future__ import annotations

import torch

_FLOAT_TYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def pair(value, name: str, op: str) -> tuple[int, int]:
    """An int or a 2-sequence of ints, as torch.nn.functional accepts."""
    if isinstance(value, bool):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int) or (isinstance(value, torch.SymInt)):
        return (value, value)
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") from None
    if len(items) == 1:
        items = items * 2
    if len(items) != 2 or not all(isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return items


def activation(act, op: str) -> str:
    if act is None or act == "none" or act == "identity":
        return "none"
    if act == "relu":
        return "relu"
    raise ValueError(f"{op}: activation must be None or 'relu', got {act!r}")


activation_ = activation


def tensor(t, name: str, op: str):
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_TYPES:
        raise ValueError(f"{op}: {name} must be a floating-point tensor (float32, float64, float16, bfloat16), "
                         f"got {t.dtype}")


def same_kind(ref, ref_name: str, t, name: str, op: str):
    tensor(t, name, op)
    if t.dtype != ref.dtype:
        raise ValueError(f"{op}: {name} dtype {t.dtype} does not match {ref_name} dtype {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}")


# As csrc/checks.h kMaxGeom: larger paddings, dilations and pool kernels only describe impossible
# outputs, and the bound keeps H + 2 * pad and dil * (R - 1) far from int64 overflow in the kernels.
MAX_GEOM = 2**31 - 1


def _positive(v, name, op, minimum, maximum=None):
    if v[0] < minimum or v[1] < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {tuple(v)}")
    if maximum is not None and (v[0] > maximum or v[1] > maximum):
        raise ValueError(f"{op}: {name} must be <= {maximum}, got {tuple(v)}")


def conv2d(op, input, weight, bias, residual, stride, padding, dilation, groups):
    """Validate a convolution; returns the output shape (N, K, P, Q)."""
    tensor(input, "input", op)
    if input.dim() != 4:
        raise ValueError(f"{op}: input must be 4-d [N, C, H, W] (or 3-d [C, H, W]), got shape {tuple(input.shape)}")
    same_kind(input, "input", weight, "weight", op)
    if weight.dim() != 4:
        raise ValueError(f"{op}: weight must be 4-d [C_out, C_in/groups, kH, kW], got shape {tuple(weight.shape)}")
    _positive(stride, "stride", op, 1)
    _positive(padding, "padding", op, 0, MAX_GEOM)
    _positive(dilation, "dilation", op, 1, MAX_GEOM)
    if isinstance(groups, bool) or not isinstance(groups, (int, torch.SymInt)) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    N, C, H, W = input.shape
    K, Cw, R, S = weight.shape
    if C <= 0 or K <= 0 or R <= 0 or S <= 0:
        raise ValueError(f"{op}: channels and kernel size must be positive; input shape {tuple(input.shape)}, "
                         f"weight shape {tuple(weight.shape)}")
    if C % groups != 0:
        raise ValueError(f"{op}: input channels ({C}) must be divisible by groups ({groups})")
    if K % groups != 0:
        raise ValueError(f"{op}: weight out-channels ({K}) must be divisible by groups ({groups})")
    if Cw * groups != C:
        raise ValueError(f"{op}: weight expects {Cw * groups} input channels (weight shape {tuple(weight.shape)}, "
                         f"groups={groups}) but input has {C} (input shape {tuple(input.shape)})")
    eh, ew = dilation[0] * (R - 1) + 1, dilation[1] * (S - 1) + 1
    if H + 2 * padding[0] < eh or W + 2 * padding[1] < ew:
        raise ValueError(f"{op}: kernel ({eh}x{ew} with dilation) is larger than the padded input "
                         f"({H + 2 * padding[0]}x{W + 2 * padding[1]}); input shape {tuple(input.shape)}, "
                         f"weight shape {tuple(weight.shape)}, padding {tuple(padding)}")
    P = (H + 2 * padding[0] - eh) // stride[0] + 1
    Q = (W + 2 * padding[1] - ew) // stride[1] + 1
    if bias is not None:
        same_kind(input, "input", bias, "bias", op)
        if tuple(bias.shape) != (K,):
            raise ValueError(f"{op}: bias must have shape ({K},), got {tuple(bias.shape)}")
    if residual is not None:
        same_kind(input, "input", residual, "residual", op)
        if tuple(residual.shape) != (N, K, P, Q):
            raise ValueError(f"{op}: residual must have the output's shape {(N, K, P, Q)}, got {tuple(residual.shape)}")
    return N, K, P, Q


def conv_backward(op, grad_output, input, weight, output, stride, padding, dilation, groups, activation):
    """Validate a conv backward call (the kernels index grad_output and the ReLU mask's output with the
    forward's sizes); returns the activation."""
    act = activation_(activation, op)
    N, K, P, Q = conv2d(op, input, weight, None, None, stride, padding, dilation, groups)
    same_kind(input, "input", grad_output, "grad_output", op)
    if tuple(grad_output.shape) != (N, K, P, Q):
        raise ValueError(f"{op}: grad_output must have shape {(N, K, P, Q)}, got {tuple(grad_output.shape)}")
    if act == "relu":
        if output is None:
            raise ValueError(f"{op}: the forward output is needed for activation='relu'")
        same_kind(input, "input", output, "output", op)
        if tuple(output.shape) != (N, K, P, Q):
            raise ValueError(f"{op}: output must have shape {(N, K, P, Q)}, got {tuple(output.shape)}")
    return act


def conv1x1_weight(op, weight):
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[2] != 1 or weight.shape[3] != 1:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"{op}: weight must be [C_out, C_in, 1, 1] (or [C_out, C_in]), got shape {shape}")


def pool_out_size(size, k, s, p, d, ceil_mode):
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def max_pool2d(op, input, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate a max-pool; returns the output shape (N, C, P, Q)."""
    tensor(input, "input", op)
    if input.dim() != 4:
        raise ValueError(f"{op}: input must be 4-d [N, C, H, W] (or 3-d [C, H, W]), got shape {tuple(input.shape)}")
    _positive(kernel_size, "kernel_size", op, 1, MAX_GEOM)
    _positive(stride, "stride", op, 1)
    _positive(padding, "padding", op, 0, MAX_GEOM)
    _positive(dilation, "dilation", op, 1, MAX_GEOM)
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:
        raise ValueError(f"{op}: padding must be at most half the kernel size, got padding {tuple(padding)} for "
                         f"kernel_size {tuple(kernel_size)}")
    N, C, H, W = input.shape
    if C <= 0 or H <= 0 or W <= 0:
        raise ValueError(f"{op}: input channels and spatial sizes must be positive, got input shape "
                         f"{tuple(input.shape)}")
    P = pool_out_size(H, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode)
    Q = pool_out_size(W, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode)
    if P < 1 or Q < 1:
        raise ValueError(f"{op}: output size is too small: input shape {tuple(input.shape)}, kernel_size "
                         f"{tuple(kernel_size)}, stride {tuple(stride)}, padding {tuple(padding)}, dilation "
                         f"{tuple(dilation)} give output {P}x{Q}")
    return N, C, P, Q


def max_pool2d_backward(op, grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate a max-pool backward call; returns the output shape. Empty indices mean "recompute"."""
    shape = tuple(max_pool2d(op, input, kernel_size, stride, padding, dilation, ceil_mode))
    same_kind(input, "input", grad_output, "grad_output", op)
    if tuple(grad_output.shape) != shape:
        raise ValueError(f"{op}: grad_output must have shape {shape}, got {tuple(grad_output.shape)}")
    if not isinstance(indices, torch.Tensor):
        raise ValueError(f"{op}: indices must be a torch.Tensor, got {type(indices).__name__}")
    if indices.numel() > 0 and (tuple(indices.shape) != shape or indices.dtype != torch.int64
                                or indices.device != input.device):
        raise ValueError(f"{op}: indices must be int64 with shape {shape} on {input.device}, got {indices.dtype} "
                         f"{tuple(indices.shape)} on {indices.device}")
    return shape


def add_relu_backward(op, grad_output, output):
    tensor(output, "output", op)
    same_kind(output, "output", grad_output, "grad_output", op)
    if grad_output.shape != output.shape:
        raise ValueError(f"{op}: grad_output shape {tuple(grad_output.shape)} must match output shape "
                         f"{tuple(output.shape)}")


def add_relu(op, input, other):
    tensor(input, "input", op)
    same_kind(input, "input", other, "other", op)
    try:
        return torch.broadcast_shapes(input.shape, other.shape)
    except RuntimeError:
        raise ValueError(f"{op}: shapes {tuple(input.shape)} (input) and {tuple(other.shape)} (other) cannot be "
                         "broadcast together") from None
