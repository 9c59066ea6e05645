"""Tensors past 2^31 elements index correctly (64-bit offsets and, where needed, 64-bit indices).

CPU (marked slow; ~10 GiB peak, skipped when the machine has less memory available): max_pool2d
(float32, NCHW and channels_last) and add_relu (float16, forward and backward). GPU (marked slow
and cuda): every op forward and backward, max_pool2d also with indices and with one plane of more
than 2^31 elements (indices themselves past 2^31).

The data are cheap to build and to check at this size: a pattern repeated over rows (every row of a
plane equal, so each output row is known from a small reference), and distinct random values
planted in the last rows, which lie past element 2^31 of the storage (a 32-bit offset would wrap
to the first rows: the planted values would then land in, or be read from, the wrong place, and the
checks of the first rows or of the planted rows fail). Outputs are NaN-poisoned before the kernels
run, so an unwritten element fails too. The same checks run in CI at a small size (test_*_logic),
which keeps the test code itself tested on machines that never run the huge cases.
"""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F

import fastcnn.functional as FF
from conftest import BACKEND_DEVICES, assert_close

ops = torch.ops.fastcnn
BIG = 2**31

GPU_BACKEND_DEVICES = [p for p in BACKEND_DEVICES if p.values[0][1] == "cuda"]
CPU_BACKEND = [p for p in BACKEND_DEVICES if p.values[0] == ("cpu", "cpu")]
SMALL_BACKENDS = [p for p in BACKEND_DEVICES]  # the logic checks: every backend (interpreter: small)


def mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def need_memory(gib: float):
    avail = mem_available_gib()
    if avail < gib:
        pytest.skip(f"needs ~{gib:.0f} GiB of free memory, {avail:.1f} GiB available")


@pytest.fixture(autouse=True)
def _free():
    yield
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fmt(layout):
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def _last_offset(t: torch.Tensor) -> int:
    """Storage offset (elements) of the last element."""
    return t.storage_offset() + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))


# ------------------------------------------------------------------------------------------------
# add_relu
# ------------------------------------------------------------------------------------------------

def check_add_relu(device, dtype, shape, dense_grad, huge):
    N, C, H, W = shape
    tail = 4  # planted rows at the end of the last plane
    g = torch.Generator().manual_seed(0)
    pattern = torch.randn(W, generator=g).to(dtype)
    b_cpu = torch.randn(C, 1, W, generator=g).to(dtype)
    planted = (torch.randn(tail, W, generator=g) * 3).to(dtype)
    a = torch.empty(shape, dtype=dtype, device=device)
    a.copy_(pattern.to(device).expand(shape))
    a[N - 1, C - 1, H - tail:] = planted.to(device)
    if huge:
        assert a.numel() > BIG and (N * C * H - tail) * W > BIG, "the planted rows must lie past element 2^31"
    b = b_cpu.to(device)
    out = FF.add_relu(a, b)
    del a
    assert out.shape == shape and out.dtype == dtype
    expect = torch.relu(pattern.float() + b_cpu.float()).to(dtype).to(device)  # [C, 1, W]; one rounding
    expect_planted = torch.relu(planted.float() + b_cpu[C - 1].float()).to(dtype)
    for n in range(N):
        for c in range(C):
            rows = H - tail if (n, c) == (N - 1, C - 1) else H
            assert torch.equal(out[n, c, :rows], expect[c].expand(rows, W)), f"add_relu: plane ({n}, {c}) wrong"
    assert torch.equal(out[N - 1, C - 1, H - tail:].cpu(), expect_planted), "add_relu: rows past 2^31 wrong"

    # backward: grad where out > 0
    grad = torch.ones(shape, dtype=dtype, device=device) if dense_grad else \
        torch.ones((1, 1, 1, 1), dtype=dtype, device=device).expand(shape)
    gi = ops._add_relu_backward(grad, out)
    del grad
    one, zero = torch.ones((), dtype=dtype, device=device), torch.zeros((), dtype=dtype, device=device)
    for n in range(N):
        for c in range(C):
            rows = H - tail if (n, c) == (N - 1, C - 1) else H
            want = torch.where(expect[c] > 0, one, zero).expand(rows, W)
            assert torch.equal(gi[n, c, :rows], want), f"add_relu backward: plane ({n}, {c}) wrong"
    want = torch.where(expect_planted > 0, 1.0, 0.0).to(dtype)
    assert torch.equal(gi[N - 1, C - 1, H - tail:].cpu(), want), "add_relu backward: rows past 2^31 wrong"


# 2 * 4 * 16385 * 16384 = 2^31 + 2^17 elements; float16: 4 GiB per tensor
ADD_HUGE = (2, 4, 16385, 16384)


@pytest.mark.slow
@pytest.mark.parametrize("backend_device", CPU_BACKEND, indirect=True)
def test_add_relu_huge_cpu(backend_device):
    need_memory(10)
    check_add_relu("cpu", torch.float16, ADD_HUGE, dense_grad=False, huge=True)


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend_device", GPU_BACKEND_DEVICES, indirect=True)
def test_add_relu_huge_gpu(dtype, backend_device):
    check_add_relu("cuda", dtype, ADD_HUGE, dense_grad=True, huge=True)


