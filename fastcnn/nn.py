"""Drop-in modules: the constructor arguments, parameter names and state_dict keys of the torch
modules they replace, computed by the fused ``torch.ops.fastcnn.*`` ops.

================  ==========================================  ========================================
module            replaces                                    forward
================  ==========================================  ========================================
``Conv2d``        ``nn.Conv2d`` (+ ReLU, + residual)          ``act(conv(x) + bias + residual)``
``Conv2dReLU``    ``nn.Conv2d`` followed by ``nn.ReLU``       ``relu(conv(x) + bias)``
``Conv1x1``       a 1x1 ``nn.Conv2d`` (+ ReLU, + residual)    the GEMM 1x1 conv, ReLU by default
``MaxPool2d``     ``nn.MaxPool2d``                            ``max_pool2d``
``AddReLU``       ``relu(a + b)``                             ``add_relu``
================  ==========================================  ========================================

``Conv2d``/``Conv2dReLU``/``Conv1x1`` subclass ``nn.Conv2d``, so ``load_state_dict`` from an
``nn.Conv2d`` (and ``isinstance(m, nn.Conv2d)``) just works; ``Conv2d.from_conv(conv)`` wraps an
existing conv, sharing its parameters.

``conv_bn_act(input, conv, bn, residual, activation)`` is the conv -> BatchNorm -> (+ residual) ->
ReLU block that ``fastcnn.models`` and ``fastcnn.fuse`` are built from. The conv and the BN stay
separate modules (their parameters keep their torchvision names); the block is computed as:

* eval mode (BN with running statistics): the BN is folded into the conv,
  ``w' = w * gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``, and
  conv + bias + residual + ReLU run as one fastcnn op. Without autograd the folded weights are
  cached and recomputed when any of the six tensors changes (an optimizer step, ``load_state_dict``,
  an in-place edit under ``no_grad``, ``.to()``: tracked by each tensor's version counter and data
  pointer). With autograd the fold is recomputed in the graph, so gradients reach the conv weight
  and the BN's gamma and beta exactly as in PyTorch. (Edits through ``param.data``, which bypass
  the version counter, need ``clear_fold_cache()``.)
* train mode (or a BN without running statistics): batch statistics as PyTorch (the BN module
  itself runs: momentum, unbiased running variance, ``num_batches_tracked``); the conv runs as a
  fastcnn op, and the residual add + ReLU after the BN as one ``add_relu``.
"""

from __future__ import annotations

import functools
import weakref

from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, cast

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .functional import Activation

# nn.Conv2d's own argument types (torch.nn.common_types._size_2_t), so a drop-in type-checks as one.
_Size2 = Union[int, tuple[int, int]]
_Padding2 = Union[str, _Size2]
_PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]

from . import _checks
from . import functional as FF

__all__ = ["Conv2d", "Conv2dReLU", "Conv1x1", "MaxPool2d", "AddReLU", "conv_bn_act", "fold_bn", "clear_fold_cache"]


_F = TypeVar("_F", bound=Callable[..., Any])


