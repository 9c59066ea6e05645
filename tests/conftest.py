"""Shared test machinery: backends to run, tolerances, the float64 reference and its comparison.

Every op test is parametrised over ``backend_device``: the C++ CPU backend always; the Triton
backend on CPU tensors when ``TRITON_INTERPRET=1`` (small shapes: the interpreter is slow); on a GPU
the CUDA and Triton backends on CUDA tensors. Outputs are poisoned (NaN) before every kernel runs,
so an element a kernel does not write fails.
"""

from __future__ import annotations

import os

import pytest
import torch

import fastcnn

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
HAS_CUDA = torch.cuda.is_available()

# Relative-norm error bounds ||out - ref|| / ||ref|| against a float64 reference computed from the
# same (rounded) inputs. float32 sums are fp32-exact; fp16/bf16 carry one output rounding (2^-11,
# 2^-8) plus fp32 accumulation; tf32 rounds the operands to 10 mantissa bits.
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
TOL_TF32 = 5e-3


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: long-running; run with --runslow or on the GPU")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)


def _backend_devices():
    out = [pytest.param(("cpu", "cpu"), id="cpu")]
    avail = fastcnn.available_backends()
    if "triton" in avail:
        out.append(pytest.param(("triton", "cpu"), id="triton-interp",
                                marks=pytest.mark.skipif(not INTERPRET, reason="TRITON_INTERPRET=1 not set")))
    out.append(pytest.param(("cuda", "cuda"), id="cuda", marks=[
        pytest.mark.cuda, pytest.mark.skipif("cuda" not in avail, reason="fastcnn built without CUDA")]))
    out.append(pytest.param(("triton", "cuda"), id="triton-cuda", marks=[
        pytest.mark.cuda, pytest.mark.skipif("triton" not in avail, reason="triton backend unavailable")]))
    return out


BACKEND_DEVICES = _backend_devices()


@pytest.fixture(params=BACKEND_DEVICES)
def backend_device(request):
    name, device = request.param
    with fastcnn.backend(name):
        yield name, device


@pytest.fixture(autouse=True)
def _poison_and_seed():
    fastcnn._ops.set_poison(True)
    torch.manual_seed(1234)
    yield
    fastcnn._ops.set_poison(False)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere in out (where ref has none) gives inf."""
    out = out.detach().to("cpu", torch.float64)
    ref = ref.detach().to("cpu", torch.float64)
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    finite = torch.isfinite(ref)
    if not torch.equal(torch.isfinite(out), finite) or not torch.equal(out[~finite].nan_to_num(0, 1, -1),
                                                                        ref[~finite].nan_to_num(0, 1, -1)):
        return float("inf")
    diff = (out[finite] - ref[finite]).norm().item()
    scale = ref[finite].norm().item()
    return diff / scale if scale > 0 else diff


def assert_close(out, ref, dtype, what="output", tol=None):
    tol = tol if tol is not None else TOL[dtype]
    err = rel_err(out, ref)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e} ({dtype})"


def as_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """contiguous | channels_last | strided (a non-dense view) | offset (a view with a storage offset)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        # every other element of a wider tensor along W: neither layout, not dense
        big = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        big[..., ::2] = t
        return big[..., ::2]
    if layout == "offset":
        flat = torch.empty(t.numel() + 3, dtype=t.dtype, device=t.device)
        v = flat[3:].view(t.shape)
        v.copy_(t)
        return v
    raise ValueError(layout)


def leaf(t: torch.Tensor, requires_grad=True) -> torch.Tensor:
    return t.detach().requires_grad_(requires_grad)


def reference_grads(ref_out, ref_inputs, grad):
    """Gradients of a float64 reference graph; None for inputs that need none."""
    need = [t for t in ref_inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(ref_out, need, grad.to(ref_out.dtype)))
    return [next(got) if (t is not None and t.requires_grad) else None for t in ref_inputs]


def to64(t):
    if t is None:
        return None
    return t.detach().to("cpu", torch.float64).requires_grad_(t.requires_grad)
