"""The Hopper path (fastcnn._C_sm90, csrc/sm90_path.h).

Without a GPU: the pure path rule for every conv layer of the four networks and for each fallback
(C = 3 unpadded, groups = 2, NCHW, odd K, misaligned views, capability 8.0 and 10.0, fp32 without
TF32, each TMA limit at and past its edge), the mode switch, the registration guard, the list of
built kernels against the translation units, the per-layer report.

On an H100/H200 (marked cuda; skipped elsewhere): the kernels with FASTCNN_SM90=force against a
float64 reference and against FASTCNN_SM90=off, on op-style cases and the networks' layer shapes,
the fallbacks (ValueError under force, correct results under off), determinism and graph capture.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn import sm90
from fastcnn.bench import shapes

from conftest import TOL, TOL_TF32, rel_err

CL = torch.channels_last
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def meta(*size, dtype=torch.bfloat16, fmt=CL):
    return torch.empty(*size, dtype=dtype, device="meta").contiguous(memory_format=fmt)


def path(x, w, b=None, r=None, stride=1, padding=0, dilation=1, groups=1, capability=(9, 0), tf32=True,
         mode="force", available=True, pad_channels=True):
    return sm90.conv_path(x, w, b, r, stride, padding, dilation, groups, capability=capability, tf32=tf32,
                          mode_name=mode, is_available=available, pad_channels=pad_channels)


def conv_case(C=64, K=64, H=14, W=14, R=3, N=2, dtype=torch.bfloat16, fmt=CL, groups=1, wfmt=None):
    x = meta(N, C, H, W, dtype=dtype, fmt=fmt)
    w = meta(K, C // groups, R, R, dtype=dtype, fmt=wfmt or fmt)
    return x, w


# ------------------------------------------------------------------------------------------------
# Every conv layer of the four networks


def expected(layer, dtype):
    """What the rule must say for a network layer, stated from the layer's own facts."""
    gran = 8 if dtype in (torch.bfloat16, torch.float16) else 4
    gemm = layer.R == 1 and layer.S == 1 and layer.padding == 0 and layer.stride == 1 and dtype == torch.bfloat16
    built = {"fprop": (torch.bfloat16, torch.float16, torch.float32), "dgrad": (torch.bfloat16, torch.float16),
             "wgrad": (torch.bfloat16,)}
    out = {}
    for p in sm90.PASSES:
        if dtype not in built[p]:
            out[p] = ("cuda", f"no sm90 {p} kernel")
        elif layer.K % gran:
            out[p] = ("cuda", f"K={layer.K} is not a multiple of {gran}")
        else:
            padded = layer.C % gran != 0
            out[p] = ("sm90-gemm" if p == "fprop" and gemm else "sm90-conv",
                      f"padded {layer.C} -> {-(-layer.C // gran) * gran}" if padded
                      else "phase convolutions" if p == "dgrad" and layer.stride != 1 else p)
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("net", list(shapes.NETWORKS))
def test_network_layers(net, dtype):
    rows = sm90.layer_paths([net], dtype=dtype)
    assert len(rows) == len(shapes.layers([net], ops=("conv2d", "conv1x1")))
    for layer, got in rows:
        for p, (want_path, want_reason) in expected(layer, dtype).items():
            assert got[p][0] == want_path, f"{net} {layer.name} {p}: {got[p]}"
            assert want_reason in got[p][1], f"{net} {layer.name} {p}: {got[p][1]!r} lacks {want_reason!r}"


def test_resnet50_counts():
    """The bf16 ResNet-50 picture in numbers: where the passes of its 29 conv layer shapes go."""
    rows = sm90.layer_paths(["resnet50"])
    count = {p: {} for p in sm90.PASSES}
    for _, got in rows:
        for p in sm90.PASSES:
            count[p][got[p][0]] = count[p].get(got[p][0], 0) + 1
    assert count["fprop"] == {"sm90-conv": 12, "sm90-gemm": 17}
    # the stem, the three strided 3x3 and the three strided 1x1 downsamples run dgrad as stride phases
    assert count["dgrad"] == {"sm90-conv": 29}
    assert count["wgrad"] == {"sm90-conv": 29}


