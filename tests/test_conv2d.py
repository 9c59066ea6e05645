"""fastcnn conv2d: act(conv2d(x, w) + bias + residual) against torch.nn.functional in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastcnn
import fastcnn.functional as FF
from fastcnn.bench.shapes import layers
from conftest import TOL, assert_close, as_layout, leaf, reference_grads, to64

# (N, C, H, W, K, kh, kw, stride, padding, dilation, groups): odd sizes, primes, every argument.
CONFIGS = [
    (2, 3, 9, 11, 5, 3, 3, 1, 1, 1, 1),
    (1, 1, 7, 7, 1, 1, 1, 1, 0, 1, 1),
    (2, 4, 9, 11, 6, 3, 5, 2, 1, 1, 2),
    (3, 6, 13, 12, 4, 5, 3, 2, (2, 1), 2, 2),
    (2, 8, 8, 8, 8, 3, 3, 1, 1, 1, 8),  # depthwise
    (2, 5, 10, 9, 7, 2, 2, 2, 0, 1, 1),  # even kernel, non-overlapping windows
    (1, 3, 17, 15, 5, 7, 7, 2, 3, 1, 1),  # stem-like 7x7/2
    (2, 7, 6, 5, 3, 1, 1, 1, 1, 1, 1),  # 1x1 with padding
    (2, 3, 12, 12, 4, 3, 3, 3, 0, 1, 1),  # stride 3
    (2, 4, 11, 13, 6, 3, 3, (1, 2), (0, 2), (2, 1), 1),  # asymmetric stride/padding/dilation
    (1, 2, 1, 1, 3, 1, 1, 1, 0, 1, 1),  # 1x1 map
    (2, 3, 3, 3, 2, 3, 3, 1, 0, 1, 1),  # kernel == input
]


def _net_configs(max_c=24, max_hw=15):
    """The networks' conv layers (bench/shapes.py) at reduced size: channels capped, maps shrunk."""
    out = []
    for L in layers(ops=("conv2d",)):
        C, K = min(L.C, max_c), min(L.K, max_c)
        H = min(L.H, max(max_hw, L.R + 2 * L.stride))
        out.append(pytest.param((2, C, H, H, K, L.R, L.S, L.stride, L.padding, L.dilation, 1),
                                id=f"{L.net}.{L.name}"))
    # de-duplicate ids with identical reduced configs
    seen, uniq = set(), []
    for p in out:
        if p.values[0] not in seen:
            seen.add(p.values[0])
            uniq.append(p)
    return uniq


def _small(backend_device):
    return backend_device == ("triton", "cpu")


