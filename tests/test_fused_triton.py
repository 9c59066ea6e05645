"""The Triton kernels of issue 18's in-place ops, called as launchers (fastcnn.kernels): conv2d_into
(conv2d's plan storing into a channel slice) and conv1x1_into (sibling 1x1 convs as one GEMM, each
column segment with its own bias/activation/destination, optionally max-pooled as the operand is
loaded). Float64 PyTorch references; NaN sentinels around every slice must survive. The
cross-backend tests of the public ops are in tests/test_fused_ops.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import HAS_CUDA, INTERPRET, assert_close

pytestmark = pytest.mark.skipif(not (INTERPRET or HAS_CUDA), reason="triton: needs TRITON_INTERPRET=1 or a GPU")
DEVICE = "cuda" if HAS_CUDA and not INTERPRET else "cpu"

# pool = [kh, kw, sh, sw, ph, pw, ceil_mode] as the op's `pool` argument
POOLS = {"none": [], "3x3s1p1ceil": [3, 3, 1, 1, 1, 1, 1], "2x2s2": [2, 2, 2, 2, 0, 0, 0],
         "3x3s2ceil": [3, 3, 2, 2, 0, 0, 1]}
PAD = 2  # sentinel channels before each slice (and one after)


def _kernels():
    from fastcnn.kernels import conv1x1, conv2d
    return conv1x1, conv2d


def _slice(N, K, P, Q, dtype, cl, shared=None, at=PAD):
    """A [N, K, P, Q] channel slice at channel ``at`` of a NaN-filled buffer (NCHW or channels_last),
    and the buffer; ``shared``: slice that buffer instead (concat outputs)."""
    if shared is None:
        L = at + K + 1
        shape = (N, P, Q, L) if cl else (N, L, P, Q)
        shared = torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)
        if cl:
            shared = shared.permute(0, 3, 1, 2)
    return shared.narrow(1, at, K), shared


def _check_sentinels(buf, written):
    """Every channel of ``buf`` outside the [lo, hi) ranges in ``written`` is still NaN."""
    keep = torch.ones(buf.shape[1], dtype=torch.bool)
    for lo, hi in written:
        keep[lo:hi] = False
    assert torch.isnan(buf[:, keep.to(buf.device)]).all(), "a write outside the slice"


def _ref_1x1(x, w, b, stride, acts, pool, ks):
    x64 = x.double().cpu()
    if pool:
        x64 = F.max_pool2d(x64, pool[:2], pool[2:4], pool[4:6], ceil_mode=bool(pool[6]))
    ref = F.conv2d(x64, w.double().cpu(), None if b is None else b.double().cpu(), stride)
    out, off = [], 0
    for k, act in zip(ks, acts):
        r = ref[:, off:off + k]
        out.append(r.relu() if act == "relu" else r)
        off += k
    return out


def _run_1x1(N, C, H, W, ks, acts, pool, dtype=torch.float32, cl=False, bias=True, stride=(1, 1), x=None,
             config=None):
    k1, _ = _kernels()
    if x is None:
        x = torch.randn(N, C, H, W, dtype=dtype, device=DEVICE)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
    w = (torch.randn(sum(ks), C, 1, 1, dtype=dtype, device=DEVICE) / C ** 0.5)
    b = torch.randn(sum(ks), dtype=dtype, device=DEVICE) if bias else None
    refs = _ref_1x1(x, w, b, stride, acts, pool, ks)
    P, Q = refs[0].shape[2:]
    outs = [_slice(N, k, P, Q, dtype, cl) for k in ks]
    ys = [y for y, _ in outs]
    if config is None:
        k1.conv1x1_into(x, w, b, stride, acts, pool, ys)
    else:
        from fastcnn.kernels import _launch
        _launch.run(k1.plan_conv1x1_into(x, w, b, ys, stride, acts, pool, _launch.target_of(x), config=config))
    for i, ((y, buf), ref) in enumerate(zip(outs, refs)):
        assert_close(y, ref, dtype, what=f"segment {i}")
        _check_sentinels(buf, [(PAD, PAD + y.shape[1])])
    return ys, refs


@pytest.mark.parametrize("pool", POOLS.values(), ids=POOLS.keys())
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=["fp32", "fp64", "bf16"])
def test_conv1x1_into_segments(pool, cl, dtype):
    # odd sizes: C = 5, segments 3 + 7 + 6, mixed activations
    _run_1x1(2, 5, 7, 6, [3, 7, 6], ["relu", "none", "relu"], pool, dtype, cl)


@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "cl"])
def test_conv1x1_into_stride(cl):
    _run_1x1(2, 6, 7, 9, [4, 5], ["none", "relu"], [], cl=cl, stride=(2, 3))


def test_conv1x1_into_fp16():
    _run_1x1(2, 12, 5, 5, [8, 9], ["relu", "relu"], POOLS["3x3s1p1ceil"], torch.float16, cl=True)


def test_conv1x1_into_no_bias():
    _run_1x1(1, 5, 4, 4, [2, 3, 4], ["none", "relu", "none"], POOLS["2x2s2"], bias=False)


@pytest.mark.parametrize("config", range(4))
def test_conv1x1_into_configs(config):
    # every candidate tile (BLOCK_N 16..64, BLOCK_M 64/128): segments spanning several column
    # tiles and tiles ending mid-segment; C over one BLOCK_K chunk
    _run_1x1(2, 40, 5, 4, [3, 37, 20, 1], ["relu", "none", "relu", "none"], POOLS["3x3s1p1ceil"], cl=config % 2 == 1,
             config=config)


def test_conv1x1_into_many_segments():
    # more segments than one launch stores to (kernels/conv1x1.py MAX_SEGMENTS): still right
    _run_1x1(1, 4, 3, 5, [1, 2, 3, 2, 1, 4], ["relu", "none"] * 3, POOLS["3x3s1p1ceil"], cl=True)


@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "cl"])
def test_conv1x1_into_concat(cl):
    """GoogLeNet's shape: the siblings' outputs are channel slices of one concat buffer, and the
    channels between them (other branches) are not touched."""
    k1, _ = _kernels()
    N, C, H, W, ks = 2, 6, 5, 5, [4, 3, 5]
    x = torch.randn(N, C, H, W, device=DEVICE)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(sum(ks), C, 1, 1, device=DEVICE)
    b = torch.randn(sum(ks), device=DEVICE)
    _, buf = _slice(N, 20, H, W, torch.float32, cl)
    at = [1, 7, 12]
    ys = [buf.narrow(1, a, k) for a, k in zip(at, ks)]
    k1.conv1x1_into(x, w, b, (1, 1), ["relu", "relu", "none"], [], ys)
    for y, ref in zip(ys, _ref_1x1(x, w, b, (1, 1), ["relu", "relu", "none"], [], ks)):
        assert_close(y, ref, torch.float32)
    _check_sentinels(buf, [(a, a + k) for a, k in zip(at, ks)])


@pytest.mark.parametrize("pool", [POOLS["3x3s1p1ceil"], POOLS["2x2s2"]], ids=["3x3s1p1ceil", "2x2s2"])
def test_conv1x1_into_pool_nan(pool):
    """A NaN anywhere in a window makes that pooled pixel NaN (as max_pool2d), and every output
    channel reading it; -inf in the input stays a max candidate, as PyTorch's."""
    x = torch.randn(1, 3, 6, 6, device=DEVICE)
    x[0, 1, 2, 3] = float("nan")
    x[0, 2, 0, 0] = float("-inf")
    x[0, 0, 5, 5] = float("inf")
    ys, refs = _run_1x1(1, 3, 6, 6, [2, 3], ["relu", "none"], pool, x=x)
    assert torch.isnan(refs[0]).any() and torch.isnan(ys[0]).any()


