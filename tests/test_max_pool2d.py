"""fastcnn max_pool2d against torch.nn.functional.max_pool2d: values and indices exactly (the max is
exact arithmetic), ties to the first maximum, NaN propagation, and the gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastcnn.functional as FF
from fastcnn.bench.shapes import layers
from conftest import as_layout, assert_close

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
CONFIGS = [
    (2, 3, 9, 11, 3, 2, 1, 1, False),
    (2, 3, 9, 11, 3, 2, 1, 1, True),
    (1, 5, 8, 8, 2, None, 0, 1, False),
    (2, 4, 13, 13, 3, 2, 0, 1, True),  # AlexNet/GoogLeNet 3/2 ceil
    (2, 6, 7, 7, 3, 1, 1, 1, True),  # GoogLeNet pool branch 3/1 p1
    (1, 2, 10, 9, (3, 2), (2, 1), (1, 0), (2, 3), False),
    (2, 3, 7, 6, 2, 3, 1, 2, True),
    (1, 1, 1, 1, 1, 1, 0, 1, False),  # 1x1 map
    (2, 17, 5, 5, 5, 1, 2, 1, False),  # kernel covers the map
]


def _net_configs():
    seen, out = set(), []
    for L in layers(ops=("max_pool2d",)):
        cfg = (2, min(L.C, 24), min(L.H, 15), min(L.W, 15), L.R, L.stride, L.padding, L.dilation, L.ceil_mode)
        if cfg not in seen:
            seen.add(cfg)
            out.append(pytest.param(cfg, id=f"{L.net}.{L.name}"))
    return out


def run_case(cfg, backend_device, dtype=torch.float32, layout="contiguous", data="randn"):
    N, C, H, W, k, s, p, d, ceil = cfg
    _, device = backend_device
    if data == "ties":  # few distinct values: many equal maxima in a window
        x = torch.randint(-2, 3, (N, C, H, W), device=device).to(dtype)
    else:
        x = torch.randn(N, C, H, W, device=device, dtype=dtype)
    if data == "nan":
        x.view(-1)[torch.randperm(x.numel(), device=device)[: max(1, x.numel() // 7)]] = float("nan")
        x.view(-1)[torch.randperm(x.numel(), device=device)[: max(1, x.numel() // 9)]] = float("-inf")
    x = as_layout(x, layout).requires_grad_()
    out, idx = FF.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ref, ref_idx = F.max_pool2d(x.detach(), k, s, p, d, ceil, return_indices=True)
    assert out.shape == ref.shape and idx.dtype == torch.int64
    assert torch.equal(out.isnan(), ref.isnan()), "NaN positions differ"
    assert torch.equal(out.nan_to_num(), ref.nan_to_num()), "values differ"
    assert torch.equal(idx, ref_idx), "indices differ"
    for fmt in (torch.contiguous_format, torch.channels_last):
        assert out.is_contiguous(memory_format=fmt) == ref.is_contiguous(memory_format=fmt)
    gy = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, gy)
    # float64 reference gradient: the same argmax (the values convert exactly), sums unrounded
    x64 = x.detach().double().requires_grad_()
    (gx_ref,) = torch.autograd.grad(F.max_pool2d(x64, k, s, p, d, ceil), x64, gy.double())
    assert_close(gx, gx_ref, dtype, what="grad input")
    # without indices: the backward recomputes each window's argmax
    out2, idx2 = torch.ops.fastcnn.max_pool2d(x, *_norm(k, s, p, d), ceil, False)
    assert idx2.numel() == 0
    (gx2,) = torch.autograd.grad(out2, x, gy)
    assert_close(gx2, gx_ref, dtype, what="grad input (recomputed argmax)")


def _norm(k, s, p, d):
    pair = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
    return pair(k), pair(k if s is None else s), pair(p), pair(d)


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("data", ["randn", "ties", "nan"])
def test_max_pool2d_configs(cfg, layout, data, backend_device):
    run_case(cfg, backend_device, layout=layout, data=data)


@pytest.mark.parametrize("cfg", _net_configs())
def test_max_pool2d_network_layers(cfg, backend_device):
    run_case(cfg, backend_device, layout="channels_last")
    run_case(cfg, backend_device, layout="contiguous", data="ties")


@pytest.mark.parametrize("layout", ["strided", "offset"])
def test_max_pool2d_views(layout, backend_device):
    run_case(CONFIGS[0], backend_device, layout=layout)
    run_case(CONFIGS[3], backend_device, layout=layout, data="ties")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_max_pool2d_dtypes(dtype, backend_device):
    run_case(CONFIGS[0], backend_device, dtype=dtype, layout="channels_last")
    run_case(CONFIGS[5], backend_device, dtype=dtype, data="nan")


def test_max_pool2d_unbatched_empty_and_no_indices(backend_device):
    _, device = backend_device
    x = torch.randn(3, 8, 8, device=device)
    assert torch.equal(FF.max_pool2d(x, 2), F.max_pool2d(x, 2))
    e = torch.randn(0, 3, 8, 8, device=device, requires_grad=True)
    out = FF.max_pool2d(e, 3, 2, 1)
    assert out.shape == (0, 3, 4, 4)
    out.sum().backward()
    assert e.grad.shape == e.shape
    with torch.no_grad():
        _, idx = torch.ops.fastcnn.max_pool2d(x.unsqueeze(0), [2, 2], [2, 2], [0, 0], [1, 1], False, False)
    assert idx.numel() == 0


def test_max_pool2d_gradcheck(backend_device):
    _, device = backend_device
    # one image under the interpreter (gradcheck launches twice per input element); batches
    # are covered by the float64-reference gradients of run_case
    n = 1 if backend_device == ("triton", "cpu") else 2
    # distinct values so the argmax is stable under gradcheck's perturbations
    x = (torch.randperm(n * 3 * 7 * 6, device=device).double() / 10).view(n, 3, 7, 6).requires_grad_()
    f = lambda x: FF.max_pool2d(x, 3, 2, 1, 1, True)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5)


def test_max_pool2d_opcheck(backend_device):
    _, device = backend_device
    op = torch.ops.fastcnn.max_pool2d.default
    for rg in (False, True):
        x = torch.randn(2, 3, 9, 8, device=device, requires_grad=rg)
        for args in [(x, [3, 3], [2, 2], [1, 1], [1, 1], True, True), (x, [2, 2], [2, 2], [0, 0], [1, 1], False, False),
                     (x.contiguous(memory_format=torch.channels_last), [3, 2], [1, 2], [1, 1], [2, 1], False, True)]:
            torch.library.opcheck(op, args)
    x = torch.randn(2, 3, 9, 8, device=device)
    out, idx = torch.ops.fastcnn.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], True, True)
    torch.library.opcheck(torch.ops.fastcnn._max_pool2d_backward.default,
                          (torch.randn_like(out), x, idx, [3, 3], [2, 2], [1, 1], [1, 1], True))


def test_max_pool2d_torch_compile(backend_device):
    _, device = backend_device
    torch._dynamo.reset()

    def f(x):
        return (FF.max_pool2d(x, 3, 2, 1) * 2).sum()

    x = torch.randn(2, 3, 9, 9, device=device, requires_grad=True)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    assert_close(compiled(x), f(x), torch.float32)
    assert_close(torch.autograd.grad(compiled(x), x)[0], torch.autograd.grad(f(x), x)[0], torch.float32)
