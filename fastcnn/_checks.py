"""Argument checks of every fastcnn op: the one Python copy of each rule.

The fake (meta) kernels run these on the schema's arguments; their messages are csrc/checks.h's,
character for character (tests/test_routing.py holds every backend and FakeTensorMode to that).
The Python API (fastcnn.functional) runs them too, before calling the op, with two extras that only
it can express: unbatched 3-d inputs (``batched=False``: messages then quote the caller's shapes)
and ``activation=None``. Failures are ``ValueError`` naming the argument and the offending sizes.

Conventions shared with C++: ``"<op>: <argument> ..."``, shapes and pairs as ``[a, b]``, dtypes
without the ``torch.`` prefix.
"""

from __future__ import annotations

import torch

from .kernels._common import conv_format, conv_out_size, pool_out_size  # the one Python definition of each rule

# The activation names of the schema (csrc/checks.h parse_activation); the Python API also takes None.
ACTIVATIONS = ("none", "relu")
FLOAT_TYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# max_pool2d also takes the integer types PyTorch max-pools (uint8 images, integer label maps); they
# have no gradient, so every other op and every backward stays floating-point.
INT_TYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

# As csrc/geometry.h kMaxGeom: larger paddings, dilations and pool kernels only describe impossible
# outputs, and the bound keeps H + 2 * pad and dil * (R - 1) far from int64 overflow in the kernels.
MAX_GEOM = 2**31 - 1
_INT64_MAX = 2**63 - 1


def fmt(v) -> str:
    """[a, b, c]: a shape or an int list as C++ prints it."""
    return "[" + ", ".join(str(int(x)) for x in v) + "]"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def activation(act, op: str, allow_none: bool = False) -> str:
    """The schema spelling ('none' or 'relu'); ``None`` only from the Python API."""
    if act is None and allow_none:
        return "none"
    if isinstance(act, str) and act in ACTIVATIONS:
        return act
    got = f"'{act}'" if isinstance(act, str) else repr(act)
    raise ValueError(f"{op}: activation must be 'none' or 'relu', got {got}")


def pair(value, name: str, op: str) -> tuple[int, int]:
    """An int or a 2-sequence of ints, as torch.nn.functional accepts (Python API only)."""
    if isinstance(value, bool):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, (int, torch.SymInt)):
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


