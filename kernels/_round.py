"""The one rounding of a result to its output dtype, shared by every Triton kernel.

On the GPU, ``x.to(tl.bfloat16)`` rounds to nearest even (cvt.rn.bf16.f32). Triton 3.6's
interpreter truncates instead (its float32 -> bfloat16 cast keeps the high 16 bits; with
fp_downcast_rounding="rtne" it rounds half up and can carry into the sign bit), so a bfloat16
result there would not be what the GPU, the CPU and the CUDA backends store. Where the interpreter
runs (INTERPRETER, a compile-time constant) the rounding is done on the float32 bits instead.
float16 needs nothing: the interpreter's float32 -> float16 cast is numpy's, which rounds to
nearest even.
"""

from __future__ import annotations

import triton
import triton.language as tl

from . import _launch

INTERPRETER = tl.constexpr(_launch.INTERPRETER)


@triton.jit
def _bf16_rne(x):
    """float32 -> bfloat16, round to nearest even, through the bits: add 0x7FFF plus the lowest
    kept bit, drop the low 16 bits (a carry into the exponent gives the next binade or inf, as
    it should); NaN is kept as a quiet NaN of the same sign (adding could overflow it)."""
    bits = x.to(tl.uint32, bitcast=True)
    rounded = bits + (0x7FFF + ((bits >> 16) & 1))
    rounded = tl.where(x != x, bits | 0x400000, rounded)
    return (rounded >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def to_out(x, dtype: tl.constexpr):
    """``x.to(dtype)`` with round-to-nearest-even on every backend (see the module docstring)."""
    y = x.to(dtype)
    if INTERPRETER:
        if dtype == tl.bfloat16:
            if x.dtype == tl.float32:
                y = _bf16_rne(x)
    return y