def test_conv1x1_into_empty():
    k1, _ = _kernels()
    x = torch.randn(0, 4, 5, 5, device=DEVICE)
    w = torch.randn(5, 4, 1, 1, device=DEVICE)
    y, buf = _slice(0, 5, 5, 5, torch.float32, False)
    k1.conv1x1_into(x, w, None, (1, 1), ["relu"], [], [y])  # nothing to do, nothing fails
    x = torch.randn(2, 4, 5, 5, device=DEVICE)
    y, buf = _slice(2, 5, 5, 5, torch.float32, False)
    z, zbuf = _slice(2, 0, 5, 5, torch.float32, False)
    k1.conv1x1_into(x, w, None, (1, 1), ["relu", "none"], [], [y, z])  # an empty segment
    assert_close(y, F.conv2d(x.double(), w.double()).relu(), torch.float32)
    _check_sentinels(zbuf, [])


CONV2D = [  # (N, C, H, W, K, R, stride, padding, dilation, groups, residual, activation)
    (2, 3, 9, 8, 5, 3, 1, 1, 1, 1, True, "relu"),
    (2, 6, 7, 7, 4, 3, 2, 1, 1, 2, False, "none"),
    (1, 4, 8, 6, 6, 5, 1, 2, 2, 1, True, "none"),
    (2, 8, 5, 5, 7, 1, 1, 0, 1, 1, False, "relu"),
]


