"""The public functions, with torch.nn.functional's argument conventions.

>>> y = fastcnn.functional.conv2d(x, w, b, padding=1, residual=skip, activation="relu")

Each call validates its arguments (``ValueError`` naming the argument and the shapes), then runs
one fused op ``torch.ops.fastcnn.*`` on the backend in force (``fastcnn.set_backend``).
Unbatched 3-d inputs ``[C, H, W]`` are accepted, as in torch.nn.functional.

With ``logging.getLogger("fastcnn")`` at DEBUG, each call logs what ran (backend, kernel, path,
config: the records of ``fastcnn.explain``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, Optional, TypeVar, Union, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _checks
from ._backend import explain
from ._ops import ops

_log = logging.getLogger("fastcnn")


_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def _logged(fn: _Fn) -> _Fn:
    """Log what ran when the "fastcnn" logger is at DEBUG (never while torch.compile traces). Typed
    as returning ``fn`` itself, so that type checkers see each public function's signature."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.compiler.is_compiling() or not _log.isEnabledFor(logging.DEBUG):
            return fn(*args, **kwargs)
        out, ran = explain(fn, *args, **kwargs)
        for d in ran:
            _log.debug("%s: %s", fn.__name__, d)
        return out
    return cast(_Fn, wrapper)

__all__ = ["conv2d", "conv2d_relu", "conv1x1", "max_pool2d", "add_relu", "IntOrPair", "Padding", "Activation"]

# The argument types, as torch.nn.functional spells them: an int or an (h, w) pair.
IntOrPair = Union[int, Sequence[int]]
Padding = Union[IntOrPair, Literal["same", "valid"]]
Activation = Optional[Literal["relu"]]


def _tensors(op, required, optional=None):
    """Tensor arguments are tensors (``optional`` ones may be None)."""
    for name, t in required.items():
        _checks.tensor(t, name, op)
    for name, t in (optional or {}).items():
        if t is not None:
            _checks.tensor(t, name, op)


def _own_check(input) -> bool:
    """Whether this layer checks the call itself. Only calls that use a spelling the op cannot see
    (an unbatched input, a 2-d conv1x1 weight) need it, so that the messages quote the caller's
    shapes; every other call is checked once, by the op (the router, or the fake kernel under
    torch.compile), with the same messages. Under autocast the op's autocast rule casts before the
    op checks, which a check here cannot anticipate: the op checks then too."""
    return not torch.is_autocast_enabled(input.device.type)


def _groups(groups, op):
    if isinstance(groups, bool) or not isinstance(groups, (int, torch.SymInt)):
        raise ValueError(f"{op}: groups must be an int, got {groups!r}")
    return groups