def fx_leaf(fn: _F) -> _F:
    """Make ``fn`` one node under torch.fx tracing (``symbolic_trace`` of a model built on it, or a
    GraphModule re-traced when unpickled) instead of being traced into: the fastcnn functions
    validate real tensors, and the BN fold and the train/eval choice must happen when the graph
    runs, not when it is traced."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for a in (*args, *kwargs.values()):
            if isinstance(a, torch.fx.Proxy):
                return a.tracer.create_proxy("call_function", wrapper, args, kwargs)
        return fn(*args, **kwargs)
    return cast(_F, wrapper)


def _act(activation, op):
    return None if _checks.activation(activation, op, allow_none=True) == "none" else "relu"


def _is_1x1(weight, padding, groups) -> bool:
    return (weight.dim() == 4 and weight.shape[2] == 1 and weight.shape[3] == 1 and groups == 1
            and padding in (0, (0, 0), "valid"))


@fx_leaf
def _conv_forward(conv: nn.Conv2d, input, weight, bias, residual=None, activation=None):
    """``act(conv(input) + bias + residual)`` with the geometry of ``conv`` (any nn.Conv2d) and the
    given weight and bias (the conv's own, or folded ones): a 1x1 unpadded ungrouped conv runs as
    ``conv1x1`` (a GEMM), anything else as ``conv2d``."""
    padding = conv.padding
    if conv.padding_mode != "zeros":
        input = F.pad(input, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = (0, 0)
    if _is_1x1(weight, padding, conv.groups):
        return FF.conv1x1(input, weight, bias, conv.stride, residual=residual, activation=activation)
    return FF.conv2d(input, weight, bias, conv.stride, padding, conv.dilation, conv.groups,
                     residual=residual, activation=activation)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with an optional fused ReLU and residual: ``act(conv(x) + bias + residual)``.

    Arguments as ``nn.Conv2d``, plus ``activation`` (``None`` or ``"relu"``); ``forward(input,
    residual=None)`` adds ``residual`` (the output's shape) before the activation. 1x1 convs without
    padding or groups run as ``conv1x1``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Size2, stride: _Size2 = 1,
                 padding: _Padding2 = 0, dilation: _Size2 = 1, groups: int = 1, bias: bool = True,
                 padding_mode: _PaddingMode = "zeros", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, *, activation: Activation = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self.activation = _act(activation, type(self).__name__)

    def forward(self, input: Tensor, residual: Tensor | None = None) -> Tensor:
        return _conv_forward(self, input, self.weight, self.bias, residual, self.activation)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + f", activation={self.activation!r}" if self.activation else s

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, activation: Activation = None) -> Conv2d:
        """A fastcnn conv sharing ``conv``'s parameters (same geometry, same state_dict keys)."""
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"{cls.__name__}.from_conv: expected an nn.Conv2d, got {type(conv).__name__}")
        kwargs = {} if cls is Conv2dReLU else {"activation": activation}
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  conv.groups, conv.bias is not None, conv.padding_mode, device="meta", **kwargs)
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new


class Conv2dReLU(Conv2d):
    """``nn.Conv2d`` followed by ReLU, in one op (arguments as ``nn.Conv2d``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Size2, stride: _Size2 = 1,
                 padding: _Padding2 = 0, dilation: _Size2 = 1, groups: int = 1, bias: bool = True,
                 padding_mode: _PaddingMode = "zeros", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype, activation="relu")


class Conv1x1(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` as a GEMM over (N*H*W, C) with the fused bias/residual/ReLU epilogue.

    Arguments as ``nn.Conv2d`` (``kernel_size`` 1, no padding, no groups), so that
    ``nn.Conv2d(64, 256, kernel_size=1, stride=2, bias=False)`` becomes
    ``Conv1x1(64, 256, kernel_size=1, stride=2, bias=False, activation=None)``. As
    ``fastcnn.functional.conv1x1``, ``activation`` defaults to ``"relu"``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Size2 = 1, stride: _Size2 = 1,
                 padding: _Padding2 = 0, dilation: _Size2 = 1, groups: int = 1, bias: bool = True,
                 padding_mode: _PaddingMode = "zeros", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, *, activation: Activation = "relu") -> None:
        name = type(self).__name__
        if kernel_size not in (1, (1, 1), [1, 1]):
            raise ValueError(f"{name}: kernel_size must be 1, got {kernel_size!r}")
        if padding not in (0, (0, 0), [0, 0], "valid", "same"):
            raise ValueError(f"{name}: padding must be 0, got {padding!r}")
        if groups != 1:
            raise ValueError(f"{name}: groups must be 1, got {groups!r}")
        super().__init__(in_channels, out_channels, 1, stride, 0, dilation, 1, bias, padding_mode, device=device,
                         dtype=dtype)
        self.activation = _act(activation, name)

    def forward(self, input: Tensor, residual: Tensor | None = None) -> Tensor:
        return _conv_forward(self, input, self.weight, self.bias, residual, self.activation)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation!r}"


@fx_leaf
def _max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    return FF.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


@fx_leaf
def _add_relu(input, other):
    return FF.add_relu(input, other)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (same arguments) on ``fastcnn.functional.max_pool2d``."""

    def forward(self, input: Tensor) -> Tensor | tuple[Tensor, Tensor]:  # type: ignore[override]
        return _max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                           self.return_indices)


