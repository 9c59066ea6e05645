"""Numerics: NaN/inf propagate as in PyTorch; float16/bfloat16 results that overflow saturate to inf
as PyTorch's do (forward and backward); determinism (same input, same bits) of the forward and of
the backward, with PyTorch's switch torch.use_deterministic_algorithms(True) as the flag that forces
a deterministic backward (on the CPU every backward is deterministic for a fixed thread count)."""

from __future__ import annotations

import contextlib
import gc

import pytest
import torch
import torch.nn.functional as F

import fastcnn.functional as FF
from conftest import HAS_CUDA, assert_close, leaf, rel_err, to64
from fuzz_strategies import empty_windows, pool_grad_reference

# numpy (Triton's interpreter) warns on inf - inf, overflow and NaN compares: the very cases tested
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

ops = torch.ops.fastcnn
NAN, INF = float("nan"), float("inf")


def _same_nonfinite(out, ref, what):
    """NaN, +inf and -inf at exactly the reference's positions."""
    o = out.detach().to("cpu", torch.float64)
    for name, fn in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        assert torch.equal(fn(o), fn(ref)), f"{what}: {name} positions differ from PyTorch's"


# ------------------------------------------------------------------------------------------------
# NaN and inf propagate
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("op", ["conv2d", "conv1x1"])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv_nan_inf_propagate(op, activation, layout, dtype, backend_device):
    """NaN, +inf and -inf planted in the input (and an inf in the residual) reach the output and
    every gradient at PyTorch's positions; the finite part matches the float64 reference."""
    _, device = backend_device
    g = torch.Generator().manual_seed(11)
    k = 3 if op == "conv2d" else 1
    pad = k // 2
    x = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64)
    x[0, 0, 1, 1] = NAN
    x[0, 1, 3, 4] = INF
    x[1, 2, 5, 0] = -INF
    x[1, 3, 2, 2] = INF
    x[1, 3, 2, 3] = -INF  # inf - inf in the windows that hold both: NaN
    w = torch.randn(5, 4, k, k, generator=g, dtype=torch.float64) / (4 * k * k) ** 0.5
    b = torch.randn(5, generator=g, dtype=torch.float64) * 0.1
    r = torch.randn(2, 5, 7, 6, generator=g, dtype=torch.float64)
    r[0, 4, 6, 5] = -INF
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    xd = leaf(x.to(dtype).to(device).contiguous(memory_format=fmt))
    wd, bd, rd = (leaf(t.to(dtype).to(device)) for t in (w, b, r))
    if op == "conv2d":
        out = FF.conv2d(xd, wd, bd, padding=pad, residual=rd, activation=activation)
    else:
        out = FF.conv1x1(xd, wd, bd, residual=rd, activation=activation)
    x64, w64, b64, r64 = (to64(t) for t in (xd, wd, bd, rd))
    ref = F.conv2d(x64, w64, b64, padding=pad) + r64
    ref = torch.relu(ref) if activation == "relu" else ref
    assert torch.isnan(ref).any() and torch.isinf(ref).any()
    _same_nonfinite(out, ref, "output")
    assert_close(out, ref, dtype)
    gy = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(out, (xd, wd, bd, rd), gy.to(dtype).to(device))
    refs = torch.autograd.grad(ref, (x64, w64, b64, r64), gy)
    for what, got, want in zip(("grad input", "grad weight", "grad bias", "grad residual"), grads, refs):
        _same_nonfinite(got, want, what)
        assert_close(got, want, dtype, what)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool2d_nan_inf(layout, dtype, backend_device):
    """NaN beats any number and its index is the window's last NaN; an all -inf window gives -inf at
    its first position; ties (+inf included) go to the first maximum; gradients follow the indices."""
    _, device = backend_device
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    x[0, 0, 0, 0] = NAN  # NaN over numbers
    x[0, 0, 2, 2] = NAN
    x[0, 0, 3, 3] = NAN  # two NaNs in one window: the last one's index
    x[0, 1, 0:2, 0:2] = -INF  # a window of -inf only
    x[0, 2, 0, 1] = INF
    x[0, 1, 4:6, 0:2] = INF  # ties at +inf: the first
    x = leaf(x.to(dtype).to(device).contiguous(memory_format=torch.channels_last if layout == "channels_last"
                                                else torch.contiguous_format))
    out, idx = FF.max_pool2d(x, 2, return_indices=True)
    ref, ref_idx = F.max_pool2d(to64(x), 2, return_indices=True)
    _same_nonfinite(out, ref, "output")
    assert torch.equal(out.double().cpu().nan_to_num(0), ref.nan_to_num(0))
    assert torch.equal(idx.cpu(), ref_idx)
    gy = torch.arange(1.0, out.numel() + 1).view(out.shape).to(dtype).to(device)
    (g,) = torch.autograd.grad(out, x, gy)
    x64 = to64(x).requires_grad_()
    (g_ref,) = torch.autograd.grad(F.max_pool2d(x64, 2), x64, to64(gy))
    assert torch.equal(g.cpu().double(), g_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_add_relu_nan_inf_table(dtype, backend_device):
    """Every pair of {NaN, +inf, -inf, 1, -1, 0, -0} against torch.relu(a + b), and the gradient."""
    _, device = backend_device
    vals = torch.tensor([NAN, INF, -INF, 1.0, -1.0, 0.0, -0.0], dtype=torch.float64)
    a = leaf(vals.repeat_interleave(7).to(dtype).to(device))
    b = leaf(vals.repeat(7).to(dtype).to(device))
    out = FF.add_relu(a, b)
    ref = torch.relu(to64(a) + to64(b))
    _same_nonfinite(out, ref, "output")
    assert torch.equal(out.double().cpu().nan_to_num(0), ref.nan_to_num(0))
    gy = torch.arange(1.0, 50.0).to(dtype).to(device)
    ga, gb = torch.autograd.grad(out, (a, b), gy)
    a64, b64 = to64(a).requires_grad_(), to64(b).requires_grad_()
    ra, rb = torch.autograd.grad(torch.relu(a64 + b64), (a64, b64), to64(gy))
    assert torch.equal(ga.cpu().double(), ra) and torch.equal(gb.cpu().double(), rb)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool2d_empty_window(backend_device, layout):
    """A window that holds no input element (dilation lets every tap fall in the padding or past the
    end: W=1, kernel 2, padding 1, dilation 2): the output is -inf and the index PyTorch's (which lies
    outside the window: h0*W + first tap >= 0). Its gradient goes nowhere: no input element is in the
    window. PyTorch's own CPU backward adds it at that index instead, past the plane for the last row
    (heap corruption: 'double free or corruption' after a few calls), so it is not called here.
    (cuda-sim found the CUDA backward adding it to the element at that index, which lies between the
    window's dilated taps: both gather kernels, NCHW and NHWC, 4 channels reach the latter's vectors.)"""
    name, device = backend_device
    x = torch.randn(2, 4, 9, 1, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x = leaf(x.to(device))
    geom = ((2, 2), (2, 2), (0, 1), (1, 2), True)
    out, idx = FF.max_pool2d(x, *geom, return_indices=True)
    ref, ref_idx = F.max_pool2d(to64(x), *geom, return_indices=True)  # forward only
    assert torch.equal(out.cpu(), ref) and torch.equal(idx.cpu(), ref_idx)
    assert (ref == -INF).all()
    empty = empty_windows(9, 1, *geom)
    assert empty.all()  # (an axis with an empty window has only empty windows: a window starting at
    # or after the input's first element holds it)
    gy = torch.rand(out.shape, dtype=torch.float64).to(device)
    (g,) = torch.autograd.grad(out, x, gy)
    (g2,) = torch.autograd.grad(ops.max_pool2d(x, *[list(v) for v in geom[:4]], True, False)[0], x, gy)
    assert torch.equal(g2.cpu(), g.cpu()), "the backward without indices (recomputed argmax) differs"
    assert torch.equal(g.cpu(), pool_grad_reference(ref_idx, gy.cpu(), tuple(x.shape), empty))


# ------------------------------------------------------------------------------------------------
# float16 / bfloat16 overflow saturates to inf
# ------------------------------------------------------------------------------------------------

# Largest finite value m and two increments d_fin < d_inf such that m + d_fin rounds back to m and
# m + d_inf rounds to inf (round to nearest even at the boundary). The sums are exact in float32,
# so a kernel that accumulates in float32 and rounds once must give exactly these.
#   float16:  65504 + 15 = 65519 -> 65504;  65504 + 16 = 65520 (the midpoint, even side) -> inf
#   bfloat16: max = (2 - 2^-7) 2^127; + 2^118 -> max;  + 1.5 * 2^119 = 2^128 - 2^118 -> inf
BOUNDARY = {
    torch.float16: (65504.0, 15.0, 16.0),
    torch.bfloat16: (float(torch.finfo(torch.bfloat16).max), 2.0**118, 1.5 * 2.0**119),
}


def _torch_same_dtype(fn, *tensors):
    """PyTorch's result in the same dtype on the CPU, or None where torch has no such CPU kernel."""
    try:
        return fn(*[t.detach().cpu() for t in tensors])
    except RuntimeError:
        return None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv2d_overflow_saturates(dtype, activation, backend_device):
    _, device = backend_device
    m, d_fin, d_inf = BOUNDARY[dtype]
    # a 1x1 conv over 2 channels: out[p] = x0[p] + x1[p] (weights 1): exact boundary sums
    x = torch.zeros(1, 2, 2, 3, dtype=torch.float64)
    x[0, 0] = m
    x[0, 1] = torch.tensor([[d_fin, d_inf, 0.0], [-d_fin, -d_inf, -m]])
    x[0, 0, 1] = -m  # second row: the negative side
    w = torch.ones(3, 2, 1, 1, dtype=torch.float64)
    w[1] = -1.0  # channel 1 of the output: negated sums
    w[2, 1] = 0.5
    xd, wd = x.to(dtype).to(device), w.to(dtype).to(device)
    for fn in (lambda a, b: FF.conv2d(a, b, activation=activation),
               lambda a, b: FF.conv1x1(a, b, activation=activation)):
        out = fn(xd, wd)
        ref64 = F.conv2d(x, w)
        ref64 = F.relu(ref64) if activation == "relu" else ref64
        want = ref64.to(dtype)  # the float64 result rounded once: saturates to +-inf
        assert torch.isinf(want).any()
        assert torch.equal(out.cpu(), want), f"got {out.cpu()}\nwant {want}"
        tref = _torch_same_dtype(lambda a, b: F.conv2d(a, b), xd, wd)
        if tref is not None:
            tref = F.relu(tref) if activation == "relu" else tref
            # PyTorch's own kernels: the same infinities (they may differ from the exact rounding
            # at the midpoint only by accumulating in lower precision, never in saturation)
            assert torch.equal(torch.isinf(out.cpu()), torch.isinf(tref)) or torch.equal(out.cpu(), want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_conv2d_overflow_large_products(dtype, backend_device):
    """Sums far beyond the range: inf of the right sign, as PyTorch's conv in the same dtype gives.
    bfloat16 shares float32's exponent range, so its overflow is the float32 accumulator's: all
    terms of a window have one sign there (mixed-sign infinite partial sums would give NaN in any
    float32 kernel, PyTorch's included, but a finite float64 reference)."""
    _, device = backend_device
    big = 300.0 if dtype == torch.float16 else 2.0**63
    x = torch.full((1, 3, 4, 4), big, dtype=torch.float64)
    if dtype == torch.float16:
        x[:, :, :, 2:] = -big  # mixed signs: float32 accumulation does not overflow for float16 data
    w = torch.full((2, 3, 3, 3), big, dtype=torch.float64)
    w[1] = -big
    xd, wd = x.to(dtype).to(device), w.to(dtype).to(device)
    out = FF.conv2d(xd, wd, padding=1)
    want = F.conv2d(x, w, padding=1).to(dtype)
    assert torch.isinf(want).any() and torch.equal(out.cpu(), want)
    tref = _torch_same_dtype(lambda a, b: F.conv2d(a, b, padding=1), xd, wd)
    if tref is not None:
        assert torch.equal(torch.isinf(out.cpu()), torch.isinf(tref))
        assert torch.equal(torch.sign(out.cpu()[torch.isinf(tref)]), torch.sign(tref[torch.isinf(tref)]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_conv_backward_overflow_saturates(dtype, backend_device):
    """grad_weight (a sum over pixels) and grad_input (a sum over output channels) beyond the range."""
    _, device = backend_device
    m, d_fin, d_inf = BOUNDARY[dtype]
    # grad_weight[k, c] = sum_p gy[k, p] * x[c, p]: x = 1 on two pixels, gy = (m, d) on them
    x = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    x[..., :] = 1.0
    w = torch.ones(2, 1, 1, 1, dtype=torch.float64)
    gy = torch.tensor([[[[m, d_fin]], [[m, d_inf]]]], dtype=torch.float64)
    xd, wd, gyd = leaf(x.to(dtype).to(device)), leaf(w.to(dtype).to(device)), gy.to(dtype).to(device)
    for fn in (lambda a, b: FF.conv2d(a, b), lambda a, b: FF.conv1x1(a, b, activation=None)):
        out = fn(xd, wd)
        gx, gw = torch.autograd.grad(out, (xd, wd), gyd)
        x64, w64 = x.clone().requires_grad_(), w.clone().requires_grad_()
        rx, rw = torch.autograd.grad(F.conv2d(x64, w64), (x64, w64), gy)
        assert torch.equal(gw.cpu(), rw.to(dtype)), f"grad weight {gw.cpu().flatten()} != {rw.to(dtype).flatten()}"
        assert torch.equal(gx.cpu(), rx.to(dtype)), f"grad input {gx.cpu().flatten()} != {rx.to(dtype).flatten()}"
        assert torch.isinf(gw).any() and torch.isinf(gx).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_add_relu_overflow_saturates(dtype, backend_device):
    _, device = backend_device
    m, d_fin, d_inf = BOUNDARY[dtype]
    a = torch.tensor([m, m, m, -m, -m], dtype=torch.float64)
    b = torch.tensor([d_fin, d_inf, m, -d_inf, -m], dtype=torch.float64)
    ad, bd = a.to(dtype).to(device), b.to(dtype).to(device)
    out = FF.add_relu(ad, bd)
    want = torch.relu(a + b).to(dtype)
    assert torch.equal(out.cpu(), want) and torch.isinf(want).any()
    assert torch.equal(out.cpu(), torch.relu(ad.cpu() + bd.cpu()))  # torch's own half arithmetic


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool2d_backward_overflow_saturates(dtype, layout, backend_device):
    """Overlapping windows (3x3 stride 1) that share one maximum add their gradients: beyond the
    range the sum is inf, as PyTorch's (float64 reference rounded once)."""
    _, device = backend_device
    m = BOUNDARY[dtype][0]
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 1] = 10.0  # the max of all four 3x3 windows
    x = leaf(x.to(dtype).to(device).contiguous(memory_format=torch.channels_last if layout == "channels_last"
                                                else torch.contiguous_format))
    out = FF.max_pool2d(x, 3, 1)
    gy = torch.full(out.shape, m / 2, dtype=torch.float64)  # 4 * max/2 = 2 * max: overflows
    (g,) = torch.autograd.grad(out, x, gy.to(dtype).to(device))
    x64 = to64(x).requires_grad_()
    (g_ref,) = torch.autograd.grad(F.max_pool2d(x64, 3, 1), x64, gy)
    assert torch.equal(g.cpu(), g_ref.to(dtype)) and torch.isinf(g).any()


# ------------------------------------------------------------------------------------------------
# float16 / bfloat16 round to nearest even (every backend, Triton's interpreter included)
# ------------------------------------------------------------------------------------------------

HALF = [torch.bfloat16, torch.float16]
_HALF_ULP1 = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}  # the spacing just above 1


def _neighbours(b: torch.Tensor):
    """The values of b's 16-bit dtype just below and above each element of b (bits +- 1)."""
    bits = b.view(torch.int16).to(torch.int32)
    pos = bits >= 0
    up = torch.where(pos, bits + 1, bits - 1)  # away from zero
    down = torch.where(pos, bits - 1, bits + 1)
    down = torch.where(bits == 0, torch.full_like(bits, -32767), down)  # below +0: -tiny
    as_float = lambda v: v.to(torch.int16).view(b.dtype).to(torch.float64)  # noqa: E731
    lo, hi = as_float(down), as_float(up)
    return torch.minimum(lo, hi), torch.maximum(lo, hi)


def assert_rne(out, ref64, bound, what):
    """out (float16/bfloat16) is ref64 rounded to nearest even, except where ref64 lies within
    `bound` (the float32 accumulation error bound) of a midpoint between two values of out's
    dtype: there either neighbour of that midpoint. Exact everywhere where bound is 0. Returns
    the number of elements excused by the bound."""
    out = out.detach().cpu()
    want = ref64.to(out.dtype)  # through float32 first: wrong only within 2^-24 of a midpoint
    lo, hi = _neighbours(want)
    w64 = want.to(torch.float64)
    near = torch.minimum((ref64 - (lo + w64) / 2).abs(), (ref64 - (hi + w64) / 2).abs()) <= bound
    exact = ~near
    o64 = out.to(torch.float64)
    bad = exact & (out.view(torch.int16) != want.view(torch.int16))
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {int(exact.sum())} elements not rounded to nearest even, "
                           f"e.g. {o64[bad][:4].tolist()} for {ref64[bad][:4].tolist()} "
                           f"(want {w64[bad][:4].tolist()})")
    ok_near = (o64 == w64) | (o64 == lo) | (o64 == hi)
    assert (ok_near | exact).all(), f"{what}: near a midpoint but not one of its two neighbours"
    return int(near.sum())


def _bits_equal(a, b):
    return torch.equal(a.detach().cpu().view(torch.int16), b.detach().cpu().view(torch.int16))


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_rne_helper_tells_truncation_from_rounding(dtype):
    """1 + ulp/2 + ulp/8 (above the midpoint 1 + ulp/2) rounds up to 1 + ulp; truncation gives 1."""
    u = _HALF_ULP1[dtype]
    ref = torch.tensor([1 + u / 2 + u / 8, -(1 + u / 2 + u / 8), 1 + u / 2, 1 + 3 * u / 2], dtype=torch.float64)
    assert_rne(ref.to(dtype), ref, 0.0, "rne")
    with pytest.raises(AssertionError, match="not rounded to nearest even"):
        assert_rne(torch.tensor([1.0, -1.0, 1.0, 1 + u], dtype=dtype), ref, 0.0, "truncated")


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_add_relu_half_round_to_nearest_even(dtype, backend_device):
    """relu(a + b) in float32, rounded once to nearest even: bit for bit, forward and backward."""
    _, device = backend_device
    u = _HALF_ULP1[dtype]
    g = torch.Generator().manual_seed(7)
    a = torch.randn(3, 5, 7, 6, generator=g, dtype=torch.float64)
    b = torch.randn(3, 5, 7, 6, generator=g, dtype=torch.float64) * 2.0**-6  # sums with dropped bits
    a[0, 0, 0, :3] = torch.tensor([1.0, 1.0, -1.0])
    b[0, 0, 0, :3] = torch.tensor([u / 2 + u / 8, u / 2, -(u / 2 + u / 8)])  # up, tie to even, down
    ad, bd = leaf(a.to(dtype).to(device)), leaf(b.to(dtype).to(device))
    out = FF.add_relu(ad, bd)
    want = torch.relu(ad.detach().cpu().float() + bd.detach().cpu().float()).to(dtype)
    assert _bits_equal(out, want)
    assert out.detach().cpu()[0, 0, 0, 0].item() == 1 + u and out.detach().cpu()[0, 0, 0, 1].item() == 1.0
    gy = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype).to(device)
    ga, gb = torch.autograd.grad(out, (ad, bd), gy)
    want_g = torch.where(want.float() <= 0, 0.0, gy.cpu().float()).to(dtype)
    assert _bits_equal(ga, want_g) and _bits_equal(gb, want_g)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool2d_half_round_to_nearest_even(dtype, layout, backend_device):
    """Overlapping 3x3/s1 windows sum their gradients in float32 and round once to nearest even."""
    _, device = backend_device
    g = torch.Generator().manual_seed(3)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = leaf(torch.randn(2, 3, 9, 8, generator=g, dtype=torch.float64).to(dtype).to(device)
             .contiguous(memory_format=fmt))
    out = FF.max_pool2d(x, 3, 1, 1)
    gy = (torch.randn(out.shape, generator=g, dtype=torch.float64) * (1 + 2**-4)).to(dtype).to(device)
    (gx,) = torch.autograd.grad(out, x, gy)
    x32 = x.detach().cpu().float().requires_grad_()
    out32 = F.max_pool2d(x32, 3, 1, 1)
    (gx32,) = torch.autograd.grad(out32, x32, gy.cpu().float())
    assert _bits_equal(out, out32.to(dtype)) and _bits_equal(gx, gx32.to(dtype))
    assert (gx32 != gx32.to(dtype).float()).any()  # some sums really needed rounding


_U32 = 2.0**-23  # float32 accumulation: at most one ulp (2u) per addition, so round-toward-zero too


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("op,k,stride,pad", [("conv2d", 3, 1, 1), ("conv2d", 3, 2, 1), ("conv1x1", 1, 1, 0)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv_half_round_to_nearest_even(dtype, op, k, stride, pad, layout, backend_device):
    """Outputs and gradients are the float64 reference (exact products of the 16-bit values)
    rounded to nearest even, except within the float32 accumulation bound (n terms:
    n * 2^-23 * sum|terms|) of a midpoint; grad of the residual (the masked gradient) is exact."""
    _, device = backend_device
    g = torch.Generator().manual_seed(11)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    N, C, H, W, K = 2, 6, 7, 6, 5
    r64 = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype).double()  # noqa: E731
    x, w, b = r64(N, C, H, W), r64(K, C, k, k) * 0.25, r64(K)
    P = (H + 2 * pad - k) // stride + 1
    Q = (W + 2 * pad - k) // stride + 1
    res = r64(N, K, P, Q)
    xd, wd, bd, rd = (leaf(t.to(dtype).to(device)) for t in (x, w, b, res))
    xd, rd = (leaf(t.detach().contiguous(memory_format=fmt)) for t in (xd, rd))
    if op == "conv1x1":
        out = FF.conv1x1(xd, wd, bd, stride, residual=rd)
    else:
        out = FF.conv2d(xd, wd, bd, stride, pad, residual=rd, activation="relu")
    pre = F.conv2d(x, w, b, stride, pad) + res
    bound = (C * k * k + 2) * _U32 * (F.conv2d(x.abs(), w.abs(), b.abs(), stride, pad) + res.abs())
    o = out.detach().cpu()
    pos, neg = pre > bound, pre < -bound  # the ReLU's side is certain; else 0 or a small positive
    near = assert_rne(o[pos], pre[pos], bound[pos], f"{op} forward")
    assert (o[neg] == 0).all() and (o[~pos & ~neg].double() <= bound[~pos & ~neg]).all(), f"{op} forward ReLU"
    near += int((~pos & ~neg).sum())

    gy = r64(*out.shape)
    gxd, gwd, gbd, grd = torch.autograd.grad(out, (xd, wd, bd, rd), gy.to(dtype).to(device))
    gm = torch.where(out.detach().cpu().double() <= 0, 0.0, gy)  # the mask of the kernel's own output
    assert _bits_equal(grd, gm.to(dtype)), "grad residual"
    x_, w_ = x.clone().requires_grad_(), w.clone().requires_grad_()
    gx, gw = torch.autograd.grad(F.conv2d(x_, w_, None, stride, pad), (x_, w_), gm)
    xa, wa = x.abs().requires_grad_(), w.abs().requires_grad_()
    sx, sw = torch.autograd.grad(F.conv2d(xa, wa, None, stride, pad), (xa, wa), gm.abs())
    near += assert_rne(gxd, gx, K * k * k * _U32 * sx, f"{op} grad input")
    near += assert_rne(gwd, gw, N * P * Q * _U32 * sw, f"{op} grad weight")
    near += assert_rne(gbd, gm.sum((0, 2, 3)), N * P * Q * _U32 * gm.abs().sum((0, 2, 3)), f"{op} grad bias")
    # float16's midpoints are 8x denser than bfloat16's: the same float32 bound excuses more
    share = {torch.bfloat16: 0.05, torch.float16: 0.25}[dtype]
    assert near < share * (out.numel() + gxd.numel() + gwd.numel()), "the bound excuses too much to test rounding"


# ------------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def deterministic(on=True):
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


@contextlib.contextmanager
def num_threads(n):
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _bits(t):
    """The raw bits of a tensor (NaN-safe, -0 != +0)."""
    t = t.detach().contiguous().cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16)
    if t.dtype == torch.float32:
        return t.view(torch.int32)
    if t.dtype == torch.float64:
        return t.view(torch.int64)
    return t


def _run_op(op, device, dtype, layout, seed=0):
    """One forward and backward of op on inputs big enough for every parallel path on the CPU
    (several chunks per thread, per-thread wgrad partials, overlapping-window dgrad)."""
    g = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)

    if op in ("conv2d", "conv2d_strided", "conv1x1"):
        k, stride, pad = {"conv2d": (3, 1, 1), "conv2d_strided": (3, 2, 1), "conv1x1": (1, 1, 0)}[op]
        x = leaf(r(4, 16, 24, 24).contiguous(memory_format=fmt))
        w = leaf(r(32, 16, k, k, scale=(16 * k * k) ** -0.5))
        b = leaf(r(32))
        P = (24 + 2 * pad - k) // stride + 1
        res = leaf(r(4, 32, P, P).contiguous(memory_format=fmt))
        if op == "conv1x1":
            out = FF.conv1x1(x, w, b, residual=res)
        else:
            out = FF.conv2d(x, w, b, stride, pad, residual=res, activation="relu")
        inputs = (x, w, b, res)
    elif op == "max_pool2d":
        x = leaf(r(4, 16, 33, 33).contiguous(memory_format=fmt))
        out = FF.max_pool2d(x, 3, 2, 1, ceil_mode=True)
        inputs = (x,)
    else:
        a = leaf(r(4, 16, 24, 24).contiguous(memory_format=fmt))
        bb = leaf(r(16, 1, 24))
        out = FF.add_relu(a, bb)
        inputs = (a, bb)
    gy = r(*out.shape)
    grads = torch.autograd.grad(out, inputs, gy)
    return [out, *grads]


