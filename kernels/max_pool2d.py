"""Triton max_pool2d, forward and backward (fastcnn::_triton_max_pool2d / _triton_max_pool2d_backward).

Semantics follow csrc/cpu/max_pool2d.cpp, i.e. PyTorch's: the output size is pooling_output_shape;
a window starts from -inf (integers, forward only: the type's lowest value) with the index of its
first valid tap; a tap replaces the running max when ``v > m or v != v`` (the first maximum wins
ties, NaN propagates and its index is the last NaN); indices are int64 ``h*W + w`` in the input
plane. Outputs take the input's suggested memory format.

Layout. Both kernels see their output as a 2-d grid of rows x columns whose columns are the
innermost dimension of that memory format, so loads and stores run along contiguous memory:
* channels_last: rows are pixels (n, h, w), columns are channels;
* NCHW: rows are (n, c, h), columns are the width.
A program takes a BLOCK_R x BLOCK_C tile. A row's coordinates come from a few integer divisions done
once per row, not per element; the tile shape follows the column count (block sizes are data: the
"pool" candidates of kernels/configs/candidates.json). Input and output strides are passed, so
views with any strides or a storage offset are read in place.

Backward as a gather: each grad_input element visits the (at most kh*kw) outputs whose window holds
it and sums the grad_output of those whose index is its own position. Overlapping windows (stride <
kernel) then need no atomics, the sum order is fixed (deterministic), every element is written once
(zeros included, no separate zero fill) and the accumulation is float32 (float64 for float64).
Nothing is written out of bounds: an index outside the plane (or negative) matches no element. The
gather relies on what the forward writes, each index inside its own window: an index elsewhere in
the plane is dropped where the C++ scatter would add it. Without indices the backward first runs the
forward kernel to write them (int32) into a scratch tensor, then gathers: one extra read of the
input and a small index round trip, instead of recomputing each window kh*kw times per element.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from . import _common, _launch, _tuning
from ._round import to_out

# Indices at or past this use int64 arithmetic (IDX64); tests lower it to run the int64 paths on
# tiny shapes.
INT32_LIMIT = 2**31


@triton.jit
def _first_tap(i0, D: tl.constexpr):
    """The first non-negative position i0 + k*D (k >= 0): the first valid tap of a window that starts
    in the padding (as ATen's `while (hstart < 0) hstart += dilation`)."""
    return tl.where(i0 < 0, i0 + ((D - 1 - i0) // D) * D, i0)


# Sizes that only bound the row masks and feed the row decompositions are not specialised (see
# kernels/_conv_igemm.py _SIZES_FWD); n_cols (the contiguous columns' mask) is.
_SIZES = ("C", "H", "W", "P", "Q", "n_rows", "col_blocks")


@triton.jit(do_not_specialize=_SIZES)
def _max_pool2d_forward_kernel(
        x_ptr, out_ptr, idx_ptr,
        C, H, W, P, Q, n_rows, n_cols, col_blocks,
        sxn, sxc, sxh, sxw,  # input element strides
        son, soc, sop, soq,  # output element strides (indices have the same)
        KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
        PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
        CHANNELS_LAST: tl.constexpr, STORE_OUT: tl.constexpr, STORE_IDX: tl.constexpr,
        IDX64: tl.constexpr, OFF64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # One 1-d grid (row blocks x column blocks): CUDA caps grid axes 1 and 2 at 65535.
    pid = tl.program_id(0)
    pid_r = pid // col_blocks
    pid_c = pid % col_blocks
    if IDX64:
        pid_r = pid_r.to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if CHANNELS_LAST:  # rows (n, p, q), columns c
        q = (rows % Q)[:, None]
        t = rows // Q
        p = (t % P)[:, None]
        n = (t // P)[:, None]
        c = cols[None, :]
    else:  # rows (n, c, p), columns q
        p = (rows % P)[:, None]
        t = rows // P
        c = (t % C)[:, None]
        n = (t // C)[:, None]
        q = cols[None, :]
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    x_nc = x_ptr + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc
    ih0 = p * SH - PH
    iw0 = q * SW - PW
    if IDX64:  # int64 positions h*W + w too (needed once a plane reaches 2^31 elements)
        pos0 = _first_tap(ih0, DH).to(tl.int64) * W + _first_tap(iw0, DW)
    else:
        pos0 = _first_tap(ih0, DH) * W + _first_tap(iw0, DW)
    # float16/bfloat16 compare in float32 (exact, as the CPU kernel; Triton's interpreter cannot
    # compare bfloat16), float32/float64 in their own type. Integers (forward only) compare in their
    # own type and start from its lowest value instead of -inf, as ATen.
    x_ty = x_ptr.dtype.element_ty
    if x_ty.is_int():
        m = tl.full([BLOCK_R, BLOCK_C], x_ty.get_int_min_value(), x_ty)
    elif x_ty == tl.float64:
        m = tl.full([BLOCK_R, BLOCK_C], float("-inf"), tl.float64)
    else:
        m = tl.full([BLOCK_R, BLOCK_C], float("-inf"), tl.float32)
    mi = tl.broadcast_to(pos0, [BLOCK_R, BLOCK_C])
    # One rolled loop over the taps, in-plane offsets int32 unless a plane spans 2^31 elements
    # (OFF64), as in the backward: unrolled with 64-bit addresses, sm_80, ResNet-50 maxpool NCHW
    # bf16 3x3/s2 with indices, 64x64 tiles (8 warps): 255 registers + 40 B of spills.
    for t in tl.range(0, KH * KW, loop_unroll_factor=1):
        i = t // KW
        j = t - i * KW
        ih = ih0 + i * DH
        iw = iw0 + j * DW
        ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W) & mask
        if OFF64:
            off = ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
        else:
            off = ih * sxh + iw * sxw
        # a padded or masked tap reads the start value (-inf or the lowest integer), which never
        # replaces the running max
        if x_ty.is_int():
            v = tl.load(x_nc + off, mask=ok, other=x_ty.get_int_min_value())
            take = v > m
        else:
            v = tl.load(x_nc + off, mask=ok, other=float("-inf")).to(m.dtype)
            take = (v > m) | (v != v)
        m = tl.where(take, v, m)
        if STORE_IDX:
            if IDX64:
                mi = tl.where(take, ih.to(tl.int64) * W + iw, mi)
            else:
                mi = tl.where(take, ih * W + iw, mi)
    o_off = n.to(tl.int64) * son + c.to(tl.int64) * soc + p.to(tl.int64) * sop + q.to(tl.int64) * soq
    if STORE_OUT:
        tl.store(out_ptr + o_off, to_out(m, out_ptr.dtype.element_ty), mask=mask)
    if STORE_IDX:
        tl.store(idx_ptr + o_off, mi.to(idx_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=_SIZES)
def _max_pool2d_backward_kernel(
        go_ptr, idx_ptr, gi_ptr,
        C, H, W, P, Q, n_rows, n_cols, col_blocks,
        sgn, sgc, sgp, sgq,  # grad_output element strides
        sin, sic, sip, siq,  # indices element strides
        sxn, sxc, sxh, sxw,  # grad_input element strides
        KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
        PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
        CHANNELS_LAST: tl.constexpr, IDX64: tl.constexpr, ACC64: tl.constexpr, OFF64: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    pid_r = pid // col_blocks
    pid_c = pid % col_blocks
    if IDX64:
        pid_r = pid_r.to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if CHANNELS_LAST:  # rows (n, h, w), columns c
        iw = (rows % W)[:, None]
        t = rows // W
        ih = (t % H)[:, None]
        n = (t // H)[:, None]
        c = cols[None, :]
    else:  # rows (n, c, h), columns w
        ih = (rows % H)[:, None]
        t = rows // H
        c = (t % C)[:, None]
        n = (t // C)[:, None]
        iw = cols[None, :]
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    if IDX64:
        pos = ih.to(tl.int64) * W + iw
    else:
        pos = ih * W + iw
    n64 = n.to(tl.int64)
    c64 = c.to(tl.int64)
    go_nc = go_ptr + n64 * sgn + c64 * sgc
    idx_nc = idx_ptr + n64 * sin + c64 * sic
    if ACC64:
        acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    # Output (p, q) holds (ih, iw) at tap (i, j) when p*SH - PH + i*DH == ih (and likewise for q):
    # p = (ih + PH - i*DH) / SH when that divides exactly and lands in [0, P).
    # One rolled loop over the taps: unrolled, ptxas hoists every tap's loads and their 64-bit
    # addresses (sm_90, AlexNet pool1, NCHW bf16 3x3/s2, int64 indices, 16x64 tiles: 255
    # registers + 64 B of spills; rolled: 64 registers, no spills; fp32 56-64). In-plane offsets
    # are int32 unless a plane spans 2^31 elements (OFF64).
    for t in tl.range(0, KH * KW, loop_unroll_factor=1):
        i = t // KW
        j = t - i * KW
        th = ih + (PH - i * DH)
        p = th // SH
        tw = iw + (PW - j * DW)
        q = tw // SW
        ok = (th >= 0) & (th == p * SH) & (p < P) & (tw >= 0) & (tw == q * SW) & (q < Q) & mask
        if OFF64:
            p = p.to(tl.int64)
            q = q.to(tl.int64)
        k = tl.load(idx_nc + (p * sip + q * siq), mask=ok, other=-1)
        g = tl.load(go_nc + (p * sgp + q * sgq), mask=ok, other=0)
        acc += tl.where(k == pos, g.to(acc.dtype), 0)  # where, not a product: NaN elsewhere stays out
    g_off = n64 * sxn + c64 * sxc + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
    tl.store(gi_ptr + g_off, to_out(acc, gi_ptr.dtype.element_ty), mask=mask)


def _pairs(kernel_size, stride, padding, dilation):
    return tuple(tuple(v) for v in (kernel_size, stride, padding, dilation))


def _out_shape(x, geom, ceil_mode):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geom
    N, C, H, W = x.shape
    return (N, C, _common.pool_out_size(H, kh, sh, ph, dh, ceil_mode),
            _common.pool_out_size(W, kw, sw, pw, dw, ceil_mode))


def _geometry_args(kernel_size, stride, padding, dilation):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    return dict(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, DH=dh, DW=dw)


def _tiles(family: str, key: str, n_rows: int, n_cols: int):
    """(BLOCK_R, BLOCK_C, number of column blocks, grid, launch options) for a rows x columns grid:
    the columns (contiguous) take up to MAX_COLS of the config's BLOCK elements, the rows the rest."""
    cfg = _tuning.pick(family, key)
    block_c = min(triton.next_power_of_2(n_cols), cfg["MAX_COLS"], cfg["BLOCK"])
    block_r = min(max(1, cfg["BLOCK"] // block_c), triton.next_power_of_2(n_rows))
    col_blocks = triton.cdiv(n_cols, block_c)
    grid = (triton.cdiv(n_rows, block_r) * col_blocks,)
    launch = {k: cfg[k] for k in ("num_warps", "num_stages") if k in cfg}
    return block_r, block_c, col_blocks, grid, launch


def _key(x: torch.Tensor, channels_last: bool, geom) -> str:
    N, C, H, W = x.shape
    (kh, kw), (sh, sw) = geom[0], geom[1]
    return f"{'nhwc' if channels_last else 'nchw'}:{str(x.dtype)[6:]}:C{C}:H{H}:W{W}:k{kh}x{kw}:s{sh}x{sw}"


def plan_forward(x, out, idx, geom, channels_last, store_out):
    """The launch writing out (when store_out) and idx (when not None), both in the same layout."""
    ref = out if out is not None else idx  # out and idx share shape and strides; an absent one gets ref
    N, C, H, W = x.shape
    P, Q = ref.shape[2:]
    n_rows, n_cols = (N * P * Q, C) if channels_last else (N * C * P, Q)
    block_r, block_c, col_blocks, grid, launch = _tiles("max_pool2d", _key(x, channels_last, geom), n_rows, n_cols)
    idx64 = n_rows + block_r >= INT32_LIMIT or H * W >= INT32_LIMIT
    args = (x, ref if out is None else out, ref if idx is None else idx,
            C, H, W, P, Q, n_rows, n_cols, col_blocks, *x.stride(), *ref.stride())
    consts = dict(**_geometry_args(*geom), CHANNELS_LAST=channels_last, STORE_OUT=store_out,
                  STORE_IDX=idx is not None, IDX64=idx64, OFF64=_plane_span(x) >= INT32_LIMIT,
                  BLOCK_R=block_r, BLOCK_C=block_c)
    return [_launch.launch(_max_pool2d_forward_kernel, grid, args, consts, launch)]


def _plane_span(*tensors) -> int:
    """The largest in-plane offset (h and w dimensions) of any of the tensors, plus one."""
    return max(1 + sum((t.shape[d] - 1) * t.stride(d) for d in (2, 3)) for t in tensors)


def plan_backward(grad_output, indices, gi, geom, channels_last):
    """The launch gathering grad_input from grad_output at the (forward's) indices."""
    N, C, H, W = gi.shape
    n_rows, n_cols = (N * H * W, C) if channels_last else (N * C * H, W)
    block_r, block_c, col_blocks, grid, launch = _tiles("max_pool2d_backward", _key(gi, channels_last, geom),
                                                        n_rows, n_cols)
    idx64 = n_rows + block_r >= INT32_LIMIT or H * W >= INT32_LIMIT
    args = (grad_output, indices, gi, C, H, W, *grad_output.shape[2:], n_rows, n_cols, col_blocks,
            *grad_output.stride(), *indices.stride(), *gi.stride())
    consts = dict(**_geometry_args(*geom), CHANNELS_LAST=channels_last, IDX64=idx64,
                  ACC64=gi.dtype == torch.float64, OFF64=_plane_span(grad_output, indices) >= INT32_LIMIT,
                  BLOCK_R=block_r, BLOCK_C=block_c)
    return [_launch.launch(_max_pool2d_backward_kernel, grid, args, consts, launch)]


def max_pool2d(input, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False, with_indices=False):
    # Arguments arrive validated (the router runs csrc/checks.h before any backend).
    # The defaults are the schema's: the dispatcher leaves out trailing arguments equal to them.
    geom = _pairs(kernel_size, stride, padding, dilation)
    shape = _out_shape(input, geom, bool(ceil_mode))
    fmt = suggest_memory_format(input)
    out = _common.new_output(shape, input.dtype, input.device, fmt)
    if with_indices:
        idx = _common.new_output(shape, torch.int64, input.device, fmt)
    else:
        idx = torch.empty((0,), dtype=torch.int64, device=input.device)
    if out.numel() > 0:  # an empty batch launches nothing
        _launch.run(plan_forward(input, out, idx if with_indices else None, geom, fmt == torch.channels_last,
                                 store_out=True))
    return out, idx


def max_pool2d_backward(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    geom = _pairs(kernel_size, stride, padding, dilation)
    shape = _out_shape(input, geom, bool(ceil_mode))
    have_idx = indices.numel() > 0

    fmt = suggest_memory_format(input)
    channels_last = fmt == torch.channels_last
    N, C, H, W = input.shape
    gi = _common.new_output(tuple(input.shape), input.dtype, input.device, fmt)
    if gi.numel() == 0:
        return gi
    if not have_idx:
        # Scratch indices from the forward kernel (int32 where positions fit: half the bytes).
        pos_dtype = torch.int32 if H * W < INT32_LIMIT else torch.int64
        indices = torch.empty(shape, dtype=pos_dtype, device=input.device, memory_format=fmt)
        _launch.run(plan_forward(input, None, indices, geom, channels_last, store_out=False))
    _launch.run(plan_backward(grad_output, indices, gi, geom, channels_last))
    return gi


IMPLS = {"max_pool2d": max_pool2d, "max_pool2d_backward": max_pool2d_backward}
