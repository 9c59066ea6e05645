"""The network fusions' ops on every backend: conv2d_into and conv1x1_into (writes into channel
slices, sibling 1x1 convs as one GEMM, the max-pool inside the 1x1's operand load), their backward,
and fastcnn.fusions' block executor, against float64 PyTorch."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from fastcnn import fusions
from conftest import assert_close, leaf

ops = torch.ops.fastcnn

# (N, C, H, W, splits, activations, stride, pool)
POOL3 = (3, 3, 1, 1, 1, 1, 1)  # GoogLeNet's pool branch: 3x3/1, padding 1, ceil_mode
POOL2 = (2, 2, 2, 2, 0, 0, 0)
SEG_CONFIGS = [
    (2, 5, 7, 9, (3, 7, 6), ("relu", "none", "relu"), (1, 1), ()),
    (1, 8, 6, 5, (4, 12), ("none", "relu"), (2, 2), ()),
    (2, 6, 7, 7, (5,), ("relu",), (1, 1), POOL3),
    (2, 3, 9, 8, (2, 6), ("none", "relu"), (1, 1), POOL2),
    (0, 4, 5, 5, (3, 2), ("relu", "relu"), (1, 1), ()),
    (2, 16, 1, 1, (8, 8), ("relu", "none"), (1, 1), POOL3),
]


def _fmt(layout):
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def _block(N, C, P, Q, dtype, device, layout):
    """A block output full of NaN, in the op's memory format: whatever a kernel must not write stays NaN."""
    return torch.full((N, C, P, Q), float("nan"), dtype=dtype, device=device).contiguous(memory_format=_fmt(layout))


def _ref_operand(x64, stride, pool):
    if pool:
        return F.max_pool2d(x64, pool[0:2], pool[2:4], pool[4:6], ceil_mode=bool(pool[6]))
    return x64[:, :, ::stride[0], ::stride[1]]


