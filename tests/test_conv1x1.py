"""fastcnn conv1x1: the bottleneck 1x1 conv as a GEMM with the fused bias/residual/ReLU epilogue."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastcnn.functional as FF
from fastcnn.bench.shapes import layers
from conftest import assert_close, as_layout, leaf, reference_grads, to64

# (N, C, H, W, K, stride)
CONFIGS = [(2, 8, 7, 5, 12, 1), (3, 5, 9, 9, 3, 2), (1, 16, 4, 6, 32, 1), (2, 3, 1, 1, 5, 1), (2, 6, 8, 8, 4, 3),
           (2, 7, 11, 10, 9, (2, 1))]


def _net_configs(max_c=32):
    seen, out = set(), []
    for L in layers(ops=("conv1x1",)):
        cfg = (2, min(L.C, max_c), min(L.H, 9), min(L.W, 9), min(L.K, max_c), L.stride)
        if (cfg, L.residual, L.relu) not in seen:
            seen.add((cfg, L.residual, L.relu))
            out.append(pytest.param(cfg, L.residual, L.relu, id=f"{L.net}.{L.name}"))
    return out


def run_case(cfg, backend_device, dtype=torch.float32, layout="contiguous", bias=True, residual=True,
             activation="relu", weight_2d=False):
    N, C, H, W, K, stride = cfg
    _, device = backend_device
    s = (stride, stride) if isinstance(stride, int) else stride
    x = leaf(as_layout(torch.randn(N, C, H, W, device=device, dtype=dtype), layout))
    w4 = torch.randn(K, C, 1, 1, device=device, dtype=dtype) / C ** 0.5
    w = leaf(w4.view(K, C) if weight_2d else w4)
    b = leaf(torch.randn(K, device=device, dtype=dtype)) if bias else None
    P, Q = (H - 1) // s[0] + 1, (W - 1) // s[1] + 1
    r = leaf(as_layout(torch.randn(N, K, P, Q, device=device, dtype=dtype), layout)) if residual else None
    out = FF.conv1x1(x, w, b, stride, residual=r, activation=activation)
    x64, w64, b64, r64 = to64(x), to64(w), to64(b), to64(r)
    ref = F.conv2d(x64, w64.view(K, C, 1, 1), b64, s)
    if r64 is not None:
        ref = ref + r64
    if activation == "relu":
        ref = F.relu(ref)
    assert_close(out, ref, dtype)
    gy = torch.randn_like(out)
    inputs = [x, w, b, r]
    got = iter(torch.autograd.grad(out, [t for t in inputs if t is not None], gy))
    for name, t, g_ref in zip(["input", "weight", "bias", "residual"], inputs,
                              reference_grads(ref, [x64, w64, b64, r64], gy)):
        if t is not None:
            assert_close(next(got), g_ref, dtype, what=f"grad {name}")


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "offset"])
def test_conv1x1_configs(cfg, layout, backend_device):
    run_case(cfg, backend_device, layout=layout)


@pytest.mark.parametrize("cfg,residual,relu", _net_configs())
def test_conv1x1_network_layers(cfg, residual, relu, backend_device):
    if backend_device == ("triton", "cpu"):
        pytest.skip("interpreter: covered by the configs above")
    act = "relu" if relu else None
    run_case(cfg, backend_device, layout="channels_last", residual=residual, activation=act, bias=False)
    run_case(cfg, backend_device, layout="contiguous", residual=residual, activation=act)


@pytest.mark.parametrize("bias,residual,activation", [(False, False, None), (True, False, "relu"),
                                                      (False, True, None)])
def test_conv1x1_epilogues(bias, residual, activation, backend_device):
    run_case(CONFIGS[0], backend_device, bias=bias, residual=residual, activation=activation, weight_2d=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_conv1x1_dtypes(dtype, backend_device):
    run_case(CONFIGS[1], backend_device, dtype=dtype, layout="channels_last")


def test_conv1x1_gradcheck(backend_device):
    _, device = backend_device
    kw = dict(device=device, dtype=torch.float64, requires_grad=True)
    N = 1 if backend_device == ("triton", "cpu") else 2  # interpreter: gradcheck runs ~500 GEMMs
    x, w, b = torch.randn(N, 5, 5, 4, **kw), torch.randn(3, 5, 1, 1, **kw), torch.randn(3, **kw)
    r = torch.randn(N, 3, 3, 2, **kw)
    f = lambda x, w, b, r: FF.conv1x1(x, w, b, 2, residual=r)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b, r), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_conv1x1_opcheck(backend_device):
    _, device = backend_device
    for rg in (False, True):
        x = torch.randn(2, 6, 5, 7, device=device, requires_grad=rg)
        w = torch.randn(4, 6, 1, 1, device=device, requires_grad=rg)
        b = torch.randn(4, device=device, requires_grad=rg)
        r = torch.randn(2, 4, 3, 4, device=device, requires_grad=rg)
        for args in [(x, w, b, r, [2, 2], "relu"), (x, w, None, None, [1, 1], "none"),
                     (x.contiguous(memory_format=torch.channels_last), w, b, None, [1, 1], "relu")]:
            torch.library.opcheck(torch.ops.fastcnn.conv1x1.default, args)


def test_conv1x1_torch_compile(backend_device):
    _, device = backend_device
    torch._dynamo.reset()

    def f(x, w, r):
        return FF.conv1x1(x, w, None, 2, residual=r).sum()

    x = torch.randn(2, 6, 8, 8, device=device, requires_grad=True)
    w = torch.randn(4, 6, 1, 1, device=device, requires_grad=True)
    r = torch.randn(2, 4, 4, 4, device=device, requires_grad=True)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    assert_close(compiled(x, w, r), f(x, w, r), torch.float32)
    for a, e in zip(torch.autograd.grad(compiled(x, w, r), (x, w, r)), torch.autograd.grad(f(x, w, r), (x, w, r))):
        assert_close(a, e, torch.float32)
