"""Shared test machinery: the backend targets as pytest parameters, tolerances and the error
measure (both from ``fastcnn.testing``, re-exported here), the float64 reference helpers.

Every op test is parametrised over ``backend_device`` (``fastcnn.testing.TARGETS``): the C++ CPU
backend always; the Triton backend on CPU tensors when ``TRITON_INTERPRET=1`` (small shapes: the
interpreter is slow); cuda-sim (the CUDA kernels emulated on the CPU, where ``make cuda-sim`` built
fastcnn._C_cudasim) in two scheduling orders, marked ``cudasim`` (``make test`` runs them in their
own phase); on a GPU the CUDA and Triton backends on CUDA tensors. Outputs are poisoned
(NaN) before every kernel runs, so an element a kernel does not write fails.
"""

from __future__ import annotations

import pytest
import torch

import fastcnn
import fastcnn.testing

from fastcnn.testing import TARGETS, TOL, TOL_TF32, assert_close, interpreting, rel_err  # noqa: F401 (re-exported)

INTERPRET = interpreting()
HAS_CUDA = torch.cuda.is_available()


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: long-running; run with --runslow or on the GPU")
    config.addinivalue_line("markers", "cudasim: runs the CUDA kernels emulated on the CPU (cuda-sim; make test-cudasim)")


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


class TargetParam(tuple):
    """A target as the tests see it: the pair (backend, device), which also knows its Target (the
    fixture applies it: the backend and, for cuda-sim, the scheduling order)."""

    def __new__(cls, target):
        self = super().__new__(cls, (target.backend, target.device))
        self.target = target
        return self


def _param(target):
    marks = [pytest.mark.cuda] if target.device == "cuda" else []
    if target.backend == "cuda-sim":
        marks.append(pytest.mark.cudasim)
    why = target.unavailable()
    if why:
        marks.append(pytest.mark.skip(reason=f"{target.id}: {why}"))
    return pytest.param(TargetParam(target), id=target.id, marks=marks)


# fastcnn.testing.TARGETS as pytest parameters: every target, the ones this installation cannot run
# skipped with the reason.
BACKEND_DEVICES = [_param(t) for t in TARGETS]


@pytest.fixture(params=BACKEND_DEVICES)
def backend_device(request):
    target = request.param.target  # its backend in force (cuda-sim: its scheduling order too)
    with target.use():
        yield target.backend, target.device


@pytest.fixture(autouse=True)
def _poison_and_seed():
    fastcnn.testing.set_poison(True)
    torch.manual_seed(1234)
    yield
    fastcnn.testing.set_poison(False)


@pytest.fixture(scope="module")
def _one_thread():
    """One CPU thread for a module's tests (``pytestmark = pytest.mark.usefixtures("_one_thread")``):
    small tensors run as fast on one, and it is immune to oversubscription on a shared machine (a
    parallel region waits for every thread)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