def run_case(cfg, backend_device, dtype=torch.float32, layout="contiguous", bias=True, residual=True,
             activation="relu", grads=True):
    N, C, H, W, K, kh, kw, stride, padding, dilation, groups = cfg
    _, device = backend_device
    x = as_layout(torch.randn(N, C, H, W, device=device, dtype=dtype), layout)
    w = torch.randn(K, C // groups, kh, kw, device=device, dtype=dtype) / (C // groups * kh * kw) ** 0.5
    b = torch.randn(K, device=device, dtype=dtype) if bias else None
    ref_plain = F.conv2d(to64(x), to64(w), to64(b), stride, padding, dilation, groups)
    r = as_layout(torch.randn(ref_plain.shape, device=device, dtype=dtype), layout) if residual else None
    x, w = leaf(x, grads), leaf(w, grads)
    b = leaf(b, grads) if b is not None else None
    r = leaf(r, grads) if r is not None else None
    x_before = x.detach().clone()
    out = FF.conv2d(x, w, b, stride, padding, dilation, groups, residual=r, activation=activation)

    x64, w64, b64, r64 = to64(x), to64(w), to64(b), to64(r)
    ref = F.conv2d(x64, w64, b64, stride, padding, dilation, groups)
    if r64 is not None:
        ref = ref + r64
    if activation == "relu":
        ref = F.relu(ref)
    assert out.dtype == dtype and out.device.type == torch.device(device).type
    assert_close(out, ref, dtype)
    assert torch.equal(x.detach(), x_before), "input was modified"
    if grads:
        gy = torch.randn_like(out)
        inputs = [x, w, b, r]
        got = torch.autograd.grad(out, [t for t in inputs if t is not None], gy)
        want = reference_grads(ref, [x64, w64, b64, r64], gy.detach())
        it = iter(got)
        for name, t, g_ref in zip(["input", "weight", "bias", "residual"], inputs, want):
            if t is not None:
                assert_close(next(it), g_ref, dtype, what=f"grad {name}")
    return out, ref


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv2d_configs(cfg, layout, backend_device):
    run_case(cfg, backend_device, layout=layout)


@pytest.mark.parametrize("cfg", _net_configs())
def test_conv2d_network_layers(cfg, backend_device):
    if _small(backend_device):
        pytest.skip("interpreter: covered by the configs above")
    run_case(cfg, backend_device, layout="channels_last")
    run_case(cfg, backend_device, layout="contiguous", residual=False)


@pytest.mark.parametrize("layout", ["strided", "offset"])
@pytest.mark.parametrize("bias,residual,activation", [(True, True, "relu"), (False, False, None),
                                                      (True, False, None), (False, True, "relu")])
def test_conv2d_views_and_epilogues(layout, bias, residual, activation, backend_device):
    run_case(CONFIGS[0], backend_device, layout=layout, bias=bias, residual=residual, activation=activation)
    run_case(CONFIGS[2], backend_device, layout=layout, bias=bias, residual=residual, activation=activation)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_conv2d_dtypes(dtype, backend_device):
    run_case(CONFIGS[0], backend_device, dtype=dtype)
    run_case(CONFIGS[3], backend_device, dtype=dtype, layout="channels_last")


def test_conv2d_memory_format_follows_pytorch(backend_device):
    _, device = backend_device
    for xf, wf in [(torch.contiguous_format, torch.contiguous_format), (torch.channels_last, torch.contiguous_format),
                   (torch.contiguous_format, torch.channels_last)]:
        x = torch.randn(2, 4, 6, 6, device=device).contiguous(memory_format=xf)
        w = torch.randn(5, 4, 3, 3, device=device).contiguous(memory_format=wf)
        out, ref = FF.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1)
        for fmt in (torch.contiguous_format, torch.channels_last):
            assert out.is_contiguous(memory_format=fmt) == ref.is_contiguous(memory_format=fmt), (xf, wf, fmt)


# The reference F.conv2d warns that PyTorch pads a copy for padding="same" with an even kernel (its
# own implementation note, not a problem of the call); fastcnn pads in-kernel and does not warn.
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
def test_conv2d_padding_modes(backend_device):
    _, device = backend_device
    x = torch.randn(2, 3, 9, 8, device=device, dtype=torch.float64)
    for k, d in [(3, 1), (4, 1), (2, 3), ((4, 3), (1, 2))]:
        w = torch.randn(4, 3, *((k, k) if isinstance(k, int) else k), device=device, dtype=torch.float64)
        for pad in ("same", "valid"):
            assert_close(FF.conv2d(x, w, padding=pad, dilation=d), F.conv2d(x, w, padding=pad, dilation=d),
                         torch.float64, what=f"padding={pad} k={k} d={d}")


def test_conv2d_unbatched_and_relu_alias(backend_device):
    _, device = backend_device
    x = torch.randn(3, 7, 7, device=device, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, device=device, dtype=torch.float64)
    b = torch.randn(4, device=device, dtype=torch.float64)
    assert_close(FF.conv2d_relu(x, w, b, padding=1), F.relu(F.conv2d(x, w, b, padding=1)), torch.float64)


def test_conv2d_empty_batch(backend_device):
    _, device = backend_device
    x = torch.randn(0, 3, 8, 8, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    out = FF.conv2d(x, w, b, padding=1, activation="relu")
    assert out.shape == (0, 4, 8, 8)
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


def test_conv2d_nan_inf_propagate(backend_device):
    _, device = backend_device
    x = torch.randn(1, 2, 6, 6, device=device)
    x[0, 0, 1, 1] = float("nan")
    x[0, 1, 4, 4] = float("inf")
    w = torch.rand(3, 2, 3, 3, device=device) + 0.1  # positive: inf stays +inf through the sum
    out, ref = FF.conv2d(x, w, padding=1, activation="relu"), F.relu(F.conv2d(x, w, padding=1))
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.isinf(), ref.isinf())
    fin = torch.isfinite(ref)
    assert torch.allclose(out[fin], ref[fin], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2], CONFIGS[5], CONFIGS[9]])