# ------------------------------------------------------------------------------------------------
# Fallbacks


def test_stem_padded_and_unpadded():
    x, w = conv_case(C=3, K=64, H=224, W=224, R=7)
    padded = path(x, w, stride=2, padding=3)
    assert padded["fprop"][0] == "sm90-conv" and "padded 3 -> 8" in padded["fprop"][1]
    assert padded["wgrad"][0] == "sm90-conv" and "padded 3 -> 8" in padded["wgrad"][1]
    unpadded = path(x, w, stride=2, padding=3, pad_channels=False)
    for p in sm90.PASSES:
        assert unpadded[p][0] == "cuda"
    assert "C=3 is not a multiple of 8" in unpadded["fprop"][1]
    # padding makes a copy, so an NCHW stem input is fine as long as the output is channels_last
    x_nchw = meta(2, 3, 224, 224, fmt=torch.contiguous_format)
    assert path(x_nchw, w, stride=2, padding=3)["fprop"][0] == "sm90-conv"
    # fp32 (TF32) pads to 4 channels
    x32, w32 = conv_case(C=3, K=64, R=3, dtype=torch.float32)
    assert "padded 3 -> 4" in path(x32, w32, padding=1)["fprop"][1]


def test_groups():
    x, w = conv_case(C=64, K=64, groups=2)
    for p, (name, reason) in path(x, w, padding=1, groups=2).items():
        assert name == "cuda" and "groups=2" in reason, p


def test_nchw():
    x, w = conv_case(fmt=torch.contiguous_format)
    got = path(x, w, padding=1)
    assert got["fprop"][0] == "cuda" and "output format is not channels_last" in got["fprop"][1]
    assert got["dgrad"][0] == "cuda" and "output format is not channels_last" in got["dgrad"][1]
    assert got["wgrad"][0] == "cuda" and "input is not channels_last dense" in got["wgrad"][1]
    # NCHW input, channels_last weight: the output is channels_last, the input still is not
    x, w = conv_case(fmt=torch.contiguous_format, wfmt=CL)
    got = path(x, w, padding=1)
    assert "input is not channels_last dense" in got["fprop"][1]
    assert got["dgrad"][0] == "sm90-conv"  # dgrad does not read the input


def test_odd_k():
    x, w = conv_case(K=13)
    for p, (name, reason) in path(x, w, padding=1).items():
        assert name == "cuda" and "K=13 is not a multiple of 8" in reason, p


def test_strided_channels_last_view():
    big = meta(2, 64, 14, 28)
    x = big[..., ::2]  # channels_last strides but not dense along W
    _, w = conv_case()
    got = path(x, w, padding=1)
    assert got["fprop"][0] == "cuda" and "not channels_last dense" in got["fprop"][1]


def misaligned(*size, offset, dtype=torch.bfloat16):
    dense = meta(*size, dtype=dtype)
    base = torch.empty(dense.numel() + offset, dtype=dtype, device="meta")
    return base.as_strided(dense.shape, dense.stride(), offset)


def test_misaligned_views():
    _, w = conv_case()
    x = misaligned(2, 64, 14, 14, offset=3)  # 6 bytes
    got = path(x, w, padding=1)
    assert got["fprop"][0] == "cuda" and "offset 6 bytes" in got["fprop"][1]
    assert got["wgrad"][0] == "cuda" and "offset 6 bytes" in got["wgrad"][1]
    assert got["dgrad"][0] == "sm90-conv"
    x, _ = conv_case()
    got = path(x, w, r=misaligned(2, 64, 14, 14, offset=4), padding=1)
    assert got["fprop"][0] == "cuda" and "residual data pointer" in got["fprop"][1]
    b = torch.empty(65, dtype=torch.bfloat16, device="meta")[1:]
    got = path(x, w, b=b, padding=1)
    assert got["fprop"][0] == "cuda" and "bias" in got["fprop"][1]
    # offsets of whole 16-byte units are fine
    assert path(misaligned(2, 64, 14, 14, offset=8), w, padding=1)["fprop"][0] == "sm90-conv"