class AddReLU(nn.Module):
    """``relu(input + other)`` in one pass (broadcasting as ``torch.add``): the residual join."""

    def forward(self, input: Tensor, other: Tensor | float) -> Tensor:
        return _add_relu(input, other)


# ------------------------------------------------------------------------------------------------
# conv -> BatchNorm -> (+ residual) -> ReLU
# ------------------------------------------------------------------------------------------------

# conv module -> (key, folded weight, folded bias). Weak keys: the cache never keeps a module alive
# and is not part of the module's state (deepcopy, pickling, state_dict do not see it).
_FOLD_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def clear_fold_cache(module: nn.Module | None = None) -> None:
    """Drop cached folded weights (all, or those of ``module``'s convs). Only needed after editing
    parameters through ``.data``, which bypasses the version counters the cache checks."""
    if module is None:
        _FOLD_CACHE.clear()
        return
    for m in module.modules():
        _FOLD_CACHE.pop(m, None)


def _bn_tensors(conv, bn):
    return (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)


def fold_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm, weight: Tensor | None = None,
            bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The conv weight and bias with the eval-mode BN folded in (differentiable; not cached)."""
    w = conv.weight if weight is None else weight
    b = conv.bias if bias is None else bias
    # Folded in at least float32 (half-precision params would lose the scale's precision).
    cdt = torch.promote_types(w.dtype, torch.float32)
    invstd = torch.rsqrt(bn.running_var.to(cdt) + bn.eps)
    scale = invstd if bn.weight is None else bn.weight.to(cdt) * invstd
    shift = -bn.running_mean.to(cdt) * scale if b is None else (b.to(cdt) - bn.running_mean.to(cdt)) * scale
    if bn.bias is not None:
        shift = bn.bias.to(cdt) + shift
    wf = (w.to(cdt) * scale.reshape(-1, 1, 1, 1)).to(w.dtype)
    return wf, shift.to(w.dtype)


def _fold_key(tensors, eps):
    key = [eps]
    for t in tensors:
        if t is None:
            key.append(None)
        else:
            key.append((id(t), t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape)))
    return tuple(key)


def _folded(conv, bn):
    tensors = _bn_tensors(conv, bn)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if needs_grad or torch.compiler.is_compiling():
        # In the autograd graph (gradients reach w, gamma, beta); under torch.compile the fold is
        # part of the compiled graph.
        return fold_bn(conv, bn)
    try:
        key = _fold_key(tensors, bn.eps)
    except RuntimeError:  # inference tensors carry no version counter: do not cache
        return fold_bn(conv, bn)
    hit = _FOLD_CACHE.get(conv)
    if hit is not None and hit[0] == key and not (hit[1].is_inference() and not torch.is_inference_mode_enabled()):
        return hit[1], hit[2]
    wf, bf = fold_bn(conv, bn)
    _FOLD_CACHE[conv] = (key, wf, bf)
    return wf, bf


def _can_fold(bn) -> bool:
    return (isinstance(bn, nn.modules.batchnorm._BatchNorm) and not bn.training and bn.running_mean is not None
            and bn.running_var is not None)


@fx_leaf
def conv_bn_act(input: Tensor, conv: nn.Conv2d, bn: nn.Module | None = None, residual: Tensor | None = None,
                activation: Activation = None) -> Tensor:
    """``act(bn(conv(input)) + residual)`` with fastcnn ops (see the module docstring).

    ``conv`` is any ``nn.Conv2d`` (its weight, bias and geometry are used), ``bn`` a BatchNorm2d or
    ``None``, ``residual`` ``None`` or a tensor of the output's shape, ``activation`` ``None`` or
    ``"relu"``.
    """
    act = _act(activation, "conv_bn_act")
    if bn is None:
        return _conv_forward(conv, input, conv.weight, conv.bias, residual, act)
    if _can_fold(bn):
        wf, bf = _folded(conv, bn)
        return _conv_forward(conv, input, wf, bf, residual, act)
    # Batch statistics: the BN module runs as in PyTorch (running-stat updates included).
    y = bn(_conv_forward(conv, input, conv.weight, conv.bias))
    if residual is not None:
        return FF.add_relu(y, residual) if act else y + residual
    return torch.relu_(y) if act else y
