"""cuda-sim's own tests: the PTX primitives pinned to the PTX ISA's tables against a plain matrix
product, and one purpose-written kernel per check the emulator makes (csrc/cuda/sim/selftest.cu).

The references here are written from the PTX ISA / CUDA Programming Guide text, independently of
csrc/cuda/sim/simt.cpp. Skipped (with the reason) when fastcnn._C_cudasim is not built.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import fastcnn
import fastcnn.functional as FF
import fastcnn.testing
from fastcnn import _cudasim
from fastcnn.testing import assert_close
from test_add_relu import run_case as run_add_relu
from test_max_pool2d import INT_TYPES, _ints, check_int_case
from test_max_pool2d import run_case as run_max_pool2d
from test_numerics import test_max_pool2d_empty_window as run_empty_window
from test_fused_cuda_sim import sweep_conv1x1_into

SIM = ("cuda-sim", "cpu")  # the (backend, device) pair of the op tests' run_case helpers

ops = _cudasim.load()
pytestmark = [pytest.mark.cudasim, pytest.mark.skipif(ops is None, reason=f"cuda-sim unavailable: {_cudasim.ERROR}")]

ORDERS = ["fwd", "rev", "rand:7"]


@pytest.fixture(params=ORDERS)
def order(request):
    prev = ops.get_order()
    ops.set_order(request.param)
    yield request.param
    ops.set_order(prev)


# ---- mma.sync ---------------------------------------------------------------------------------
def _tf32_truncate(x: torch.Tensor) -> torch.Tensor:
    """The 19 bits of an fp32 register a tf32 mma reads (sign, exponent, 10 mantissa bits)."""
    return (x.view(torch.int32) & ~0x1FFF).view(torch.float32)


@pytest.mark.parametrize("kind,dtype,k", [(0, torch.float16, 16), (1, torch.bfloat16, 16), (2, torch.float32, 8)],
                         ids=["m16n8k16.f16", "m16n8k16.bf16", "m16n8k8.tf32"])
def test_mma(kind, dtype, k):
    for trial in range(4):
        A = torch.randn(16, k).to(dtype)
        B = torch.randn(k, 8).to(dtype)
        C = torch.randn(16, 8)
        if trial == 3:  # distinct powers of two: any misplaced element changes the result exactly
            A = (2.0 ** torch.randint(-4, 4, (16, k))).to(dtype) * torch.sign(torch.randn(16, k)).to(dtype)
        D = ops.selftest_mma(kind, A, B, C)
        a, b = A.double(), B.double()
        if kind == 2:
            a, b = _tf32_truncate(A).double(), _tf32_truncate(B).double()
        ref = a @ b + C.double()  # products exact in double; one rounding to fp32
        err = (D.double() - ref).abs()
        assert (err <= ref.abs() * 2.0**-24 * (1 + 1e-9) + 1e-30).all(), f"max error {err.max().item():.3e}"


def test_cvt_rna_tf32():
    bits = torch.randint(-(2**31), 2**31 - 1, (4096,), dtype=torch.int64).to(torch.int32)
    ties = (torch.randint(0, 2**18, (512,), dtype=torch.int32) << 13) | 0x1000  # exactly half an ulp
    special = torch.tensor([0x7F800000, 0xFF800000, 0x7F800001, 0x7FC00000, 0x7F7FF000, 0x00000FFF, 0x80001000],
                           dtype=torch.int64).to(torch.int32)
    x = torch.cat([bits, ties, ties | (1 << 31), special]).view(torch.float32)
    got = ops.selftest_tf32(x).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    u = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    # Round to nearest, ties away from zero, on the magnitude: add half an ulp (0x1000), truncate.
    exp_all_ones = (u & 0x7F800000) == 0x7F800000
    nan = exp_all_ones & ((u & 0x007FFFFF) != 0)
    want = ((u + 0x1000) & 0xFFFFE000) & 0xFFFFFFFF
    assert torch.equal(got[~nan], want[~nan])
    assert torch.isnan(ops.selftest_tf32(x)[nan]).all()
    assert (got.view(-1)[-3] & 0xFFFFFFFF) == 0x7F800000  # 0x7F7FF000 rounds up to +inf (rna overflows)


# ---- ldmatrix ---------------------------------------------------------------------------------
@pytest.mark.parametrize("trans", [False, True], ids=["x4", "x4.trans"])
def test_ldmatrix(trans):
    mats = torch.randint(-(2**15), 2**15 - 1, (4, 8, 8), dtype=torch.int64).to(torch.int16)
    slot_of = torch.randperm(32).to(torch.int32)  # row (i, r) lives at shared slot slot_of[8i + r]
    out = ops.selftest_ldmatrix(mats.reshape(-1), slot_of, trans).to(torch.int64) & 0xFFFFFFFF
    m = mats.to(torch.int64) & 0xFFFF
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for i in range(4):
            # PTX ISA, ldmatrix: thread L holds elements (row L/4, cols 2*(L%4), +1) of matrix i;
            # with .trans the matrix is read column-major: (rows 2*(L%4), +1; col L/4).
            lo, hi = (m[i, 2 * t, g], m[i, 2 * t + 1, g]) if trans else (m[i, g, 2 * t], m[i, g, 2 * t + 1])
            assert out[lane, i].item() == (lo | (hi << 16)).item(), f"lane {lane} matrix {i}"


# ---- shuffles ---------------------------------------------------------------------------------
def _shfl_ref(mode: int, width: int, operand: list[int], vals: list[int]) -> list[int]:
    """CUDA Programming Guide, Warp Shuffle Functions, for each lane."""
    out = []
    for lane in range(32):
        b, base, pos = operand[lane], lane // width * width, lane % width
        if mode == 0:    # up: the lane delta below, within the segment, else own
            src = lane - b if pos >= b else lane
        elif mode == 1:  # down: the lane delta above, within the segment, else own
            src = lane + b if pos + b < width else lane
        elif mode == 2:  # xor: lane ^ mask; a later segment returns own (earlier ones are reachable)
            src = lane ^ b
            src = src if src // width <= lane // width and src < 32 else lane
        else:            # idx: srcLane modulo width within the segment
            src = base + b % width
        out.append(vals[src])
    return out


@pytest.mark.parametrize("mode", [0, 1, 2, 3], ids=["up", "down", "xor", "idx"])
@pytest.mark.parametrize("width", [32, 16, 8, 4])
def test_shfl(mode, width):
    g = torch.Generator().manual_seed(mode * 100 + width)
    vals = torch.randint(-(2**62), 2**62, (32,), dtype=torch.int64, generator=g)
    for operand in (torch.full((32,), 1), torch.full((32,), 3), torch.randint(0, 32, (32,), generator=g)):
        operand = operand.to(torch.int32)
        got = ops.selftest_shfl(mode, width, operand, vals).tolist()
        assert got == _shfl_ref(mode, width, operand.tolist(), vals.tolist())


# ---- cp.async ---------------------------------------------------------------------------------
def test_cp_async_zero_fill_and_deferred_copy(order):
    src = torch.randint(0, 256, (512,), dtype=torch.int64).to(torch.uint8)
    valid = torch.randint(0, 2, (32,), dtype=torch.int64).to(torch.uint8)
    valid[0], valid[1] = 1, 0
    out, early = ops.selftest_cp_async(src, valid, True)
    for t in range(32):
        s = 31 - t  # the kernel prints thread 31-t's 16 bytes
        want = src[16 * s:16 * s + 16] if valid[s] else torch.zeros(16, dtype=torch.uint8)
        assert torch.equal(out[t], want), f"thread {t}"
    # Before its wait_group the destination holds poison (the copy happens at the wait).
    assert (early == 0xFF).all()


# ---- the checks -------------------------------------------------------------------------------
def test_missing_barrier_is_seen(order):
    good = ops.selftest_check("barrier", 1)[:256]
    assert torch.equal(good, (torch.arange(256) + 32) % 256 * 7 + 1)
    bad = ops.selftest_check("barrier", 0)[:256]
    # Depth-first by warp: a warp reads the next one's slots before that warp ran (poison, -1).
    assert (bad == -1).any() and not torch.equal(bad, good)


def test_ldmatrix_before_cp_async_wait():
    src = torch.arange(512).to(torch.uint8)
    with pytest.raises(RuntimeError, match=r"ldmatrix_before_wait_kernel.*CTA \(0,0,0\), thread \(\d+,0,0\).*"
                                           r"cp\.async of thread \d+ into them is still pending"):
        ops.selftest_check("ldmatrix_before_wait", 0, src)


def test_shared_out_of_bounds_write():
    ops.selftest_check("smem_oob", 0)
    with pytest.raises(RuntimeError, match=r"smem_oob_kernel.*shared memory written out of bounds at dynamic "
                                           r"offset 512 \(the launch has 512 bytes"):
        ops.selftest_check("smem_oob", 8)


def test_divergent_collective(order):
    with pytest.raises(RuntimeError, match=r"divergent_kernel.*thread .*divergent warp collective: lanes 0-15 "
                                           r"wait at __shfl_\*_sync \(csrc/cuda/sim/selftest\.cu:\d+\), lanes "
                                           r"16-31 have exited"):
        ops.selftest_check("divergent", 0)


def test_threads_at_different_barriers(order):
    with pytest.raises(RuntimeError, match=r"split_barrier_kernel.*waits at __syncthreads .* another one"):
        ops.selftest_check("split_barrier", 0)


def test_pending_cp_async_at_exit():
    src = torch.arange(512).to(torch.uint8)
    with pytest.raises(RuntimeError, match=r"pending_kernel.*exits with 1 cp\.async copy never waited for"):
        ops.selftest_check("pending", 0, src)


def test_dynamic_shared_memory_over_48k_needs_the_attribute():
    with pytest.raises(RuntimeError, match=r"big_smem_kernel.*65536 bytes of dynamic shared memory exceed 48 KB "
                                           r"without cudaFuncSetAttribute"):
        ops.selftest_check("big_smem", 65536)
    assert ops.selftest_check("big_smem", 49152)[0].item() == 1  # 48 KB needs no attribute
    assert ops.selftest_check("big_smem", -65536)[0].item() == 1  # with the attribute (per kernel, kept)
    assert ops.selftest_check("big_smem", 65536)[0].item() == 1
    with pytest.raises(RuntimeError, match=r"exceed the 227 KB per block"):
        ops.selftest_check("big_smem", -(227 * 1024 + 16))


def test_launch_limits():
    with pytest.raises(RuntimeError, match=r"block \(1025,1,1\) exceeds 1024 threads"):
        ops.selftest_check("block_size", 1025)
    with pytest.raises(RuntimeError, match=r"grid \(1,65536,1\) exceeds"):
        ops.selftest_check("grid_y", 65536)
    ops.selftest_check("block_size", 256)
    name = next(k for k in ops.launched(False) if "bounded_kernel" in k)
    ops.set_launch_bounds(f"{name}=128")
    try:
        ops.selftest_check("block_size", 128)
        with pytest.raises(RuntimeError, match=r"256 threads per block exceed the kernel's __launch_bounds__ \(128\)"):
            ops.selftest_check("block_size", 256)
    finally:
        ops.set_launch_bounds("")
        _cudasim._ops = None
        _cudasim.load()  # restores the nvcc build's bounds


# ---- AddressSanitizer (its findings abort: each runs in a subprocess) -------------------------
def _asan_runtime() -> str | None:
    """LD_PRELOAD for an ASan extension in an uninstrumented python: the ASan runtime first, and
    libstdc++ (ASan's __cxa_throw interceptor needs it loaded when ASan initialises)."""
    libs = []
    for name in ("libasan.so", "libstdc++.so.6"):
        try:
            path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        except OSError:
            return None
        if not (os.path.isabs(path) and os.path.exists(path)):
            return None
        libs.append(path)
    return " ".join(libs)


def _asan_built() -> bool:
    import glob
    import fastcnn

    return bool(glob.glob(os.path.join(os.path.dirname(fastcnn.__file__), "_C_cudasim_asan*.so")))


asan = pytest.mark.skipif(not (_asan_runtime() and _asan_built()),
                          reason="ASan build of cuda-sim absent (make cuda-sim, FASTCNN_SIM_ASAN_BUILD=1) or no libasan")


def run_asan(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FASTCNN_SIM_ASAN="1", LD_PRELOAD=_asan_runtime() or "",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1")
    prelude = "import torch, fastcnn\nfrom fastcnn import _cudasim\nops = _cudasim.load()\nassert ops is not None, _cudasim.ERROR\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=300)


@asan
def test_asan_global_out_of_bounds():
    ok = run_asan("ops.selftest_check('global_oob', 256, torch.zeros(256)); print('ran')")
    assert ok.returncode != 0 and "heap-buffer-overflow" in ok.stderr, ok.stderr[-3000:]
    assert "global_oob_kernel" in ok.stderr


@asan
def test_asan_shared_out_of_bounds():
    res = run_asan("ops.selftest_check('smem_oob', 8)")
    assert res.returncode != 0 and "use-after-poison" in res.stderr, res.stderr[-3000:]
    assert "smem_oob_kernel" in res.stderr


@asan
def test_asan_clean_run():
    res = run_asan("""
        out, early = ops.selftest_cp_async(torch.arange(512).to(torch.uint8), torch.ones(32, dtype=torch.uint8), False)
        assert torch.equal(out[31], torch.arange(16).to(torch.uint8))
        print("clean")
    """)
    assert res.returncode == 0 and "clean" in res.stdout, res.stderr[-3000:]


# ---- selection: the backend's names, explain, the environment switch ----------------------------
def test_selected_like_any_backend():
    assert "cuda-sim" in fastcnn.available_backends()
    x, w = torch.randn(1, 8, 6, 5), torch.randn(8, 8, 3, 3)
    with fastcnn.backend("cuda-sim"):
        assert fastcnn.resolve("conv2d", x.device) == "cuda-sim"
        out, ran = fastcnn.explain(FF.conv2d, x, w, padding=1)
    assert [(r.op, r.backend) for r in ran] == [("conv2d", "cuda-sim")], ran
    with fastcnn.backend("auto"):
        assert fastcnn.resolve("conv2d", x.device) == "cpu"  # never chosen by auto
    assert_close(out, torch.nn.functional.conv2d(x.double(), w.double(), padding=1), torch.float32)
    code = ("import torch, fastcnn; x = torch.randn(2, 3, 4, 5); "
            "out, ran = fastcnn.explain(fastcnn.functional.add_relu, x, x); print(ran[0].backend)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, FASTCNN_BACKEND="cuda-sim"))
    assert res.returncode == 0 and res.stdout.strip() == "cuda-sim", res.stderr[-2000:]


# ---- the conv kernels on every forced tile and path, through the routed ops --------------------
from fastcnn.testing import TOL, TOL_TF32  # noqa: E402
CONV_GEOMS = {  # N, C, H, W, K, R, stride, padding, dilation, groups
    "3x3": (2, 16, 7, 6, 40, 3, 1, 1, 1, 1),
    "7x7s2-c3": (1, 3, 11, 9, 16, 7, 2, 3, 1, 1),
    "1x1s2": (2, 24, 7, 7, 72, 1, 2, 0, 1, 1),
    "3x3d2g2": (1, 16, 9, 8, 24, 3, 1, 2, 2, 2),
}
# relu_grad_once: the backward's ReLU gradient materialised once (1) or masked by each pass's loader
# (0); conv_pad_c: a forward with C not a whole number of 16-byte chunks padded to them (1) or
# on the scalar loader as it is (0); each tile and loader path sees both.
FORCES = [f"conv_tile={t},wgrad_tile={t % 2},conv_vec={v},conv_epi_vec={v},wgrad_vec_a={v},wgrad_vec_b={1 - v},"
          f"conv_images=1,wgrad_splits={2 + t},bias_splits=2,bias_chan_inner={v},relu_grad_once={(t + v) % 2},"
          f"conv_pad_c={(t + 1 + v) % 2}"
          for t in range(3) for v in (0, 1)]


def _rel(out, ref):
    out, ref = out.double(), ref.double()
    return float("inf") if not torch.isfinite(out).all() else ((out - ref).norm() / ref.norm()).item()


def _conv_case(dtype, channels_last, geom, tol):
    N, C, H, W, K, R, st, pd, dl, G = geom
    x = torch.randn(N, C, H, W, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = (torch.randn(K, C // G, R, R) / (C // G * R * R) ** 0.5).to(dtype)
    b = torch.randn(K, dtype=dtype)
    P, Q = (H + 2 * pd - dl * (R - 1) - 1) // st + 1, (W + 2 * pd - dl * (R - 1) - 1) // st + 1
    r = torch.randn(N, K, P, Q, dtype=dtype)
    args = ([st] * 2, [pd] * 2, [dl] * 2, G, "relu")
    y = torch.ops.fastcnn.conv2d(x, w, b, r, *args)
    xd, wd, bd, rd = (t.double().requires_grad_() for t in (x, w, b, r))
    pre = torch.nn.functional.conv2d(xd, wd, bd, st, pd, dl, G) + rd
    assert _rel(y, pre.relu()) <= tol, "forward"
    go = torch.randn_like(y)
    gx, gw, gb, ga = torch.ops.fastcnn._conv2d_backward(go, x, w, y, *args, [True, True, True, True])
    g = go.double() * (y.double() > 0)  # the mask of the output the op computed
    rx, rw, rb = torch.autograd.grad(pre, [xd, wd, bd], g)
    for name, got, want in (("grad_input", gx, rx), ("grad_weight", gw, rw), ("grad_bias", gb, rb), ("grad_preact", ga, g)):
        assert _rel(got, want) <= tol, name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("force", range(len(FORCES)))
def test_conv_engine_forced_paths(dtype, force, order):
    with _cudasim.forced(FORCES[force]), fastcnn.backend("cuda-sim"):
        for i, geom in enumerate(CONV_GEOMS.values()):
            _conv_case(dtype, (i + force) % 2 == 1, geom, TOL[dtype])


# ---- the packed-weight cache (csrc/cuda/conv_engine.cpp) -----------------------------------------
def _cache():
    return fastcnn.weight_cache_info()["cudasim"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d).split(".")[1])
def test_weight_cache_sees_in_place_updates(dtype, order):
    """A cached packed weight is reused while the weight is unchanged, and never after an in-place
    write (version counter), for the fprop and dgrad layouts; inference tensors bypass the cache."""
    N, C, H, W, K = 2, 16, 7, 6, 24
    args = ([1, 1], [1, 1], [1, 1], 1, "relu")
    fastcnn.clear_weight_cache()
    x = torch.randn(N, C, H, W, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(K, C, 3, 3) / (9 * C) ** 0.5).to(dtype)
    go = torch.randn(N, K, H, W, dtype=dtype)

    def check(y, gx):
        xd, wd = x.double().requires_grad_(), w.double()
        pre = torch.nn.functional.conv2d(xd, wd, None, 1, 1)
        assert _rel(y, pre.relu()) <= TOL[dtype], "forward"
        (rx,) = torch.autograd.grad(pre, [xd], go.double() * (y.double() > 0))
        assert _rel(gx, rx) <= TOL[dtype], "grad_input"

    with fastcnn.backend("cuda-sim"):
        def run():
            y = torch.ops.fastcnn.conv2d(x, w, None, None, *args)
            gx = torch.ops.fastcnn._conv2d_backward(go, x, w, y, *args, [True, False, False, False])[0]
            return y, gx

        y1, gx1 = run()
        check(y1, gx1)
        assert _cache()["misses"] == 2 and _cache()["entries"] == 2  # fprop + dgrad layouts
        y1b, gx1b = run()
        assert _cache()["hits"] == 2 and _cache()["entries"] == 2
        assert torch.equal(y1, y1b) and torch.equal(gx1, gx1b)
        with torch.no_grad():
            w[:, :4].neg_()  # in place, part of the weight
        y2, gx2 = run()
        assert _cache()["misses"] == 4 and _cache()["entries"] == 2  # the old versions dropped
        assert not torch.equal(y1, y2) and not torch.equal(gx1, gx2)
        check(y2, gx2)
        w.copy_(torch.randn_like(w) / (9 * C) ** 0.5)  # copy_ bumps the version too
        check(*run())
        fastcnn.clear_weight_cache()
        assert _cache() == {"entries": 0, "bytes": 0, "hits": 0, "misses": 0}
        with torch.inference_mode():
            wi = w.clone()
        yi = torch.ops.fastcnn.conv2d(x, wi, None, None, *args)
        assert torch.equal(yi, run()[0]) and _cache()["entries"] == 2  # wi: no entry
        wg = w.clone().requires_grad_()  # a trained weight: .data writes (gradcheck) are invisible to _version
        yg = torch.ops.fastcnn.conv2d(x, wg, None, None, *args)
        wg.data.neg_()
        yg2 = torch.ops.fastcnn.conv2d(x, wg, None, None, *args)
        assert not torch.equal(yg, yg2)
        ref = torch.nn.functional.conv2d(x.double(), wg.detach().double(), None, 1, 1).relu()
        assert _rel(yg2, ref) <= TOL[dtype]
        assert _cache()["entries"] == 2  # wg: never cached


def test_weight_cache_never_hits_a_freed_storage(order):
    fastcnn.clear_weight_cache()
    x = torch.randn(1, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    args = ([1, 1], [1, 1], [1, 1], 1, "none")
    with fastcnn.backend("cuda-sim"):
        for _ in range(4):  # fresh weights of one shape: the allocator may hand out the same address
            w = torch.randn(8, 8, 3, 3)
            y = torch.ops.fastcnn.conv2d(x, w, None, None, *args)
            assert _rel(y, torch.nn.functional.conv2d(x.double(), w.double(), None, 1, 1)) <= TOL[torch.float32]
            del w
        assert _cache()["hits"] == 0 and _cache()["entries"] == 1  # expired entries are dropped


def test_cached_forward_has_no_aten_copy_or_fill():
    """Issue 17's per-call target, its ATen half: a conv forward with a cached (frozen) weight and a
    channels_last input runs no ATen copy, fill or zeros next to the kernel (cuda-sim runs the CUDA
    launchers, so their ATen calls are the GPU build's)."""
    fastcnn.clear_weight_cache()
    x = torch.randn(2, 16, 7, 6).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(24, 16, 3, 3), torch.randn(24)
    args = ([1, 1], [1, 1], [1, 1], 1, "relu")
    fastcnn.testing.set_poison(False)  # the suite's NaN fill of new outputs is a test-only aten::fill_
    runs = []
    with fastcnn.backend("cuda-sim"):
        for _ in range(2):  # the first packs the weight (and fills the cache), the second does not
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                torch.ops.fastcnn.conv2d(x, w, b, None, *args)
            runs.append({e.key for e in prof.key_averages()})
    extra = [sorted(n for n in names if any(k in n for k in ("copy", "fill", "zero"))) for names in runs]
    assert "fastcnn::_cudasim_conv2d" in runs[1], sorted(runs[1])
    assert "aten::copy_" in extra[0], extra[0]  # the packing, seen by the profiler
    assert not extra[1], extra[1]


# ---- max_pool2d and add_relu on every forced path (both index widths, vector and scalar) --------
POOL_CASES = [  # (N, C, H, W, kernel, stride, padding, dilation, ceil_mode); C = 16: every dtype's vectors
    (2, 16, 9, 11, 3, 2, 1, 1, True),
    (1, 16, 10, 9, (3, 2), (2, 1), (1, 0), (2, 3), False),
    (1, 3, 7, 6, 2, 3, 1, 2, True),  # C = 3: the scalar NHWC kernels
]
POOL_FORCES = [f"pool_index32={i},pool_vec={v}" for i in (1, 0) for v in (1, 0)]
EW_CASES = [  # (a's shape, b's shape, layout): flat, broadcast (strided), misaligned (offset views)
    ((2, 8, 5, 7), (2, 8, 5, 7), "contiguous"),
    ((2, 8, 5, 7), (8, 1, 7), "contiguous"),
    ((3, 8, 5, 6), (3, 8, 5, 6), "channels_last"),
    ((2, 3, 5, 7), (2, 3, 5, 7), "offset"),
    ((2, 3, 5, 7), (2, 3, 5, 7), "strided"),
]
EW_FORCES = [f"ew_index32={i},ew_vec={v},ew_flat={f}" for i in (1, 0) for v in (1, 0) for f in (1, 0)]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = lambda d: str(d).split(".")[1]  # noqa: E731


def _int_pool_cases(dtype):
    """The integer forwards (no backward: integer tensors have no gradient) on every forced path:
    C = 16 reaches each integer type's vector width, C = 3 the scalar kernels; both layouts."""
    for shape, (k, s, p, d, ceil) in (((2, 16, 9, 11), (3, 2, 1, 1, True)), ((1, 3, 7, 6), (2, 3, 1, 2, True))):
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = _ints(shape, dtype, "cpu").contiguous(memory_format=fmt)
            check_int_case(x, k, s, p, d, ceil)


@pytest.mark.parametrize("dtype", INT_TYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("force", POOL_FORCES)
def test_max_pool2d_integer_forced_paths(dtype, force, order):
    with _cudasim.forced(force), fastcnn.backend("cuda-sim"):
        _int_pool_cases(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("force", POOL_FORCES)
def test_max_pool2d_forced_paths(dtype, force, order):
    with _cudasim.forced(force), fastcnn.backend("cuda-sim"):
        for cfg in POOL_CASES:
            for layout in ("contiguous", "channels_last"):
                run_max_pool2d(cfg, SIM, dtype, layout)
        if dtype == torch.float64:  # windows with no input element: their gradient goes nowhere
            # (PyTorch's own backward is no reference there: test_numerics.py says why)
            for layout in ("contiguous", "channels_last"):
                run_empty_window(SIM, layout)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("force", EW_FORCES)
def test_add_relu_forced_paths(dtype, force, order):
    with _cudasim.forced(force), fastcnn.backend("cuda-sim"):
        for sa, sb, layout in EW_CASES:
            run_add_relu(sa, sb, SIM, dtype, layout)


# ---- every kernel instantiation of the nvcc build runs ------------------------------------------
# The list is the nvcc build's (bench/results/cuda_ptxas.csv: tools/ptxas_usage.py over `make
# cuda-check`'s sources, one row per kernel and arch), never what cuda-sim happened to launch; the
# kernels cuda-sim compiled from the same source (its symbols) must be the same list, so a kernel
# added without regenerating the CSV fails here too.
KERNEL_DECL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\((?:[^()]|\([^()]*\))*\)\s*)?(\w+)\s*\(")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source_kernel_names() -> set[str]:
    names = set()
    for path in glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")) + glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cuh")):
        names.update(KERNEL_DECL.findall(open(path).read()))
    return names


def _sim_kernel_symbols(names: set[str]) -> set[str]:
    """The sim module's symbols of those kernel templates (every instantiation it compiled)."""
    so = importlib.util.find_spec(f"fastcnn.{_cudasim.module_name()}").origin
    mangled = subprocess.run(["nm", "--defined-only", so], capture_output=True, text=True, check=True).stdout.split()
    mangled = [m for m in mangled if m.startswith("_ZN7fastcnn4cuda")]
    demangled = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True,
                               check=True).stdout.splitlines()
    pat = re.compile(r"^(?:void )?fastcnn::cuda::(?:\w+::|\(anonymous namespace\)::)*(" + "|".join(names) + r")<")
    return {m for m, d in zip(mangled, demangled) if pat.match(d)}


def _sweep_every_instantiation():
    """Small calls that reach each kernel instantiation through the routed ops: the conv family per
    dtype (fp64, fp32 exact, tf32, fp16, bf16) x 3x3 and 1x1 x every tile x vector/scalar loads
    and epilogue x every wgrad tile x its two operands' loaders x bias-grad loops; pool and add_relu
    per dtype x every forced path; conv1x1_into's pooled 1x1 kernels. Each result is checked as in
    the tests above."""
    geoms = [(2, 16, 6, 5, 16, 3, 1, 1, 1, 1), (2, 16, 5, 6, 16, 1, 1, 0, 1, 1)]
    modes = [(torch.float64, False), (torch.float32, False), (torch.float32, True), (torch.float16, False),
             (torch.bfloat16, False)]
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        for dtype, tf32 in modes:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            for geom in geoms:
                for t in range(3):
                    for v in (0, 1):
                        for vb in (0, 1):
                            force = (f"conv_tile={t},conv_vec={v},conv_epi_vec={vb},wgrad_tile={t % 2},wgrad_vec_a={v},"
                                     f"wgrad_vec_b={vb},bias_chan_inner={v ^ vb},conv_images={1 + t % 2},"
                                     f"relu_grad_once={(t + v + vb) % 2},conv_pad_c={(t + vb) % 2}")
                            with _cudasim.forced(force):
                                _conv_case(dtype, True, geom, TOL_TF32 if tf32 else TOL[dtype])
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev
    for dtype in DTYPES:
        for force in POOL_FORCES:
            with _cudasim.forced(force):
                for layout in ("contiguous", "channels_last"):
                    run_max_pool2d(POOL_CASES[0], SIM, dtype, layout)
        for force in EW_FORCES:
            with _cudasim.forced(force):
                run_add_relu(*EW_CASES[0][:2], SIM, dtype, "contiguous")
                run_add_relu(*EW_CASES[1][:2], SIM, dtype, "contiguous")
    for dtype in INT_TYPES:
        for force in POOL_FORCES:
            with _cudasim.forced(force):
                _int_pool_cases(dtype)
    sweep_conv1x1_into()  # conv1x1_into's pooled 1x1 kernels (issue 18)


def test_every_nvcc_kernel_runs():
    nvcc = set(_cudasim.nvcc_kernels())
    assert len(nvcc) >= 200, f"bench/results/cuda_ptxas.csv lists {len(nvcc)} kernels"
    names = _source_kernel_names()
    assert {"conv_kmajor_kernel", "conv_wgrad_kernel", "pool_fwd_nchw", "ew_flat_vec_kernel"} <= names, names
    compiled = _sim_kernel_symbols(names)
    assert compiled == nvcc, ("the nvcc build's kernel list (bench/results/cuda_ptxas.csv; regenerate it with "
                              "tools/ptxas_usage.py) and the kernels compiled from csrc/cuda differ: "
                              f"only in the CSV {sorted(nvcc - compiled)[:5]}, only compiled {sorted(compiled - nvcc)[:5]}")
    ops.launched(True)
    with fastcnn.backend("cuda-sim"):
        _sweep_every_instantiation()
    ran = set(ops.launched(True))
    missing = sorted(nvcc - ran)
    demangled = subprocess.run(["c++filt"], input="\n".join(missing), capture_output=True, text=True).stdout
    assert not missing, f"{len(missing)} of {len(nvcc)} kernels never ran:\n{demangled}"