def test_real_cpu_tensor_alignment():
    """The alignment is read from the data pointer of real tensors (CPU allocations are aligned)."""
    x = torch.randn(2, 64, 8, 8, dtype=torch.bfloat16).contiguous(memory_format=CL)
    w = torch.randn(64, 64, 3, 3, dtype=torch.bfloat16).contiguous(memory_format=CL)
    assert path(x, w, padding=1)["fprop"][0] == "sm90-conv"
    flat = torch.randn(x.numel() + 1, dtype=torch.bfloat16)
    view = flat[1:].as_strided(x.shape, x.stride())
    assert "offset 2 bytes" in path(view, w, padding=1)["fprop"][1]


@pytest.mark.parametrize("cap", [(8, 0), (10, 0), (12, 0), (9, 1)])
def test_capability(cap):
    x, w = conv_case()
    for p, (name, reason) in path(x, w, padding=1, capability=cap).items():
        assert name == "cuda" and f"compute capability {cap[0]}.{cap[1]}" in reason, p


def test_dtypes():
    x, w = conv_case(dtype=torch.float32)
    got = path(x, w, padding=1, tf32=False)
    assert all(n == "cuda" and "TF32 disallowed" in r for n, r in got.values())
    got = path(x, w, padding=1, tf32=True)
    assert got["fprop"] == ("sm90-conv", got["fprop"][1]) and "TF32" in got["fprop"][1]
    assert got["dgrad"][0] == "cuda" and "no sm90 dgrad kernel for float32" in got["dgrad"][1]
    x, w = conv_case(dtype=torch.float64)
    assert all(n == "cuda" and "float64" in r for n, r in path(x, w, padding=1).values())
    x, w = conv_case(dtype=torch.float16)
    got = path(x, w, padding=1)
    assert got["fprop"][0] == got["dgrad"][0] == "sm90-conv" and got["wgrad"][0] == "cuda"


def test_modes_and_availability():
    x, w = conv_case()
    assert all(r == "FASTCNN_SM90=off" for _, r in path(x, w, padding=1, mode="off").values())
    auto = path(x, w, padding=1, mode="auto")
    assert all(n == "cuda" and "eligible (sm90-conv" in r and "waits for a GPU validation record" in r
               for n, r in auto.values())
    gone = path(x, w, padding=1, available=False)
    assert all(n == "cuda" and "_C_sm90 is not loaded" in r for n, r in gone.values())
    # auto still reports the real reason when the path rejects the call anyway
    x3, w3 = conv_case(K=13)
    assert "K=13" in path(x3, w3, padding=1, mode="auto")["fprop"][1]