@pytest.mark.parametrize("cfg", SEG_CONFIGS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_conv1x1_into(cfg, layout, dtype, backend_device):
    N, C, H, W, splits, acts, stride, pool = cfg
    _, device = backend_device
    x = torch.randn(N, C, H, W, dtype=dtype, device=device).contiguous(memory_format=_fmt(layout))
    x[:, :, ::3, ::2] *= -2  # ties and negative windows for the pool
    K = sum(splits)
    w = (torch.randn(K, C, 1, 1, dtype=dtype, device=device) / C ** 0.5)
    b = torch.randn(K, dtype=dtype, device=device)
    ref = F.conv2d(_ref_operand(x.double().cpu(), stride, pool), w.double().cpu(), b.double().cpu())
    P, Q = ref.shape[2:]
    # Each segment into a slice at an odd offset of its own wider NaN block.
    blocks = [_block(N, k + 5, P, Q, dtype, device, layout) for k in splits]
    outs = [blk.narrow(1, 3, k) for blk, k in zip(blocks, splits)]
    ops.conv1x1_into(x, w, b, list(stride), list(acts), list(pool), outs)
    off = 0
    for blk, o, k, a in zip(blocks, outs, splits, acts):
        r = ref[:, off:off + k]
        assert_close(o, r.relu() if a == "relu" else r, dtype)
        assert blk[:, :3].isnan().all() and blk[:, 3 + k:].isnan().all(), "wrote outside its slice"
        off += k


@pytest.mark.parametrize("cfg", [c for c in SEG_CONFIGS if c[0] > 0])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv1x1_split_grads(cfg, layout, backend_device):
    """conv1x1_split (the autograd layer over conv1x1_into) and _conv1x1_into_backward: every gradient."""
    N, C, H, W, splits, acts, stride, pool = cfg
    _, device = backend_device
    dtype = torch.float32
    x = leaf(torch.randn(N, C, H, W, dtype=dtype, device=device).contiguous(memory_format=_fmt(layout)))
    K = sum(splits)
    w = leaf(torch.randn(K, C, 1, 1, dtype=dtype, device=device) / C ** 0.5)
    b = leaf(torch.randn(K, dtype=dtype, device=device))
    if pool:
        outs = fusions._Split.apply(x, w, b, splits, acts, stride, pool)
    else:
        outs = fusions.conv1x1_split(x, w, b, splits, acts, stride)
    x64, w64, b64 = (t.detach().double().cpu().requires_grad_() for t in (x, w, b))
    ref = F.conv2d(_ref_operand(x64, stride, pool), w64, b64)
    refs = [r.relu() if a == "relu" else r for r, a in zip(ref.split(list(splits), 1), acts)]
    grads = [torch.randn_like(o) for o in outs]
    got = torch.autograd.grad(outs, [x, w, b], grads)
    want = torch.autograd.grad(refs, [x64, w64, b64], [g.double().cpu() for g in grads])
    for o, r in zip(outs, refs):
        assert_close(o, r, dtype)
    for name, g, r in zip(["input", "weight", "bias"], got, want):
        assert_close(g, r, dtype, what=f"grad {name}")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("act", ["relu", "none"])
def test_conv2d_into(layout, dtype, act, backend_device):
    _, device = backend_device
    x = torch.randn(2, 5, 7, 6, dtype=dtype, device=device).contiguous(memory_format=_fmt(layout))
    w = torch.randn(6, 5, 3, 3, dtype=dtype, device=device) / 5
    b = torch.randn(6, dtype=dtype, device=device)
    r = torch.randn(2, 6, 4, 3, dtype=dtype, device=device).contiguous(memory_format=_fmt(layout))
    blk = _block(2, 13, 4, 3, dtype, device, layout)
    out = blk.narrow(1, 5, 6)
    ops.conv2d_into(x, w, b, r, [2, 2], [1, 1], [1, 1], 1, act, out)
    ref = F.conv2d(x.double().cpu(), w.double().cpu(), b.double().cpu(), 2, 1) + r.double().cpu()
    assert_close(out, ref.relu() if act == "relu" else ref, dtype)
    assert blk[:, :5].isnan().all() and blk[:, 11:].isnan().all(), "wrote outside its slice"


def _inception(C, ch1, r3, ch3, r5, ch5, proj, dtype, device):
    from fastcnn.models.googlenet import Inception
    from test_models import randomize_bn

    m = Inception(C, ch1, r3, ch3, r5, ch5, proj).to(device=device, dtype=dtype)
    randomize_bn(m, seed=7)
    return m


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("train", [False, True])
def test_inception_block(layout, train, backend_device):
    """A GoogLeNet block with the fusions against the same block as plain PyTorch ops (float64):
    output, input gradient and every parameter's gradient; train mode also the BN running stats."""
    import copy

    _, device = backend_device
    m = _inception(6, 4, 3, 5, 2, 3, 4, torch.float64, device)
    m.train(train)
    ref = copy.deepcopy(m).cpu()
    x = leaf(torch.randn(2, 6, 7, 5, dtype=torch.float64, device=device).contiguous(memory_format=_fmt(layout)))
    y = m(x)
    xr = x.detach().cpu().requires_grad_()
    yr = torch.cat([_plain(ref.branch1, xr), _plain(ref.branch2, xr), _plain(ref.branch3, xr),
                    _plain(ref.branch4, xr)], 1)
    assert_close(y, yr, torch.float64)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *m.parameters()], g)
    want = torch.autograd.grad(yr, [xr, *ref.parameters()], g.cpu())
    for (name, _), a, b in zip([("input", None), *m.named_parameters()], got, want):
        assert_close(a, b, torch.float64, what=f"grad {name}")
    if train:
        for (name, a), b in zip(m.named_buffers(), ref.buffers()):  # running stats (float64 rounding)
            assert_close(a, b, torch.float64, what=name)


def _plain(branch, x):
    """A BasicConv2d / Sequential branch as plain PyTorch: conv -> BN -> ReLU, max-pool."""
    mods = list(branch) if isinstance(branch, nn.Sequential) else [branch]
    for m in mods:
        if isinstance(m, nn.MaxPool2d):
            x = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        else:
            x = F.relu(m.bn(F.conv2d(x, m.conv.weight, m.conv.bias, m.conv.stride, m.conv.padding)))
    return x


# ---- errors: one message on every backend and under FakeTensorMode ----