def _churn():
    """Disturb the allocator between runs (different addresses and alignments for scratch buffers)."""
    junk = [torch.empty(int(n)) for n in torch.randint(1, 200_000, (8,))]
    del junk
    gc.collect()


DET_OPS = ["conv2d", "conv2d_strided", "conv1x1", "max_pool2d", "add_relu"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("op", DET_OPS)
def test_forward_backward_bitwise_deterministic(op, layout, dtype, backend_device):
    """Same input, same bits: forward always; backward always on the CPU (fixed thread count) and,
    on the GPU, with torch.use_deterministic_algorithms(True)."""
    name, device = backend_device
    if backend_device == ("triton", "cpu") and op != "add_relu":
        shape_note = "interpreter: checked on the smaller shapes of test_determinism_small"
        pytest.skip(shape_note)
    with deterministic(True):
        first = [_bits(t) for t in _run_op(op, device, dtype, layout)]
        for _ in range(2):
            _churn()
            again = [_bits(t) for t in _run_op(op, device, dtype, layout)]
            for i, (a, b) in enumerate(zip(first, again)):
                what = "forward" if i == 0 else f"gradient {i - 1}"
                assert torch.equal(a, b), f"{op} {what}: bits differ between two identical runs"


@pytest.mark.parametrize("op", ["conv2d", "conv1x1", "max_pool2d"])
def test_determinism_small(op, backend_device):
    """The same check on small shapes (every backend, the interpreter included)."""
    _, device = backend_device
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 9, 9, generator=g).to(device)
    w = torch.randn(6, 5, 3, 3, generator=g).to(device)

    def run():
        xx, ww = leaf(x), leaf(w)
        if op == "conv2d":
            out = FF.conv2d(xx, ww, padding=1, activation="relu")
        elif op == "conv1x1":
            out = FF.conv1x1(xx, ww[:, :, :1, :1].contiguous())
        else:
            out = FF.max_pool2d(xx, 3, 1, 1)
        need = (xx, ww) if op != "max_pool2d" else (xx,)
        return [out, *torch.autograd.grad(out, need, torch.ones_like(out))]

    with deterministic(True):
        a, b = run(), run()
    for i, (u, v) in enumerate(zip(a, b)):
        assert torch.equal(_bits(u), _bits(v)), f"{op}: result {i} differs between two identical runs"


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("op", ["conv2d", "conv2d_strided", "conv1x1"])
def test_cpu_backward_deterministic_per_thread_count(op, threads):
    """The CPU claim (csrc/cpu/conv_engine.h): wgrad partials are reduced in thread order, so for a
    fixed thread count the backward is bitwise reproducible (without the deterministic flag too)."""
    with num_threads(threads), deterministic(False):
        first = [_bits(t) for t in _run_op(op, "cpu", torch.float32, "channels_last", seed=1)]
        for _ in range(2):
            _churn()
            again = [_bits(t) for t in _run_op(op, "cpu", torch.float32, "channels_last", seed=1)]
            for i, (a, b) in enumerate(zip(first, again)):
                assert torch.equal(a, b), f"{op}, {threads} threads: result {i} differs between identical runs"