def test_empty_and_int32_limits():
    x, w = conv_case(N=0)
    assert all(n == "cuda" and "empty" in r for n, r in path(x, w, padding=1).values())
    x, w = conv_case(N=1 << 20, H=64, W=64)  # N*P*Q = 2^32
    assert all(n == "cuda" and "exceeds int32" in r for n, r in path(x, w, padding=1).values())
    x, w = conv_case(N=(1 << 31) // (64 * 64) - 1, H=64, W=64)  # N*P*Q = 2^31 - 2^12, inside
    assert path(x, w, padding=1)["fprop"][0] == "sm90-conv"


# TMA im2col limits, each at its edge (taken) and one past it (rejected).


def test_padding_corner_limit():
    x, w = conv_case(H=8, W=8)
    at = path(x, w, padding=128)  # fprop corner -128
    assert all(n == "sm90-conv" for n, _ in at.values()), at
    past = path(x, w, padding=129)
    assert all(n == "cuda" and "corners" in r for n, r in past.values()), past


def test_padding_limit():
    x, w = conv_case(H=8, W=8)
    got = path(x, w, padding=257)
    assert all(n == "cuda" and "padding (257, 257) > 256" in r for n, r in got.values())
    got = path(x, w, padding=256)  # inside the padding limit, past the corner limit
    assert all(n == "cuda" and "corners" in r for n, r in got.values())


def test_dilation_offset_limit():
    x, _ = conv_case(H=300, W=300)
    w3 = meta(64, 64, 3, 3)
    at = path(x, w3, padding=127, dilation=127)  # (3-1)*127 = 254, corners -127 / -127
    assert all(n == "sm90-conv" for n, _ in at.values()), at
    w4 = meta(64, 64, 4, 4)
    past = path(x, w4, padding=127, dilation=85)  # (4-1)*85 = 255
    assert all(n == "cuda" and "(255, 255) >= 255" in r for n, r in past.values()), past


def test_upper_corner_limit():
    x, w = conv_case(H=200, W=200)
    at = path(x, w, padding=0, dilation=64)  # upper corner 0 - 2*64 = -128
    assert at["fprop"][0] == "sm90-conv" and at["wgrad"][0] == "sm90-conv"
    past = path(x, w, padding=0, dilation=65)  # -130
    assert past["fprop"][0] == "cuda" and "corners" in past["fprop"][1]


def test_residual_layouts():
    x, w = conv_case(R=1)
    r = meta(2, 64, 14, 14)
    got = path(x, w, r=r)
    assert got["fprop"][0] == "sm90-gemm"
    # channels_last but rows not of one stride (a slice along H): implicit GEMM instead of the GEMM
    r_view = meta(2, 64, 20, 14)[:, :, :14, :]
    assert path(x, w, r=r_view)["fprop"][0] == "sm90-conv"
    r_nchw = meta(2, 64, 14, 14, fmt=torch.contiguous_format)
    got = path(x, w, r=r_nchw)
    assert got["fprop"][0] == "cuda" and "residual strides" in got["fprop"][1]


# ------------------------------------------------------------------------------------------------
# dgrad with stride > 1 as unit-stride phase convolutions (the math the GPU path runs, checked here in
# float64 by rebuilding the input gradient from its phases with F.conv2d)

PHASE_KEYS = ("first", "out", "taps", "r0", "step", "dil", "in_start", "in_len", "pad_lo", "pad_hi")


def dgrad_phases(dx_rows, dy_rows, k, s, p, d):
    flat = torch.ops.fastcnn._sm90_dgrad_phases(dx_rows, dy_rows, k, s, p, d)
    return [dict(zip(PHASE_KEYS, flat[i:i + 10])) for i in range(0, len(flat), 10)]


def dgrad_from_phases(dy, w, H, W, stride, padding, dilation):
    """What cuda/sm90_dispatch.cpp launches, one F.conv2d per phase: the flipped, strided slice of the
    weight (transposed to [C, K]) over the padded slice of dy, into dx[:, :, a::sh, b::sw]."""
    N, K, P, Q = dy.shape
    C, R, S = w.shape[1], w.shape[2], w.shape[3]
    dx = torch.full((N, C, H, W), float("nan"), dtype=dy.dtype)
    for ph in dgrad_phases(H, P, R, stride[0], padding[0], dilation[0]):
        for pw in dgrad_phases(W, Q, S, stride[1], padding[1], dilation[1]):
            if ph["out"] == 0 or pw["out"] == 0:
                continue
            rows, cols = slice(ph["first"], H, stride[0]), slice(pw["first"], W, stride[1])
            if ph["taps"] == 0 or pw["taps"] == 0:
                dx[:, :, rows, cols] = 0
                continue
            wf = w[:, :, ph["r0"]:ph["r0"] + (ph["taps"] - 1) * ph["step"] + 1:ph["step"],
                   pw["r0"]:pw["r0"] + (pw["taps"] - 1) * pw["step"] + 1:pw["step"]].flip(2, 3).transpose(0, 1)
            sub = dy[:, :, ph["in_start"]:ph["in_start"] + ph["in_len"], pw["in_start"]:pw["in_start"] + pw["in_len"]]
            sub = F.pad(sub, (pw["pad_lo"], pw["pad_hi"], ph["pad_lo"], ph["pad_hi"]))
            got = F.conv2d(sub, wf, dilation=(ph["dil"], pw["dil"]))
            assert got.shape[2:] == (ph["out"], pw["out"]), (ph, pw, got.shape)
            dx[:, :, rows, cols] = got
    return dx


def _phase_cases():
    g = torch.Generator().manual_seed(16)
    cases = [(224, 7, 2, 3, 1), (56, 3, 2, 1, 1), (56, 1, 2, 0, 1), (224, 11, 4, 2, 1), (7, 3, 2, 1, 1),
             (9, 5, 3, 2, 2), (1, 1, 2, 0, 1), (2, 3, 3, 1, 1), (8, 2, 2, 0, 3)]
    while len(cases) < 120:
        k, s, p, d = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 8), (2, 5), (0, 4), (1, 4)))
        h = int(torch.randint(1, 24, (1,), generator=g))
        if h + 2 * p >= d * (k - 1) + 1:
            cases.append((h, k, s, p, d))
    return cases


