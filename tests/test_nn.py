"""fastcnn.nn: the drop-in modules against the torch modules they replace (constructor arguments,
parameter names, state_dict, forward and every gradient in float64), and conv_bn_act (the conv ->
BatchNorm -> (+ residual) -> ReLU block) in eval mode (BN folded, cached) and train mode."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastcnn
import fastcnn.nn as fnn
from conftest import TOL, assert_close

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("_one_thread")  # conftest: small tensors, one thread


def grads(fn, inputs, seed=7):
    """fn(*inputs) and the gradients of a random projection of it w.r.t. every input."""
    out = fn(*inputs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(out)
    need = [t for t in inputs if t.requires_grad]
    return out, torch.autograd.grad(out, need, g)


def check_module(mod, ref, x, params1, params2, residual=None, what=""):
    """Output and input/parameter (and residual) gradients of ``mod`` (parameters ``params1``)
    against ``ref`` (``params2``), float64."""
    x1 = x.detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    p1, p2 = list(params1), list(params2)
    if residual is None:
        o1, g1 = grads(lambda x_, *_: mod(x_), [x1, *p1])
        o2, g2 = grads(lambda x_, *_: ref(x_), [x2, *p2])
    else:
        r1 = residual.detach().clone().requires_grad_(True)
        r2 = residual.detach().clone().requires_grad_(True)
        o1, g1 = grads(lambda x_, r_, *_: mod(x_, r_), [x1, r1, *p1])
        o2, g2 = grads(lambda x_, r_, *_: ref(x_, r_), [x2, r2, *p2])
    assert_close(o1, o2, F64, f"{what} output")
    assert len(g1) == len(g2)
    for i, (a, b) in enumerate(zip(g1, g2)):
        if b.norm() < 1e-10:  # zero up to round-off (a conv bias followed by train-mode BN)
            assert a.norm() < 1e-10, f"{what} gradient {i}: {a.norm():.3e}, expected ~0"
        else:
            assert_close(a, b, F64, f"{what} gradient {i}")


CONVS = [
    dict(in_channels=5, out_channels=7, kernel_size=3, stride=1, padding=1),
    dict(in_channels=6, out_channels=9, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    dict(in_channels=6, out_channels=8, kernel_size=3, groups=2, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding="same"),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=4, out_channels=6, kernel_size=1),
    dict(in_channels=4, out_channels=6, kernel_size=1, stride=2, bias=False),
]


def _ids(cfgs):
    return ["-".join(f"{k[:3]}{v}" for k, v in c.items()).replace(" ", "") for c in cfgs]


@pytest.mark.parametrize("cfg", CONVS, ids=_ids(CONVS))
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv2d_matches_torch(backend_device, cfg, activation):
    _, device = backend_device
    torch.manual_seed(0)
    ref = nn.Conv2d(**cfg, dtype=F64, device=device)
    mod = fnn.Conv2d(**cfg, dtype=F64, device=device, activation=activation)
    assert [k for k in mod.state_dict()] == [k for k in ref.state_dict()]
    mod.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, cfg["in_channels"], 9, 11, dtype=F64, device=device)
    act = torch.relu if activation else (lambda t: t)
    check_module(mod, lambda x_: act(ref(x_)), x, mod.parameters(), ref.parameters(), what="conv")
    res = torch.randn(ref(x).shape, dtype=F64, device=device)
    check_module(mod, lambda x_, r_: act(ref(x_) + r_), x, mod.parameters(), ref.parameters(), residual=res,
                 what="conv+residual")


def test_conv2d_relu_and_from_conv():
    torch.manual_seed(0)
    ref = nn.Conv2d(3, 8, 5, stride=2, padding=2, dtype=F64)
    mod = fnn.Conv2dReLU(3, 8, 5, stride=2, padding=2, dtype=F64)
    mod.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 15, dtype=F64)
    check_module(mod, lambda x_: F.relu(ref(x_)), x, mod.parameters(), ref.parameters())
    assert "activation='relu'" in repr(mod)
    assert isinstance(mod, nn.Conv2d)

    shared = fnn.Conv2d.from_conv(ref, activation="relu")
    assert shared.weight is ref.weight and shared.bias is ref.bias
    assert_close(shared(x), F.relu(ref(x)), F64)
    assert fnn.Conv2dReLU.from_conv(ref).activation == "relu"
    with pytest.raises(ValueError, match="activation"):
        fnn.Conv2d(3, 8, 3, activation="gelu")
    with pytest.raises(ValueError, match="nn.Conv2d"):
        fnn.Conv2d.from_conv(nn.Linear(2, 3))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv1x1_matches_torch(backend_device, stride, activation):
    _, device = backend_device
    torch.manual_seed(0)
    ref = nn.Conv2d(12, 20, kernel_size=1, stride=stride, bias=False, dtype=F64, device=device)
    mod = fnn.Conv1x1(12, 20, kernel_size=1, stride=stride, bias=False, dtype=F64, device=device,
                      activation=activation)
    mod.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 12, 7, 9, dtype=F64, device=device)
    act = torch.relu if activation else (lambda t: t)
    check_module(mod, lambda x_: act(ref(x_)), x, mod.parameters(), ref.parameters())
    res = torch.randn(ref(x).shape, dtype=F64, device=device)
    check_module(mod, lambda x_, r_: act(ref(x_) + r_), x, mod.parameters(), ref.parameters(), residual=res)


def test_conv1x1_arguments():
    m = fnn.Conv1x1(4, 6)  # ReLU by default, as fastcnn.functional.conv1x1
    assert m.activation == "relu" and m.kernel_size == (1, 1)
    x = torch.randn(1, 4, 3, 3)
    assert_close(m(x), F.relu(F.conv2d(x, m.weight, m.bias)), torch.float32)
    for bad in (dict(kernel_size=3), dict(padding=1), dict(groups=2)):
        with pytest.raises(ValueError):
            fnn.Conv1x1(4, 6, **bad)


@pytest.mark.parametrize("cfg", [dict(kernel_size=3, stride=2),
                                 dict(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                 dict(kernel_size=2, stride=2, ceil_mode=True), dict(kernel_size=(3, 2), dilation=2)])
def test_max_pool2d_matches_torch(backend_device, cfg):
    _, device = backend_device
    ref = nn.MaxPool2d(**cfg)
    mod = fnn.MaxPool2d(**cfg)
    x = torch.randn(2, 5, 11, 10, dtype=F64, device=device)
    check_module(mod, ref, x, [], [])
    assert repr(mod).replace("fastcnn.nn.", "") == repr(ref)
    out, idx = fnn.MaxPool2d(**cfg, return_indices=True)(x)
    ro, ri = nn.MaxPool2d(**cfg, return_indices=True)(x)
    assert torch.equal(out, ro) and torch.equal(idx, ri)


def test_add_relu_module(backend_device):
    _, device = backend_device
    a = torch.randn(2, 4, 5, 5, dtype=F64, device=device, requires_grad=True)
    b = torch.randn(2, 4, 5, 5, dtype=F64, device=device, requires_grad=True)
    o1, g1 = grads(fnn.AddReLU(), [a, b])
    o2, g2 = grads(lambda x, y: F.relu(x + y), [a, b])
    assert_close(o1, o2, F64)
    for x, y in zip(g1, g2):
        assert_close(x, y, F64)


# ------------------------------------------------------------------------------------------------
# conv_bn_act
# ------------------------------------------------------------------------------------------------

def _conv_bn(cfg, bn_kwargs=None, seed=0, dtype=F64, device="cpu"):
    torch.manual_seed(seed)
    conv = nn.Conv2d(**cfg, dtype=dtype, device=device)
    bn = nn.BatchNorm2d(cfg["out_channels"], dtype=dtype, device=device, **(bn_kwargs or {}))
    with torch.no_grad():
        if bn.running_mean is not None:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
        if bn.weight is not None:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return conv, bn


def _plain(conv, bn, activation):
    def f(x, residual=None):
        y = bn(conv(x)) if bn is not None else conv(x)
        if residual is not None:
            y = y + residual
        return F.relu(y) if activation else y
    return f


BLOCKS = [dict(in_channels=6, out_channels=8, kernel_size=3, padding=1, bias=False),
          dict(in_channels=6, out_channels=8, kernel_size=3, stride=2, padding=1, bias=True),
          dict(in_channels=8, out_channels=16, kernel_size=1, bias=False),
          dict(in_channels=8, out_channels=16, kernel_size=1, stride=2, bias=False)]


@pytest.mark.parametrize("cfg", BLOCKS, ids=_ids(BLOCKS))
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv_bn_act(backend_device, cfg, mode, residual, activation):
    _, device = backend_device
    conv, bn = _conv_bn(cfg, device=device)
    conv2, bn2 = copy.deepcopy(conv), copy.deepcopy(bn)
    for m in (bn, bn2):
        m.train(mode == "train")
    x = torch.randn(3, cfg["in_channels"], 8, 10, dtype=F64, device=device)
    res = torch.randn(_plain(conv, None, None)(x).shape, dtype=F64, device=device) if residual else None
    mod = lambda x_, r_=None: fnn.conv_bn_act(x_, conv, bn, r_, activation)  # noqa: E731
    check_module(mod, _plain(conv2, bn2, activation), x, _params(conv, bn), _params(conv2, bn2), res)
    for a, b in zip(bn.buffers(), bn2.buffers()):  # running statistics, num_batches_tracked
        assert torch.equal(a, b) if not a.is_floating_point() else (a - b).abs().max() <= 1e-12


def _params(*mods):
    return [p for m in mods for p in m.parameters()]


@pytest.mark.parametrize("bn_kwargs", [dict(momentum=None), dict(affine=False), dict(track_running_stats=False),
                                       dict(eps=1e-3, momentum=0.3)],
                         ids=["cumulative", "no-affine", "no-stats", "eps"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_conv_bn_act_bn_variants(bn_kwargs, mode):
    cfg = dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, bias=False)
    conv, bn = _conv_bn(cfg, bn_kwargs)
    conv2, bn2 = copy.deepcopy(conv), copy.deepcopy(bn)
    bn.train(mode == "train")
    bn2.train(mode == "train")
    x = torch.randn(2, 4, 6, 7, dtype=F64)
    for _ in range(2):  # twice: running averages (momentum=None: cumulative) advance alike
        check_module(lambda x_: fnn.conv_bn_act(x_, conv, bn, None, "relu"), _plain(conv2, bn2, "relu"), x,
                     _params(conv, bn), _params(conv2, bn2))
    for a, b in zip(bn.buffers(), bn2.buffers()):
        assert torch.equal(a, b) if not a.is_floating_point() else (a - b).abs().max() <= 1e-12


def test_fold_bn_formula():
    conv, bn = _conv_bn(dict(in_channels=3, out_channels=5, kernel_size=3, bias=True))
    w, b = fnn.fold_bn(conv, bn)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert_close(w, conv.weight * scale[:, None, None, None], F64)
    assert_close(b, bn.bias + (conv.bias - bn.running_mean) * scale, F64)


def test_gradcheck_conv_bn_act():
    conv, bn = _conv_bn(dict(in_channels=2, out_channels=2, kernel_size=3, padding=1, bias=False))
    x = torch.randn(2, 2, 3, 4, dtype=F64, requires_grad=True)
    r = torch.randn(2, 2, 3, 4, dtype=F64, requires_grad=True)
    for mode in ("eval", "train"):
        bn.train(mode == "train")
        if mode == "train":  # batch statistics: keep the running stats out of the check
            bn.track_running_stats = False
        assert torch.autograd.gradcheck(
            lambda x_, r_, w_, g_, b_: fnn.conv_bn_act(x_, conv, bn, r_, None), (x, r, conv.weight, bn.weight, bn.bias))


def test_fold_cache_refresh():
    conv, bn = _conv_bn(dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, bias=False))
    bn.eval()
    ref = _plain(conv, bn, "relu")
    x = torch.randn(2, 4, 6, 6, dtype=F64)

    def out():
        with torch.no_grad():
            return fnn.conv_bn_act(x, conv, bn, None, "relu")

    fnn.clear_fold_cache()
    assert_close(out(), ref(x), F64)
    w_cached = fnn._FOLD_CACHE[conv][1]
    out()
    assert fnn._FOLD_CACHE[conv][1] is w_cached
    edits = [lambda: conv.weight.mul_(2), lambda: bn.weight.add_(0.5), lambda: bn.bias.sub_(1),
             lambda: bn.running_mean.add_(0.3), lambda: bn.running_var.mul_(3), lambda: setattr(bn, "eps", 0.1),
             lambda: conv.weight.copy_(torch.randn_like(conv.weight))]
    for edit in edits:
        with torch.no_grad():
            edit()
        assert_close(out(), ref(x), F64, "after an edit")
    # load_state_dict and an optimizer step
    other_conv, other_bn = _conv_bn(dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, bias=False), seed=3)
    conv.load_state_dict(other_conv.state_dict())
    bn.load_state_dict(other_bn.state_dict())
    assert_close(out(), ref(x), F64, "after load_state_dict")
    opt = torch.optim.Adam([*conv.parameters(), *bn.parameters()], lr=0.1)
    fnn.conv_bn_act(x, conv, bn, None, "relu").sum().backward()
    opt.step()
    assert_close(out(), ref(x), F64, "after an optimizer step")
    # .data edits bypass version counters: clear_fold_cache() is the documented remedy
    conv.weight.data.mul_(0.5)
    fnn.clear_fold_cache(conv)
    assert_close(out(), ref(x), F64, "after clear_fold_cache")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_conv_bn_act_low_precision(dtype):
    """Eval fold in float32 (half types: folded in float32, rounded once more) against float64 from
    the same rounded weights."""
    conv, bn = _conv_bn(dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, bias=False))
    bn.eval()
    c, b = copy.deepcopy(conv).to(dtype), copy.deepcopy(bn).to(dtype)
    x = torch.randn(2, 8, 6, 6).to(dtype)
    want = _plain(copy.deepcopy(c).double(), copy.deepcopy(b).double(), "relu")(x.double())
    with torch.no_grad():
        got = fnn.conv_bn_act(x, c, b, None, "relu")
    assert got.dtype == dtype
    assert_close(got, want, dtype, tol=2 * TOL[dtype])


def test_compile_modules():
    torch._dynamo.reset()
    torch.manual_seed(0)
    conv, bn = _conv_bn(dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, bias=False), dtype=torch.float32)
    net = nn.Sequential(fnn.Conv2dReLU(3, 4, 3, padding=1), fnn.MaxPool2d(2), fnn.Conv1x1(4, 4))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.conv, self.bn, self.add = net, conv, bn, fnn.AddReLU()

        def forward(self, x):
            y = self.net(x)
            return self.add(fnn.conv_bn_act(y, self.conv, self.bn, None, "relu"), y[:, :1])

    m = Block()
    x = torch.randn(2, 3, 8, 8)
    for mode in ("eval", "train"):  # train: batch statistics, the same for the same input
        m.train(mode == "train")
        want = m(x)
        got = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
        assert_close(got, want, torch.float32, f"compiled {mode}")


def test_exports():
    assert fastcnn.nn is fnn
    for name in fnn.__all__:
        assert hasattr(fnn, name)
