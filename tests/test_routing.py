"""One routing mechanism: every backend accepts the same inputs and raises the same errors; the table
routes every op (a stand-in backend added with one entry gets every call); kernels/ is a leaf.

The invalid calls below go to ``torch.ops.fastcnn.*`` directly (the schema level), on every backend
this machine can run and under FakeTensorMode; where the Python API can express the same call it
must raise the same message too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import fastcnn
import fastcnn.functional as FF
import fastcnn.testing

ops = torch.ops.fastcnn
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# (backend, device) pairs this machine runs (fastcnn.testing.TARGETS less the unavailable ones).
TARGETS = [(t.backend, t.device) for t in fastcnn.testing.targets()]

ACTIVATIONS_BAD = ["", "identity", "RELU", "Relu", " relu", "gelu", "tanh", "sigmoid", "None"]


def _t(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device)


def _cases(device):
    """(id, op name, args, Python-API call or None) of invalid schema-level calls on `device`."""
    x, w, b = _t(2, 3, 8, 8, device=device), _t(4, 3, 3, 3, device=device), _t(4, device=device)
    w1 = _t(4, 3, 1, 1, device=device)
    go = _t(2, 4, 6, 6, device=device)
    out = _t(2, 4, 6, 6, device=device)
    go1 = _t(2, 4, 8, 8, device=device)
    mask = [True, True, True, False]
    idx0 = torch.empty(0, dtype=torch.int64, device=device)
    px = _t(2, 3, 8, 8, device=device)
    pgo = _t(2, 3, 4, 4, device=device)
    c = []
    for a in ACTIVATIONS_BAD:
        c.append((f"conv2d-act-{a!r}", "conv2d", (x, w, b, None, [1, 1], [0, 0], [1, 1], 1, a),
                  lambda a=a: FF.conv2d(x, w, b, activation=a)))
        c.append((f"conv1x1-act-{a!r}", "conv1x1", (x, w1, b, None, [1, 1], a),
                  lambda a=a: FF.conv1x1(x, w1, b, activation=a)))
        c.append((f"conv2d_backward-act-{a!r}", "_conv2d_backward",
                  (go, x, w, out, [1, 1], [0, 0], [1, 1], 1, a, mask), None))
        c.append((f"conv1x1_backward-act-{a!r}", "_conv1x1_backward", (go1, x, w1, go1, [1, 1], a, mask), None))
    geom = [
        ("conv2d-input-3d", "conv2d", (x[0], w), None),
        ("conv2d-weight-3d", "conv2d", (x, w[0]), lambda: FF.conv2d(x, w[0])),
        ("conv2d-channels", "conv2d", (x, _t(4, 2, 3, 3, device=device)), lambda: FF.conv2d(x, _t(4, 2, 3, 3,
                                                                                                 device=device))),
        ("conv2d-groups", "conv2d", (_t(2, 4, 8, 8, device=device), _t(6, 2, 3, 3, device=device), None, None,
                                     [1, 1], [0, 0], [1, 1], 3),
         lambda: FF.conv2d(_t(2, 4, 8, 8, device=device), _t(6, 2, 3, 3, device=device), groups=3)),
        ("conv2d-groups0", "conv2d", (x, w, None, None, [1, 1], [0, 0], [1, 1], 0), lambda: FF.conv2d(x, w, groups=0)),
        ("conv2d-stride0", "conv2d", (x, w, None, None, [0, 1]), lambda: FF.conv2d(x, w, stride=(0, 1))),
        ("conv2d-stride3", "conv2d", (x, w, None, None, [1, 1, 1]), None),
        ("conv2d-pad-neg", "conv2d", (x, w, None, None, [1, 1], [-1, 0]), lambda: FF.conv2d(x, w, padding=(-1, 0))),
        ("conv2d-pad-huge", "conv2d", (x, w, None, None, [1, 1], [2**31, 0]),
         lambda: FF.conv2d(x, w, padding=(2**31, 0))),
        ("conv2d-dilation0", "conv2d", (x, w, None, None, [1, 1], [0, 0], [0, 1]),
         lambda: FF.conv2d(x, w, dilation=(0, 1))),
        ("conv2d-kernel-too-big", "conv2d", (_t(2, 3, 2, 2, device=device), w),
         lambda: FF.conv2d(_t(2, 3, 2, 2, device=device), w)),
        ("conv2d-bias-shape", "conv2d", (x, w, _t(5, device=device)), lambda: FF.conv2d(x, w, _t(5, device=device))),
        ("conv2d-bias-dtype", "conv2d", (x, w, b.double()), lambda: FF.conv2d(x, w, b.double())),
        ("conv2d-residual-shape", "conv2d", (x, w, None, _t(2, 4, 8, 8, device=device)),
         lambda: FF.conv2d(x, w, residual=_t(2, 4, 8, 8, device=device))),
        ("conv2d-weight-dtype", "conv2d", (x, w.double()), lambda: FF.conv2d(x, w.double())),
        ("conv2d-int-input", "conv2d", (x.long(), w.long()), lambda: FF.conv2d(x.long(), w.long())),
        ("conv2d-zero-channels", "conv2d", (_t(2, 0, 8, 8, device=device), _t(4, 0, 3, 3, device=device)),
         lambda: FF.conv2d(_t(2, 0, 8, 8, device=device), _t(4, 0, 3, 3, device=device))),
        ("conv1x1-weight-3x3", "conv1x1", (x, w), lambda: FF.conv1x1(x, w)),
        ("conv1x1-residual", "conv1x1", (x, w1, None, _t(2, 4, 4, 4, device=device)),
         lambda: FF.conv1x1(x, w1, residual=_t(2, 4, 4, 4, device=device))),
        ("conv1x1-stride0", "conv1x1", (x, w1, None, None, [0, 0]), lambda: FF.conv1x1(x, w1, stride=0)),
        ("max_pool2d-pad", "max_pool2d", (px, [3, 3], [2, 2], [2, 2]), lambda: FF.max_pool2d(px, 3, 2, 2)),
        ("max_pool2d-kernel0", "max_pool2d", (px, [0, 3], [2, 2]), lambda: FF.max_pool2d(px, (0, 3), 2)),
        ("max_pool2d-stride0", "max_pool2d", (px, [2, 2], [0, 2]), lambda: FF.max_pool2d(px, 2, (0, 2))),
        ("max_pool2d-too-small", "max_pool2d", (_t(2, 3, 2, 2, device=device), [5, 5], [1, 1]),
         lambda: FF.max_pool2d(_t(2, 3, 2, 2, device=device), 5, 1)),
        ("max_pool2d-5d", "max_pool2d", (_t(1, 2, 3, 8, 8, device=device), [2, 2], [2, 2]),
         lambda: FF.max_pool2d(_t(1, 2, 3, 8, 8, device=device), 2)),
        ("max_pool2d-bool", "max_pool2d", (px > 0, [2, 2], [2, 2]), lambda: FF.max_pool2d(px > 0, 2)),
        ("max_pool2d-uint16", "max_pool2d", ((px.abs() * 9).to(torch.uint16), [2, 2], [2, 2]), None),
        ("add_relu-broadcast", "add_relu", (_t(2, 3, device=device), _t(3, 2, device=device)),
         lambda: FF.add_relu(_t(2, 3, device=device), _t(3, 2, device=device))),
        ("add_relu-dtype", "add_relu", (_t(2, 3, device=device), _t(2, 3, dtype=torch.float64, device=device)),
         lambda: FF.add_relu(_t(2, 3, device=device), _t(2, 3, dtype=torch.float64, device=device))),
        ("add_relu-int", "add_relu", (x.long(), x.long()), lambda: FF.add_relu(x.long(), x.long())),
        # mismatched backward inputs
        ("conv2d_backward-grad-shape", "_conv2d_backward",
         (_t(2, 4, 5, 6, device=device), x, w, out, [1, 1], [0, 0], [1, 1], 1, "relu", mask), None),
        ("conv2d_backward-grad-dtype", "_conv2d_backward",
         (go.double(), x, w, out, [1, 1], [0, 0], [1, 1], 1, "none", mask), None),
        ("conv2d_backward-no-output", "_conv2d_backward",
         (go, x, w, None, [1, 1], [0, 0], [1, 1], 1, "relu", mask), None),
        ("conv2d_backward-output-shape", "_conv2d_backward",
         (go, x, w, _t(2, 4, 6, 5, device=device), [1, 1], [0, 0], [1, 1], 1, "relu", mask), None),
        ("conv2d_backward-weight", "_conv2d_backward",
         (go, x, _t(4, 2, 3, 3, device=device), out, [1, 1], [0, 0], [1, 1], 1, "none", mask), None),
        ("conv1x1_backward-grad-shape", "_conv1x1_backward", (go, x, w1, None, [1, 1], "none", mask), None),
        ("conv1x1_backward-weight", "_conv1x1_backward", (go1, x, w, None, [1, 1], "none", mask), None),
        ("conv1x1_backward-output-dtype", "_conv1x1_backward", (go1, x, w1, go1.double(), [1, 1], "relu", mask), None),
        ("max_pool2d_backward-grad-shape", "_max_pool2d_backward",
         (_t(2, 3, 3, 3, device=device), px, idx0, [2, 2], [2, 2], [0, 0], [1, 1], False), None),
        ("max_pool2d_backward-grad-dtype", "_max_pool2d_backward",
         (pgo.double(), px, idx0, [2, 2], [2, 2], [0, 0], [1, 1], False), None),
        # integer max-pools have no gradient: the backward ops refuse them (the same message everywhere)
        ("max_pool2d_backward-int", "_max_pool2d_backward",
         (pgo.long(), px.long(), idx0, [2, 2], [2, 2], [0, 0], [1, 1], False), None),
        ("max_pool2d_backward-uint8-float-grad", "_max_pool2d_backward",
         (pgo, px.to(torch.uint8), idx0, [2, 2], [2, 2], [0, 0], [1, 1], False), None),
        ("max_pool2d_backward-indices-dtype", "_max_pool2d_backward",
         (pgo, px, torch.zeros(2, 3, 4, 4, dtype=torch.int32, device=device), [2, 2], [2, 2], [0, 0], [1, 1], False),
         None),
        ("max_pool2d_backward-indices-shape", "_max_pool2d_backward",
         (pgo, px, torch.zeros(2, 3, 4, 5, dtype=torch.int64, device=device), [2, 2], [2, 2], [0, 0], [1, 1], False),
         None),
        ("max_pool2d_backward-kernel", "_max_pool2d_backward", (pgo, px, idx0, [2, 2], [2, 2], [2, 2], [1, 1], False),
         None),
        ("add_relu_backward-shape", "_add_relu_backward", (_t(2, 3, device=device), _t(3, 2, device=device)), None),
        ("add_relu_backward-dtype", "_add_relu_backward",
         (_t(2, 3, dtype=torch.float64, device=device), _t(2, 3, device=device)), None),
        ("add_relu_backward-int", "_add_relu_backward", (_t(2, 3, device=device).long(), _t(2, 3, device=device).long()),
         None),
    ]
    return c + geom


CASE_IDS = [c[0] for c in _cases("cpu")]
assert len(CASE_IDS) == len(set(CASE_IDS))


def _error(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the type is part of what is compared
        return type(exc), str(exc).split("\n")[0]
    return None, "no error"


def _fake_error(name, args):
    with FakeTensorMode() as mode:
        fargs = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
        return _error(lambda: getattr(ops, name)(*fargs))


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_same_error_on_every_backend_and_the_fake(case_id):
    results = {}
    for name, device in TARGETS:
        _, op, args, _ = next(c for c in _cases(device) if c[0] == case_id)
        with fastcnn.backend(name):
            results[f"{name}/{device}"] = _error(lambda: getattr(ops, op)(*args))
        if device == "cpu":
            results["fake"] = _fake_error(op, args)
    first = next(iter(results.values()))
    assert first[0] is ValueError, f"{case_id}: {results}"
    assert re.match(r"^\w+: ", first[1]), f"the message names the op first: {first[1]}"
    for where, got in results.items():
        assert got == first, f"{case_id}: {where} raised {got}, expected {first}"
    _, _, _, api = next(c for c in _cases("cpu") if c[0] == case_id)
    if api is not None:
        assert _error(api) == first, f"{case_id}: the Python API disagrees"


def test_activation_spellings_are_one_rule():
    """'none' and 'relu' in the schema, None too in the Python API, everything else rejected."""
    x, w = _t(1, 2, 5, 5), _t(3, 2, 3, 3)
    for act in ("none", "relu"):
        ops.conv2d(x, w, None, None, [1, 1], [0, 0], [1, 1], 1, act)
    FF.conv2d(x, w, activation=None)
    for act in ACTIVATIONS_BAD:
        with pytest.raises(ValueError, match="activation must be 'none' or 'relu', got "):
            FF.conv2d(x, w, activation=act)


PYTHON_ONLY = [
    # (call, words that must appear: the caller's own shapes and spellings)
    (lambda: FF.conv2d(_t(3, 8, 8), _t(4, 2, 3, 3)), ["input has 3", "input shape [3, 8, 8]"]),
    (lambda: FF.conv2d(_t(3, 8, 8), _t(4, 3, 3, 3), residual=_t(4, 5, 5)),
     ["residual must have the output's shape [4, 6, 6], got [4, 5, 5]"]),
    (lambda: FF.conv1x1(_t(2, 3, 8, 8), _t(4, 2)), ["weight expects 2 input channels (weight shape [4, 2]"]),
    (lambda: FF.conv1x1(_t(3, 8, 8), _t(4, 3), residual=_t(5, 8, 8)),
     ["residual must have the output's shape [4, 8, 8], got [5, 8, 8]"]),
    (lambda: FF.conv2d(_t(1, 3, 8, 8), _t(4, 3, 3, 3), padding="same", stride=2), ["same", "strided"]),
    (lambda: FF.conv2d(_t(1, 3, 8, 8), _t(4, 3, 3, 3), padding="full"), ["padding", "'full'"]),
    (lambda: FF.max_pool2d(_t(3, 2, 2), 5, 1), ["input shape [3, 2, 2]"]),
    (lambda: FF.conv2d(_t(1, 3, 8, 8), _t(4, 3, 3, 3), groups=True), ["groups must be an int"]),
]


@pytest.mark.parametrize("i", range(len(PYTHON_ONLY)))
def test_python_only_spellings_quote_the_callers_shapes(i):
    call, words = PYTHON_ONLY[i]
    with pytest.raises(ValueError) as e:
        call()
    for word in words:
        assert word in str(e.value), f"{word!r} not in {e.value}"


def test_unknown_backend_and_env_variable():
    with pytest.raises(ValueError, match=r"backend must be one of \['auto', 'cpu'"):
        fastcnn.set_backend("tpu")
    env = dict(os.environ, FASTCNN_BACKEND="tpu")
    r = subprocess.run([sys.executable, "-c", "import fastcnn"], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "FASTCNN_BACKEND='tpu'" in r.stderr, r.stderr[-500:]


def test_available_backends_can_run_here():
    for name in fastcnn.available_backends()[1:]:
        info = fastcnn._C._backend_info(name)
        assert info["runs_cpu"] or (info["runs_cuda"] and torch.cuda.is_available()), name
    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        assert "triton" not in fastcnn.available_backends()


def test_auto_never_picks_cuda_sim_and_resolves_per_device():
    assert fastcnn.resolve("conv2d", "cpu") == "cpu"
    assert not fastcnn._C._backend_info("cuda-sim")["auto"]
    if torch.cuda.is_available():
        assert fastcnn.resolve("conv2d", "cuda") in ("cuda", "triton")


_STANDIN = textwrap.dedent("""
    import torch, fastcnn
    import fastcnn.functional as FF
    from fastcnn import _ops
    calls = []
    fastcnn._backend.add_backend("standin", "standin")   # the one table entry
    for stem in _ops.STEMS:
        cpu = getattr(torch.ops.fastcnn, "_cpu_" + stem)
        def impl(*args, _stem=stem, _cpu=cpu):
            calls.append(_stem)
            return _cpu(*args)
        torch.library.register_kernel(_ops.impl_op("standin", stem), "cpu", impl)
    assert "standin" in fastcnn.available_backends()
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    w1 = torch.randn(6, 4, 1, 1, requires_grad=True)
    with fastcnn.backend("standin"):
        y = FF.conv2d(x, w, padding=1, activation="relu")
        z = FF.conv1x1(x, w1)
        p = FF.max_pool2d(y, 2)
        s = FF.add_relu(y, z)
        (y.sum() + z.sum() + p.sum() + s.sum()).backward()
        blk = torch.empty(2, 12, 8, 8)                     # the in-place ops write one block
        torch.ops.fastcnn.conv2d_into(x.detach(), w.detach(), None, None, [1, 1], [1, 1], [1, 1], 1, "relu",
                                      blk[:, :6])
        torch.ops.fastcnn.conv1x1_into(x.detach(), w1.detach(), None, [1, 1], ["relu"], [], [blk[:, 6:]])
    assert fastcnn.get_backend() == "auto"
    print(sorted(set(calls)))
    assert set(calls) == set(_ops.STEMS), sorted(set(calls))
    calls.clear()
    FF.conv2d(x, w)                                        # auto: not the stand-in
    assert not calls
""")


def test_standin_backend_gets_every_op_and_backward_op():
    r = subprocess.run([sys.executable, "-c", _STANDIN], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


def test_kernels_is_a_leaf():
    """No file in kernels/ imports fastcnn, and importing kernels (and its op modules, where Triton
    is installed) from the repository root loads no fastcnn module."""
    for root, _, files in os.walk(os.path.join(REPO, "kernels")):
        for f in files:
            if f.endswith(".py"):
                src = open(os.path.join(root, f)).read()
                assert not re.search(r"^\s*(from|import)\s+fastcnn\b", src, re.M), f"kernels/{f} imports fastcnn"
    code = ("import sys; sys.path.insert(0, '.'); import kernels; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'fastcnn']")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    code = ("import sys; sys.path.insert(0, '.'); import kernels\n"
            "try:\n    kernels.impls()\nexcept ImportError:\n    pass\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'fastcnn']")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