def test_dgrad_phases_rebuild_the_gradient():
    for i, (h, k, s, p, d) in enumerate(_phase_cases()):
        w_ = h + (i % 3)  # non-square inputs, other W-axis phases
        x = torch.randn(2, 3, h, w_, dtype=torch.float64, requires_grad=True)
        wt = torch.randn(5, 3, k, max(1, k - 1), dtype=torch.float64)
        pw = min(p, (max(1, k - 1) - 1) * d // 2 + p)  # keep the W axis valid too
        if w_ + 2 * pw < d * (max(1, k - 1) - 1) + 1:
            continue
        y = F.conv2d(x, wt, None, (s, s + (i % 2)), (p, pw), d)
        dy = torch.randn_like(y)
        (ref,) = torch.autograd.grad(y, x, dy)
        got = dgrad_from_phases(dy, wt, h, w_, (s, s + (i % 2)), (p, pw), (d, d))
        assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12), (h, w_, k, s, p, d)


def test_strided_dgrad_path():
    x, w = conv_case(C=128, K=128, H=56, W=56)
    got = path(x, w, stride=2, padding=1)["dgrad"]
    assert got[0] == "sm90-conv" and "stride (2, 2) as 4 unit-stride phase convolutions" in got[1]
    x1, w1 = conv_case(C=256, K=512, H=56, W=56, R=1)
    one = path(x1, w1, stride=2)["dgrad"][1]
    assert "as 1 unit-stride phase convolutions on the fprop kernel (3 phases zero)" in one
    # the phases have their own im2col corners: a padding of 200 puts fprop's corner at -200, but
    # every phase starts inside dy (the limits are checked per phase; the global ones imply them)
    xb, wb = conv_case(H=40, W=40)
    big = path(xb, wb, stride=2, padding=200)
    assert big["fprop"][0] == "cuda" and "corners" in big["fprop"][1]
    assert big["dgrad"][0] == "sm90-conv", big["dgrad"]
    xd, wd = conv_case(H=300, W=300)
    assert path(xd, wd, stride=2, padding=1, dilation=128)["dgrad"][0] == "cuda"  # (3-1)*128 >= 255


# ------------------------------------------------------------------------------------------------
# Mode switch, registration guard, built kernels, report


def test_mode_switch():
    assert sm90.mode() in sm90.MODES
    before = sm90.mode()
    with sm90.use_mode("force"):
        assert sm90.mode() == "force"
        with sm90.use_mode("off"):
            assert sm90.mode() == "off"
        assert sm90.mode() == "force"
    assert sm90.mode() == before
    with pytest.raises(ValueError, match="FASTCNN_SM90 must be one of"):
        sm90.set_mode("on")
    with pytest.raises(ValueError, match="must be 'auto', 'force' or 'off'"):
        torch.ops.fastcnn._sm90_set_mode("always")


