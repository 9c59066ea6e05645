"""The network fusions at the network level (issue 18's acceptance): what one eval forward of
GoogLeNet runs (operators counted with a TorchDispatchMode) and allocates (torch.profiler's
memory events), for the zoo model and for fastcnn.fuse() of a torchvision-layout GoogLeNet; the
fusions switched off compute the same."""

from __future__ import annotations

import copy
from collections import Counter, defaultdict

import pytest
import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

import fastcnn
from fastcnn.testing.reference_models import plain_model
from conftest import assert_close

CONV_OPS = {"fastcnn.conv2d", "fastcnn.conv1x1", "fastcnn.conv2d_into", "fastcnn.conv1x1_into", "aten.convolution"}
POOL_OPS = {"fastcnn.max_pool2d", "aten.max_pool2d", "aten.max_pool2d_with_indices"}


def _randomize_bn(model):
    from test_models import randomize_bn

    return randomize_bn(model, seed=3)


def _zoo(fusions=True):
    torch.manual_seed(0)
    return _randomize_bn(fastcnn.models.googlenet(num_classes=10, aux_logits=False,
                                                  network_fusions=fusions)).eval()


def _fused_plain(fusions=True):
    torch.manual_seed(0)
    return fastcnn.fuse(_randomize_bn(plain_model("googlenet", num_classes=10, aux_logits=False)).eval(),
                        network_fusions=fusions)


def _blocks(model):
    return {n: m for n, m in model.named_modules() if type(m).__name__ == "Inception"}


class _Ops(TorchDispatchMode):
    """Every operator called, attributed to the inception block running (forward hooks set it)."""

    def __init__(self):
        super().__init__()
        self.block = None
        self.ops = defaultdict(Counter)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.replace("::", ".")
        self.ops[self.block][name] += 1
        return func(*args, **(kwargs or {}))


def _count_ops(model, x):
    mode = _Ops()
    hooks = []
    for name, m in _blocks(model).items():
        hooks.append(m.register_forward_pre_hook(lambda mod, inp, name=name: setattr(mode, "block", name)))
        hooks.append(m.register_forward_hook(lambda mod, inp, out: setattr(mode, "block", None)))
    try:
        with torch.no_grad(), mode:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return mode.ops


@pytest.mark.parametrize("build", [_zoo, _fused_plain], ids=["zoo", "fuse"])
def test_googlenet_eval_ops(build):
    """No torch.cat, no stand-alone max-pool inside a block, at most 4 conv ops per block."""
    model = build()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model(x)  # folded and concatenated weights cached: the counted forward is the steady state
    ops = _count_ops(model, x)
    blocks = _blocks(model)
    assert len(blocks) == 9
    for name in blocks:
        got = ops[name]
        assert got, f"{name}: no operators recorded"
        assert not any(op.startswith("aten.cat") for op in got), (name, dict(got))
        assert not POOL_OPS & set(got), (name, dict(got))
        convs = sum(n for op, n in got.items() if op in CONV_OPS)
        assert 1 <= convs <= 4, (name, dict(got))
        assert got["fastcnn.conv1x1_into"] == 2 and got["fastcnn.conv2d_into"] == 2, (name, dict(got))
    assert not any(op.startswith("aten.cat") for per in ops.values() for op in per), "a cat outside the blocks"
    unfused = build(fusions=False)  # the switch: the unfused blocks cat, and compute the same
    off = _count_ops(unfused, x)
    assert all(off[name]["aten.cat"] == 1 for name in blocks)
    with torch.no_grad():
        assert_close(model(x), unfused(x), torch.float32)