def _same_padding(input, weight, dilation, stride, op):
    """PyTorch's padding='same': symmetric padding plus one extra row/column on the bottom/right for
    even effective kernels (applied to the input)."""
    if stride != (1, 1):
        raise ValueError(f"{op}: padding='same' is not supported for strided convolutions (stride={stride})")
    pads, extra = [], []
    for i in range(2):
        total = dilation[i] * (weight.shape[2 + i] - 1)
        pads.append(total // 2)
        extra.append(total - 2 * (total // 2))
    if extra[0] or extra[1]:
        input = F.pad(input, (0, extra[1], 0, extra[0]))
    return input, tuple(pads)


def _conv_args(op, input, weight, stride, padding, dilation):
    stride = _checks.pair(stride, "stride", op)
    dilation = _checks.pair(dilation, "dilation", op)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            _checks.tensor(weight, "weight", op)
            if weight.dim() != 4:
                raise ValueError(f"{op}: weight must be 4-d [C_out, C_in/groups, kH, kW], got shape "
                                 f"{_checks.fmt(weight.shape)}")
            input, padding = _same_padding(input, weight, dilation, stride, op)
        else:
            raise ValueError(f"{op}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    else:
        padding = _checks.pair(padding, "padding", op)
    return input, stride, padding, dilation


@_logged
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrPair = 1, padding: Padding = 0,
           dilation: IntOrPair = 1, groups: int = 1, *, residual: Tensor | None = None,
           activation: Activation = None) -> Tensor:
    """``activation(conv2d(input, weight) + bias + residual)`` in one kernel.

    Arguments as ``torch.nn.functional.conv2d``; ``residual`` (the output's shape) is added before
    the activation, which is ``None`` or ``"relu"``.
    """
    op = "conv2d"
    act = _checks.activation(activation, op, allow_none=True)
    _tensors(op, {"input": input, "weight": weight}, {"bias": bias, "residual": residual})
    input, stride, padding, dilation = _conv_args(op, input, weight, stride, padding, dilation)
    groups = _groups(groups, op)
    if input.dim() == 3:  # unbatched, as torch.nn.functional.conv2d
        if _own_check(input):
            _checks.conv(op, input, weight, bias, residual, stride, padding, dilation, groups, batched=False)
        res = residual.unsqueeze(0) if residual is not None else None
        return torch.ops.fastcnn.conv2d(input.unsqueeze(0), weight, bias, res, stride, padding, dilation, groups,
                                        act).squeeze(0)
    return torch.ops.fastcnn.conv2d(input, weight, bias, residual, stride, padding, dilation, groups, act)


def conv2d_relu(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrPair = 1,
                padding: Padding = 0, dilation: IntOrPair = 1, groups: int = 1) -> Tensor:
    """``relu(conv2d(input, weight, bias))``, the drop-in for ``F.relu(F.conv2d(...))``."""
    return conv2d(input, weight, bias, stride, padding, dilation, groups, activation="relu")


@_logged
def conv1x1(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrPair = 1, *,
            residual: Tensor | None = None, activation: Activation = "relu") -> Tensor:
    """The bottleneck 1x1 convolution as a GEMM with the fused bias/residual/ReLU epilogue.

    ``weight`` is ``[C_out, C_in, 1, 1]`` (an ``nn.Conv2d`` weight) or ``[C_out, C_in]``;
    ``stride`` subsamples the input (ResNet's downsampling shortcut).
    """
    op = "conv1x1"
    act = _checks.activation(activation, op, allow_none=True)
    _tensors(op, {"input": input, "weight": weight}, {"bias": bias, "residual": residual})
    stride = _checks.pair(stride, "stride", op)
    if (input.dim() == 3 or weight.dim() == 2) and _own_check(input):
        _checks.conv(op, input, weight, bias, residual, stride, (0, 0), (1, 1), 1, one1x1=True, batched=False)
    if weight.dim() == 2:
        weight = weight.view(weight.shape[0], weight.shape[1], 1, 1)
    if input.dim() == 3:  # unbatched
        res = residual.unsqueeze(0) if residual is not None else None
        return torch.ops.fastcnn.conv1x1(input.unsqueeze(0), weight, bias, res, stride, act).squeeze(0)
    return torch.ops.fastcnn.conv1x1(input, weight, bias, residual, stride, act)


@_logged
def max_pool2d(input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
               dilation: IntOrPair = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """As ``torch.nn.functional.max_pool2d``: NaN propagates, ties go to the first maximum."""
    op = "max_pool2d"
    _checks.tensor(input, "input", op)
    kernel_size = _checks.pair(kernel_size, "kernel_size", op)
    stride = kernel_size if (stride is None or (not isinstance(stride, int) and len(stride) == 0)) else \
        _checks.pair(stride, "stride", op)
    padding = _checks.pair(padding, "padding", op)
    dilation = _checks.pair(dilation, "dilation", op)
    unbatched = input.dim() == 3
    if unbatched:
        _checks.max_pool2d(op, input, kernel_size, stride, padding, dilation, bool(ceil_mode), batched=False)
        input = input.unsqueeze(0)
    # Indices are written only when returned or needed by the backward.
    with_indices = bool(return_indices) or (torch.is_grad_enabled() and input.requires_grad)
    out, idx = torch.ops.fastcnn.max_pool2d(input, kernel_size, stride, padding, dilation, bool(ceil_mode),
                                            with_indices)
    if unbatched:
        out = out.squeeze(0)
        idx = idx.squeeze(0) if return_indices else idx
    return (out, idx) if return_indices else out


@_logged
def add_relu(input: Tensor | bool | int | float, other: Tensor | bool | int | float) -> Tensor:
    """``relu(input + other)`` in one pass (broadcasting as ``torch.add``). One side may be a Python
    number: it is promoted as ``torch.add`` promotes it (``add_relu(x, 1.5)``)."""
    op = "add_relu"
    input, other = _promote_number(input, other, op)
    _tensors(op, {"input": input, "other": other})
    return torch.ops.fastcnn.add_relu(input, other)


_NUMBER = (bool, int, float)


def _promote_number(a, b, op):
    """A Python number beside a tensor becomes a 0-d tensor of torch.add's result dtype (and the
    tensor is cast to it: int64 + 1.5 is float32, as torch.add)."""
    if isinstance(b, _NUMBER) and isinstance(a, torch.Tensor):
        dtype = torch.result_type(a, b)
        return a.to(dtype), torch.tensor(b, dtype=dtype, device=a.device)
    if isinstance(a, _NUMBER) and isinstance(b, torch.Tensor):
        dtype = torch.result_type(b, a)
        return torch.tensor(a, dtype=dtype, device=b.device), b.to(dtype)
    return a, b
