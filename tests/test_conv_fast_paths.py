"""Convolutions shaped to take the GPU backends' fast paths, checked like every other case.

The odd-sized cases of test_conv2d.py mostly take the safe (scalar-load) paths of the CUDA and
Triton kernels. These use channel counts that are multiples of 8 (16-byte fp16/bf16 loads), output
channels > 64 (the 128x128 tensor-core tiles), strides, dilation and groups with aligned per-group
channels, in fp32, fp16 and bf16, NCHW and channels_last, with the full epilogue and every gradient;
and TF32, which the kernels may use only when PyTorch's TF32 flags allow it.
"""

from __future__ import annotations

import pytest
import torch

from conftest import TOL_TF32
from test_conv2d import run_case as run_conv2d
from test_conv1x1 import run_case as run_conv1x1

# (N, C, H, W, K, kh, kw, stride, padding, dilation, groups)
CONV = [
    pytest.param((2, 16, 9, 9, 32, 3, 3, 1, 1, 1, 1), id="16to32-3x3"),
    pytest.param((2, 64, 10, 10, 128, 3, 3, 2, 1, 1, 1), id="64to128-3x3-s2"),
    pytest.param((2, 32, 8, 8, 64, 3, 3, 1, 2, 2, 1), id="32to64-3x3-d2"),
    pytest.param((2, 32, 7, 9, 64, 3, 3, 1, 1, 1, 2), id="32to64-3x3-g2"),
    pytest.param((1, 64, 6, 6, 192, 5, 5, 1, 2, 1, 1), id="64to192-5x5"),
]
# (N, C, H, W, K, stride)
CONV1X1 = [pytest.param((2, 64, 8, 8, 256, 1), id="64to256"), pytest.param((2, 64, 9, 9, 128, 2), id="64to128-s2"),
           pytest.param((3, 256, 5, 5, 64, 1), id="256to64")]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _skip_interpreter(backend_device):
    if backend_device == ("triton", "cpu"):
        pytest.skip("interpreter: the tile and load paths exist on the GPU only")


@pytest.mark.parametrize("cfg", CONV)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_conv2d_fast_paths(cfg, dtype, layout, backend_device):
    _skip_interpreter(backend_device)
    run_conv2d(cfg, backend_device, dtype=dtype, layout=layout)


@pytest.mark.parametrize("cfg", CONV1X1)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_conv1x1_fast_paths(cfg, dtype, layout, backend_device):
    _skip_interpreter(backend_device)
    run_conv1x1(cfg, backend_device, dtype=dtype, layout=layout)


@pytest.fixture
def tf32_allowed():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.cuda
@pytest.mark.parametrize("cfg", [CONV[0], CONV[1], CONV[3]])
def test_conv2d_tf32_when_allowed(cfg, backend_device, tf32_allowed):
    _, device = backend_device
    if device != "cuda":
        pytest.skip("TF32 exists on the GPU only")
    with pytest.MonkeyPatch.context() as mp:
        import conftest

        mp.setitem(conftest.TOL, torch.float32, TOL_TF32)
        run_conv2d(cfg, backend_device, dtype=torch.float32, layout="channels_last")


@pytest.mark.cuda
def test_conv1x1_tf32_when_allowed(backend_device, tf32_allowed):
    _, device = backend_device
    if device != "cuda":
        pytest.skip("TF32 exists on the GPU only")
    with pytest.MonkeyPatch.context() as mp:
        import conftest

        mp.setitem(conftest.TOL, torch.float32, TOL_TF32)
        run_conv1x1(CONV1X1[0].values[0], backend_device, dtype=torch.float32, layout="channels_last")


# ------------------------------------------------------------------------------------------------
# The TMA-descriptor forward (kernels/_conv_tma.py, FASTCNN_TRITON_TMA=1): Hopper GPUs and Triton's
# interpreter, which runs descriptors (zero fill outside the tensor included)
# ------------------------------------------------------------------------------------------------

