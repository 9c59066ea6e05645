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