def test_conv2d_gradcheck(cfg, backend_device):
    if _small(backend_device) and cfg in (CONFIGS[5], CONFIGS[9]):
        pytest.skip("interpreter: float64 kernels are gradchecked on CONFIGS[0] and [2]; these geometries run in "
                    "test_conv2d_configs")
    N, C, H, W, K, kh, kw, stride, padding, dilation, groups = cfg
    _, device = backend_device
    kw_ = dict(device=device, dtype=torch.float64, requires_grad=True)
    N, H, W = 1, min(H, 7), min(W, 7)
    if _small(backend_device):
        H, W = min(H, 5), min(W, 5)  # interpreter: gradcheck runs ~1000 convs; 5x5 fits every kernel here
    x = torch.randn(N, C, H, W, **kw_)
    w = torch.randn(K, C // groups, kh, kw, **kw_)
    b = torch.randn(K, **kw_)
    with torch.no_grad():
        shape = F.conv2d(x, w, b, stride, padding, dilation, groups).shape
    r = torch.randn(shape, **kw_)
    f = lambda x, w, b, r: FF.conv2d(x, w, b, stride, padding, dilation, groups, residual=r, activation="relu")  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b, r), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_conv2d_opcheck(backend_device):
    _, device = backend_device
    op = torch.ops.fastcnn.conv2d.default
    for rg in (False, True):
        x = torch.randn(2, 4, 7, 6, device=device, requires_grad=rg)
        w = torch.randn(6, 2, 3, 3, device=device, requires_grad=rg)
        b = torch.randn(6, device=device, requires_grad=rg)
        r = torch.randn(2, 6, 4, 3, device=device, requires_grad=rg)
        samples = [
            (x, w, b, r, [2, 2], [1, 1], [1, 1], 2, "relu"),
            (x, w, None, None, [1, 1], [0, 0], [1, 1], 2, "none"),
            (x.contiguous(memory_format=torch.channels_last), w, b, None, [1, 2], [1, 0], [2, 1], 2, "relu"),
        ]
        for args in samples:
            torch.library.opcheck(op, args)


def test_conv2d_backward_opcheck(backend_device):
    _, device = backend_device
    x = torch.randn(2, 4, 7, 6, device=device)
    w = torch.randn(6, 4, 3, 3, device=device)
    out = torch.ops.fastcnn.conv2d(x, w, None, None, [1, 1], [1, 1], [1, 1], 1, "relu")
    g = torch.randn_like(out)
    for mask in ([True, True, True, True], [True, False, False, False], [False, True, True, False]):
        torch.library.opcheck(torch.ops.fastcnn._conv2d_backward.default,
                              (g, x, w, out, [1, 1], [1, 1], [1, 1], 1, "relu", mask))


def test_conv2d_torch_compile(backend_device):
    _, device = backend_device
    torch._dynamo.reset()

    def f(x, w, b, r):
        y = FF.conv2d(x, w, b, padding=1, residual=r, activation="relu")
        return FF.conv2d(y, w, None, padding=1).sum()

    x = torch.randn(2, 4, 6, 6, device=device, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    r = torch.randn(2, 4, 6, 6, device=device, requires_grad=True)
    eager = f(x, w, b, r)
    ge = torch.autograd.grad(eager, (x, w, b, r))
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    out = compiled(x, w, b, r)
    gc = torch.autograd.grad(out, (x, w, b, r))
    assert_close(out, eager, torch.float32)
    for a, e in zip(gc, ge):
        assert_close(a, e, torch.float32)


def test_conv2d_torch_compile_inductor_cpu():
    torch._dynamo.reset()

    def f(x, w):
        return FF.conv2d(x, w, padding=1, activation="relu") * 2

    x, w = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3)
    assert_close(torch.compile(f, fullgraph=True)(x, w), f(x, w), torch.float32)