@pytest.mark.parametrize("backend_device", SMALL_BACKENDS, indirect=True)
def test_add_relu_huge_logic(backend_device):
    _, device = backend_device
    check_add_relu(device, torch.float16, (2, 3, 9, 16), dense_grad=True, huge=False)
    check_add_relu(device, torch.float32, (1, 2, 7, 5), dense_grad=False, huge=False)


# ------------------------------------------------------------------------------------------------
# max_pool2d (kernel 2, stride 2, ceil_mode: the odd last row is a window of its own)
# ------------------------------------------------------------------------------------------------

def check_max_pool2d(device, dtype, shape, layout, with_indices, backward, huge):
    N, C, H, W = shape
    assert H % 2 == 1, "odd H: with ceil_mode the last input row is a window of its own"
    tail = 5
    h0 = H - tail  # even: windows do not cross into the planted rows
    p0 = h0 // 2
    g = torch.Generator().manual_seed(1)
    pattern = torch.randn(N, C, 1, W, generator=g).to(dtype)  # every row of a plane equal
    planted = (torch.randn(N, C, tail, W, generator=g) * 3).to(dtype)
    x = torch.empty(shape, dtype=dtype, device=device, memory_format=_fmt(layout))
    x.copy_(pattern.to(device).expand(shape))
    x[:, :, h0:] = planted.to(device)
    if huge:
        assert x.numel() > BIG
        # the planted rows hold the last elements of the storage, past 2^31 (NCHW: the last channel's)
        assert _last_offset(x[N - 1, C - 1, h0:]) >= BIG
    geom = dict(kernel_size=2, stride=2, ceil_mode=True)
    x.requires_grad_(backward)
    res = FF.max_pool2d(x, return_indices=with_indices, **geom)
    out, idx = res if with_indices else (res, None)
    P, Q = out.shape[2:]
    assert (P, Q) == ((H + 1) // 2, (W + 1) // 2) and out.is_contiguous(memory_format=_fmt(layout))

    # rows before the planted ones: every output row equals the pooled pattern
    small = pattern.double().expand(N, C, 2, W)
    ref_row, ref_row_idx = F.max_pool2d(small, return_indices=True, **geom)  # [N, C, 1, Q]
    ref_row = ref_row.to(dtype).to(device)
    assert torch.equal(out[:, :, :p0], ref_row.expand(N, C, p0, Q)), "max_pool2d: rows before 2^31 wrong"
    xs = planted.double()
    ref_tail, ref_tail_idx = F.max_pool2d(xs, return_indices=True, **geom)
    assert torch.equal(out[:, :, p0:].cpu().double(), ref_tail), "max_pool2d: rows past 2^31 wrong"
    if with_indices:
        chunk = 2048
        ref_row_idx = ref_row_idx.to(device)
        for p in range(0, p0, chunk):
            e = min(p + chunk, p0)
            rows = torch.arange(p, e, device=device)
            want = ref_row_idx + (2 * rows * W).view(1, 1, -1, 1)  # first max: the window's first row
            assert torch.equal(idx[:, :, p:e], want), f"max_pool2d indices wrong in rows {p}..{e}"
        assert torch.equal(idx[:, :, p0:].cpu(), ref_tail_idx + h0 * W), "max_pool2d indices past 2^31 wrong"

    if backward:
        gy = torch.ones_like(out)
        (gi,) = torch.autograd.grad(out, x, gy)
        del gy
        # non-overlapping windows: 1 at each window's argmax
        xr = small.clone().requires_grad_()
        (ref_pair,) = torch.autograd.grad(F.max_pool2d(xr, **geom), xr, torch.ones(N, C, 1, Q, dtype=torch.float64))
        pairs = gi[:, :, :h0].unflatten(2, (p0, 2))
        assert torch.equal(pairs, ref_pair.to(dtype).to(device).unsqueeze(2).expand(N, C, p0, 2, W)), \
            "max_pool2d backward: rows before 2^31 wrong"
        xt = xs.clone().requires_grad_()
        (ref_t,) = torch.autograd.grad(F.max_pool2d(xt, **geom), xt, torch.ones_like(ref_tail))
        assert torch.equal(gi[:, :, h0:].cpu().double(), ref_t), "max_pool2d backward: rows past 2^31 wrong"


# (1, 2, 32769, 32768): 2^31 + 2^16 elements in two planes; (1, 1, 46341, 46341): one plane of
# 2^31 + 2^16 + ... elements, so the flat h*W + w indices themselves pass 2^31.
POOL_MANY_PLANES = (1, 2, 32769, 32768)
POOL_ONE_PLANE = (1, 1, 46341, 46341)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend_device", CPU_BACKEND, indirect=True)
def test_max_pool2d_huge_cpu(layout, backend_device):
    """float32 (the CPU computes half types in float32: a float16 input would add an 8 GiB copy):
    8 GiB in, 2 GiB out, forward without indices (int64 indices would add 4 GiB)."""
    need_memory(12)
    check_max_pool2d("cpu", torch.float32, POOL_MANY_PLANES, layout, with_indices=False, backward=False, huge=True)


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.parametrize("shape", [POOL_MANY_PLANES, POOL_ONE_PLANE], ids=["many_planes", "one_plane"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend_device", GPU_BACKEND_DEVICES, indirect=True)
def test_max_pool2d_huge_gpu(shape, layout, backend_device):
    check_max_pool2d("cuda", torch.float16, shape, layout, with_indices=True, backward=True, huge=True)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend_device", SMALL_BACKENDS, indirect=True)
def test_max_pool2d_huge_logic(layout, backend_device):
    _, device = backend_device
    check_max_pool2d(device, torch.float16, (1, 3, 17, 12), layout, with_indices=True, backward=True, huge=False)
    check_max_pool2d(device, torch.float32, (2, 2, 13, 9), layout, with_indices=False, backward=False, huge=False)


# ------------------------------------------------------------------------------------------------
# conv2d / conv1x1 (GPU): images are independent for the forward and grad_input, and only images
# with non-zero input and grad_output add to grad_weight and grad_bias: all images are zero but the
# first and the last (which lies entirely past element 2^31), checked against float64 on the CPU.
# ------------------------------------------------------------------------------------------------

def check_conv(device, dtype, shape, K, k, stride, layout, huge, op="conv2d"):
    N, C, H, W = shape
    pad = k // 2
    g = torch.Generator().manual_seed(2)
    fmt = _fmt(layout)
    x = torch.empty(shape, dtype=dtype, device=device, memory_format=fmt).zero_()
    live = [0, N - 1]
    x_live = torch.randn(len(live), C, H, W, generator=g).to(dtype)
    for i, n in enumerate(live):
        x[n] = x_live[i].to(device)
    if huge:
        assert x.numel() > BIG and x[N - 1].storage_offset() >= BIG, "the last image must lie past element 2^31"
    w_cpu = (torch.randn(K, C, k, k, generator=g) / (C * k * k) ** 0.5).to(dtype)
    b_cpu = torch.randn(K, generator=g).to(dtype)
    x.requires_grad_()
    w = w_cpu.to(device).requires_grad_()
    b = b_cpu.to(device).requires_grad_()
    if op == "conv2d":
        out = FF.conv2d(x, w, b, stride, pad, activation="relu")
    else:
        out = FF.conv1x1(x, w, b, stride)
    P, Q = out.shape[2:]
    if huge:
        assert out.numel() > BIG or stride > 1

    x64 = x_live.double().requires_grad_()
    w64, b64 = w_cpu.double().requires_grad_(), b_cpu.double().requires_grad_()
    ref = F.relu(F.conv2d(x64, w64, b64, stride, pad))
    for i, n in enumerate(live):
        assert_close(out[n], ref[i], dtype, what=f"conv output image {n}")
    # the zero images: relu(bias) exactly
    zero_img = torch.relu(b_cpu.float()).to(dtype).to(device).view(1, K, 1, 1)
    assert torch.equal(out[1:N - 1], zero_img.expand(N - 2, K, P, Q)), "conv output of the zero images wrong"

    gy = torch.empty(out.shape, dtype=dtype, device=device, memory_format=fmt).zero_()
    gy_live = torch.randn(len(live), K, P, Q, generator=g).to(dtype)
    for i, n in enumerate(live):
        gy[n] = gy_live[i].to(device)
    gx, gw, gb = torch.autograd.grad(out, (x, w, b), gy)
    del gy, out
    rx, rw, rb = torch.autograd.grad(ref, (x64, w64, b64), gy_live.double())
    for i, n in enumerate(live):
        assert_close(gx[n], rx[i], dtype, what=f"grad input image {n}")
    assert torch.equal(gx[1:N - 1], torch.zeros((), dtype=dtype, device=device).expand(N - 2, C, H, W)), \
        "grad input of the zero images wrong"
    assert_close(gw, rw, dtype, what="grad weight")
    assert_close(gb, rb, dtype, what="grad bias")


# 8193 images of 64x64x64: 2^31 + 2^18 elements (float16: 4 GiB); the last image starts at 2^31
CONV_HUGE = (8193, 64, 64, 64)


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.parametrize("op,k,stride", [("conv2d", 3, 1), ("conv2d", 3, 2), ("conv1x1", 1, 1), ("conv1x1", 1, 2)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend_device", GPU_BACKEND_DEVICES, indirect=True)
def test_conv_huge_gpu(op, k, stride, layout, backend_device):
    check_conv("cuda", torch.float16, CONV_HUGE, 64, k, stride, layout, huge=True, op=op)


@pytest.mark.parametrize("op,k,stride", [("conv2d", 3, 1), ("conv2d", 3, 2), ("conv1x1", 1, 2)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("backend_device", SMALL_BACKENDS, indirect=True)
def test_conv_huge_logic(op, k, stride, layout, backend_device):
    _, device = backend_device
    check_conv(device, torch.float32, (4, 3, 6, 5), 4, k, stride, layout, huge=False, op=op)