def _allocations(fn):
    """Byte sizes of every allocation made while fn runs (torch.profiler's memory events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0 and e.name.startswith("aten::empty")]


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("build", [_zoo, _fused_plain], ids=["zoo", "fuse"])
def test_inception_block_memory(build, layout):
    """One block's eval forward allocates the block output once, the two reduce outputs, and
    nothing of the size of the pool branch's pooled tensor or of any branch output (they are
    views of the block output). float64 channels_last: the CPU engine writes every slice in place.
    NCHW: the engine runs the 3x3 convs in NHWC (measured faster), so each 3x3 branch has one NHWC
    result that its ReLU pass writes into the NCHW slice (the layout conversion the plain conv
    makes too); float32 goes through oneDNN, whose results the ReLU pass writes likewise."""
    model = build().double()
    blk = model.inception3a
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(2, 192, 9, 11, dtype=torch.float64).contiguous(memory_format=fmt)
    with torch.no_grad():
        want = torch.cat([blk.branch1(x), blk.branch2(x), blk.branch3(x), blk.branch4(x)], 1) \
            if isinstance(blk.branch1, nn.Module) else None
        out = blk(x)  # warm: folded weights cached
        sizes = _allocations(lambda: blk(x))
    if want is not None:
        assert_close(out, want, torch.float64)
    plane = 2 * 9 * 11 * 8  # one channel of a [2, C, 9, 11] float64 map
    # Map-sized allocations only (the NHWC engine also repacks the 3x3 weights per call: issue 17).
    count = Counter(s // plane for s in sizes if s % plane == 0)
    # Channels (of a [2, C, 9, 11] map) allocated: the block output 256 once, the reduce outputs
    # 96 and 16; never the pooled input (192) nor a branch output (64, 128, 32, 32: views).
    if layout == "channels_last":
        assert count == Counter({256: 1, 96: 1, 16: 1}), sorted(count.items())
    else:  # plus the 3x3 convs' NHWC copies of their operands (96, 16) and results (128, 32)
        assert count[256] == 1 and count[192] == 0 and count[64] == 0, sorted(count.items())
        assert set(count) <= {256, 96, 16, 128, 32}, sorted(count.items())


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("layout", ["contiguous", pytest.param("channels_last", marks=pytest.mark.slow)])
def test_googlenet_fusions_on_off(mode, layout):
    # (~12 s each on 2 cores; channels_last blocks are covered by test_fused_ops.test_inception_block)
    """The zoo GoogLeNet with and without the fusions, float64: outputs and every gradient."""
    torch.manual_seed(0)
    on = _zoo().double().train(mode == "train")
    off = copy.deepcopy(on).set_network_fusions(False)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64).contiguous(memory_format=fmt)
    outs = []
    for m in (on, off):
        torch.manual_seed(1)  # the same dropout masks
        xi = x.clone().requires_grad_()
        y = m(xi)
        y = y.logits if isinstance(y, tuple) else y
        grads = torch.autograd.grad(y.sum(), [xi, *m.parameters()])
        outs.append((y, grads))
    assert_close(outs[0][0], outs[1][0], torch.float64)
    for (name, _), a, b in zip([("input", None), *on.named_parameters()], outs[0][1], outs[1][1]):
        assert_close(a, b, torch.float64, what=f"grad {name}")
    for (name, a), b in zip(on.named_buffers(), off.buffers()):
        assert_close(a, b, torch.float64, what=name)


def test_resnet50_layer1_siblings():
    """ResNet-50 layer1.0: conv1 and the downsample as one GEMM (one conv1x1_into), same result."""
    torch.manual_seed(0)
    m = _randomize_bn(fastcnn.models.resnet50(num_classes=10)).double().eval()
    x = torch.randn(1, 64, 9, 9, dtype=torch.float64)
    blk = m.layer1[0]
    mode = _Ops()
    with torch.no_grad(), mode:
        y = blk(x)
    assert mode.ops[None]["fastcnn.conv1x1_into"] == 1 and mode.ops[None]["fastcnn.conv1x1"] == 1
    blk.network_fusions = False
    with torch.no_grad():
        assert_close(y, blk(x), torch.float64)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_googlenet_bf16(mode):
    """bf16 with the fusions (CPU backend) against float64: every quantity within BF16_FACTOR x the
    worst error of PyTorch's own bf16 run of the network (test_models' rule)."""
    import test_models as TM

    ref, fm = TM.pair("googlenet", torch.bfloat16, fresh=True)
    ref.train(mode == "train")
    fm.train(mode == "train")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64).to(torch.bfloat16)
    got = TM.run(fm, x, fm)
    want = TM.run(ref, x, ref)
    ref64 = copy.deepcopy(ref).double()
    ref64.zero_grad(set_to_none=True)
    truth = TM.run(ref64, x.double(), ref64)
    base = max(TM.rel(want[k], truth[k]) for k in truth if not k.startswith("buffer"))
    bad = [f"{k}: {TM.rel(got[k], truth[k]):.3e}" for k in truth
           if not k.startswith("buffer") and not TM.rel(got[k], truth[k]) <= TM.BF16_FACTOR * base]
    assert not bad, f"bf16 error > {TM.BF16_FACTOR} x PyTorch bf16's worst {base:.3e}: " + "; ".join(bad)
