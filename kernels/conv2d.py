"""Triton conv2d: implicit-GEMM forward, dgrad and wgrad with the epilogue and the ReLU mask fused.

Forward, act(conv(x, w) + bias + residual), as a GEMM per group:
    M = N*P*Q output pixels, N = K/groups output channels, K = R*S*C/groups taps x channels.
The A tile (im2col rows) is gathered straight from x with masks (padding, odd sizes); bias,
residual and ReLU are applied to the fp32 accumulator in registers before the one store.

Backward:
* dgrad (grad_input): a GEMM over input pixels x input channels, reducing over taps x output
  channels. For stride > 1 only taps with (h + pad - r*dil) divisible by the stride contribute
  to an input row h; the input pixels are split into stride_h*stride_w phases (h mod stride_h,
  w mod stride_w) whose valid taps are one arithmetic progression, so every tap the loop visits
  is real work (a masked loop would waste 3/4 of the MMAs at stride 2).
* wgrad (grad_weight): a GEMM [K/groups, R*S*C/groups] reducing over the N*P*Q pixels, split
  over the pixels (split-K) into an fp32 workspace when the output tiles alone cannot fill the
  GPU (ResNet 3x3 64->64 has 9 tiles of 64x64 for 132 SMs), then summed in a fixed order
  (deterministic, no atomics).
* The ReLU mask (grad where out > 0; a NaN output passes, as torch.threshold_backward) is
  applied as the incoming gradient is loaded, in both kernels: no masked copy of grad_output.
* grad_bias is the row sum of the gradient tiles the wgrad kernel loads anyway; grad_act (the
  masked gradient = the residual's gradient) is stored from the same tiles by the programs of
  the first weight column tile, only when it is asked for.

Layouts: every tensor is passed with its element strides, so NCHW, NHWC (channels_last), views
with a storage offset and other strided views all run without copies. The reduction's inner
index is the channel (taps outer), so NHWC loads are contiguous along the loaded channels.
Channel counts that are not a multiple of BLOCK_K and below 64 (image stems with C = 3, LeNet)
use a flattened (r, s, c) reduction index instead: a 7x7 stem reduces over 147 values in 10
chunks of 16 rather than 49 chunks of which 13/16 would be padding.

Precision: fp32 inputs use exact fp32 products (input_precision="ieee") unless TF32 is allowed
(see allow_tf32); fp16/bf16 multiply on tensor cores with fp32 accumulation; fp64 accumulates in
fp64 as a broadcast multiply and sum on CUDA cores: fp64 tl.dot lowering has changed across
recent Triton releases (fp64 MMA support was being added for sm80/sm90), this is exact on any.
Offsets and pixel indices are int32 while every tensor spans < 2^30 elements and int64 beyond
(IDX); the weight is packed as [K, R, S, C] so that NHWC loads are contiguous (pack_weight).
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from . import _common, _tuning

# Offsets are int32 unless a tensor (or the pixel count) spans 2^30 elements: the 2-D address
# tiles then take half the registers (ptxas, sm_90, runtime strides: the fp32 64x64x32 forward
# needs 255 registers + 392 B of spills with int64 offsets, 162 registers with int32; the fp16
# 128x64x32 one 2456 B vs 528 B of spills). The 2x margin below 2^31 covers masked tail lanes,
# whose offsets may point up to about one image or tap past the end.
_IDX32_SPAN = 2**30
_MAX_GRID_YZ = 65535  # CUDA's limit on grid dimensions 1 and 2 (groups, dgrad phases, splits)


# ------------------------------------------------------------------------------------------------
# kernels
# ------------------------------------------------------------------------------------------------

@triton.jit
def _mma(a, b, acc, FP64: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr):
    """acc += a @ b. fp64 has no MMA path in Triton 3.6 on sm90, so it is a broadcast multiply and
    a sum over the reduction axis (CUDA-core FMAs, exact fp64). UPCAST: bfloat16 operands are
    widened to fp32 first (exact: bf16 has 8 mantissa bits); the launcher sets it only for CPU
    tensors, because Triton's interpreter multiplies the raw bf16 bit patterns as integers."""
    if FP64:
        acc += tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    elif UPCAST:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc, input_precision=DOT_PREC)
    return acc