@pytest.mark.parametrize("case", CONV2D, ids=lambda c: f"c{c[1]}k{c[4]}r{c[5]}s{c[6]}g{c[9]}")
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_conv2d_into(case, cl, dtype):
    """conv2d_into writes exactly fastcnn's Triton conv2d result (bit for bit) into the slice."""
    _, k2 = _kernels()
    N, C, H, W, K, R, s, p, d, g, res, act = case
    x = torch.randn(N, C, H, W, dtype=dtype, device=DEVICE)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(K, C // g, R, R, dtype=dtype, device=DEVICE)
    b = torch.randn(K, dtype=dtype, device=DEVICE)
    geo = ((s, s), (p, p), (d, d), g)
    want = k2.conv2d(x, w, b, None, *geo, "none")
    r = torch.randn_like(want) if res else None
    want = k2.conv2d(x, w, b, r, *geo, act)
    y, buf = _slice(N, K, *want.shape[2:], dtype, cl, at=3)
    k2.conv2d_into(x, w, b, r, *geo, act, y)
    assert torch.equal(y, want)
    _check_sentinels(buf, [(3, 3 + K)])
    ref = F.conv2d(x.double(), w.double(), b.double(), s, p, d, g)
    if res:
        ref = ref + r.double()
    assert_close(y, ref.relu() if act == "relu" else ref, dtype)


def test_conv2d_into_empty():
    _, k2 = _kernels()
    x = torch.randn(0, 3, 5, 5, device=DEVICE)
    w = torch.randn(4, 3, 3, 3, device=DEVICE)
    y, buf = _slice(0, 4, 3, 3, torch.float32, False)
    k2.conv2d_into(x, w, None, None, (1, 1), (0, 0), (1, 1), 1, "none", y)


@pytest.mark.parametrize("ks, launches", [([64], 1), ([64, 256], 1), ([64, 96, 16], 1), ([8, 8, 8, 8], 1),
                                          ([8] * 5, 2)])
def test_conv1x1_into_is_one_launch(ks, launches):
    """Siblings share one GEMM launch (the input read once); 4 segments per launch at most."""
    from fastcnn.kernels import _launch
    k1, _ = _kernels()
    x = torch.empty(2, 32, 7, 7, device="meta")
    w = torch.empty(sum(ks), 32, 1, 1, device="meta")
    outs = [torch.empty(2, k, 7, 7, device="meta") for k in ks]
    for pool in ([], [3, 3, 1, 1, 1, 1, 1]):
        with _launch.collect(_launch.Target(False, 132, (9, 0))) as recs:
            k1.conv1x1_into(x, w, None, (1, 1), ["relu"] * len(ks), pool, outs)
        assert len(recs) == launches
        assert all(r.constexprs["BLOCK_M"] >= 64 for r in recs)  # wgmma-sized tiles on Hopper


@pytest.mark.parametrize("R, pad", [(1, 0), (3, 1)], ids=["1x1", "3x3"])
def test_conv2d_into_tma(R, pad, monkeypatch):
    """The TMA-descriptor forward (Hopper; the interpreter runs descriptors) stores into the slice too."""
    _, k2 = _kernels()
    monkeypatch.setenv(k2.TMA_ENV, "1")
    x = torch.randn(2, 16, 6, 5, dtype=torch.bfloat16, device=DEVICE).contiguous(memory_format=torch.channels_last)
    w = torch.randn(12, 16, R, R, dtype=torch.bfloat16, device=DEVICE)
    geo = ((1, 1), (pad, pad), (1, 1), 1)
    from fastcnn.kernels import _launch
    with _launch.collect(_launch.target_of(x)) as recs:
        k2.conv2d(x, w, None, None, *geo, "relu")
    assert recs[0].kernel.fn.__name__ == "_conv_fwd_tma_kernel"
    want = k2.conv2d(x, w, None, None, *geo, "relu")
    y, buf = _slice(2, 12, 6, 5, torch.bfloat16, True, at=3)
    k2.conv2d_into(x, w, None, None, *geo, "relu", y)
    assert torch.equal(y, want)
    _check_sentinels(buf, [(3, 15)])


# ---- through the public ops (router, checks) on the triton backend ----

def _ops_1x1(x, w, b, acts, pool, ks, cl):
    import fastcnn
    from fastcnn.kernels._common import pool_out_size
    P, Q = x.shape[2:]
    if pool:
        P, Q = (pool_out_size(n, k, s, p, 1, pool[6]) for n, k, s, p in zip((P, Q), pool[:2], pool[2:4], pool[4:6]))
    outs = [_slice(x.shape[0], k, P, Q, x.dtype, cl) for k in ks]
    with fastcnn.backend("triton"):
        torch.ops.fastcnn.conv1x1_into(x, w, b, [1, 1], acts, pool, [y for y, _ in outs])
    return outs


@pytest.mark.parametrize("pool", [POOLS["none"], POOLS["3x3s1p1ceil"], POOLS["2x2s2"]], ids=["none", "3x3ceil", "2x2"])
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "cl"])
def test_ops_conv1x1_into_triton(pool, cl):
    """torch.ops.fastcnn.conv1x1_into routed to the triton backend, then its backward (the routed
    composite: triton's conv1x1 dgrad/wgrad and max_pool2d backward) against float64 autograd."""
    import fastcnn
    ks, acts = [3, 7, 6], ["relu", "none", "relu"]
    x = torch.randn(2, 5, 7, 6, device=DEVICE)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(sum(ks), 5, 1, 1, device=DEVICE) / 5 ** 0.5
    b = torch.randn(sum(ks), device=DEVICE)
    outs = _ops_1x1(x, w, b, acts, pool, ks, cl)
    x64, w64, b64 = (t.detach().double().cpu().requires_grad_() for t in (x, w, b))
    refs = _ref_1x1(x64, w64, b64, (1, 1), acts, pool, ks)
    for (y, buf), ref in zip(outs, refs):
        assert_close(y, ref, torch.float32)
        _check_sentinels(buf, [(PAD, PAD + y.shape[1])])
    gys = [torch.randn_like(y) for y, _ in outs]
    with fastcnn.backend("triton"):
        gx, gw, gb = torch.ops.fastcnn._conv1x1_into_backward(gys, x, w, [y for y, _ in outs], [1, 1], acts, pool,
                                                              [True, True, True])
    want = torch.autograd.grad(refs, [x64, w64, b64], [g.double().cpu() for g in gys])
    for name, got, ref in zip(["input", "weight", "bias"], (gx, gw, gb), want):
        assert_close(got, ref, torch.float32, what=f"grad {name}")