def test_env_var_at_import():
    env = dict(os.environ, FASTCNN_SM90="force")
    out = subprocess.run([sys.executable, "-c", "import fastcnn; print(fastcnn.sm90.mode())"], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "force"
    env["FASTCNN_SM90"] = "sometimes"
    bad = subprocess.run([sys.executable, "-c", "import fastcnn"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "FASTCNN_SM90 must be one of" in bad.stderr


class _FakeTable(ctypes.Structure):
    _fields_ = [("abi", ctypes.c_uint32), ("size", ctypes.c_uint32)] + [(f"p{i}", ctypes.c_void_p) for i in range(13)]


def test_register_guard():
    with pytest.raises(ValueError, match="null table"):
        torch.ops.fastcnn._sm90_register(0)
    fake = _FakeTable(abi=999, size=ctypes.sizeof(_FakeTable))
    with pytest.raises(ValueError, match="table ABI 999"):
        torch.ops.fastcnn._sm90_register(ctypes.addressof(fake))
    fake = _FakeTable(abi=1, size=ctypes.sizeof(_FakeTable))  # right ABI and size, null entries
    with pytest.raises(ValueError, match="null entry"):
        torch.ops.fastcnn._sm90_register(ctypes.addressof(fake))


def test_built_kernels_match_translation_units():
    """The rule's list of built dtypes (sm90_path.cpp) and the TUs csrc/cuda/sm90/<pass>_<dtype>.cu agree."""
    names = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "csrc", "cuda", "sm90", "*.cu"))}
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32}
    for p in sm90.PASSES:
        for tag, dt in dtypes.items():
            x, w = conv_case(dtype=dt)
            name, reason = path(x, w, padding=1)[p]
            assert (name != "cuda") == (f"{p}_{tag}" in names), (p, tag, name, reason)
    for tag, dt in dtypes.items():
        x, w = conv_case(dtype=dt, R=1)
        assert (path(x, w)["fprop"][0] == "sm90-gemm") == (f"gemm1x1_{tag}" in names), tag


def test_report(capsys):
    from fastcnn import sm90_paths

    assert sm90_paths.main(["--nets", "lenet5,resnet50"]) == 0
    out = capsys.readouterr().out
    assert "lenet5     conv1" in out and "K=6 is not a multiple of 8" in out
    assert "layer3.0.conv2" in out and "unit-stride phase convolutions" in out


def test_conv_path_bad_arguments():
    with pytest.raises(ValueError, match="inconsistent sizes"):
        torch.ops.fastcnn._sm90_conv_path([2, 64, 8, 8], [1, 1, 1, 1], 0, [64, 32, 3, 3], [1, 1], [1, 1], [1, 1], 1,
                                          torch.bfloat16, True, False, 1, 0, None, 0, [9, 0], True, "force", True,
                                          True)
    with pytest.raises(ValueError, match="mode must be"):
        torch.ops.fastcnn._sm90_conv_path([2, 64, 8, 8], [4096, 1, 512, 64], 0, [64, 64, 3, 3], [1, 1], [1, 1],
                                          [1, 1], 1, torch.bfloat16, True, False, 1, 0, None, 0, [9, 0], True, "yes",
                                          True, True)


# ------------------------------------------------------------------------------------------------
# On an H100/H200


def _hopper():
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def needs_sm90(fn):
    for mark in (pytest.mark.cuda,
                 pytest.mark.skipif(not _hopper(), reason="needs compute capability 9.0"),
                 pytest.mark.skipif(not sm90.available(),
                                    reason=f"fastcnn._C_sm90 not registered: {sm90.load_error()}")):
        fn = mark(fn)
    return fn