def test_cpu_results_across_thread_counts_within_tolerance():
    """Different thread counts may change the summation order of wgrad (documented): never more than
    rounding. (Bitwise equality across thread counts is not promised.)"""
    with num_threads(1):
        one = _run_op("conv2d", "cpu", torch.float32, "channels_last", seed=2)
    with num_threads(2):
        two = _run_op("conv2d", "cpu", torch.float32, "channels_last", seed=2)
    for a, b in zip(one, two):
        assert rel_err(a, b) <= 2e-6


@pytest.mark.cuda
@pytest.mark.parametrize("op", DET_OPS)
def test_gpu_backward_deterministic_with_flag(op, backend_device):
    """On the GPU the flag is what promises it: 10 runs of forward+backward, identical bits."""
    name, device = backend_device
    if device != "cuda":
        pytest.skip("GPU backends only")
    with deterministic(True):
        first = [_bits(t) for t in _run_op(op, device, torch.float16, "channels_last")]
        for _ in range(10):
            again = [_bits(t) for t in _run_op(op, device, torch.float16, "channels_last")]
            for i, (a, b) in enumerate(zip(first, again)):
                assert torch.equal(a, b), f"{op}: result {i} differs with use_deterministic_algorithms(True)"


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.cuda
def test_gpu_flag_is_pytorchs_switch():
    """The documented flag is PyTorch's own; setting it must not make any fastcnn op raise
    (the ops have a deterministic path, they do not opt out with an error)."""
    x = torch.randn(2, 8, 16, 16, device="cuda", requires_grad=True)
    w = torch.randn(8, 8, 3, 3, device="cuda", requires_grad=True)
    with deterministic(True):
        out = FF.max_pool2d(FF.conv2d(x, w, padding=1, activation="relu"), 2)
        FF.add_relu(out, out).sum().backward()
    assert x.grad is not None and w.grad is not None
