"""cuda-sim kernel-level tests of issue 18's in-place ops, the CUDA backend's
``_cudasim_conv2d_into`` and ``_cudasim_conv1x1_into`` called directly (the routed public ops are
tests/test_fused_ops.py's): float64 references from torch.nn.functional, the relative-norm error,
outputs that are channel slices of NaN-filled wider buffers (the NaN outside a slice must stay),
mixed activations across segments, the max pool fused into the 1x1's operand load, NCHW and
channels_last, both scheduling orders and the forced tile/loader/epilogue paths.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastcnn import _cudasim
from fastcnn.testing import TOL, TOL_TF32

ops = _cudasim.load()
pytestmark = [pytest.mark.cudasim, pytest.mark.skipif(ops is None, reason=f"cuda-sim unavailable: {_cudasim.ERROR}")]

# The scheduling orders, with the target ids of the op tests (make cuda-sim's ASan phase selects
# "cuda-sim and not cuda-sim-rev").
ORDERS = [pytest.param("fwd", id="cuda-sim"), pytest.param("rev", id="cuda-sim-rev")]
FWD = [pytest.param("fwd", id="cuda-sim")]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
DID = lambda d: str(d).split(".")[1]  # noqa: E731
CL = torch.channels_last


def _rel(out, ref):
    out, ref = out.double(), ref.double()
    if ref.numel() == 0:
        return 0.0
    same_nan = torch.isnan(out) == torch.isnan(ref)
    if not same_nan.all():
        return float("inf")
    out, ref = torch.nan_to_num(out, nan=0.0), torch.nan_to_num(ref, nan=0.0)
    if not torch.isfinite(out).all():
        return float("inf")
    n = ref.norm().item()
    return (out - ref).norm().item() / (n if n > 0 else 1.0)


def _slice(N, K, P, Q, L, off, channels_last, dtype):
    """A NaN-filled dense block [N, L, P, Q] in the format and its channel slice [off, off + K)."""
    block = torch.full((N, L, P, Q), float("nan"), dtype=dtype)
    if channels_last:
        block = block.contiguous(memory_format=CL)
    return block, block.narrow(1, off, K)


def _outside_intact(block, off, K):
    """Every element of block outside channels [off, off + K) is still the NaN sentinel."""
    keep = torch.ones(block.shape[1], dtype=torch.bool)
    keep[off:off + K] = False
    return bool(torch.isnan(block[:, keep]).all())


def _tol(dtype, tf32=False):
    return TOL_TF32 if tf32 else TOL[dtype]


# ---- conv2d_into --------------------------------------------------------------------------------
GEOMS = {  # N, C, H, W, K, R, stride, padding, dilation, groups
    "3x3": (2, 16, 7, 6, 24, 3, 1, 1, 1, 1),
    "1x1": (2, 16, 5, 6, 16, 1, 1, 0, 1, 1),
    "1x1s2": (2, 24, 7, 7, 40, 1, 2, 0, 1, 1),
    "7x7s2-c3": (1, 3, 11, 9, 16, 7, 2, 3, 1, 1),
    "3x3d2g2": (1, 16, 9, 8, 24, 3, 1, 2, 2, 2),
    "odd-c5": (2, 5, 6, 7, 7, 3, 1, 1, 1, 1),
}
SLICES = [(0, 0), (3, 5), (8, 8)]  # (offset, extra channels past the slice): odd offset, aligned


def conv2d_into_case(dtype, channels_last, geom, off, extra, act="relu", residual=True, tf32=False):
    N, C, H, W, K, R, st, pd, dl, G = geom
    x = torch.randn(N, C, H, W, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=CL)
    w = (torch.randn(K, C // G, R, R) / (C // G * R * R) ** 0.5).to(dtype)
    b = torch.randn(K, dtype=dtype)
    P, Q = (H + 2 * pd - dl * (R - 1) - 1) // st + 1, (W + 2 * pd - dl * (R - 1) - 1) // st + 1
    r = torch.randn(N, K, P, Q, dtype=dtype) if residual else None
    block, out = _slice(N, K, P, Q, off + K + extra, off, channels_last, dtype)
    ops_f = torch.ops.fastcnn._cudasim_conv2d_into
    ops_f(x, w, b, r, [st] * 2, [pd] * 2, [dl] * 2, G, act, out)
    ref = F.conv2d(x.double(), w.double(), b.double(), st, pd, dl, G)
    if r is not None:
        ref = ref + r.double()
    if act == "relu":
        ref = ref.relu()
    err = _rel(out, ref)
    assert err <= _tol(dtype, tf32), f"conv2d_into: rel err {err:.3e}"
    assert _outside_intact(block, off, K), "conv2d_into wrote outside its slice"
    # Same numbers as conv2d (the same kernels, only the destination differs).
    y = torch.ops.fastcnn._cudasim_conv2d(x, w, b, r, [st] * 2, [pd] * 2, [dl] * 2, G, act)
    assert torch.equal(torch.nan_to_num(y, nan=7.0), torch.nan_to_num(out, nan=7.0)), "conv2d_into != conv2d"


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DID)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("geom", list(GEOMS), ids=list(GEOMS))
def test_conv2d_into(geom, layout, dtype, order):
    with _cudasim.order(order):
        for off, extra in SLICES:
            conv2d_into_case(dtype, layout == "channels_last", GEOMS[geom], off, extra)


@pytest.mark.parametrize("order", FWD)
@pytest.mark.parametrize("force", [f"conv_tile={t},conv_vec={v},conv_epi_vec={e},conv_images=1"
                                   for t in range(3) for v in (0, 1) for e in (0, 1)])
def test_conv2d_into_forced(force, order):
    with _cudasim.forced(force):
        for dtype in (torch.float32, torch.bfloat16):
            for cl in (False, True):
                conv2d_into_case(dtype, cl, GEOMS["3x3"], 8, 8, act="none", residual=False)
                conv2d_into_case(dtype, cl, GEOMS["1x1"], 3, 1)


@pytest.mark.parametrize("order", FWD)
def test_conv2d_into_empty(order):
    x = torch.randn(0, 16, 5, 5)
    w = torch.randn(8, 16, 3, 3)
    block, out = _slice(0, 8, 5, 5, 12, 2, True, torch.float32)
    torch.ops.fastcnn._cudasim_conv2d_into(x, w, None, None, [1, 1], [1, 1], [1, 1], 1, "none", out)
    # K = 1: the size-1 channel dim of the slice may carry any stride
    w = torch.randn(1, 16, 1, 1)
    for cl in (False, True):
        x = torch.randn(2, 16, 5, 5)
        x = x.contiguous(memory_format=CL) if cl else x
        block, out = _slice(2, 1, 5, 5, 4, 1, cl, torch.float32)
        torch.ops.fastcnn._cudasim_conv2d_into(x, w, None, None, [1, 1], [0, 0], [1, 1], 1, "relu", out)
        assert _rel(out, F.conv2d(x.double(), w.double()).relu()) <= TOL[torch.float32]
        assert _outside_intact(block, 1, 1)


# ---- conv1x1_into -------------------------------------------------------------------------------
def _pool_ref(x, pool):
    if not pool:
        return x
    kh, kw, sh, sw, ph, pw, ceil = pool
    return F.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), 1, bool(ceil))


def conv1x1_into_case(dtype, channels_last, N, C, H, W, segs, acts, pool=(), stride=1, bias=True, nan_at=None,
                      tf32=False, layouts=None):
    """segs: the segments' channel counts; each out is a slice of its own NaN block (odd offsets,
    different widths); nan_at: (n, c, h, w) of the input set to NaN."""
    x = torch.randn(N, C, H, W, dtype=dtype)
    if nan_at is not None:
        x[nan_at] = float("nan")
    if channels_last:
        x = x.contiguous(memory_format=CL)
    K = sum(segs)
    w = (torch.randn(K, C, 1, 1) / C ** 0.5).to(dtype)
    b = torch.randn(K, dtype=dtype) if bias else None
    ref = F.conv2d(_pool_ref(x.double(), pool), w.double(), b.double() if bias else None, stride)
    P, Q = ref.shape[2:]
    blocks, outs, offs = [], [], []
    for i, k in enumerate(segs):
        off = (3 * i + 1) % 5 if i % 2 else 8 * (i % 3)
        blk, o = _slice(N, k, P, Q, off + k + i % 3, off, channels_last, dtype)
        blocks.append(blk)
        outs.append(o)
        offs.append(off)
    torch.ops.fastcnn._cudasim_conv1x1_into(x, w, b, [stride] * 2, list(acts), list(pool), outs)
    k0 = 0
    for i, k in enumerate(segs):
        want = ref[:, k0:k0 + k]
        if acts[i] == "relu":
            want = want.relu()
        err = _rel(outs[i], want)
        assert err <= _tol(dtype, tf32), f"segment {i} ({k} channels, {acts[i]}): rel err {err:.3e}"
        assert _outside_intact(blocks[i], offs[i], k), f"segment {i} wrote outside its slice"
        k0 += k
    return outs


SEGS = [([3, 7, 6], ["relu", "none", "relu"]), ([16, 8], ["none", "relu"]),
        ([8, 8, 8, 8], ["relu", "none", "none", "relu"]), ([24], ["relu"])]
POOLS = {"none": (), "3x3s1p1-ceil": (3, 3, 1, 1, 1, 1, 1), "2x2s2": (2, 2, 2, 2, 0, 0, 0),
         "3x3s2p1-ceil": (3, 3, 2, 2, 1, 1, 1)}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DID)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("pool", list(POOLS), ids=list(POOLS))
def test_conv1x1_into(pool, layout, dtype, order):
    with _cudasim.order(order):
        for C in (16, 5):
            for segs, acts in SEGS:
                conv1x1_into_case(dtype, layout == "channels_last", 2, C, 7, 6, segs, acts, POOLS[pool])


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv1x1_into_stride_and_many_segments(layout, order):
    with _cudasim.order(order):
        _stride_and_many_segments(layout)


def _stride_and_many_segments(layout):
    cl = layout == "channels_last"
    # without pool, the 1x1's own stride
    conv1x1_into_case(torch.float32, cl, 2, 16, 7, 7, [3, 7, 6], ["relu", "none", "relu"], stride=2)
    # more segments than one launch takes (kMaxOutSegs = 8): two launches over the weight's rows
    segs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 2, 1]
    acts = ["relu" if i % 2 else "none" for i in range(len(segs))]
    conv1x1_into_case(torch.float32, cl, 1, 16, 5, 5, segs, acts)
    conv1x1_into_case(torch.bfloat16, cl, 1, 16, 5, 5, segs, acts, POOLS["3x3s1p1-ceil"], bias=False)


@pytest.mark.parametrize("order", FWD)
@pytest.mark.parametrize("dtype", DTYPES, ids=DID)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv1x1_into_pool_nan(dtype, layout, order):
    """A NaN anywhere in a window gives NaN (max_pool2d's rule), also at the window's edge and in
    the padding's neighbourhood; the 1x1 then spreads it over every output channel of that pixel."""
    cl = layout == "channels_last"
    for where in [(0, 3, 0, 0), (1, 0, 3, 2), (0, 15, 6, 5)]:
        for pool in ("3x3s1p1-ceil", "2x2s2", "3x3s2p1-ceil"):
            conv1x1_into_case(dtype, cl, 2, 16, 7, 6, [3, 7, 6], ["relu", "none", "relu"], POOLS[pool], nan_at=where)


@pytest.mark.parametrize("order", FWD)
def test_conv1x1_into_pool_negative(order):
    """All-negative inputs: the pool's -inf padding must never win (a zero padding would)."""
    x = -1.0 - torch.rand(1, 8, 5, 5)
    w = torch.randn(4, 8, 1, 1)
    for cl in (False, True):
        xx = x.contiguous(memory_format=CL) if cl else x
        _, out = _slice(1, 4, 5, 5, 4, 0, cl, torch.float32)
        torch.ops.fastcnn._cudasim_conv1x1_into(xx, w, None, [1, 1], ["none"], [3, 3, 1, 1, 1, 1, 0], [out])
        ref = F.conv2d(F.max_pool2d(x.double(), 3, 1, 1), w.double())
        assert _rel(out, ref) <= TOL[torch.float32]


@pytest.mark.parametrize("order", FWD)
def test_conv1x1_into_empty(order):
    w = torch.randn(10, 16, 1, 1)
    x = torch.randn(0, 16, 5, 5).contiguous(memory_format=CL)
    for pool in ([3, 3, 1, 1, 1, 1, 1], []):
        outs = [torch.empty(0, 4, 5, 5).contiguous(memory_format=CL), torch.empty(0, 6, 5, 5).contiguous(memory_format=CL)]
        torch.ops.fastcnn._cudasim_conv1x1_into(x, w, None, [1, 1], ["relu", "none"], pool, outs)


POOL_FORCES = [f"conv_tile={t},conv_vec={v},conv_epi_vec={e},conv_images={1 + t % 2}"
               for t in range(3) for v in (0, 1) for e in (0, 1)]


def sweep_conv1x1_into():
    """Every pooled 1x1 kernel instantiation (dtype x fp32 exact/tf32 x tile x vector/scalar loader)
    and the segment epilogue's vector and element paths; each result checked. Also called by
    tests/test_cuda_sim.py's every-kernel sweep."""
    modes = [(torch.float64, False), (torch.float32, False), (torch.float32, True), (torch.float16, False),
             (torch.bfloat16, False)]
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        for dtype, tf32 in modes:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            for force in POOL_FORCES:
                with _cudasim.forced(force):
                    conv1x1_into_case(dtype, True, 2, 16, 6, 5, [8, 3, 13], ["relu", "none", "relu"],
                                      POOLS["3x3s1p1-ceil"], tf32=tf32)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


@pytest.mark.parametrize("order", FWD)
def test_conv1x1_into_forced_paths(order):
    sweep_conv1x1_into()
