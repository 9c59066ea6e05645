"""Every conv, 1x1, max-pool and add layer of LeNet-5, AlexNet, GoogLeNet and ResNet-50 (bench/shapes.py)
at batch 2 with its full channel counts and map size, forward and every gradient, against
torch.nn.functional in float64 (on the tensors' device: cuDNN's float64 conv on the GPU).

Targets (marked cuda: skipped without a GPU): ``cuda`` (the cuda backend with FASTCNN_SM90=off where
the Hopper path exists: the sm_80-style kernels), ``triton``, and ``sm90`` (the cuda backend with
FASTCNN_SM90=force on a compute-capability-9.0 GPU with fastcnn._C_sm90 registered; only the passes
the sm90 rule accepts are asked for, since under force a rejected pass raises). dtypes bf16, fp16,
fp32 (TF32 off) and tf32 (TF32 on, convs only); layouts NCHW and NHWC. Convs carry a bias (BN folded,
as in inference), the layer's residual and its ReLU.

``FASTCNN_GPU_LAYERS_CPU=1`` adds the C++ CPU backend (and cuda-sim, the CUDA kernels emulated on the
CPU, where fastcnn._C_cudasim is built) as targets (fp32; not marked cuda), so this module's own logic
runs without a GPU: tools/gpu_run.py's dry run runs it at LeNet-5's shapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

import fastcnn
import fastcnn.functional as FF
from fastcnn.bench.shapes import layers
from conftest import TOL, TOL_TF32, as_layout, assert_close
from test_add_relu import run_case as run_add_relu
from test_max_pool2d import run_case as run_max_pool2d

SM90 = None
if importlib.util.find_spec("fastcnn.sm90") is not None:  # the Hopper path, where this tree has it
    from fastcnn import sm90 as SM90

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32}
LAYOUTS = {"nchw": "contiguous", "nhwc": "channels_last"}
BATCH = 2
CPU_TARGET = os.environ.get("FASTCNN_GPU_LAYERS_CPU", "0") == "1"


def _layers():
    """One param per distinct layer shape (ResNet's repeated blocks and GoogLeNet's pools collapse)."""
    seen, out = set(), []
    for ly in layers():
        key = dataclasses.replace(ly, net="", name="", count=1)
        if key not in seen:
            seen.add(key)
            out.append(pytest.param(ly, id=f"{ly.net}.{ly.name}"))
    return out


def _hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def _variants():
    """(backend, FASTCNN_SM90 mode, device, dtype, layout) params. Under pytest-xdist each one is its
    own xdist_group (tools/gpu_run.py runs --dist loadgroup): one worker compiles a Triton variant
    (dtype x layout) once, instead of every worker compiling it at the same time."""
    avail = fastcnn.available_backends()
    sm90_why = ("fastcnn.sm90 is not in this tree" if SM90 is None else
                "needs compute capability 9.0" if not _hopper() else
                None if SM90.available() else f"fastcnn._C_sm90 not registered: {SM90.load_error()}")
    targets = [("cuda", "off", "cuda", [pytest.mark.cuda, pytest.mark.skipif(
                   "cuda" not in avail, reason="fastcnn built without CUDA")]),
               ("triton", None, "cuda", [pytest.mark.cuda, pytest.mark.skipif(
                   "triton" not in avail, reason="triton backend unavailable")]),
               ("sm90", "force", "cuda", [pytest.mark.cuda, pytest.mark.skipif(sm90_why is not None,
                                                                               reason=str(sm90_why))])]
    if CPU_TARGET:
        targets.append(("cpu", None, "cpu", []))
        if "cuda-sim" in avail:  # the CUDA kernels emulated on the CPU (fastcnn._C_cudasim), where built
            targets.append(("cuda-sim", None, "cpu", []))
    grouped = importlib.util.find_spec("xdist") is not None  # the mark is xdist's (registered by it)
    out = []
    for label, mode, device, marks in targets:
        backend = {"sm90": "cuda"}.get(label, label)
        for dtype in DTYPES:
            for layout in LAYOUTS:
                vid = f"{label}-{dtype}-{layout}"
                group = [pytest.mark.xdist_group(vid)] if grouped else []
                out.append(pytest.param((backend, mode, device, dtype, layout), id=vid, marks=marks + group))
    return out


@contextlib.contextmanager
def _target(backend, sm90_mode, tf32):
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        with fastcnn.backend(backend), (SM90.use_mode(sm90_mode) if SM90 is not None and sm90_mode
                                        else contextlib.nullcontext()):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def check_conv(layer, backend, sm90_mode, device, dtype_name, layout):
    dtype = DTYPES[dtype_name]
    tol = TOL_TF32 if dtype_name == "tf32" else TOL[dtype]
    fmt = LAYOUTS[layout]
    Cg = layer.C // layer.groups
    x = as_layout(torch.randn(BATCH, layer.C, layer.H, layer.W, device=device, dtype=dtype), fmt)
    w = as_layout(torch.randn(layer.K, Cg, layer.R, layer.S, device=device, dtype=dtype) / (Cg * layer.R * layer.S) ** 0.5,
                  fmt)
    b = torch.randn(layer.K, device=device, dtype=dtype) * 0.5
    r = as_layout(torch.randn(BATCH, layer.K, layer.P, layer.Q, device=device, dtype=dtype), fmt) if layer.residual else None
    act = "relu" if layer.relu else None
    grad_of = {"input", "weight", "bias", "residual"}
    with _target(backend, sm90_mode, dtype_name == "tf32"):
        if sm90_mode == "force":
            paths = SM90.conv_path(x, w, b, r, layer.stride, layer.padding, layer.dilation, layer.groups)
            took = {p for p, (path, _) in paths.items() if path.startswith("sm90")}
            if "fprop" not in took:
                pytest.skip(f"sm90 rule: fprop -> {paths['fprop'][0]} ({paths['fprop'][1]})")
            grad_of = {"residual"} | ({"input"} if "dgrad" in took else set()) | (
                {"weight", "bias"} if "wgrad" in took else set())
        leaves = {"input": x, "weight": w, "bias": b, "residual": r}
        leaves = {k: (v.detach().requires_grad_(k in grad_of) if v is not None else None) for k, v in leaves.items()}
        if layer.op == "conv1x1":
            out = FF.conv1x1(leaves["input"], leaves["weight"], leaves["bias"], layer.stride,
                             residual=leaves["residual"], activation=act)
        else:
            out = FF.conv2d(leaves["input"], leaves["weight"], leaves["bias"], layer.stride, layer.padding,
                            layer.dilation, layer.groups, residual=leaves["residual"], activation=act)
        names = [k for k, v in leaves.items() if v is not None and v.requires_grad]
        gy = torch.randn_like(out)
        grads = torch.autograd.grad(out, [leaves[k] for k in names], gy)
    # float64 on the tensors' own device: cuDNN's float64 conv on the GPU (exact to ~1e-15, and ~2,000
    # layer cases x fwd+bwd would take minutes of CPU time in a 150-second step), the CPU otherwise
    ref64 = {k: (v.detach().to(torch.float64).requires_grad_(v.requires_grad) if v is not None else None)
             for k, v in leaves.items()}
    pre = F.conv2d(ref64["input"], ref64["weight"], ref64["bias"], layer.stride, layer.padding, layer.dilation,
                   layer.groups)
    if ref64["residual"] is not None:
        pre = pre + ref64["residual"]
    ref = F.relu(pre) if act else pre
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close(out, ref, dtype, tol=tol)
    gy64 = gy.to(torch.float64)
    if act:
        # ReLU's gradient is grad * (output > 0) at the op's own output. Where the pre-activation is
        # within rounding of 0 the float64 sign can differ (seen: 1 of 200,704 outputs of
        # resnet50.layer2.x.conv2 in fp32, which alone moves grad input by 5e-3 against fp32's 2e-5),
        # so the reference gradient takes the kernel's mask, and the mask is checked on its own:
        # it may differ from float64's only where |pre-activation| is that small.
        mask = out.detach().to(torch.float64) > 0
        flips = mask != (pre.detach() > 0)
        scale = pre.detach().pow(2).mean().sqrt().item()
        assert not flips.any() or pre.detach()[flips].abs().max().item() <= 10 * tol * scale, (
            f"ReLU mask differs from float64's at {int(flips.sum())} outputs, |pre-activation| up to "
            f"{pre.detach()[flips].abs().max().item():.3e} (rms {scale:.3e})")
        gy64 = gy64 * mask
    want = torch.autograd.grad(pre, [ref64[k] for k in names], gy64)
    for k, g, g_ref in zip(names, grads, want):
        assert_close(g, g_ref, dtype, what=f"grad {k}", tol=tol)


@pytest.mark.parametrize("variant", _variants())
@pytest.mark.parametrize("layer", _layers())
def test_layer(layer, variant):
    backend, sm90_mode, device, dtype_name, layout = variant
    if device == "cpu" and dtype_name != "fp32":
        pytest.skip("CPU targets: fp32 (they check this module's logic; the CPU suites test the other dtypes)")
    if layer.op in ("max_pool2d", "add_relu"):
        if sm90_mode == "force":
            pytest.skip("the Hopper path is for convolutions")
        if dtype_name == "tf32":
            pytest.skip("tf32 is a matrix-unit mode: pools and adds are fp32")
        with _target(backend, sm90_mode, False):
            if layer.op == "max_pool2d":
                run_max_pool2d((BATCH, layer.C, layer.H, layer.W, layer.R, layer.stride, layer.padding, layer.dilation,
                                layer.ceil_mode), (backend, device), DTYPES[dtype_name], LAYOUTS[layout])
            else:
                shape = (BATCH, layer.C, layer.H, layer.W)
                run_add_relu(shape, shape, (backend, device), DTYPES[dtype_name], LAYOUTS[layout])
        return
    check_conv(layer, backend, sm90_mode, device, dtype_name, layout)