def tensor(t, name: str, op: str):
    """A torch.Tensor (the schema guarantees it; the Python API checks it)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")


def floating(t, name: str, op: str):
    tensor(t, name, op)
    if t.dtype not in FLOAT_TYPES:
        raise ValueError(f"{op}: {name} must be a floating-point tensor (float32, float64, float16, bfloat16), "
                         f"got {dtype_name(t.dtype)}")


def pool_dtype(t, name: str, op: str):
    tensor(t, name, op)
    if t.dtype not in FLOAT_TYPES + INT_TYPES:
        raise ValueError(f"{op}: {name} must be a floating-point or integer tensor (float32, float64, float16, "
                         f"bfloat16, uint8, int8, int16, int32, int64), got {dtype_name(t.dtype)}")


def same(ref, ref_name: str, t, name: str, op: str):
    """``t`` has the dtype and device of ``ref``."""
    tensor(t, name, op)
    if t.dtype != ref.dtype:
        raise ValueError(f"{op}: {name} dtype {dtype_name(t.dtype)} does not match {ref_name} dtype "
                         f"{dtype_name(ref.dtype)}")
    if t.device != ref.device:
        raise ValueError(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}")


def _dim4(t, name, op, layout, batched=True):
    # The Python API also takes 3-d (unbatched) inputs; any other rank gets the schema's message.
    if t.dim() == 4 or (not batched and t.dim() == 3):
        return
    raise ValueError(f"{op}: {name} must be 4-d {layout}, got shape {fmt(t.shape)}")


def _pair(v, name, op, minimum, maximum=_INT64_MAX):
    v = list(v)
    if len(v) != 2:
        raise ValueError(f"{op}: {name} must have 2 elements, got {fmt(v)}")
    if v[0] < minimum or v[1] < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {fmt(v)}")
    if v[0] > maximum or v[1] > maximum:
        raise ValueError(f"{op}: {name} must be <= {maximum}, got {fmt(v)}")


def _shape(t, name, op, want, what=""):
    if tuple(t.shape) != tuple(want):
        raise ValueError(f"{op}: {name} must have {what}shape {fmt(want)}, got {fmt(t.shape)}")


def conv(op, input, weight, bias, residual, stride, padding, dilation, groups, one1x1=False, batched=True):
    """Validate a conv2d / conv1x1 call; returns the output shape ([N,] K, P, Q).

    ``batched=False`` (Python API): input and residual may be unbatched 3-d and a conv1x1 weight 2-d,
    and messages quote them as given."""
    floating(input, "input", op)
    _dim4(input, "input", op, "[N, C, H, W]", batched)
    same(input, "input", weight, "weight", op)
    if one1x1:
        flat = not batched and weight.dim() == 2  # the Python API also takes [C_out, C_in]
        if not flat and (weight.dim() != 4 or weight.shape[2] != 1 or weight.shape[3] != 1):
            raise ValueError(f"{op}: weight must be 4-d [C_out, C_in, 1, 1], got shape {fmt(weight.shape)}")
    else:
        _dim4(weight, "weight", op, "[C_out, C_in/groups, kH, kW]")
    _pair(stride, "stride", op, 1)
    _pair(padding, "padding", op, 0, MAX_GEOM)
    _pair(dilation, "dilation", op, 1, MAX_GEOM)
    if groups < 1:
        raise ValueError(f"{op}: groups must be >= 1, got {groups}")
    unbatched = input.dim() == 3
    C, H, W = input.shape[-3:]
    N = None if unbatched else input.shape[0]
    K, Cw, R, S = tuple(weight.shape) + (1, 1) if weight.dim() == 2 else weight.shape
    if C <= 0 or K <= 0 or R <= 0 or S <= 0:
        raise ValueError(f"{op}: input channels, weight out-channels and kernel size must be positive; input shape "
                         f"{fmt(input.shape)}, weight shape {fmt(weight.shape)}")
    if C % groups != 0:
        raise ValueError(f"{op}: input channels ({C}) must be divisible by groups ({groups})")
    if K % groups != 0:
        raise ValueError(f"{op}: weight out-channels ({K}) must be divisible by groups ({groups})")
    if Cw * groups != C:
        raise ValueError(f"{op}: weight expects {Cw * groups} input channels (weight shape {fmt(weight.shape)}, "
                         f"groups={groups}) but input has {C} (input shape {fmt(input.shape)})")
    eh, ew = dilation[0] * (R - 1) + 1, dilation[1] * (S - 1) + 1
    if H + 2 * padding[0] < eh or W + 2 * padding[1] < ew:
        raise ValueError(f"{op}: kernel ({eh}x{ew} with dilation) is larger than the padded input "
                         f"({H + 2 * padding[0]}x{W + 2 * padding[1]}); input shape {fmt(input.shape)}, "
                         f"weight shape {fmt(weight.shape)}, padding {fmt(padding)}")
    P = conv_out_size(H, R, stride[0], padding[0], dilation[0])
    Q = conv_out_size(W, S, stride[1], padding[1], dilation[1])
    out = (K, P, Q) if unbatched else (N, K, P, Q)
    if bias is not None:
        same(input, "input", bias, "bias", op)
        _shape(bias, "bias", op, (K,))
    if residual is not None:
        same(input, "input", residual, "residual", op)
        _shape(residual, "residual", op, out, "the output's ")
    return out


def conv_backward(op, grad_output, input, weight, output, stride, padding, dilation, groups, activation_,
                  one1x1=False):
    """Validate a conv2d / conv1x1 backward call (the kernels index grad_output and the ReLU mask's
    output with the forward's sizes); returns the activation."""
    act = activation(activation_, op)
    out = conv(op, input, weight, None, None, stride, padding, dilation, groups, one1x1)
    same(input, "input", grad_output, "grad_output", op)
    _shape(grad_output, "grad_output", op, out)
    if act == "relu":
        if output is None:
            raise ValueError(f"{op}: activation 'relu' needs the forward output (its mask), got none")
        same(input, "input", output, "output", op)
        _shape(output, "output", op, out)
    return act


def max_pool2d(op, input, kernel_size, stride, padding, dilation, ceil_mode, batched=True):
    """Validate a max-pool; returns the output shape ([N,] C, P, Q)."""
    pool_dtype(input, "input", op)
    _dim4(input, "input", op, "[N, C, H, W]", batched)
    _pair(kernel_size, "kernel_size", op, 1, MAX_GEOM)
    _pair(stride, "stride", op, 1)
    _pair(padding, "padding", op, 0, MAX_GEOM)
    _pair(dilation, "dilation", op, 1, MAX_GEOM)
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:
        raise ValueError(f"{op}: padding must be at most half the kernel size, got padding {fmt(padding)} for "
                         f"kernel_size {fmt(kernel_size)}")
    C, H, W = input.shape[-3:]
    if C <= 0 or H <= 0 or W <= 0:
        raise ValueError(f"{op}: input channels and spatial sizes must be positive, got input shape "
                         f"{fmt(input.shape)}")
    P = pool_out_size(H, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode)
    Q = pool_out_size(W, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode)
    if P < 1 or Q < 1:
        raise ValueError(f"{op}: output size is too small: input shape {fmt(input.shape)}, kernel_size "
                         f"{fmt(kernel_size)}, stride {fmt(stride)}, padding {fmt(padding)}, dilation "
                         f"{fmt(dilation)} give output {P}x{Q}")
    return (C, P, Q) if input.dim() == 3 else (input.shape[0], C, P, Q)


def max_pool2d_backward(op, grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate a max-pool backward call; returns the output shape. Empty indices mean "recompute"."""
    shape = max_pool2d(op, input, kernel_size, stride, padding, dilation, ceil_mode)
    if input.dtype not in FLOAT_TYPES:
        raise ValueError(f"{op}: input must be a floating-point tensor (float32, float64, float16, bfloat16), got "
                         f"{dtype_name(input.dtype)}: an integer max_pool2d has no gradient")
    same(input, "input", grad_output, "grad_output", op)
    _shape(grad_output, "grad_output", op, shape)
    tensor(indices, "indices", op)
    if indices.numel() > 0 and (tuple(indices.shape) != tuple(shape) or indices.dtype != torch.int64
                                or indices.device != input.device):
        raise ValueError(f"{op}: indices must be int64 with shape {fmt(shape)} on {input.device}, got "
                         f"{dtype_name(indices.dtype)} {fmt(indices.shape)} on {indices.device}")
    return shape


def add_relu(op, input, other):
    """Validate relu(input + other); returns the broadcast shape."""
    floating(input, "input", op)
    same(input, "input", other, "other", op)
    a, b = list(input.shape), list(other.shape)
    for i in range(max(len(a), len(b))):
        sa = a[len(a) - 1 - i] if i < len(a) else 1
        sb = b[len(b) - 1 - i] if i < len(b) else 1
        if sa != sb and sa != 1 and sb != 1:
            raise ValueError(f"{op}: shapes {fmt(a)} (input) and {fmt(b)} (other) cannot be broadcast together")
    return torch.broadcast_shapes(input.shape, other.shape)


def add_relu_backward(op, grad_output, output):
    floating(output, "output", op)
    same(output, "output", grad_output, "grad_output", op)
    _shape(grad_output, "grad_output", op, output.shape, "the output's ")


# ---- the in-place ops (conv2d_into, conv1x1_into): where they may write ----

def is_channel_slice(out, channels_last: bool) -> bool:
    """Whether ``out`` [N, K, P, Q] is laid out as a channel slice of a dense tensor in the op's
    memory format (csrc/checks.h is_channel_slice): NCHW strides (L*P*Q, P*Q, Q, 1), channels_last
    (P*Q*L, 1, Q*L, L), L >= K; strides of size-1 dims are free."""
    N, K, P, Q = out.shape
    sn, sk, sp, sq = out.stride()
    if channels_last:
        L = K
        if Q > 1:
            L = sq
        elif P > 1:
            L = sp // Q
        elif N > 1:
            L = sn // (P * Q)
        return (L >= K and (K == 1 or sk == 1) and (Q == 1 or sq == L) and (P == 1 or sp == Q * L)
                and (N == 1 or sn == P * Q * L))
    return ((Q == 1 or sq == 1) and (P == 1 or sp == Q) and (K == 1 or sk == P * Q)
            and (N == 1 or (sn >= K * P * Q and sn % (P * Q) == 0)))


def conv_out(op, input, out, name, shape, channels_last):
    same(input, "input", out, name, op)
    _shape(out, name, op, shape, "the output's ")
    if out.numel() == 0:
        return
    if not is_channel_slice(out, channels_last):
        layout = "channels_last" if channels_last else "contiguous (NCHW)"
        raise ValueError(f"{op}: {name} must be a channel slice of a dense {layout} tensor (the op's memory format), "
                         f"got strides {fmt(out.stride())}")


def _channels_last(input, weight) -> bool:
    return conv_format(input, weight) == torch.channels_last


def conv2d_into(op, input, weight, bias, residual, stride, padding, dilation, groups, out):
    shape = conv(op, input, weight, bias, residual, stride, padding, dilation, groups)
    tensor(out, "out", op)
    conv_out(op, input, out, "out", shape, _channels_last(input, weight))
    return shape


def conv1x1_into(op, input, weight, bias, stride, activations, pool, segs, seg_name, slices=True):
    """Validate conv1x1_into (segs: the outputs) or its backward (segs: the gradients, any strides);
    returns (the GEMM's [N, Ktot, P, Q], the segments' channel counts)."""
    pool = list(pool)
    if len(pool) not in (0, 7):
        raise ValueError(f"{op}: pool must be [] or [kH, kW, sH, sW, padH, padW, ceil_mode], got {fmt(pool)}")
    if pool:
        if pool[6] not in (0, 1):
            raise ValueError(f"{op}: pool's ceil_mode (last element) must be 0 or 1, got {pool[6]}")
        _pair(stride, "stride", op, 1)
        if list(stride) != [1, 1]:
            raise ValueError(f"{op}: stride must be [1, 1] with a pool, got {fmt(stride)}")
        floating(input, "input", op)
        N, C, P, Q = max_pool2d(op, input, pool[0:2], pool[2:4], pool[4:6], (1, 1), bool(pool[6]))
    shape = conv(op, input, weight, bias, None, stride, (0, 0), (1, 1), 1, one1x1=True)
    if pool:
        shape = (shape[0], shape[1], P, Q)
    if len(segs) == 0:
        raise ValueError(f"{op}: {seg_name} must hold at least one tensor, got none")
    if len(activations) != len(segs):
        raise ValueError(f"{op}: activations must have one name per tensor of {seg_name} ({len(segs)}), got "
                         f"{len(activations)}")
    cl = _channels_last(input, weight)
    ks = []
    for s, (t, act) in enumerate(zip(segs, activations)):
        name = f"{seg_name}[{s}]"
        activation(act, op)
        tensor(t, name, op)
        _dim4(t, name, op, "[N, K_s, P, Q]")
        k = t.shape[1]
        if k <= 0:
            raise ValueError(f"{op}: {name} must have at least one channel, got shape {fmt(t.shape)}")
        want = (shape[0], k, shape[2], shape[3])
        if slices:
            conv_out(op, input, t, name, want, cl)
        else:
            same(input, "input", t, name, op)
            _shape(t, name, op, want, "the output's ")
        ks.append(k)
    if sum(ks) != shape[1]:
        raise ValueError(f"{op}: the channels of {seg_name} ({sum(ks)}) must add up to weight's out-channels "
                         f"(weight shape {fmt(weight.shape)})")
    return shape, ks