@contextlib.contextmanager
def tf32_flags(on):
    """Set both TF32 switches, restored by hand (pytest's monkeypatch undo deletes torch.backends attributes)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _run(x, w, b, r, stride, padding, dilation, act, need):
    """Forward and the requested gradients through the public op on the CUDA backend."""
    with fastcnn.backend("cuda"):
        out = torch.ops.fastcnn.conv2d(x, w, b, r, [stride] * 2, [padding] * 2, [dilation] * 2, 1, act)
        gy = torch.randn_like(out)
        grads = torch.ops.fastcnn._conv2d_backward(gy, x, w, out if act == "relu" else None, [stride] * 2,
                                                   [padding] * 2, [dilation] * 2, 1, act,
                                                   [need[0], need[1], b is not None, False])
    return out, gy, grads


def _reference(x, w, b, r, stride, padding, dilation, act, out, gy):
    x64, w64 = (t.detach().double().cpu().requires_grad_() for t in (x, w))
    b64 = b.detach().double().cpu().requires_grad_() if b is not None else None
    y = F.conv2d(x64, w64, b64, stride, padding, dilation)
    if r is not None:
        y = y + r.double().cpu()
    ref = torch.relu(y) if act == "relu" else y
    # the gradient mask of the op under test (its output), so a value that rounds across 0 agrees
    g = gy.double().cpu() * ((out.double().cpu() > 0) if act == "relu" else 1)
    grads = torch.autograd.grad(y, [t for t in (x64, w64, b64) if t is not None], g)
    return ref, grads


CASES = [  # C, K, H, W, R, stride, padding, dilation, bias, residual, act, N
    (64, 64, 14, 14, 3, 1, 1, 1, True, True, "relu", 3),
    (64, 128, 13, 11, 3, 2, 1, 1, False, False, "none", 2),
    (32, 64, 9, 9, 5, 1, 2, 1, True, False, "relu", 5),
    (64, 64, 16, 16, 3, 1, 2, 2, True, False, "none", 2),
    (128, 64, 7, 7, 1, 1, 0, 1, True, True, "relu", 4),    # 1x1: the GEMM (bf16)
    (64, 256, 14, 14, 1, 2, 0, 1, False, False, "none", 2),  # 1x1 stride 2: implicit GEMM
    (3, 64, 32, 32, 7, 2, 3, 1, False, False, "relu", 2),  # the stem, channels padded
    (16, 24, 10, 10, 3, 1, 1, 1, True, False, "relu", 37),  # odd batch: uneven wgrad chunks
]


@needs_sm90
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=[f"c{c[0]}k{c[1]}r{c[4]}s{c[5]}" for c in CASES])
def test_force_against_reference(case, dtype):
    with tf32_flags(dtype == torch.float32):
        _check_case(case, dtype)


def _check_case(case, dtype):
    C, K, H, W, R, stride, padding, dilation, bias, residual, act, N = case
    x = torch.randn(N, C, H, W, device="cuda", dtype=dtype).contiguous(memory_format=CL)
    w = (torch.randn(K, C, R, R, device="cuda", dtype=dtype) / (C * R * R) ** 0.5).contiguous(memory_format=CL)
    b = torch.randn(K, device="cuda", dtype=dtype) if bias else None
    P = (H + 2 * padding - dilation * (R - 1) - 1) // stride + 1
    Q = (W + 2 * padding - dilation * (R - 1) - 1) // stride + 1
    r = torch.randn(N, K, P, Q, device="cuda", dtype=dtype).contiguous(memory_format=CL) if residual else None
    paths = sm90.conv_path(x, w, b, r, stride, padding, dilation, mode_name="force")
    need = (paths["dgrad"][0] != "cuda", paths["wgrad"][0] != "cuda")
    tol = TOL_TF32 if dtype == torch.float32 else TOL[dtype]
    with sm90.use_mode("force"):
        out, gy, grads = _run(x, w, b, r, stride, padding, dilation, act, need)
    ref, ref_grads = _reference(x, w, b, r, stride, padding, dilation, act, out, gy)
    assert rel_err(out, ref) <= tol, f"forward {paths['fprop']}"
    it = iter(ref_grads)
    for taken, got, name in zip(need, grads[:2], ("dgrad", "wgrad")):
        want = next(it)
        if taken:
            assert rel_err(got, want) <= tol, f"{name} {paths[name]}"
    if bias:
        assert rel_err(grads[2], ref_grads[-1]) <= tol
    with sm90.use_mode("off"):
        out_off, _, _ = _run(x, w, b, r, stride, padding, dilation, act, (False, False))
    assert rel_err(out_off, ref) <= tol


@needs_sm90
@pytest.mark.parametrize("net", list(shapes.NETWORKS))
def test_network_layers_gpu(net):
    """Each conv layer shape of the network (batch 2, bf16, channels_last): force vs the reference,
    each pass that the rule takes; the passes it rejects raise ValueError under force."""
    for layer in shapes.layers([net], ops=("conv2d", "conv1x1")):
        torch.manual_seed(0)
        N = 2
        x = torch.randn(N, layer.C, layer.H, layer.W, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=CL)
        w = (torch.randn(layer.K, layer.C, layer.R, layer.S, device="cuda", dtype=torch.bfloat16)
             / (layer.C * layer.R * layer.S) ** 0.5).contiguous(memory_format=CL)
        b = torch.randn(layer.K, device="cuda", dtype=torch.bfloat16) if layer.bias else None
        r = (torch.randn(N, layer.K, layer.P, layer.Q, device="cuda", dtype=torch.bfloat16)
             .contiguous(memory_format=CL) if layer.residual else None)
        act = "relu" if layer.relu else "none"
        paths = sm90.conv_path(x, w, b, r, layer.stride, layer.padding, mode_name="force")
        if paths["fprop"][0] == "cuda":
            with sm90.use_mode("force"), pytest.raises(ValueError, match="rejects this call"):
                _run(x, w, b, r, layer.stride, layer.padding, 1, act, (False, False))
            continue
        need = (paths["dgrad"][0] != "cuda", paths["wgrad"][0] != "cuda")
        with sm90.use_mode("force"):
            out, gy, grads = _run(x, w, b, r, layer.stride, layer.padding, 1, act, need)
        ref, ref_grads = _reference(x, w, b, r, layer.stride, layer.padding, 1, act, out, gy)
        assert rel_err(out, ref) <= TOL[torch.bfloat16], f"{layer.name} forward"
        for taken, got, want, name in zip(need, grads[:2], ref_grads[:2], ("dgrad", "wgrad")):
            if taken:
                assert rel_err(got, want) <= TOL[torch.bfloat16], f"{layer.name} {name}"


@needs_sm90
@pytest.mark.parametrize("what", ["groups", "nchw", "odd_k", "fp64", "misaligned"])
def test_fallbacks_gpu(what):
    """The rejected calls: ValueError with the reason under force, the existing kernels' correct result
    under off and auto."""
    C, K, groups, fmt, dtype = 64, 64, 1, CL, torch.bfloat16
    if what == "groups":
        groups = 2
    if what == "nchw":
        fmt = torch.contiguous_format
    if what == "odd_k":
        K = 13
    if what == "fp64":
        dtype = torch.float64
    x = torch.randn(2, C, 10, 10, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
    if what == "misaligned":
        flat = torch.empty(x.numel() + 1, device="cuda", dtype=dtype)
        x = flat[1:].as_strided(x.shape, x.stride()).copy_(x)
    w = torch.randn(K, C // groups, 3, 3, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
    with fastcnn.backend("cuda"):
        with sm90.use_mode("force"), pytest.raises(ValueError, match="rejects this call"):
            torch.ops.fastcnn.conv2d(x, w, None, None, [1, 1], [1, 1], [1, 1], groups, "relu")
        ref = torch.relu(F.conv2d(x.double().cpu(), w.double().cpu(), None, 1, 1, 1, groups))
        for mode in ("off", "auto"):
            with sm90.use_mode(mode):
                out = torch.ops.fastcnn.conv2d(x, w, None, None, [1, 1], [1, 1], [1, 1], groups, "relu")
            assert rel_err(out, ref) <= TOL[dtype], mode


@needs_sm90
def test_deterministic_and_graph_capture():
    """wgrad (batch chunks + fixed-order reduction) is bitwise repeatable; forward and backward
    replay from a CUDA graph with the results of eager calls."""
    x = torch.randn(16, 64, 28, 28, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=CL)
    w = (torch.randn(64, 64, 3, 3, device="cuda", dtype=torch.bfloat16) / 24).contiguous(memory_format=CL)
    with sm90.use_mode("force"), fastcnn.backend("cuda"):
        def step():
            out = torch.ops.fastcnn.conv2d(x, w, None, None, [1, 1], [1, 1], [1, 1], 1, "relu")
            return out, torch.ops.fastcnn._conv2d_backward(out, x, w, out, [1, 1], [1, 1], [1, 1], 1, "relu",
                                                           [True, True, False, False])

        out1, g1 = step()
        out2, g2 = step()
        assert torch.equal(out1, out2) and torch.equal(g1[0], g2[0]) and torch.equal(g1[1], g2[1])
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            step()  # warm-up on the capture stream (parameter caches, smem attributes)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out3, g3 = step()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out3, out1) and torch.equal(g3[0], g1[0]) and torch.equal(g3[1], g1[1])
