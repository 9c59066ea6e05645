"""fastcnn.fuse: ordinary PyTorch networks rewritten with fastcnn layers compute the same (eval and
train mode, outputs, every gradient, running statistics), keep their state_dict keys, contain
fastcnn layers, and report what could not be traced."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import fastcnn
import fastcnn.nn as fnn
from fastcnn.testing.reference_models import plain_model
from fastcnn.fuse import FusedSequential, fused_conv
from conftest import TOL, assert_close

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("_one_thread")  # conftest: small tensors, one thread


def randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                    m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def run(model, x, seed=1):
    """{what: tensor}: outputs, input gradient, parameter gradients, buffers after the call."""
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    y = model(x)
    outs = [t for t in y if t is not None] if isinstance(y, tuple) else [y]
    g = torch.Generator().manual_seed(seed + 1)
    sum((o * torch.randn(o.shape, generator=g, dtype=F64).to(o)).sum() for o in outs).backward()
    res = {f"output {i}": o for i, o in enumerate(outs)}
    res["input gradient"] = x.grad
    res.update({f"gradient of {k}": p.grad for k, p in model.named_parameters()})
    res.update({f"buffer {k}": b for k, b in model.named_buffers()})
    return res


def compare(fused, model, x, dtype=F64):
    got, want = run(fused, x), run(model, x)
    assert got.keys() == want.keys()
    for k in want:
        if want[k] is None:
            assert got[k] is None, k
        elif not want[k].is_floating_point():
            assert torch.equal(got[k], want[k]), k
        elif want[k].norm() < 1e-10:  # zero up to round-off (a conv bias before train-mode BN)
            assert got[k].norm() < 1e-10, k
        else:
            assert_close(got[k], want[k], dtype, k)


def fastcnn_layers(model):
    return [m for m in model.modules() if type(m).__module__ == "fastcnn.nn"]


NETS = {"lenet5": ({}, (2, 1, 28, 28)), "alexnet": ({"num_classes": 10}, (2, 3, 64, 64)),
        "googlenet": ({"num_classes": 10}, (2, 3, 32, 32)), "resnet18": ({"num_classes": 10}, (2, 3, 64, 64)),
        "resnet50": ({"num_classes": 10}, (2, 3, 64, 64))}
TRAIN_CHECKED = ("lenet5", "googlenet", "resnet18")  # the others: eval output (AlexNet's 58M-parameter
# classifier makes its float64 gradients slow, and ResNet-50's blocks are ResNet-18's patterns)
PATTERNS = {"lenet5": 2, "alexnet": 5, "googlenet": 59, "resnet18": 20, "resnet50": 53}
# The network fusions on top (fuse(network_fusions=True), the default): GoogLeNet's 9 inception
# blocks (a channel cat of conv branches), ResNet-50's layer1.0 (conv1 and the downsample: sibling 1x1s).
NETWORK = {"googlenet": 9, "resnet50": 1}


@pytest.mark.parametrize("name", list(NETS))
def test_fuse_plain_networks(name):
    kwargs, shape = NETS[name]
    torch.manual_seed(0)
    model = randomize_bn(plain_model(name, **kwargs).double())
    before = copy.deepcopy(model.state_dict())
    fused, report = fastcnn.fuse(model, return_report=True)

    # the original is untouched; keys, order and values are the same
    assert all(type(m).__module__ != "fastcnn.nn" for m in model.modules())
    assert list(fused.state_dict()) == list(before)
    assert all(torch.equal(fused.state_dict()[k], v) for k, v in before.items())
    # fastcnn layers inside: every conv and max-pool, and the fused patterns
    n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    n_pool = sum(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert sum(type(m) is fnn.Conv2d for m in fused.modules()) == n_conv
    assert sum(type(m) is fnn.MaxPool2d for m in fused.modules()) == n_pool
    assert len(report.fused) == PATTERNS[name] + NETWORK.get(name, 0), str(report)
    assert len(fastcnn.fuse(model, return_report=True, network_fusions=False)[1].fused) == PATTERNS[name]
    assert len(report.replaced) == n_conv + n_pool
    # the printed report names each converted module once (a conv heading a pattern only there)
    named = [line.split(":", 1)[0].split()[1] for line in str(report).splitlines()[1:]]
    for path, _ in report.replaced:
        assert named.count(path or "<root>") == 1, (path, str(report))
    assert len(named) == len(set(named)), str(report)
    if name == "googlenet":  # `if self.training` in its forward: left as written, noted
        assert [p for p, _ in report.skipped] == [""]
        assert "self.training" in report.skipped[0][1]
    else:
        assert report.skipped == []

    x = torch.randn(shape, dtype=F64)
    model.eval()
    fused.eval()
    with torch.no_grad():
        assert_close(fused(x), model(x), F64, "eval output")
    if name in TRAIN_CHECKED:  # train mode: outputs (GoogLeNet's aux logits too), every gradient, buffers
        model.train()
        fused.train()
        compare(fused, model, x)


def test_fused_graph_calls_fastcnn():
    fused = fastcnn.fuse(plain_model("resnet18"))
    block = fused.layer1[0]
    assert isinstance(block, fx.GraphModule) and type(block).__name__ == "BasicBlock"
    targets = [n.target for n in block.graph.nodes if n.op == "call_function"]
    assert targets.count(fused_conv) == 2
    assert not any(n.op == "call_module" and n.target in ("bn1", "bn2", "relu") for n in block.graph.nodes)
    assert block.stride == 1 and block.expansion == 1  # instance and class attributes carried over
    assert isinstance(fused.layer2[0].downsample, FusedSequential)
    assert isinstance(fused.layer2[0].downsample[0], fnn.Conv2d)  # still indexable


def test_submodules_still_compute_the_same():
    torch.manual_seed(0)
    model = randomize_bn(plain_model("resnet50", num_classes=10).double()).eval()
    fused = fastcnn.fuse(model)
    x = torch.randn(2, 64, 8, 8, dtype=F64)
    with torch.no_grad():
        assert_close(fused.layer1(x), model.layer1(x), F64)
        assert_close(fused.layer1[0].downsample(x), model.layer1[0].downsample(x), F64)
        assert_close(fused.layer1[1:](fused.layer1[0](x)), model.layer1[1:](model.layer1[0](x)), F64)


class Patterns(nn.Module):
    """Every spelling of the patterns, and things that must not be fused."""

    def __init__(self):
        super().__init__()
        c = 6
        self.c1, self.b1 = nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c3 = nn.Conv2d(c, c, 1)
        self.c4, self.b4 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c, track_running_stats=False)
        self.c5, self.b5 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=False)
        self.c6 = nn.Conv2d(c, c, 3, padding=1)
        self.shared = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x):
        a = self.relu(self.b1(self.c1(x)))            # conv + bn + nn.ReLU
        b = self.b2(self.c2(a))
        b += a                                          # conv + bn + += + nn.ReLU (shared instance)
        b = self.relu(b)
        c = F.relu(torch.add(a, self.c3(b)))            # conv + torch.add + F.relu (residual first)
        d = (self.b4(self.c4(c)) + b).relu()            # bn without running stats, .relu()
        e = torch.relu_(self.b5(self.c5(d)))            # non-affine bn, relu_
        f = F.relu(a + e, inplace=True)                 # add + relu of two tensors: add_relu
        g = self.c6(f) + f[:, :1]                       # broadcast residual: unfused path
        h = torch.relu(self.shared(g)) + self.shared(f)  # a conv called twice
        return self.pool(h)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fuse_patterns(mode):
    torch.manual_seed(0)
    model = randomize_bn(Patterns().double())
    model.train(mode == "train")
    fused, report = fastcnn.fuse(model, return_report=True)
    fused.train(mode == "train")
    kinds = [what for _, what in report.fused]
    assert "c1 + b1 + relu" in kinds and "c2 + b2 + add + relu" in kinds and "c3 + add + relu" in kinds
    assert "c4 + b4 + add + relu" in kinds and "c5 + b5 + relu" in kinds and "c6 + add" in kinds
    assert "shared + relu" in kinds and "shared + add" in kinds  # each call of the shared conv
    assert any(k.startswith("add(") for k in kinds)
    graph_fns = [n.target for n in fused.graph.nodes if n.op == "call_function"]
    assert graph_fns.count(fused_conv) == 8
    compare(fused, model, torch.randn(2, 3, 7, 9, dtype=F64))


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.body(x)
        if y.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            y = F.relu(self.head(y))
        return y


class TrainingDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        return y * 2 if self.training else y


def test_untraceable_modules_are_left_with_a_note():
    torch.manual_seed(0)
    model = nn.Sequential(Untraceable(), TrainingDependent()).double()
    randomize_bn(model)
    fused, report = fastcnn.fuse(model, return_report=True)
    skipped = dict(report.skipped)
    assert "not traceable" in skipped["0"] and "self.training" in skipped["1"]
    assert type(fused[0]) is Untraceable and type(fused[1]) is TrainingDependent
    assert isinstance(fused[0].body, FusedSequential)  # its children are still converted
    assert type(fused[0].head) is fnn.Conv2d
    assert "left" in str(report)
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    for mode in ("eval", "train"):
        model.train(mode == "train")
        fused.train(mode == "train")
        model.zero_grad()
        fused.zero_grad()
        compare(fused, model, x)


def test_hooked_modules_are_not_replaced():
    conv = nn.Conv2d(3, 4, 3)
    calls = []
    conv.register_forward_hook(lambda *a: calls.append(1))
    model = nn.Sequential(conv, nn.ReLU())
    fused = fastcnn.fuse(model, inplace=True)
    assert fused is model and type(fused[0]) is nn.Conv2d
    fused(torch.randn(1, 3, 5, 5))
    assert calls == [1]


def test_fuse_a_conv_and_inplace():
    conv = nn.Conv2d(3, 4, 3)
    fused = fastcnn.fuse(conv)
    assert type(fused) is fnn.Conv2d and fused.weight is not conv.weight
    x = torch.randn(1, 3, 5, 5)
    assert_close(fused(x), conv(x), torch.float32)
    # inplace=True converts the model's modules in place; a rewritten root is a new object
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    fused = fastcnn.fuse(model, inplace=True)
    assert isinstance(fused, FusedSequential) and type(model[0]) is fnn.Conv2d and fused[0] is model[0]


def test_checkpoints_pickling_deepcopy():
    torch.manual_seed(0)
    model = randomize_bn(plain_model("resnet18", num_classes=10)).eval()
    fused = fastcnn.fuse(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    # the original's checkpoint loads into the fused model, and back
    other = randomize_bn(plain_model("resnet18", num_classes=10), seed=4).eval()
    fused.load_state_dict(other.state_dict(), strict=True)
    model.load_state_dict(fused.state_dict(), strict=True)
    with torch.no_grad():
        assert_close(fused(x), other(x), torch.float32, "after load_state_dict")
    # a whole-model checkpoint (pickle) and a deepcopy
    buf = io.BytesIO()
    torch.save(fused, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    with torch.no_grad():
        assert_close(loaded(x), other(x), torch.float32, "unpickled")
        assert_close(copy.deepcopy(fused)(x), other(x), torch.float32, "deepcopy")
    assert want.shape == (2, 10)


def test_training_then_eval():
    """Train the plain and the fused network side by side; the fused eval (folded BN) follows."""
    torch.manual_seed(0)
    model = randomize_bn(plain_model("resnet18", num_classes=10).double())
    fused = fastcnn.fuse(model)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (model, fused)]
    x = torch.randn(2, 3, 64, 64, dtype=F64)
    for step in range(2):
        for m, opt in zip((model, fused), opts):
            m.train()
            opt.zero_grad()
            F.cross_entropy(m(x), torch.tensor([1, 7])).backward()
            opt.step()
        model.eval()
        fused.eval()
        with torch.no_grad():
            assert_close(fused(x), model(x), F64, f"eval output after step {step}")


def test_compile_fused():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = randomize_bn(plain_model("resnet18", num_classes=10)).eval()
    fused = fastcnn.fuse(model)
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        assert_close(compiled(x), model(x), torch.float32, "compiled fused output", tol=TOL[torch.float32])


def test_fuse_fastcnn_model_and_bad_input():
    torch.manual_seed(0)
    m = fastcnn.models.resnet18(num_classes=10).eval()
    f = fastcnn.fuse(m)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert_close(f(x), m(x), torch.float32)
    with pytest.raises(ValueError, match="nn.Module"):
        fastcnn.fuse(lambda x: x)
