"""What the Triton launchers share, and the rules fastcnn's Python side takes from here.

kernels/ is a leaf: it imports nothing from ``fastcnn``, and this module does not import Triton
(fastcnn._checks and fastcnn._ops use it in installations without Triton). It holds:
* the conv/pool output-size formulas (the one Python definition; C++: csrc/geometry.h);
* the memory format of a conv output (as csrc/checks.h conv_memory_format);
* the launchers' notes for ``fastcnn.explain`` (``note``);
* output allocation with the test poison switch (as csrc/backend.cpp new_output): with poisoning on
  every output is filled with NaN (integers: -1) before a kernel writes it, so an element a kernel
  forgets to write fails. ``fastcnn.testing.set_poison`` sets this flag and the C++ one together.
"""

from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

_POISON = False
_NOTES: list | None = None  # open while fastcnn.explain traces: one dict per Triton launcher call


def trace(on: bool) -> list | None:
    """Start (on=True) or stop collecting the launchers' notes; stopping returns them."""
    global _NOTES
    out, _NOTES = _NOTES, ([] if on else None)
    return out


def note(**kv) -> None:
    """What a launcher chose (kernel, config, why), for fastcnn.explain; free when not tracing."""
    if _NOTES is not None:
        _NOTES.append(kv)


def set_poison(on: bool) -> None:
    global _POISON
    _POISON = bool(on)


def poison_enabled() -> bool:
    return _POISON


def conv_out_size(size, k, s, p, d):
    """Output size of a convolution along one axis (floor mode), as PyTorch; the dilated kernel fits."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def pool_out_size(size, k, s, p, d, ceil_mode):
    """Output size of a pool along one axis, as PyTorch's pooling_output_shape (may be < 1)."""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def conv_format(input: torch.Tensor, weight: torch.Tensor):
    """The memory format of a conv output: channels_last when the input or the weight is (as PyTorch)."""
    if suggest_memory_format(input) == torch.channels_last or suggest_memory_format(weight) == torch.channels_last:
        return torch.channels_last
    return torch.contiguous_format


def _poisoned(t: torch.Tensor) -> torch.Tensor:
    if _POISON and t.numel():
        t.fill_(float("nan") if t.is_floating_point() else -1)
    return t


def new_output(shape, dtype, device, memory_format=torch.contiguous_format) -> torch.Tensor:
    """An op output (poisoned while tests poison outputs)."""
    return _poisoned(torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format))


def new_output_strided(shape, stride, dtype, device) -> torch.Tensor:
    """As new_output, with explicit (dense) strides: a fresh tensor, not a view."""
    return _poisoned(torch.empty_strided(shape, stride, dtype=dtype, device=device))
