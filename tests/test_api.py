"""The package surface: op registration, backend selection, build facts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import fastcnn
import fastcnn.functional as FF

OPS = ["conv2d", "conv1x1", "max_pool2d", "add_relu"]


def test_ops_are_registered():
    for name in OPS:
        for full in (f"fastcnn::{name}", f"fastcnn::_{name}_backward"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(full, "CPU"), full
        assert hasattr(torch.ops.fastcnn, name)
        # autograd and fake kernels are registered for every forward op
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastcnn::{name}", "Autograd")
        assert torch._library.simple_registry.singleton.find(f"fastcnn::{name}").fake_impl.kernel is not None


def test_backend_switch_and_scope():
    assert fastcnn.get_backend() == "auto"
    with fastcnn.backend("cpu"):
        assert fastcnn.get_backend() == "cpu"
        x = torch.randn(1, 2, 5, 5)
        FF.max_pool2d(x, 2)
    assert fastcnn.get_backend() == "auto"
    fastcnn.set_backend("cpu")
    try:
        assert fastcnn.get_backend() == "cpu"
    finally:
        fastcnn.set_backend("auto")


def test_backend_scope_restores_after_error():
    with pytest.raises(ZeroDivisionError):
        with fastcnn.backend("cpu"):
            1 / 0
    assert fastcnn.get_backend() == "auto"


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        fastcnn.set_backend("cudnn")


@pytest.mark.skipif(fastcnn._C.with_cuda, reason="this build has CUDA")
def test_cuda_backend_unavailable_without_cuda_build():
    with pytest.raises(ValueError, match="built without CUDA"):
        fastcnn.set_backend("cuda")


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter runs CPU tensors")
def test_triton_backend_refuses_cpu_tensors_without_interpreter():
    if "triton" not in fastcnn.available_backends():
        with pytest.raises(ValueError, match="triton"):
            fastcnn.set_backend("triton")
        return
    with fastcnn.backend("triton"):
        with pytest.raises(ValueError, match="TRITON_INTERPRET"):
            FF.add_relu(torch.randn(3), torch.randn(3))


@pytest.mark.cuda
def test_cpu_backend_refuses_cuda_tensors():
    with fastcnn.backend("cpu"):
        with pytest.raises(ValueError, match="backend 'cpu' cannot run"):
            FF.add_relu(torch.randn(3, device="cuda"), torch.randn(3, device="cuda"))


def test_backend_from_environment():
    code = "import fastcnn; print(fastcnn.get_backend())"
    env = dict(os.environ, FASTCNN_BACKEND="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "cpu"
    env["FASTCNN_BACKEND"] = "bogus"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "backend must be one of" in out.stderr


def test_public_names():
    for name in ["conv2d", "conv2d_relu", "conv1x1", "max_pool2d", "add_relu"]:
        assert callable(getattr(FF, name))
    assert set(fastcnn.available_backends()) >= {"auto", "cpu"}