@triton.jit
def _conv_fwd_kernel(
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr,
    M, C_g, K_g, H, W, P, Q,
    sxn, sxc, sxh, sxw,
    swk, swc, swr, sws,
    sb,
    srn, src, srh, srw,
    syn, syc, syh, syw,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    R: tl.constexpr, S: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, RELU: tl.constexpr,
    FLAT: tl.constexpr, CHECK_BOUNDS: tl.constexpr, IDX: tl.constexpr,
    FP64: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    # Output-channel tiles vary fastest: neighbouring programs share one input tile (L2 reuse);
    # the weight is small and stays in L2 anyway.
    num_n = tl.cdiv(K_g, BLOCK_N)
    pid_m = pid // num_n
    pid_n = pid % num_n
    pid_m = pid_m.to(IDX)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    n_img = offs_m // (P * Q)
    pq = offs_m % (P * Q)
    p = pq // Q
    q = pq % Q
    ih0 = p * stride_h - pad_h
    iw0 = q * stride_w - pad_w
    n_w = n_img.to(IDX)
    # input offset of each row's window corner (tap (0, 0), channel 0 of the group): the loop
    # adds one per-column offset, so the 2-D address math is a single add per element
    x_row = n_w * sxn + ih0.to(IDX) * sxh + iw0.to(IDX) * sxw + (grp * C_g).to(IDX) * sxc

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < K_g
    k_glob = (grp * K_g + offs_n).to(IDX)
    w_col = k_glob * swk

    if FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)

    if FLAT:
        # reduction index k = (r*S + s)*C_g + c, decomposed per column
        RSC = R * S * C_g
        for k0 in range(0, RSC, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < RSC
            c = offs_k % C_g
            rs = offs_k // C_g
            r = rs // S
            s = rs % S
            dh_k = r * dil_h
            dw_k = s * dil_w
            a_mask = m_ok[:, None] & k_ok[None, :]
            if CHECK_BOUNDS:
                ih = ih0[:, None] + dh_k[None, :]
                iw = iw0[:, None] + dw_k[None, :]
                a_mask = a_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            c_w = c.to(IDX)
            x_col = dh_k.to(IDX) * sxh + dw_k.to(IDX) * sxw + c_w * sxc
            a = tl.load(x_ptr + x_row[:, None] + x_col[None, :], mask=a_mask, other=0.0)
            w_off = c_w * swc + r.to(IDX) * swr + s.to(IDX) * sws
            b = tl.load(w_ptr + w_off[:, None] + w_col[None, :], mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = _mma(a, b, acc, FP64, UPCAST, DOT_PREC)
    else:
        # one loop over (tap, channel chunk) pairs: one pipelined loop rather than a short
        # inner channel loop per tap (C = 64 with BLOCK_K = 32 is 2 iterations)
        n_cb = tl.cdiv(C_g, BLOCK_K)
        for it in range(0, R * S * n_cb):
            tap = it // n_cb
            c0 = (it - tap * n_cb) * BLOCK_K
            r = tap // S
            s = tap - r * S
            row_ok = m_ok
            if CHECK_BOUNDS:
                ih = ih0 + r * dil_h
                iw = iw0 + s * dil_w
                row_ok = row_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            c = c0 + tl.arange(0, BLOCK_K)
            c_ok = c < C_g
            c_w = c.to(IDX)
            tap_x = (r * dil_h).to(IDX) * sxh + (s * dil_w).to(IDX) * sxw
            a = tl.load(x_ptr + (x_row + tap_x)[:, None] + (c_w * sxc)[None, :],
                        mask=row_ok[:, None] & c_ok[None, :], other=0.0)
            tap_w = r.to(IDX) * swr + s.to(IDX) * sws
            b = tl.load(w_ptr + (c_w * swc)[:, None] + (w_col + tap_w)[None, :], mask=c_ok[:, None] & n_ok[None, :],
                        other=0.0)
            acc = _mma(a, b, acc, FP64, UPCAST, DOT_PREC)

    # fused epilogue on the accumulator: bias, residual, ReLU, one rounding to the output dtype
    if HAS_BIAS:
        bias = tl.load(b_ptr + k_glob * sb, mask=n_ok, other=0.0)
        acc += bias.to(acc.dtype)[None, :]
    out_mask = m_ok[:, None] & n_ok[None, :]
    p_w = p.to(IDX)
    q_w = q.to(IDX)
    if HAS_RES:
        r_ptrs = r_ptr + (n_w * srn + p_w * srh + q_w * srw)[:, None] + (k_glob * src)[None, :]
        acc += tl.load(r_ptrs, mask=out_mask, other=0.0).to(acc.dtype)
    if RELU:
        acc = tl.where(acc < 0, 0.0, acc)  # keeps NaN, as torch.relu
    y_ptrs = y_ptr + (n_w * syn + p_w * syh + q_w * syw)[:, None] + (k_glob * syc)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _conv_dgrad_kernel(
    g_ptr, o_ptr, w_ptr, dx_ptr,
    N, C_g, K_g, H, W, P, Q,
    sgn, sgc, sgh, sgw,
    son, soc, soh, sow,
    swk, swc, swr, sws,
    sxn, sxc, sxh, sxw,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    step_h, step_w, gcd_h, gcd_w, inv_h, inv_w,
    R: tl.constexpr, S: tl.constexpr, RELU: tl.constexpr, FLAT: tl.constexpr, IDX: tl.constexpr,
    FP64: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    phase = tl.program_id(1)
    grp = tl.program_id(2)
    # This program's input pixels: h = a + stride_h*i, w = b + stride_w*j.
    a = phase // stride_w
    b = phase % stride_w
    Hp = (H - a + stride_h - 1) // stride_h
    Wp = (W - b + stride_w - 1) // stride_w
    num_n = tl.cdiv(C_g, BLOCK_N)
    pid_m = pid // num_n
    pid_n = pid % num_n
    pid_m = pid_m.to(IDX)
    HWp = tl.maximum(Hp * Wp, 1)  # 0 when the phase is empty (H < stride): then no row is valid
    Wp1 = tl.maximum(Wp, 1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < Hp.to(IDX) * Wp * N  # (N == 1 is a constexpr on the GPU: no .to)
    n_img = offs_m // HWp
    ij = offs_m % HWp
    i = ij // Wp1
    j = ij % Wp1
    n_w = n_img.to(IDX)
    i_w = i.to(IDX)
    j_w = j.to(IDX)
    # gradient offset of output pixel (i, j) of each row; a tap adds (p_off, q_off) to it
    g_row = n_w * sgn + i_w * sgh + j_w * sgw
    o_row = n_w * son + i_w * soh + j_w * sow

    # Taps r with (a + pad_h - r*dil_h) divisible by stride_h: r = r0 + step_h*t, where
    # r0 solves r*dil_h = a + pad_h (mod stride_h); none unless gcd(stride_h, dil_h) divides
    # a + pad_h. step = stride/gcd; inv = (dil/gcd)^-1 mod step (computed on the host).
    # For such r, p = i + p_off(r) with p_off = (a + pad_h - r*dil_h) / stride_h (exact).
    r0 = ((a + pad_h) // gcd_h * inv_h) % step_h
    nr = (R - r0 + step_h - 1) // step_h * ((a + pad_h) % gcd_h == 0).to(tl.int32)
    s0 = ((b + pad_w) // gcd_w * inv_w) % step_w
    ns = (S - s0 + step_w - 1) // step_w * ((b + pad_w) % gcd_w == 0).to(tl.int32)
    # p_off is computed as floor((a + pad_h + stride_h*dil_h*R - r*dil_h) / stride_h) - dil_h*R:
    # the dividend is >= 0 for r < R (integer division of negatives truncates on the GPU)
    a_sh = a + pad_h + stride_h * dil_h * R
    b_sw = b + pad_w + stride_w * dil_w * S

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < C_g
    c_w = offs_n.to(IDX)  # weight column: the channel within the group

    if FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)

    if FLAT:
        # reduction index t = tap*K_g + k over this phase's valid taps, decomposed per column
        T = nr * ns * K_g
        for t0 in range(0, T, BLOCK_K):
            t = t0 + tl.arange(0, BLOCK_K)
            t_ok = t < T
            t = tl.where(t_ok, t, 0)  # tail lanes: tap 0, not taps far past R (offsets stay in range)
            kk = t % K_g
            tap = t // K_g
            tr = tap // ns  # T > 0 here, so ns > 0
            r = r0 + tr * step_h
            s = s0 + (tap - tr * ns) * step_w
            p_off = (a_sh - r * dil_h) // stride_h - dil_h * R
            q_off = (b_sw - s * dil_w) // stride_w - dil_w * S
            p = i[:, None] + p_off[None, :]
            q = j[:, None] + q_off[None, :]
            g_mask = m_ok[:, None] & t_ok[None, :] & (p >= 0) & (p < P) & (q >= 0) & (q < Q)
            k_glob = (grp * K_g + kk).to(IDX)
            p_off_w = p_off.to(IDX)
            q_off_w = q_off.to(IDX)
            g_col = p_off_w * sgh + q_off_w * sgw + k_glob * sgc
            gt = tl.load(g_ptr + g_row[:, None] + g_col[None, :], mask=g_mask, other=0.0)
            if RELU:
                o_col = p_off_w * soh + q_off_w * sow + k_glob * soc
                ov = tl.load(o_ptr + o_row[:, None] + o_col[None, :], mask=g_mask, other=0.0)
                gt = tl.where(ov <= 0, 0.0, gt)
            w_off = k_glob * swk + r.to(IDX) * swr + s.to(IDX) * sws
            wt = tl.load(w_ptr + w_off[:, None] + (c_w * swc)[None, :], mask=t_ok[:, None] & n_ok[None, :],
                         other=0.0)
            acc = _mma(gt, wt, acc, FP64, UPCAST, DOT_PREC)
    else:
        # one loop over (valid tap, output-channel chunk) pairs
        n_kb = tl.cdiv(K_g, BLOCK_K)
        for it in range(0, nr * ns * n_kb):
            tap = it // n_kb
            k0 = (it - tap * n_kb) * BLOCK_K
            tr = tap // ns
            r = r0 + tr * step_h
            s = s0 + (tap - tr * ns) * step_w
            p_off = (a_sh - r * dil_h) // stride_h - dil_h * R
            q_off = (b_sw - s * dil_w) // stride_w - dil_w * S
            p = i + p_off
            q = j + q_off
            row_ok = m_ok & (p >= 0) & (p < P) & (q >= 0) & (q < Q)
            kk = k0 + tl.arange(0, BLOCK_K)
            kk_ok = kk < K_g
            k_glob = (grp * K_g + kk).to(IDX)
            g_mask = row_ok[:, None] & kk_ok[None, :]
            p_off_w = p_off.to(IDX)
            q_off_w = q_off.to(IDX)
            gt = tl.load(g_ptr + (g_row + (p_off_w * sgh + q_off_w * sgw))[:, None] + (k_glob * sgc)[None, :],
                         mask=g_mask, other=0.0)
            if RELU:
                ov = tl.load(o_ptr + (o_row + (p_off_w * soh + q_off_w * sow))[:, None] + (k_glob * soc)[None, :],
                             mask=g_mask, other=0.0)
                gt = tl.where(ov <= 0, 0.0, gt)
            tap_w = r.to(IDX) * swr + s.to(IDX) * sws
            wt = tl.load(w_ptr + (k_glob * swk + tap_w)[:, None] + (c_w * swc)[None, :],
                         mask=kk_ok[:, None] & n_ok[None, :], other=0.0)
            acc = _mma(gt, wt, acc, FP64, UPCAST, DOT_PREC)

    h_w = (a + i * stride_h).to(IDX)
    w_w = (b + j * stride_w).to(IDX)
    c_glob = (grp * C_g + offs_n).to(IDX)
    dx_ptrs = dx_ptr + (n_w * sxn + h_w * sxh + w_w * sxw)[:, None] + (c_glob * sxc)[None, :]
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
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
    FP64: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
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

    if FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
        db_acc = tl.zeros((BLOCK_M,), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        db_acc = tl.zeros((BLOCK_M,), dtype=tl.float32)

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
            acc = _mma(gt, xt, acc, FP64, UPCAST, DOT_PREC)

    if HAS_DW:
        col_off = c_w * sdwc + r.to(IDX) * sdwr + s.to(IDX) * sdws
        dw_ptrs = dw_ptr + pid_s.to(IDX) * sdw_split + (k_glob * sdwk)[:, None] + col_off[None, :]
        tl.store(dw_ptrs, acc.to(dw_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    if HAS_DB:
        db_ptrs = db_ptr + pid_s.to(IDX) * sdb_split + k_glob * sdb
        tl.store(db_ptrs, db_acc.to(db_ptr.dtype.element_ty), mask=first_rows)


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
    tl.store(out_ptr + i0 * so0 + i1 * so1 + i2 * so2 + i3 * so3, acc.to(out_ptr.dtype.element_ty), mask=ok)


# ------------------------------------------------------------------------------------------------
# launch helpers
# ------------------------------------------------------------------------------------------------

# device types whose fp64 tiles are capped (tests add "cpu" to run the capped tiles in the interpreter)
FP64_TILE_CAP_DEVICES = {"cuda"}
_REDUCE_BLOCK = 1024  # split-K sum: a streaming kernel, 1024 elements per program saturate HBM


def _tf32_flag(section, legacy) -> bool:
    """One PyTorch TF32 switch, read through the fp32_precision API of torch >= 2.9 where it
    exists (reading the legacy allow_tf32 flag raises once the new API has been used)."""
    prec = getattr(section, "fp32_precision", None) if section is not None else None
    if prec is None:
        return bool(legacy.allow_tf32)
    return prec == "tf32"


def allow_tf32() -> bool:
    """TF32 products for float32 inputs only when both of PyTorch's switches allow them, as the
    CUDA backend does: the GEMM one (torch.backends.cuda.matmul.allow_tf32,
    set_float32_matmul_precision("high"); off by default, so fp32 stays exact by default) and the
    convolution one (torch.backends.cudnn.allow_tf32, on by default: alone it would make every
    fp32 conv TF32, ~1e-3 relative error, unless the user opts out)."""
    return (_tf32_flag(torch.backends.cuda.matmul, torch.backends.cuda.matmul)
            and _tf32_flag(getattr(torch.backends.cudnn, "conv", None), torch.backends.cudnn))


def dot_mode(dtype: torch.dtype, device: torch.device) -> dict:
    """The precision constexprs of the GEMM kernels for an input dtype."""
    if dtype == torch.float32:
        prec = "tf32" if allow_tf32() else "ieee"
    else:
        prec = "tf32"  # Triton's default; ignored for 16-bit operands, unused for fp64
    return dict(FP64=dtype == torch.float64, UPCAST=dtype == torch.bfloat16 and device.type == "cpu",
                DOT_PREC=prec)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.lru_cache(None)
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1  # the interpreter: any split is correct, so size it as for a one-SM device
    return _num_sms(device.index if device.index is not None else torch.cuda.current_device())


def shape_key(x, w, stride, padding, dilation, groups) -> str:
    """Key of the tuned-config tables: sizes, geometry, dtype and layout."""
    fmt = "cl" if _common.conv_format(x, w) == torch.channels_last else "nchw"
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    return (f"{str(x.dtype).replace('torch.', '')}-{fmt}-n{N}c{C}h{H}w{W}-k{K}r{R}s{S}"
            f"-st{stride[0]}x{stride[1]}-p{padding[0]}x{padding[1]}-d{dilation[0]}x{dilation[1]}-g{groups}")


def _config(family: str, key: str, channels: int, dtype: torch.dtype, device: torch.device,
            config: int | None = None, channel_block: str = "BLOCK_N"):
    """(kernel meta-parameters, launch options, split_k) for a kernel family and shape.
    ``channels`` is the GEMM dimension tiled by ``channel_block`` that holds channels."""
    cfgs = _tuning.configs(family)
    if config is not None:
        cfg = dict(cfgs[config % len(cfgs)])
    else:
        # Untuned shapes: the first config, or the first with narrow channel tiles when there
        # are few channels per group (LeNet's 6 and 16, depthwise 1): a 64-wide tile would
        # compute 2-64x more products than needed.
        default = 0
        if channels <= 32:
            default = next((i for i, c in enumerate(cfgs) if c[channel_block] <= 32), 0)
        cfg = _tuning.pick(family, key, default)
    split_k = cfg.pop("SPLIT_K", 1)
    meta, launch = _tuning.split(cfg)
    if dtype == torch.float64 and device.type in FP64_TILE_CAP_DEVICES:
        # The fp64 path holds a BLOCK_M x BLOCK_K x BLOCK_N product in registers (no MMA): cap
        # it at 8K values (64 fp64 per thread at 4 warps) so it does not spill. Not in the
        # interpreter, which has no registers and runs 4-8x fewer programs x iterations uncapped.
        meta["BLOCK_M"] = min(meta["BLOCK_M"], 32)
        meta["BLOCK_N"] = min(meta["BLOCK_N"], 32)
        meta["BLOCK_K"] = min(meta["BLOCK_K"], 8)
    return meta, launch, split_k


def _use_flat(R: int, S: int, channels: int, block: int) -> bool:
    """Flattened (tap, channel) index for a reduction (forward, dgrad) or weight-column (wgrad)
    dimension whose channel count does not fill `block`-wide chunks: a stem with C = 3 reduces
    147 values in 10 chunks of 16 instead of 49 chunks that are 13/16 padding, a depthwise dgrad
    (K/groups = 1) 9 values in one chunk instead of 9. Per-tap chunks otherwise: their address
    math is per row and per column, not per element."""
    return R * S > 1 and channels % block != 0 and channels < 64


def _check_grid(groups: int, what: str):
    if groups > _MAX_GRID_YZ:
        raise ValueError(f"{what}: the triton backend supports at most {_MAX_GRID_YZ} groups, got {groups}")


def device_guard(t: torch.Tensor):
    """Triton launches on the current CUDA device, not the tensors': make it the tensors'."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _dummy(t):
    return t  # a valid pointer for arguments that a constexpr flag leaves unused


# ------------------------------------------------------------------------------------------------
# launchers
# ------------------------------------------------------------------------------------------------

def conv_forward(x, w, bias, residual, stride, padding, dilation, groups, activation, *, family="conv2d",
                 flat=None, config=None):
    """act(conv2d(x, w) + bias + residual) on validated arguments. ``family`` names the config
    tables (``<family>_fwd``); ``flat`` forces the reduction indexing, ``config`` a config index
    (tests)."""
    N, C, H, W = x.shape
    K, C_g, R, S = w.shape
    G = groups
    K_g = K // G
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    P, Q = _common.conv_out_size(H, R, sh, ph, dh), _common.conv_out_size(W, S, sw, pw, dw)
    y = _common.new_output((N, K, P, Q), x.dtype, x.device, _common.conv_format(x, w))
    M = N * P * Q
    if M == 0:
        return y
    _check_grid(G, family)
    meta, launch, _ = _config(f"{family}_fwd", shape_key(x, w, stride, padding, dilation, groups), K_g, x.dtype,
                              x.device, config)
    flat = _use_flat(R, S, C_g, meta["BLOCK_K"]) if flat is None else flat
    b = bias if bias is not None else _dummy(y)
    r = residual if residual is not None else _dummy(y)
    wp = pack_weight(w)
    grid = (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(K_g, meta["BLOCK_N"]), G)
    _conv_fwd_kernel[grid](
        x, wp, b, r, y,
        M, C_g, K_g, H, W, P, Q,
        *x.stride(), *wp.stride(),
        b.stride(0) if bias is not None else 0,
        *(r.stride() if residual is not None else (0, 0, 0, 0)),
        *y.stride(),
        sh, sw, ph, pw, dh, dw,
        R=R, S=S, HAS_BIAS=bias is not None, HAS_RES=residual is not None, RELU=activation == "relu",
        FLAT=bool(flat), CHECK_BOUNDS=ph > 0 or pw > 0, IDX=_index_type(x, wp, b, r, y, rows=M),
        **dot_mode(x.dtype, x.device), **meta, **launch,
    )
    return y


def _index_type(*tensors, rows: int = 0):
    span = max(sum(size * stride for size, stride in zip(t.shape, t.stride())) for t in tensors)
    return tl.int64 if max(span, rows) >= _IDX32_SPAN else tl.int32


def pack_weight(w: torch.Tensor) -> torch.Tensor:
    """The weight with [K, R, S, C] memory (channels_last; no copy when it already is, as every
    1x1 weight is). Then the B tiles of forward and dgrad are contiguous along channels, so their
    loads vectorise and are software-pipelined: for NHWC fp16 128x64x32 tiles ptxas reports 160
    registers and 2 cp.async streams, against 255 registers + 528 B of spills and no pipelining
    with runtime strides (the [K, C, R, S] weight's channel stride is R*S)."""
    return w.contiguous(memory_format=torch.channels_last)


def _mod_inverse(a: int, m: int) -> int:
    return pow(a, -1, m) if m > 1 else 0


def _launch_dgrad(grad, out, w, gi, stride, padding, dilation, groups, relu, family, key, flat, config):
    N, C, H, W = gi.shape
    K, C_g, R, S = w.shape
    K_g = K // groups
    P, Q = grad.shape[2], grad.shape[3]
    sh, sw = stride
    dh, dw = dilation
    meta, launch, _ = _config(f"{family}_dgrad", key, C_g, gi.dtype, gi.device, config)
    flat = _use_flat(R, S, K_g, meta["BLOCK_K"]) if flat is None else flat
    gcd_h, gcd_w = math.gcd(sh, dh), math.gcd(sw, dw)
    step_h, step_w = sh // gcd_h, sw // gcd_w
    Hp, Wp = triton.cdiv(H, sh), triton.cdiv(W, sw)  # the largest phase
    Mp = N * Hp * Wp
    if sh * sw > _MAX_GRID_YZ:
        raise ValueError(f"{family}_backward: the triton backend supports strides with at most {_MAX_GRID_YZ} "
                         f"phases, got stride {tuple(stride)}")
    o = out if relu else grad
    wp = pack_weight(w)
    grid = (triton.cdiv(Mp, meta["BLOCK_M"]) * triton.cdiv(C_g, meta["BLOCK_N"]), sh * sw, groups)
    _conv_dgrad_kernel[grid](
        grad, o, wp, gi,
        N, C_g, K_g, H, W, P, Q,
        *grad.stride(), *o.stride(), *wp.stride(), *gi.stride(),
        sh, sw, padding[0], padding[1], dh, dw,
        step_h, step_w, gcd_h, gcd_w, _mod_inverse((dh // gcd_h) % step_h, step_h),
        _mod_inverse((dw // gcd_w) % step_w, step_w),
        R=R, S=S, RELU=relu, FLAT=bool(flat), IDX=_index_type(grad, o, wp, gi, rows=Mp),
        **dot_mode(gi.dtype, gi.device), **meta, **launch,
    )


def _launch_wgrad(grad, out, x, w, gw, gb, ga, stride, padding, dilation, groups, relu, family, key, flat,
                  config):
    N, C, H, W = x.shape
    K, C_g, R, S = w.shape
    K_g = K // groups
    P, Q = grad.shape[2], grad.shape[3]
    NPQ = N * P * Q
    has_dw, has_db, write_ga = gw is not None, gb is not None, ga is not None
    meta, launch, split_k = _config(f"{family}_wgrad", key, K_g, x.dtype, x.device, config, "BLOCK_M")
    BM, BN, BK = meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"]
    flat = _use_flat(R, S, C_g, BN) if flat is None else flat
    if has_dw:
        num_n = triton.cdiv(R * S * C_g, BN) if flat else R * S * triton.cdiv(C_g, BN)
    else:
        num_n = 1
    tiles = triton.cdiv(K_g, BM) * num_n * groups
    chunks = triton.cdiv(NPQ, BK)
    if split_k == 0:
        # auto: enough splits for two waves of programs, each split at least 8 chunks long
        split_k = min(triton.cdiv(2 * _sm_count(x.device), tiles), triton.cdiv(chunks, 8), 64)
    split_k = max(1, min(split_k, chunks, _MAX_GRID_YZ))
    pix_per_split = triton.cdiv(chunks, split_k) * BK
    split_k = max(1, triton.cdiv(NPQ, pix_per_split)) if NPQ else 1  # no empty splits

    acc_dtype = _acc_dtype(x.dtype)
    if split_k > 1:
        # [split, K, R, S, C/groups]: the kernel's stores run along channels (contiguous)
        ws_w = torch.empty((split_k, K, R, S, C_g), dtype=acc_dtype, device=x.device) if has_dw else None
        ws_b = torch.empty((split_k, K), dtype=acc_dtype, device=x.device) if has_db else None
    else:
        ws_w, ws_b = gw, gb
    dw_t = ws_w if has_dw else _dummy(grad)
    db_t = ws_b if has_db else _dummy(grad)
    ga_t = ga if write_ga else _dummy(grad)
    o = out if relu else grad
    if not has_dw:
        dw_strides = (0,) * 5
    elif split_k > 1:  # (split, k, c, r, s) strides of the [split, K, R, S, C/groups] workspace
        dw_strides = (ws_w.stride(0), ws_w.stride(1), ws_w.stride(4), ws_w.stride(2), ws_w.stride(3))
    else:
        dw_strides = (0, *gw.stride())
    db_strides = (ws_b.stride(0) if split_k > 1 else 0, ws_b.stride(-1)) if has_db else (0, 0)
    grid = (triton.cdiv(K_g, BM) * num_n, split_k, groups)
    _conv_wgrad_kernel[grid](
        grad, o, x, dw_t, db_t, ga_t,
        NPQ, C_g, K_g, H, W, P, Q, pix_per_split,
        *grad.stride(), *o.stride(), *x.stride(),
        *dw_strides, *db_strides,
        *(ga.stride() if write_ga else (0, 0, 0, 0)),
        *stride, *padding, *dilation,
        R=R, S=S, RELU=relu, HAS_DW=has_dw, HAS_DB=has_db, WRITE_GA=write_ga,
        FLAT=bool(flat), CHECK_BOUNDS=padding[0] > 0 or padding[1] > 0,
        IDX=_index_type(grad, o, x, dw_t, db_t, ga_t, rows=NPQ + split_k * BK),
        **dot_mode(x.dtype, x.device), **meta, **launch,
    )
    if split_k > 1:
        fp64 = acc_dtype == torch.float64
        if has_dw:
            numel = ws_w[0].numel()
            gs = gw.stride()
            _splitk_reduce_kernel[(triton.cdiv(numel, _REDUCE_BLOCK),)](
                ws_w, gw, numel, split_k, R, S, C_g, gs[0], gs[2], gs[3], gs[1], BLOCK=_REDUCE_BLOCK, FP64=fp64)
        if has_db:
            _splitk_reduce_kernel[(triton.cdiv(K, _REDUCE_BLOCK),)](
                ws_b, gb, K, split_k, 1, 1, 1, gb.stride(0), 0, 0, 0, BLOCK=_REDUCE_BLOCK, FP64=fp64)


def conv_backward(grad, x, w, out, stride, padding, dilation, groups, activation, output_mask, *,
                  family="conv2d", flat=None, config=None):
    """(grad_input, grad_weight, grad_bias, grad_act) on validated arguments; outputs not in
    output_mask are empty tensors."""
    relu = activation == "relu"
    fmt = _common.conv_format(x, w)
    dtype, device = x.dtype, x.device
    K = w.shape[0]

    def empty():
        return torch.empty(0, dtype=dtype, device=device)

    gi = _common.new_output(x.shape, dtype, device, fmt) if output_mask[0] else None
    gw = _common.new_output(w.shape, dtype, device, suggest_memory_format(w)) if output_mask[1] else None
    gb = _common.new_output((K,), dtype, device) if output_mask[2] else None
    ga = _common.new_output(grad.shape, dtype, device, fmt) if output_mask[3] else None
    if any(output_mask):
        _check_grid(groups, f"{family}_backward")
        key = shape_key(x, w, stride, padding, dilation, groups)
        if gi is not None and gi.numel():
            _launch_dgrad(grad, out, w, gi, stride, padding, dilation, groups, relu, family, key, flat, config)
        if gw is not None or gb is not None or (ga is not None and ga.numel()):
            _launch_wgrad(grad, out, x, w, gw, gb, ga if ga is not None and ga.numel() else None, stride,
                          padding, dilation, groups, relu, family, key, flat, config)
    return (gi if gi is not None else empty(), gw if gw is not None else empty(),
            gb if gb is not None else empty(), ga if ga is not None else empty())


# ------------------------------------------------------------------------------------------------
# op entry points (fastcnn::_triton_conv2d, fastcnn::_triton_conv2d_backward)
# ------------------------------------------------------------------------------------------------

# Arguments arrive validated (the router runs csrc/checks.h before any backend).
# Defaults as the schema's: the dispatcher drops trailing arguments equal to their default.
def conv2d(input, weight, bias=None, residual=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
           activation="none"):
    with device_guard(input):
        return conv_forward(input, weight, bias, residual, tuple(stride), tuple(padding), tuple(dilation), groups,
                            activation)


def conv2d_backward(grad_output, input, weight, output, stride, padding, dilation, groups, activation,
                    output_mask):
    with device_guard(input):
        return conv_backward(grad_output, input, weight, output, tuple(stride), tuple(padding), tuple(dilation),
                             groups, activation, list(output_mask))


IMPLS = {"conv2d": conv2d, "conv2d_backward": conv2d_backward}