TMA_CONV = [
    pytest.param((2, 16, 7, 6, 24, 3, 3, 1, 1, 1, 1), id="3x3-edge-tiles"),
    pytest.param((1, 24, 6, 5, 8, 3, 3, 1, 2, 2, 1), id="3x3-d2-channel-tail"),
    pytest.param((2, 16, 5, 5, 16, 5, 5, 1, 0, 1, 1), id="5x5-valid"),
    pytest.param((2, 16, 12, 20, 8, 3, 3, 1, 1, 1, 1), id="3x3-many-tiles"),  # > 4 waves: not persistent
]
TMA_CONV1X1 = [pytest.param((2, 32, 5, 3, 24, 1), id="gemm-row-tail"), pytest.param((3, 16, 4, 4, 8, 1), id="gemm")]


@pytest.fixture
def tma_on(monkeypatch, backend_device):
    name, device = backend_device
    if name != "triton":
        pytest.skip("the TMA path is a Triton kernel")
    if device == "cuda" and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("TMA descriptors need sm_90")
    monkeypatch.setenv("FASTCNN_TRITON_TMA", "1")


def _planned_kernel(x, w, stride, padding, dilation, groups):
    from fastcnn.kernels import _launch
    from fastcnn.kernels import conv2d as kconv

    with _launch.collect(_launch.target_of(x)) as recs:
        kconv.conv_forward(x, w, None, None, stride, padding, dilation, groups, "relu")
    return recs[0].kernel.__name__ if not hasattr(recs[0].kernel, "fn") else recs[0].kernel.fn.__name__


@pytest.mark.parametrize("cfg", TMA_CONV)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_conv2d_tma(cfg, dtype, backend_device, tma_on):
    N, C, H, W, K, kh, kw, stride, padding, dilation, groups = cfg
    _, device = backend_device
    x = torch.empty(N, C, H, W, dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.empty(K, C, kh, kw, dtype=dtype, device=device)
    assert _planned_kernel(x, w, (stride,) * 2, (padding,) * 2, (dilation,) * 2, groups) == "_conv_fwd_tma_kernel"
    run_conv2d(cfg, backend_device, dtype=dtype, layout="channels_last")


@pytest.mark.parametrize("cfg", TMA_CONV1X1)
def test_conv1x1_tma(cfg, backend_device, tma_on, tf32_allowed):
    N, C, H, W, K, stride = cfg
    _, device = backend_device
    x = torch.empty(N, C, H, W, device=device).contiguous(memory_format=torch.channels_last)
    assert _planned_kernel(x, torch.empty(K, C, 1, 1, device=device), (1, 1), (0, 0), (1, 1), 1) == \
        "_conv_fwd_tma_kernel"
    with pytest.MonkeyPatch.context() as mp:
        import conftest

        mp.setitem(conftest.TOL, torch.float32, TOL_TF32)
        for dtype in (torch.bfloat16, torch.float32):  # float32 as TF32 (allowed here)
            run_conv1x1(cfg, backend_device, dtype=dtype, layout="channels_last")


def test_conv_tma_falls_back(backend_device, tma_on):
    """NCHW, a stride, groups, an unaligned storage offset, fp32 without TF32: the pointer kernel."""
    _, device = backend_device
    bf = dict(dtype=torch.bfloat16, device=device)
    cl = torch.channels_last
    x = torch.empty(2, 16, 6, 6, **bf).contiguous(memory_format=cl)
    w = torch.empty(8, 16, 3, 3, **bf)
    geo = ((1, 1), (1, 1), (1, 1), 1)
    assert _planned_kernel(x, w, *geo) == "_conv_fwd_tma_kernel"
    assert _planned_kernel(x.contiguous(), w, *geo) == "_conv_fwd_kernel"
    assert _planned_kernel(x, w, (2, 2), (1, 1), (1, 1), 1) == "_conv_fwd_kernel"
    assert _planned_kernel(x, torch.empty(8, 8, 3, 3, **bf), (1, 1), (1, 1), (1, 1), 2) == "_conv_fwd_kernel"
    flat = torch.empty(x.numel() + 3, **bf)
    view = flat[3:].view(2, 6, 6, 16).permute(0, 3, 1, 2)  # channels_last, 6 bytes past an aligned start
    assert view.is_contiguous(memory_format=cl) and _planned_kernel(view, w, *geo) == "_conv_fwd_kernel"
    assert _planned_kernel(x.float(), w.float(), *geo) == "_conv_fwd_kernel"
    run_conv2d((2, 16, 6, 6, 8, 3, 3, 1, 1, 1, 1), backend_device, dtype=torch.bfloat16, layout="offset")