@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "cl"])
def test_ops_conv2d_into_triton(cl):
    """torch.ops.fastcnn.conv2d_into on the triton backend equals its fastcnn.conv2d bit for bit."""
    import fastcnn
    x = torch.randn(2, 4, 7, 6, device=DEVICE)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 4, 3, 3, device=DEVICE)
    b = torch.randn(6, device=DEVICE)
    with fastcnn.backend("triton"):
        want = torch.ops.fastcnn.conv2d(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, "relu")
        y, buf = _slice(2, 6, 7, 6, torch.float32, cl, at=5)
        torch.ops.fastcnn.conv2d_into(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, "relu", y)
    assert torch.equal(y, want)
    _check_sentinels(buf, [(5, 11)])


def test_conv1x1_into_int64_offsets(monkeypatch):
    """The int64 offset path (tensors spanning 2^30 elements; lowered here to run on tiny shapes)."""
    from fastcnn.kernels import conv2d
    monkeypatch.setattr(conv2d, "_IDX32_SPAN", 64)
    _run_1x1(2, 5, 6, 5, [3, 4], ["relu", "none"], POOLS["3x3s1p1ceil"], cl=True)
    _run_1x1(2, 5, 6, 5, [3, 4], ["none", "relu"], [], stride=(2, 2))
