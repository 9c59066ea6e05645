"""fastcnn add_relu: relu(a + b) in one pass, broadcasting as torch.add."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastcnn.functional as FF
from fastcnn.bench.shapes import layers
from conftest import as_layout, assert_close, leaf, to64

SHAPES = [((2, 3, 5, 7), (2, 3, 5, 7)), ((4, 17, 3, 3), (4, 17, 3, 3)), ((2, 3, 5, 7), (3, 1, 7)),
          ((1,), (6, 5)), ((2, 3, 1, 1), (2, 3, 1, 1)), ((0, 3, 4, 4), (0, 3, 4, 4)), ((5, 1, 4), (1, 6, 1))]


def run_case(sa, sb, backend_device, dtype=torch.float32, layout="contiguous"):
    _, device = backend_device
    a = torch.randn(sa, device=device, dtype=dtype)
    b = torch.randn(sb, device=device, dtype=dtype)
    if a.dim() == 4 and b.dim() == 4:
        a, b = as_layout(a, layout), as_layout(b, layout)
    a, b = leaf(a), leaf(b)
    out = FF.add_relu(a, b)
    a64, b64 = to64(a), to64(b)
    ref = F.relu(a64 + b64)
    assert_close(out, ref, dtype)
    if out.numel():
        gy = torch.randn_like(out)
        ga, gb = torch.autograd.grad(out, (a, b), gy)
        ra, rb = torch.autograd.grad(ref, (a64, b64), gy.double().cpu())
        assert_close(ga, ra, dtype, what="grad input")
        assert_close(gb, rb, dtype, what="grad other")
    return out


@pytest.mark.parametrize("sa,sb", SHAPES)
def test_add_relu_shapes(sa, sb, backend_device):
    run_case(sa, sb, backend_device)


@pytest.mark.parametrize("layout", ["channels_last", "strided", "offset"])
def test_add_relu_layouts(layout, backend_device):
    out = run_case((2, 5, 6, 7), (2, 5, 6, 7), backend_device, layout=layout)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("L", [pytest.param(L, id=L.name) for L in layers(ops=("add_relu",))])
def test_add_relu_network_layers(L, backend_device):
    s = (2, min(L.C, 64), min(L.H, 14), min(L.W, 14))
    run_case(s, s, backend_device, layout="channels_last")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_add_relu_dtypes(dtype, backend_device):
    run_case((3, 4, 5, 6), (3, 4, 5, 6), backend_device, dtype=dtype)


def test_add_relu_nan_inf(backend_device):
    _, device = backend_device
    a = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0, -2.0, 0.0], device=device)
    b = torch.tensor([1.0, 1.0, 1.0, float("nan"), 1.0, -0.0], device=device)
    out, ref = FF.add_relu(a, b), F.relu(a + b)
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.nan_to_num(), ref.nan_to_num())


def test_add_relu_gradcheck(backend_device):
    _, device = backend_device
    a = torch.randn(2, 3, 4, 5, device=device, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 1, 5, device=device, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(FF.add_relu, (a, b))


def test_add_relu_opcheck(backend_device):
    _, device = backend_device
    for rg in (False, True):
        a = torch.randn(2, 3, 4, 5, device=device, requires_grad=rg)
        for b in (torch.randn(2, 3, 4, 5, device=device, requires_grad=rg),
                  torch.randn(3, 1, 5, device=device, requires_grad=rg)):
            torch.library.opcheck(torch.ops.fastcnn.add_relu.default, (a, b))
        torch.library.opcheck(torch.ops.fastcnn.add_relu.default,
                              (a.contiguous(memory_format=torch.channels_last),
                               torch.randn(2, 3, 4, 5, device=device).contiguous(memory_format=torch.channels_last)))
    out = torch.randn(2, 3, 4, 5, device=device)
    torch.library.opcheck(torch.ops.fastcnn._add_relu_backward.default, (torch.randn_like(out), out))


def test_add_relu_torch_compile(backend_device):
    _, device = backend_device
    torch._dynamo.reset()

    def f(a, b):
        return (FF.add_relu(a, b) * 3).sum()

    a = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    b = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    assert_close(compiled(a, b), f(a, b), torch.float32)
    for x, y in zip(torch.autograd.grad(compiled(a, b), (a, b)), torch.autograd.grad(f(a, b), (a, b))):
        assert_close(x, y, torch.float32)
