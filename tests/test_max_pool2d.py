"""fastcnn max_pool2d against torch.nn.functional.max_pool2d: values and indices exactly (the max is
exact arithmetic), ties to the first maximum, NaN propagation, and the gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

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


# ------------------------------------------------------------------------------------------------
# integer inputs (uint8 images, integer label maps): forward and indices exactly as PyTorch, no
# gradient (integer tensors cannot require one; the backward op refuses them)
# ------------------------------------------------------------------------------------------------

INT_TYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]


def _ints(shape, dtype, device, extremes=False):
    """Values over the type's whole range (ties included); `extremes`: only its two lowest and two
    highest values, which a float path could not keep apart for int32/int64."""
    info = torch.iinfo(dtype)
    if extremes:
        pool = torch.tensor([info.min, info.min + 1, info.max - 1, info.max], dtype=dtype, device=device)
        return pool[torch.randint(0, 4, shape, device=device)]
    if dtype in (torch.int32, torch.int64):  # randint's bounds are int64: stay inside them
        lo, hi = max(info.min, -2**62), min(info.max, 2**62)
        return torch.randint(lo, hi, shape, dtype=dtype, device=device)
    return torch.randint(info.min, info.max + 1, shape, dtype=dtype, device=device)


def _torch_pool(x, k, s, p, d, ceil):
    try:
        return F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    except RuntimeError as e:
        # PyTorch's CPU channels_last kernel indexes with an integer of the value's width, so it
        # refuses uint8/int8 planes with H*W > 127 (int16: > 32767; measured on torch 2.13); fastcnn
        # has no such limit. The reference is then the NCHW result in the input's layout (the values
        # and indices are the same).
        if "integer_t" not in str(e):
            raise
        fmt = suggest_memory_format(x)
        return tuple(t.contiguous(memory_format=fmt) for t in F.max_pool2d(x.contiguous(), k, s, p, d, ceil,
                                                                         return_indices=True))


def check_int_case(x, k, s, p, d, ceil, without_indices=True):
    ref, ref_idx = _torch_pool(x, k, s, p, d, ceil)
    out, idx = FF.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert out.dtype == x.dtype and idx.dtype == torch.int64 and out.shape == ref.shape
    assert torch.equal(out, ref), "values differ"
    assert torch.equal(idx, ref_idx), "indices differ"
    for fmt in (torch.contiguous_format, torch.channels_last):
        assert out.is_contiguous(memory_format=fmt) == ref.is_contiguous(memory_format=fmt)
    if without_indices:
        assert torch.equal(FF.max_pool2d(x, k, s, p, d, ceil), ref), "values differ (without indices)"


@pytest.mark.parametrize("dtype", INT_TYPES)
def test_max_pool2d_integer(dtype, backend_device):
    _, device = backend_device
    for cfg in CONFIGS:
        N, C, H, W, k, s, p, d, ceil = cfg
        for layout in ("contiguous", "channels_last"):
            x = as_layout(_ints((N, C, H, W), dtype, device), layout)
            check_int_case(x, k, s, p, d, ceil, without_indices=False)  # the ties below check that path
    # few distinct values: ties everywhere, the first maximum's index wins
    x = _ints((2, 3, 9, 11), dtype, device, extremes=True)
    check_int_case(x, 3, 2, 1, 1, True)
    check_int_case(x.contiguous(memory_format=torch.channels_last), (3, 2), (1, 2), (1, 1), (2, 1), False)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_max_pool2d_integer_extremes(dtype, backend_device):
    _, device = backend_device
    info = torch.iinfo(dtype)
    for layout in ("contiguous", "channels_last", "offset"):
        x = as_layout(_ints((2, 5, 7, 8), dtype, device, extremes=True), layout)
        check_int_case(x, 3, 2, 1, 1, False)
        check_int_case(x, 2, 2, 0, 1, True)
        # every window at the type's lowest value (0 for uint8): the start value itself, index of the first tap
        low = torch.full((1, 3, 5, 6), info.min, dtype=dtype, device=device)
        check_int_case(as_layout(low, layout), 3, 2, 1, 1, True)
        check_int_case(as_layout(low.fill_(info.max), layout), 3, 2, 1, 1, True)
    # a window with no input element (dilation: both taps outside the 2x2 map): lowest value, PyTorch's index
    x = _ints((1, 2, 2, 2), dtype, device)
    check_int_case(x, 2, 1, 1, 3, False)


def test_max_pool2d_integer_views_and_empty_batch(backend_device):
    _, device = backend_device
    x = _ints((2, 3, 9, 11), torch.int32, device)
    check_int_case(as_layout(x, "strided"), 3, 2, 1, 1, False)
    check_int_case(as_layout(x, "offset"), 2, None, 0, 1, True)
    e = torch.zeros(0, 3, 8, 8, dtype=torch.uint8, device=device)
    out, idx = FF.max_pool2d(e, 3, 2, 1, return_indices=True)
    assert out.shape == (0, 3, 4, 4) and out.dtype == torch.uint8 and idx.shape == (0, 3, 4, 4)
    u = _ints((3, 8, 8), torch.uint8, device)  # unbatched
    got, ref = FF.max_pool2d(u, 2, return_indices=True), F.max_pool2d(u, 2, return_indices=True)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_max_pool2d_integer_has_no_gradient(backend_device):
    _, device = backend_device
    x = _ints((2, 3, 8, 8), torch.int64, device)
    with pytest.raises(RuntimeError, match="floating point"):  # PyTorch's own rule, before fastcnn runs
        x.requires_grad_()
    out, idx = torch.ops.fastcnn.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False, True)
    assert not out.requires_grad
    for grad in (torch.ones_like(out), torch.ones_like(out, dtype=torch.float32)):
        for indices in (idx, idx[:0]):
            with pytest.raises(ValueError, match=r"^max_pool2d_backward: input must be a floating-point tensor .*"
                                                 r"got int64: an integer max_pool2d has no gradient"):
                torch.ops.fastcnn._max_pool2d_backward(grad, x, indices, [2, 2], [2, 2], [0, 0], [1, 1], False)


def test_max_pool2d_integer_module_fuse_and_opcheck(backend_device):
    import fastcnn
    import fastcnn.nn as fnn

    _, device = backend_device
    x = _ints((2, 3, 12, 10), torch.uint8, device).contiguous(memory_format=torch.channels_last)
    m = fnn.MaxPool2d(3, 2, 1, ceil_mode=True, return_indices=True)
    got, ref = m(x), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True, return_indices=True)(x)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    # fuse() replaces every nn.MaxPool2d: a model that pools integer maps keeps working
    model = torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.MaxPool2d(3, 1, 1, dilation=1), torch.nn.Flatten())
    fused = fastcnn.fuse(model)
    assert not any(type(mod) is torch.nn.MaxPool2d for mod in fused.modules())
    assert torch.equal(fused(x), model(x))
    op = torch.ops.fastcnn.max_pool2d.default
    for args in [(x, [3, 3], [2, 2], [1, 1], [1, 1], True, True),
                 (x.long().contiguous(), [2, 2], [1, 2], [0, 1], [2, 1], False, False)]:
        torch.library.opcheck(op, args)
