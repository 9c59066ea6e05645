"""Triton conv2d weight-gradient kernel (with grad_bias and grad_act) and the split-K reduction.

See kernels/conv2d.py for the design; the launchers there choose the constexprs. BLOCK_M tiles the
output channels, BLOCK_N the weight columns (taps x channels), BLOCK_K the pixels. SWAP computes
the transposed product (columns x channels): the tensor cores' M is then the column tile, so a
layer with few output channels per group (LeNet's 6 and 16, GoogLeNet's 16-32 channel reduce
branches) takes a 16- or 32-wide channel tile and still reaches wgmma (M = 64 per warpgroup).
"""

import triton
import triton.language as tl

from ._conv_igemm import _mma
from ._round import to_out


@triton.jit(do_not_specialize=("NPQ", "H", "W", "P", "Q", "pix_per_split"))  # see _conv_igemm._SIZES_FWD
def _conv_wgrad_kernel(
    g_ptr, o_ptr, x_ptr, dw_ptr, db_ptr, ga_ptr,
    NPQ, C_g, K_g, H, W, P, Q, pix_per_split,
    sgn, sgc, sgh, sgw,
    son, soc, soh, sow,
    sxn, sxc, sxh, sxw,
    sdw_split, sdwk, sdwc, sdwr, sdws,
    sdb_split, sdb,
    san, sac, sah, saw,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    R: tl.constexpr, S: tl.constexpr, RELU: tl.constexpr,
    HAS_DW: tl.constexpr, HAS_DB: tl.constexpr, WRITE_GA: tl.constexpr,
    FLAT: tl.constexpr, CHECK_BOUNDS: tl.constexpr, IDX: tl.constexpr,
    FP64: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr, SWAP: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    grp = tl.program_id(2)
    if HAS_DW:
        if FLAT:
            num_n = tl.cdiv(R * S * C_g, BLOCK_N)
        else:
            num_n = R * S * tl.cdiv(C_g, BLOCK_N)
    else:
        num_n = 1  # only grad_bias / grad_act: one program per output-channel tile and split
    pid_m = pid // num_n
    pid_n = pid % num_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output channels within the group
    m_ok = offs_m < K_g
    k_glob = (grp * K_g + offs_m).to(IDX)
    g_chan = k_glob * sgc
    o_chan = k_glob * soc
    # The programs of the first column tile also produce grad_bias and grad_act. (Written as a
    # row bound, not `mask & (pid_n == 0)`: Triton's interpreter mis-types a scalar-bool mask.)
    first_rows = offs_m < K_g * (pid_n == 0).to(tl.int32)

    # weight columns of this tile: (r, s, c) per column (FLAT) or one tap and a channel chunk;
    # x_col is the input offset of each column relative to a pixel's window corner
    if FLAT:
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < R * S * C_g
        c = offs_n % C_g
        rs = offs_n // C_g
        r = rs // S
        s = rs % S
    else:
        n_cb = tl.cdiv(C_g, BLOCK_N)
        tap = pid_n // n_cb
        r = tap // S
        s = tap % S
        c = (pid_n % n_cb) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = c < C_g
    dh_n = r * dil_h
    dw_n = s * dil_w
    c_w = c.to(IDX)
    x_col = dh_n.to(IDX) * sxh + dw_n.to(IDX) * sxw + (grp * C_g + c).to(IDX) * sxc

    acc_ty = tl.float64 if FP64 else tl.float32
    if SWAP:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=acc_ty)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_ty)
    db_acc = tl.zeros((BLOCK_M,), dtype=acc_ty)

    pix_start = pid_s.to(IDX) * pix_per_split
    pix_end = tl.minimum(pix_start + pix_per_split, NPQ)
    for pix0 in range(pix_start, pix_end, BLOCK_K):
        pix = pix0 + tl.arange(0, BLOCK_K)
        pix_ok = pix < pix_end
        n_img = pix // (P * Q)
        pq = pix % (P * Q)
        p = pq // Q
        q = pq % Q
        n_w = n_img.to(IDX)
        p_w = p.to(IDX)
        q_w = q.to(IDX)
        g_mask = m_ok[:, None] & pix_ok[None, :]
        gt = tl.load(g_ptr + g_chan[:, None] + (n_w * sgn + p_w * sgh + q_w * sgw)[None, :], mask=g_mask, other=0.0)
        if RELU:
            ov = tl.load(o_ptr + o_chan[:, None] + (n_w * son + p_w * soh + q_w * sow)[None, :], mask=g_mask,
                         other=0.0)
            gt = tl.where(ov <= 0, 0.0, gt)
        if WRITE_GA:
            tl.store(ga_ptr + (k_glob * sac)[:, None] + (n_w * san + p_w * sah + q_w * saw)[None, :], gt,
                     mask=first_rows[:, None] & pix_ok[None, :])
        if HAS_DB:
            db_acc += tl.sum(gt.to(db_acc.dtype), axis=1)
        if HAS_DW:
            ih0 = p * stride_h - pad_h
            iw0 = q * stride_w - pad_w
            x_pix = n_w * sxn + ih0.to(IDX) * sxh + iw0.to(IDX) * sxw
            if FLAT:
                x_mask = pix_ok[:, None] & n_ok[None, :]
                if CHECK_BOUNDS:
                    ih = ih0[:, None] + dh_n[None, :]
                    iw = iw0[:, None] + dw_n[None, :]
                    x_mask = x_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            else:
                row_ok = pix_ok
                if CHECK_BOUNDS:
                    ih = ih0 + dh_n
                    iw = iw0 + dw_n
                    row_ok = row_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                x_mask = row_ok[:, None] & n_ok[None, :]
            xt = tl.load(x_ptr + x_pix[:, None] + x_col[None, :], mask=x_mask, other=0.0)
            if SWAP:
                acc = _mma(tl.trans(xt), tl.trans(gt), acc, FP64, UPCAST, DOT_PREC)
            else:
                acc = _mma(gt, xt, acc, FP64, UPCAST, DOT_PREC)

    if HAS_DW:
        col_off = c_w * sdwc + r.to(IDX) * sdwr + s.to(IDX) * sdws
        dw_split = dw_ptr + pid_s.to(IDX) * sdw_split
        if SWAP:
            dw_ptrs = dw_split + col_off[:, None] + (k_glob * sdwk)[None, :]
            tl.store(dw_ptrs, to_out(acc, dw_ptr.dtype.element_ty), mask=n_ok[:, None] & m_ok[None, :])
        else:
            dw_ptrs = dw_split + (k_glob * sdwk)[:, None] + col_off[None, :]
            tl.store(dw_ptrs, to_out(acc, dw_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    if HAS_DB:
        db_ptrs = db_ptr + pid_s.to(IDX) * sdb_split + k_glob * sdb
        tl.store(db_ptrs, to_out(db_acc, db_ptr.dtype.element_ty), mask=first_rows)


@triton.jit
def _splitk_reduce_kernel(ws_ptr, out_ptr, numel, SPLIT, D1, D2, D3, so0, so1, so2, so3,
                          BLOCK: tl.constexpr, FP64: tl.constexpr):
    """out[i0, i1, i2, i3] = sum over splits of ws[split, i] (ws dense [SPLIT, D0, D1, D2, D3]),
    in split order (deterministic)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    if FP64:
        acc = tl.zeros((BLOCK,), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
    ptrs = ws_ptr + offs
    for _ in range(0, SPLIT):
        acc += tl.load(ptrs, mask=ok, other=0.0).to(acc.dtype)
        ptrs += numel  # pointer arithmetic is 64-bit
    i3 = offs % D3
    t = offs // D3
    i2 = t % D2
    t = t // D2
    i1 = t % D1
    i0 = t // D1
    tl.store(out_ptr + i0 * so0 + i1 * so1 + i2 * so2 + i3 * so3, to_out(acc, out_ptr.dtype.element_ty), mask=ok)
