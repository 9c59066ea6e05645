"""Triton add_relu: ``relu(input + other)`` with torch.add's broadcasting and output layout, and its
backward ``where(output <= 0, 0, grad_output)`` (fastcnn::_triton_add_relu / _triton_add_relu_backward).

Semantics follow csrc/cpu/add_relu.cpp: float16/bfloat16 add in float32 and round once; ReLU keeps
NaN (``v < 0 ? 0 : v``); the backward passes the gradient where the output is NaN.

Layout. The output has the strides TensorIterator gives ``input + other`` (the fake kernel is
``torch.empty_like(input + other)``); we read them off meta tensors, so no data moves to find them.
The launcher then walks the operands in the output's memory order and merges dimensions that are
contiguous in every operand (TensorIterator's coalescing), so that
* the usual case (same shape, same dense layout: NCHW, channels_last, a view with a storage offset)
  becomes one flat range: a 1-d kernel with contiguous, vectorisable accesses;
* anything else (broadcasting, non-dense views, mixed layouts) becomes rows x an inner dimension
  along which the output is contiguous: a 2-d tile kernel whose per-row coordinates are computed
  once per row (not per element) from up to four outer dimensions.
Offsets are int64 wherever an index can pass 2^31 elements (IDX64).
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from . import _common, _launch, _tuning
from ._round import to_out

# Indices at or past this use int64 arithmetic (IDX64); tests lower it to run the int64 paths on
# tiny shapes.
INT32_LIMIT = 2**31

_FAMILY = "add_relu"
_MAX_OUTER = 4  # outer dimensions the 2-d kernel decomposes; more are looped over in Python (rare)
_ADD_RELU, _RELU_GRAD = 0, 1  # the OP constexpr of the kernels


@triton.jit
def _apply(x, y, OP: tl.constexpr):
    if OP == 0:
        # relu(x + y); float16/bfloat16 add in float32 (as the CPU's opmath) and round once on store
        if x.dtype == tl.float64:
            v = x + y
        else:
            v = x.to(tl.float32) + y.to(tl.float32)
        r = tl.where(v < 0, tl.zeros_like(v), v)  # NaN < 0 is false: NaN stays
    else:
        # x = grad_output, y = output; NaN <= 0 is false: a NaN output passes the gradient. The compare
        # is in float32: Triton's interpreter compares bfloat16 by bit pattern (-0.0 would not be <= 0).
        yc = y if y.dtype == tl.float64 else y.to(tl.float32)
        r = tl.where(yc <= 0, tl.zeros_like(x), x)
    return r


@triton.jit
def _add_relu_flat_kernel(x_ptr, y_ptr, out_ptr, n, OP: tl.constexpr, IDX64: tl.constexpr,
                          BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    if IDX64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, to_out(_apply(x, y, OP), out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=("n_rows", "col_blocks"))  # row masks and decomposition only
def _add_relu_nd_kernel(x_ptr, y_ptr, out_ptr, x_base, y_base, o_base, n_rows, inner, col_blocks,
                        sx0, sy0,
                        d1, sx1, sy1, d2, sx2, sy2, d3, sx3, sy3, d4, sx4, sy4,
                        OUTER: tl.constexpr, OP: tl.constexpr, IDX64: tl.constexpr,
                        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # One 1-d grid (row blocks x column blocks): CUDA caps grid axes 1 and 2 at 65535.
    pid = tl.program_id(0)
    pid_r = pid // col_blocks
    pid_c = pid % col_blocks
    if IDX64:
        pid_r = pid_r.to(tl.int64)
        pid_c = pid_c.to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    # Element offsets of each row in x and y, outer dimensions innermost first (d1 is next to the
    # inner one). The output is contiguous in this order: its offset is row * inner + col.
    r = rows
    xo = tl.zeros([BLOCK_R], dtype=tl.int64)
    yo = tl.zeros([BLOCK_R], dtype=tl.int64)
    if OUTER >= 1:
        i = (r % d1).to(tl.int64)
        r = r // d1
        xo += i * sx1
        yo += i * sy1
    if OUTER >= 2:
        i = (r % d2).to(tl.int64)
        r = r // d2
        xo += i * sx2
        yo += i * sy2
    if OUTER >= 3:
        i = (r % d3).to(tl.int64)
        r = r // d3
        xo += i * sx3
        yo += i * sy3
    if OUTER >= 4:
        i = (r % d4).to(tl.int64)
        xo += i * sx4
        yo += i * sy4
    mask = (rows < n_rows)[:, None] & (cols < inner)[None, :]
    c64 = cols.to(tl.int64)[None, :]
    x = tl.load(x_ptr + x_base + xo[:, None] + c64 * sx0, mask=mask)
    y = tl.load(y_ptr + y_base + yo[:, None] + c64 * sy0, mask=mask)
    o_off = o_base + rows.to(tl.int64)[:, None] * inner + c64
    tl.store(out_ptr + o_off, to_out(_apply(x, y, OP), out_ptr.dtype.element_ty), mask=mask)


def _result_strides(a: torch.Tensor, b: torch.Tensor) -> tuple[int, ...]:
    """The strides of torch.empty_like(a + b) (what the fake kernel returns), from meta tensors."""
    am = torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device="meta")
    bm = torch.empty_strided(b.shape, b.stride(), dtype=b.dtype, device="meta")
    return torch.empty_like(am + bm).stride()


def _alloc(shape, stride, dtype, device) -> torch.Tensor:
    """An output with exactly these (dense) strides, through the poisoning allocator."""
    return _common.new_output_strided(tuple(shape), tuple(stride), dtype, device)


def _coalesce(shape, out_stride, xs, ys):
    """Dimensions in the output's memory order (outermost first), size-1 ones dropped and neighbours
    merged where x, y and the output are all contiguous across them. Returns [(size, sx, sy, so)]."""
    dims = sorted((d for d in range(len(shape)) if shape[d] != 1), key=lambda d: -out_stride[d])
    out = []
    for d in dims:
        size, sx, sy, so = shape[d], xs[d], ys[d], out_stride[d]
        if out:
            ps, psx, psy, pso = out[-1]
            if psx == sx * size and psy == sy * size and pso == so * size:
                out[-1] = (ps * size, sx, sy, so)
                continue
        out.append((size, sx, sy, so))
    return out or [(1, 0, 0, 1)]


def plan(op: int, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor, stem: str) -> list:
    """The launches computing out = OP(x, y) elementwise; x and y already broadcast (expanded) to
    out's shape."""
    n = out.numel()
    if n == 0:
        return []
    dims = _coalesce(out.shape, out.stride(), x.stride(), y.stride())
    inner, sx0, sy0, so0 = dims[-1]
    assert so0 == 1, "the output is dense, so its innermost coalesced stride is 1"
    flat = len(dims) == 1 and sx0 == 1 and sy0 == 1
    cfg = _tuning.pick(_FAMILY, f"{stem}:{'flat' if flat else 'nd'}:{str(x.dtype)[6:]}:n{n}")
    block, launch = cfg["BLOCK"], {k: cfg[k] for k in ("num_warps", "num_stages") if k in cfg}
    if flat:
        idx64 = n + block >= INT32_LIMIT
        return [_launch.launch(_add_relu_flat_kernel, (triton.cdiv(n, block),), (x, y, out, n),
                               dict(OP=op, IDX64=idx64, BLOCK=block), launch)]
    outer, lead = dims[:-1][::-1][:_MAX_OUTER], dims[:-1][::-1][_MAX_OUTER:]  # innermost first
    n_rows = 1
    for size, *_ in outer:
        n_rows *= size
    block_c = min(triton.next_power_of_2(inner), block)
    block_r = min(max(1, block // block_c), triton.next_power_of_2(n_rows))
    col_blocks = triton.cdiv(inner, block_c)
    grid = (triton.cdiv(n_rows, block_r) * col_blocks,)
    # row and column indices in int32 unless they can pass it (offsets are int64 regardless)
    idx64 = max(n_rows + block_r, inner + block_c) >= INT32_LIMIT
    padded = list(outer) + [(1, 0, 0, 0)] * (_MAX_OUTER - len(outer))
    args = [a for size, sx, sy, _ in padded for a in (size, sx, sy)]
    # Dimensions beyond the kernel's four outer ones: one launch per index (six or more dimensions
    # that do not coalesce; no network here has them).
    consts = dict(OUTER=len(outer), OP=op, IDX64=idx64, BLOCK_R=block_r, BLOCK_C=block_c)
    launches = []
    for index in itertools.product(*(range(size) for size, *_ in lead)):
        xb = sum(i * sx for i, (_, sx, _, _) in zip(index, lead))
        yb = sum(i * sy for i, (_, _, sy, _) in zip(index, lead))
        ob = sum(i * so for i, (_, _, _, so) in zip(index, lead))
        launches.append(_launch.launch(_add_relu_nd_kernel, grid,
                                       (x, y, out, xb, yb, ob, n_rows, inner, col_blocks, sx0, sy0, *args),
                                       consts, launch))
    return launches


# Arguments arrive validated (the router runs csrc/checks.h before any backend).
def add_relu(input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    shape = tuple(torch.broadcast_shapes(input.shape, other.shape))
    out = _alloc(shape, _result_strides(input, other), input.dtype, input.device)
    _launch.run(plan(_ADD_RELU, input.expand(shape), other.expand(shape), out, "add_relu"))
    return out


def add_relu_backward(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    gi = _alloc(tuple(output.shape), _result_strides(grad_output, output), output.dtype, output.device)
    _launch.run(plan(_RELU_GRAD, grad_output, output, gi, "add_relu_backward"))
    return gi


IMPLS = {"add_relu": add_relu, "add_relu_backward": add_relu_backward}