def _error_cases(device):
    x = torch.randn(2, 4, 5, 5, device=device)
    w = torch.randn(6, 4, 1, 1, device=device)
    good = [torch.empty(2, 2, 5, 5, device=device), torch.empty(2, 4, 5, 5, device=device)]
    wide = torch.empty(2, 9, 5, 5, device=device)
    return [
        ("conv1x1_into: the channels of out (5) must add up to weight's out-channels (weight shape [6, 4, 1, 1])",
         lambda: ops.conv1x1_into(x, w, None, [1, 1], ["relu", "relu"], [], [good[0], good[1][:, :3]])),
        ("conv1x1_into: activations must have one name per tensor of out (2), got 1",
         lambda: ops.conv1x1_into(x, w, None, [1, 1], ["relu"], [], good)),
        ("conv1x1_into: activation must be 'none' or 'relu', got 'gelu'",
         lambda: ops.conv1x1_into(x, w, None, [1, 1], ["relu", "gelu"], [], good)),
        ("conv1x1_into: stride must be [1, 1] with a pool, got [2, 2]",
         lambda: ops.conv1x1_into(x, w, None, [2, 2], ["relu", "relu"], list(POOL3), good)),
        ("conv1x1_into: pool must be [] or [kH, kW, sH, sW, padH, padW, ceil_mode], got [3, 3]",
         lambda: ops.conv1x1_into(x, w, None, [1, 1], ["relu", "relu"], [3, 3], good)),
        ("conv1x1_into: out[1] must be a channel slice of a dense contiguous (NCHW) tensor (the op's memory "
         "format), got strides [225, 1, 45, 9]",
         lambda: ops.conv1x1_into(x, w, None, [1, 1], ["relu", "relu"], [],
                                  [good[0], wide.contiguous(memory_format=torch.channels_last)[:, 1:5]])),
        ("conv1x1_into: out[0] must have the output's shape [2, 2, 3, 3], got [2, 2, 5, 5]",
         lambda: ops.conv1x1_into(x, w, None, [2, 2], ["relu", "relu"], [], good)),
        ("conv2d_into: out must have the output's shape [2, 6, 5, 5], got [2, 6, 3, 3]",
         lambda: ops.conv2d_into(x, torch.randn(6, 4, 3, 3, device=device), None, None, [1, 1], [1, 1], [1, 1], 1,
                                 "relu", torch.empty(2, 6, 3, 3, device=device))),
        ("conv2d_into: out dtype float64 does not match input dtype float32",
         lambda: ops.conv2d_into(x, torch.randn(6, 4, 3, 3, device=device), None, None, [1, 1], [1, 1], [1, 1], 1,
                                 "relu", torch.empty(2, 6, 5, 5, device=device, dtype=torch.float64))),
    ]


def test_errors(backend_device):
    _, device = backend_device
    for msg, call in _error_cases(device):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) == msg


def test_errors_fake():
    with FakeTensorMode():
        for msg, call in _error_cases("cpu"):
            with pytest.raises(ValueError) as e:
                call()
            assert str(e.value) == msg


def test_opcheck():
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    w = torch.randn(6, 4, 1, 1, dtype=torch.float64)
    blk = torch.empty(2, 9, 5, 5, dtype=torch.float64)
    r = torch.empty(2, 4, 5, 5, dtype=torch.float64)
    torch.library.opcheck(ops.conv1x1_into.default, (x, w, torch.randn(6, dtype=torch.float64), [1, 1],
                                                     ["relu", "none"], [], [blk[:, 1:3], r]))
    torch.library.opcheck(ops.conv1x1_into.default, (x, w, None, [1, 1], ["relu"], list(POOL3), [blk[:, 3:9]]))
    torch.library.opcheck(ops.conv2d_into.default, (x, torch.randn(3, 4, 3, 3, dtype=torch.float64), None, None,
                                                    [1, 1], [1, 1], [1, 1], 1, "relu", blk[:, 6:9]))
    outs = [torch.empty(2, 2, 5, 5, dtype=torch.float64), torch.empty(2, 4, 5, 5, dtype=torch.float64)]
    ops.conv1x1_into(x, w, None, [1, 1], ["relu", "none"], list(POOL3), outs)
    torch.library.opcheck(ops._conv1x1_into_backward.default,
                          ([torch.randn_like(o) for o in outs], x, w, outs, [1, 1], ["relu", "none"], list(POOL3),
                           [True, True, True]))


def test_compile_fullgraph():
    """The eval block (one autograd node over mutable ops on views of one buffer) and conv1x1_split
    under torch.compile(fullgraph=True), forward and backward."""
    m = _inception(6, 4, 3, 5, 2, 3, 4, torch.float32, "cpu").eval()
    x = torch.randn(2, 6, 7, 5, requires_grad=True)
    torch._dynamo.reset()
    cm = torch.compile(m, fullgraph=True, backend="aot_eager")
    y, yc = m(x), cm(x)
    assert_close(yc, y, torch.float32)
    g = torch.randn_like(y)
    assert_close(torch.autograd.grad(yc, x, g)[0], torch.autograd.grad(y, x, g)[0], torch.float32, what="grad input")
    w = torch.randn(9, 6, 1, 1, requires_grad=True)
    f = torch.compile(lambda x, w: fusions.conv1x1_split(x, w, None, [4, 5], ["relu", None]), fullgraph=True,
                      backend="aot_eager")
    a, b = f(x, w)
    ra, rb = fusions.conv1x1_split(x, w, None, [4, 5], ["relu", None])
    assert_close(a, ra, torch.float32)
    assert_close(b, rb, torch.float32)
    (a.sum() + b.sum()).backward()
