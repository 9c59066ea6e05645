"""Triton conv2d forward and dgrad kernels (implicit GEMM), pointer loads.

The design (GEMM shapes, the stride phases of dgrad, layouts, precision, offsets) is described in
kernels/conv2d.py, whose launchers choose these kernels' constexprs; the weight gradient and the
split-K reduction are in kernels/_conv_wgrad.py, the TMA-descriptor variants in kernels/_conv_tma.py.
"""

import triton
import triton.language as tl

from ._round import to_out

# Sizes that only bound masks and feed the pixel decompositions (divisions, through which Triton's
# axis analysis finds no contiguity) are not specialised: their divisibility-16 hints and
# "== 1" constants change no load's vector width, only the number of variants compiled per
# network (a new batch size or image size recompiled every kernel). Channel counts and strides
# stay specialised: they decide the vector width along channels.
_SIZES_FWD = ("M", "H", "W", "P", "Q")
_SIZES_DGRAD = ("N", "H", "W", "P", "Q")


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


@triton.jit(do_not_specialize=_SIZES_FWD)
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
    tl.store(y_ptrs, to_out(acc, y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit(do_not_specialize=_SIZES_DGRAD)
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
    tl.store(dx_ptrs, to_out(acc, dx_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _pool_tile(x_ptr, x_row, x_col, ih0, iw0, H, W, a_ok, sxh, sxw,
               KH: tl.constexpr, KW: tl.constexpr, UPCAST: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_K: tl.constexpr):
    """The A tile of max_pool2d(x) (window corner (ih0, iw0) per row): the max over the KH x KW
    taps as they are loaded, as PyTorch: -inf padding, a tap replaces the max when it is larger
    or NaN (so a NaN anywhere in the window gives NaN). Lanes outside the GEMM (a_ok false) are 0,
    not -inf: they are multiplied by the weight's zero tail."""
    if UPCAST:  # the interpreter compares bf16 bit patterns as integers: compare in fp32
        m = tl.full((BLOCK_M, BLOCK_K), float("-inf"), tl.float32)
    else:
        m = tl.full((BLOCK_M, BLOCK_K), float("-inf"), x_ptr.dtype.element_ty)
    for i in tl.static_range(KH):
        ih = ih0 + i
        h_ok = (ih >= 0) & (ih < H)
        for j in tl.static_range(KW):
            iw = iw0 + j
            ok = a_ok & (h_ok & (iw >= 0) & (iw < W))[:, None]
            v = tl.load(x_ptr + (x_row + i * sxh + j * sxw)[:, None] + x_col[None, :], mask=ok, other=0.0)
            if UPCAST:
                v = v.to(tl.float32)
            v = tl.where(ok, v, float("-inf"))
            m = tl.where((v > m) | (v != v), v, m)
    return tl.where(a_ok, m, 0.0)


@triton.jit
def _pick(past, new, old):
    """``new`` where the program's column tile lies past a segment boundary (a scalar select)."""
    return tl.where(past, new, old)


@triton.jit(do_not_specialize=_SIZES_FWD)
def _conv1x1_into_kernel(
    x_ptr, w_ptr, b_ptr, y0_ptr, y1_ptr, y2_ptr, y3_ptr,
    M, C, H, W, P, Q,
    sxn, sxc, sxh, sxw,
    swk, swc, sb,
    K0, K1, K2, K3,
    s0n, s0c, s0h, s0w, s1n, s1c, s1h, s1w, s2n, s2c, s2h, s2w, s3n, s3c, s3h, s3w,
    step_h, step_w, pad_h, pad_w,
    NSEG: tl.constexpr, RELUS: tl.constexpr, HAS_BIAS: tl.constexpr, CHANNELS_DENSE: tl.constexpr,
    POOL: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, IDX: tl.constexpr,
    FP64: tl.constexpr, UPCAST: tl.constexpr, DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """fastcnn::conv1x1_into: one GEMM [M = N*P*Q, K0+..+K3] x C whose column tiles each lie in one
    segment s (weight rows [K0+..+K_{s-1}, +K_s)); a tile's epilogue adds the bias, applies
    segment s's activation (bit s of RELUS) and stores into y_s with its strides. Rows are
    (n, p, q) with input pixel (p*step_h - pad_h, q*step_w - pad_w): the conv stride, or with
    POOL the pool's stride and padding and the A tile the max over its KH x KW window."""
    pid = tl.program_id(0)
    # segment s owns the column tiles [t_s, t_s + cdiv(K_s, BLOCK_N))
    num_n = tl.cdiv(K0, BLOCK_N)
    if NSEG > 1:
        num_n += tl.cdiv(K1, BLOCK_N)
    if NSEG > 2:
        num_n += tl.cdiv(K2, BLOCK_N)
    if NSEG > 3:
        num_n += tl.cdiv(K3, BLOCK_N)
    pid_m = (pid // num_n).to(IDX)
    pid_n = pid % num_n
    # this program's segment: its tiles' start, weight rows, destination, strides, activation
    # (scalar selects; one store below, not one per segment: 4 store branches took up to 255
    # registers + spills on sm_90 with the pooled loader)
    t_beg = 0
    k_off = 0
    k_len = K0
    y_ptr = y0_ptr
    syn, syc, syh, syw = s0n, s0c, s0h, s0w
    relu = RELUS & 1
    t_end = tl.cdiv(K0, BLOCK_N)
    if NSEG > 1:
        past = pid_n >= t_end
        t_beg, k_off, k_len, y_ptr = _pick(past, t_end, t_beg), _pick(past, K0, k_off), _pick(past, K1, k_len), \
            _pick(past, y1_ptr, y_ptr)
        syn, syc, syh, syw = _pick(past, s1n, syn), _pick(past, s1c, syc), _pick(past, s1h, syh), _pick(past, s1w, syw)
        relu = _pick(past, (RELUS >> 1) & 1, relu)
        t_end += tl.cdiv(K1, BLOCK_N)
    if NSEG > 2:
        past = pid_n >= t_end
        t_beg, k_off, k_len, y_ptr = _pick(past, t_end, t_beg), _pick(past, K0 + K1, k_off), _pick(past, K2, k_len), \
            _pick(past, y2_ptr, y_ptr)
        syn, syc, syh, syw = _pick(past, s2n, syn), _pick(past, s2c, syc), _pick(past, s2h, syh), _pick(past, s2w, syw)
        relu = _pick(past, (RELUS >> 2) & 1, relu)
        t_end += tl.cdiv(K2, BLOCK_N)
    if NSEG > 3:
        past = pid_n >= t_end
        t_beg, k_off, k_len, y_ptr = _pick(past, t_end, t_beg), _pick(past, K0 + K1 + K2, k_off), \
            _pick(past, K3, k_len), _pick(past, y3_ptr, y_ptr)
        syn, syc, syh, syw = _pick(past, s3n, syn), _pick(past, s3c, syc), _pick(past, s3h, syh), _pick(past, s3w, syw)
        relu = _pick(past, (RELUS >> 3) & 1, relu)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    n_img = offs_m // (P * Q)
    pq = offs_m % (P * Q)
    p = pq // Q
    q = pq % Q
    ih0 = p * step_h - pad_h
    iw0 = q * step_w - pad_w
    n_w = n_img.to(IDX)
    x_row = n_w * sxn + ih0.to(IDX) * sxh + iw0.to(IDX) * sxw

    k_loc = (pid_n - t_beg) * BLOCK_N + tl.arange(0, BLOCK_N)  # the channel in the segment
    n_ok = k_loc < k_len
    k_glob = (k_off + k_loc).to(IDX)  # the weight row
    w_col = k_glob * swk

    if FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_K):
        c = c0 + tl.arange(0, BLOCK_K)
        c_ok = c < C
        c_w = c.to(IDX)
        a_ok = m_ok[:, None] & c_ok[None, :]
        if POOL:
            a = _pool_tile(x_ptr, x_row, c_w * sxc, ih0, iw0, H, W, a_ok, sxh, sxw, KH, KW, UPCAST, BLOCK_M,
                           BLOCK_K)
        else:
            a = tl.load(x_ptr + x_row[:, None] + (c_w * sxc)[None, :], mask=a_ok, other=0.0)
        b = tl.load(w_ptr + (c_w * swc)[:, None] + w_col[None, :], mask=c_ok[:, None] & n_ok[None, :], other=0.0)
        acc = _mma(a, b, acc, FP64, UPCAST, DOT_PREC)

    if HAS_BIAS:
        acc += tl.load(b_ptr + k_glob * sb, mask=n_ok, other=0.0).to(acc.dtype)[None, :]
    if RELUS == (1 << NSEG) - 1:  # every segment's activation is relu (or none, below): no select
        acc = tl.where(acc < 0, 0.0, acc)  # keeps NaN, as torch.relu
    elif RELUS != 0:
        acc = tl.where((acc < 0) & (relu != 0), 0.0, acc)
    if CHANNELS_DENSE:  # every destination's channel stride is 1 (channels_last): vector stores
        syc = 1
    y_row = n_w * syn + p.to(IDX) * syh + q.to(IDX) * syw
    y_ptrs = y_ptr + y_row[:, None] + (k_loc.to(IDX) * syc)[None, :]
    tl.store(y_ptrs, to_out(acc, y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
