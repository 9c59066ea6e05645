"""Triton conv2d forward with TMA tensor-descriptor loads (Hopper), and a persistent tile loop.

The implicit GEMM of kernels/_conv_igemm.py, for channels_last inputs whose geometry a descriptor
can express (kernels/conv2d.py _tma_geometry decides; everything else keeps the pointer path):
* a k x k conv at stride 1: the input as a 4-D descriptor over [N, H, W, C]; a program's output
  rows are a TILE_H x TILE_W spatial tile of one image, and each filter tap loads the box
  [1, TILE_H, TILE_W, BLOCK_K] at (n, p0 - pad_h + r*dil_h, q0 - pad_w + s*dil_w, c0): the
  copy engine fills what lies outside the image with zeros, which is the padding, so the loop has
  no masks and no address math per element;
* a 1x1 conv at stride 1 (no padding): a plain GEMM, the input as a 2-D descriptor [N*H*W, C]
  with [BLOCK_M, BLOCK_K] boxes (GEMM2D).
The weight ([K, R, S, C] packed) is a 3-D descriptor [K, R*S, C]: the box [BLOCK_N, 1, BLOCK_K] of
one tap, zero-filled past C (so a channel tail adds 0 * 0). Bias, residual, ReLU and the store are
the pointer epilogue of the forward kernel. With PERSISTENT the grid is at most one program per SM
and each program loops over tiles (grids of a few waves: the next tile's loads overlap this
tile's epilogue); otherwise the loop runs once.
"""

import triton
import triton.language as tl

from ._conv_igemm import _mma
from ._round import to_out


@triton.jit
def _conv_fwd_tma_kernel(
    x_desc, w_desc, b_ptr, r_ptr, y_ptr,
    N, K, C, P, Q,
    sb,
    srn, src, srh, srw,
    syn, syc, syh, syw,
    pad_h, pad_w, dil_h, dil_w,
    R: tl.constexpr, S: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, RELU: tl.constexpr,
    GEMM2D: tl.constexpr, PERSISTENT: tl.constexpr,
    FP64: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    num_n = tl.cdiv(K, BLOCK_N)
    if GEMM2D:
        num_m = tl.cdiv(N * P * Q, BLOCK_M)
    else:
        tiles_q = tl.cdiv(Q, TILE_W)
        tiles_p = tl.cdiv(P, TILE_H)
        num_m = N * tiles_p * tiles_q
    num_tiles = num_m * num_n
    if PERSISTENT:
        step = tl.num_programs(0)
    else:
        step = num_tiles  # one iteration
    n_cb = tl.cdiv(C, BLOCK_K)
    for tile in range(tl.program_id(0), num_tiles, step):
        # output-channel tiles vary fastest: neighbouring programs share one input tile (L2)
        pid_m = tile // num_n
        pid_n = tile % num_n
        rows = tl.arange(0, BLOCK_M)
        if GEMM2D:
            m = pid_m * BLOCK_M + rows
            n_img = m // (P * Q)
            pq = m % (P * Q)
            p = pq // Q
            q = pq % Q
            m_ok = m < N * P * Q
        else:
            tq = pid_m % tiles_q
            t = pid_m // tiles_q
            p0 = (t % tiles_p) * TILE_H
            n0 = t // tiles_p
            q0 = tq * TILE_W
            p = p0 + rows // TILE_W
            q = q0 + rows % TILE_W
            n_img = n0 + rows * 0
            m_ok = (p < P) & (q < Q)
        k0 = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for it in range(0, R * S * n_cb):
            tap = it // n_cb
            c0 = (it - tap * n_cb) * BLOCK_K
            if GEMM2D:
                a = x_desc.load([pid_m * BLOCK_M, c0])
            else:
                r = tap // S
                s = tap - r * S
                a = x_desc.load([n0, p0 - pad_h + r * dil_h, q0 - pad_w + s * dil_w, c0])
                a = a.reshape(BLOCK_M, BLOCK_K)
            b = w_desc.load([k0, tap, c0]).reshape(BLOCK_N, BLOCK_K)
            acc = _mma(a, b.T, acc, FP64, UPCAST, DOT_PREC)

        offs_n = k0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < K
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n * sb, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        out_mask = m_ok[:, None] & n_ok[None, :]
        if HAS_RES:
            r_off = (n_img * srn + p * srh + q * srw)[:, None] + (offs_n * src)[None, :]
            acc += tl.load(r_ptr + r_off, mask=out_mask, other=0.0).to(tl.float32)
        if RELU:
            acc = tl.where(acc < 0, 0.0, acc)  # keeps NaN, as torch.relu
        y_off = (n_img * syn + p * syh + q * syw)[:, None] + (offs_n * syc)[None, :]
        tl.store(y_ptr + y_off, to_out(acc, y_ptr.dtype.element_ty), mask=out_mask)
