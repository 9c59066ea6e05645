"""Bad input: a ValueError that names the argument and the sizes, through the public functions and
through torch.ops directly; never a crash, never a write to the caller's tensors."""

from __future__ import annotations

import re

import pytest
import torch

import fastcnn.functional as FF

ops = torch.ops.fastcnn


# ------------------------------------------------------------------------------------------------
# Hardening (issue 8): every invalid combination, on every backend, through the public functions
# and through torch.ops directly. Each case: a ValueError whose message holds the given words (the
# argument and the offending sizes), no crash, no hang, no write to any of the caller's tensors.
# Cases are built per test (lambdas of the device), so they run on CUDA tensors on a GPU too.
# ------------------------------------------------------------------------------------------------

def _t(*s, dtype=torch.float32, device="cpu"):
    return torch.randn(*s, device=device).to(dtype)


_CXX_DTYPES = {"Double": "float64", "Float": "float32", "Half": "float16", "BFloat16": "bfloat16", "Long": "int64",
               "Int": "int32", "Short": "int16", "Char": "int8", "Byte": "uint8", "Bool": "bool"}


def _bad(fn, words, *inputs):
    """Call fn; require a ValueError naming `words`; require every tensor in `inputs` unchanged.
    C++ messages spell dtypes as c10 does (Double): both spellings are accepted."""
    tensors = [t for t in inputs if isinstance(t, torch.Tensor) and t.device.type != "meta"]
    before = [t.detach().clone() for t in tensors]
    with pytest.raises(ValueError) as e:
        fn()
    msg = re.sub(r"\b(" + "|".join(_CXX_DTYPES) + r")\b", lambda m: _CXX_DTYPES[m.group(1)], str(e.value))
    for w in words:
        assert w in msg, f"{w!r} not in message: {e.value}"
    for t, b in zip(tensors, before):
        assert torch.equal(t, b), "a caller's tensor was written"


# (id, builder(device) -> (callable, words, tensors to watch))
def _conv_matrix():
    def c(xs, ws, *, bias=None, res=None, words, **kw):
        def build(d):
            x = xs(d)
            w = ws(d)
            b = bias(d) if bias else None
            r = res(d) if res else None
            return (lambda: FF.conv2d(x, w, b, residual=r, **kw)), words, (x, w, b, r)
        return build

    X = lambda d: _t(2, 3, 8, 8, device=d)  # noqa: E731
    Wt = lambda d: _t(4, 3, 3, 3, device=d)  # noqa: E731
    ints = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64)
    cases = {
        # wrong ranks
        "input-0d": c(lambda d: torch.tensor(1.0, device=d), Wt, words=["input", "4-d", "[]"]),
        "input-1d": c(lambda d: _t(3, device=d), Wt, words=["input", "4-d", "[3]"]),
        "input-5d": c(lambda d: _t(1, 2, 3, 8, 8, device=d), Wt, words=["input", "4-d", "[1, 2, 3, 8, 8]"]),
        "weight-0d": c(X, lambda d: torch.tensor(1.0, device=d), words=["weight", "4-d", "[]"]),
        "weight-5d": c(X, lambda d: _t(4, 3, 3, 3, 1, device=d), words=["weight", "4-d", "[4, 3, 3, 3, 1]"]),
        "bias-2d": c(X, Wt, bias=lambda d: _t(4, 1, device=d), words=["bias", "[4]", "[4, 1]"]),
        "bias-0d": c(X, Wt, bias=lambda d: torch.tensor(1.0, device=d), words=["bias", "[4]", "[]"]),
        "residual-3d": c(X, Wt, res=lambda d: _t(4, 6, 6, device=d), words=["residual", "[2, 4, 6, 6]", "[4, 6, 6]"]),
        "residual-broadcastable": c(X, Wt, res=lambda d: _t(1, 4, 6, 6, device=d),
                                    words=["residual", "[2, 4, 6, 6]", "[1, 4, 6, 6]"]),
        # zero sizes
        "channels-0": c(lambda d: _t(2, 0, 8, 8, device=d), lambda d: _t(4, 0, 3, 3, device=d),
                        words=["positive", "[2, 0, 8, 8]"]),
        "out-channels-0": c(X, lambda d: _t(0, 3, 3, 3, device=d), words=["positive", "[0, 3, 3, 3]"]),
        "kernel-0": c(X, lambda d: _t(4, 3, 0, 3, device=d), words=["positive", "[4, 3, 0, 3]"]),
        "height-0": c(lambda d: _t(2, 3, 0, 8, device=d), Wt, words=["larger than the padded input", "[2, 3, 0, 8]"],
                      padding=1),
        # bad numbers
        "stride-negative": c(X, Wt, words=["stride", ">= 1", "[-1, -1]"], stride=-1),
        "dilation-negative": c(X, Wt, words=["dilation", ">= 1"], dilation=(1, -2)),
        "groups-negative": c(X, Wt, words=["groups", "-1"], groups=-1),
        "groups-float": c(X, Wt, words=["groups", "1.0"], groups=1.0),
        "groups-bool": c(X, Wt, words=["groups", "True"], groups=True),
        "groups-too-many": c(X, Wt, words=["divisible by groups", "(3)", "(6)"], groups=6),
        "stride-float": c(X, Wt, words=["stride", "1.5"], stride=1.5),
        "stride-bool": c(X, Wt, words=["stride", "True"], stride=True),
        "stride-none": c(X, Wt, words=["stride", "None"], stride=None),
        "padding-pair-negative": c(X, Wt, words=["padding", ">= 0", "[0, -1]"], padding=(0, -1)),
        "padding-triple": c(X, Wt, words=["padding", "(0, 1, 2)"], padding=(0, 1, 2)),
        "dilation-empty": c(X, Wt, words=["dilation", "[]"], dilation=[]),
        "same-strided-pair": c(X, Wt, words=["same", "strided", "(1, 2)"], padding="same", stride=(1, 2)),
        "dilated-kernel-too-large": c(X, Wt, words=["kernel", "9x9", "(8x8)"], dilation=4),
        "activation-int": c(X, Wt, words=["activation", "1"], activation=1),
        "activation-case": c(X, Wt, words=["activation", "ReLU"], activation="ReLU"),
        # not tensors
        "input-list": c(lambda d: [1.0], Wt, words=["input", "Tensor", "list"]),
        "weight-numpy": c(X, lambda d: _t(4, 3, 3, 3).numpy(), words=["weight", "Tensor", "ndarray"]),
        "bias-float": c(X, Wt, bias=lambda d: 1.0, words=["bias", "Tensor", "float"]),
        "residual-list": c(X, Wt, res=lambda d: [0.0], words=["residual", "Tensor", "list"]),
        # mixed dtypes
        "weight-f16": c(X, lambda d: _t(4, 3, 3, 3, dtype=torch.float16, device=d),
                        words=["weight", "float16", "float32"]),
        "bias-f64": c(X, Wt, bias=lambda d: _t(4, dtype=torch.float64, device=d), words=["bias", "float64", "float32"]),
        "residual-bf16": c(X, Wt, res=lambda d: _t(2, 4, 6, 6, dtype=torch.bfloat16, device=d),
                           words=["residual", "bfloat16", "float32"]),
        # mixed devices (meta stands in for a second device on a CPU-only machine)
        "bias-meta": c(X, Wt, bias=lambda d: _t(4, device="meta"), words=["bias", "meta"]),
        "residual-meta": c(X, Wt, res=lambda d: _t(2, 4, 6, 6, device="meta"), words=["residual", "meta"]),
        "input-meta": c(lambda d: _t(2, 3, 8, 8, device="meta"), Wt, words=["weight", "meta"]),
        # integer / bool / complex inputs, with or without a weight that requires grad
        "int-weight-requires-grad": c(lambda d: torch.ones(2, 3, 8, 8, dtype=torch.int64, device=d),
                                      lambda d: _t(4, 3, 3, 3, device=d).requires_grad_(),
                                      words=["input", "floating-point", "int64"]),
        "float-input-int-weight": c(lambda d: _t(2, 3, 8, 8, device=d).requires_grad_(),
                                    lambda d: torch.ones(4, 3, 3, 3, dtype=torch.int32, device=d),
                                    words=["weight", "dtype", "int32", "does not match"]),
        "same-int-weight": c(X, lambda d: torch.ones(4, 3, 3, 3, dtype=torch.int64, device=d),
                             words=["weight", "dtype", "int64", "does not match"], padding="same"),
    }
    for dt in ints:
        name = str(dt).replace("torch.", "")
        cases[f"dtype-{name}"] = c(lambda d, dt=dt: torch.ones(2, 3, 8, 8, device=d).to(dt),
                                   lambda d, dt=dt: torch.ones(4, 3, 3, 3, device=d).to(dt),
                                   words=["input", "floating-point", name])
    return cases


CONV_MATRIX = _conv_matrix()


def _devices():
    out = [pytest.param("cpu", id="cpu")]
    out.append(pytest.param("cuda", id="cuda", marks=pytest.mark.cuda))
    return out


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("case", list(CONV_MATRIX))
def test_conv2d_bad_input_matrix(case, device):
    fn, words, watch = CONV_MATRIX[case](device)
    _bad(fn, words, *watch)


def _other_matrix():
    def pool(xs, *args, words, **kw):
        def build(d):
            x = xs(d)
            return (lambda: FF.max_pool2d(x, *args, **kw)), words, (x,)
        return build

    def c11(xs, ws, *, bias=None, res=None, words, **kw):
        def build(d):
            x, w = xs(d), ws(d)
            b = bias(d) if bias else None
            r = res(d) if res else None
            return (lambda: FF.conv1x1(x, w, b, residual=r, **kw)), words, (x, w, b, r)
        return build

    def add(a_, b_, words):
        def build(d):
            a, b = a_(d), b_(d)
            return (lambda: FF.add_relu(a, b)), words, (a, b)
        return build

    X = lambda d: _t(2, 3, 8, 8, device=d)  # noqa: E731
    W11 = lambda d: _t(4, 3, device=d)  # noqa: E731
    return {
        "pool-input-2d": pool(lambda d: _t(8, 8, device=d), 2, words=["input", "4-d", "[8, 8]"]),
        "pool-input-5d": pool(lambda d: _t(1, 2, 3, 8, 8, device=d), 2, words=["input", "4-d", "[1, 2, 3, 8, 8]"]),
        "pool-input-0d": pool(lambda d: torch.tensor(1.0, device=d), 1, words=["input", "4-d", "[]"]),
        "pool-height-0": pool(lambda d: _t(2, 3, 0, 4, device=d), 1, words=["positive", "[2, 3, 0, 4]"]),
        "pool-width-0": pool(lambda d: _t(2, 3, 4, 0, device=d), 1, words=["positive", "[2, 3, 4, 0]"]),
        "pool-kernel-float": pool(X, 2.0, words=["kernel_size", "2.0"]),
        "pool-kernel-str": pool(X, "2", words=["kernel_size", "'2'"]),
        "pool-kernel-none": pool(X, None, words=["kernel_size", "None"]),
        "pool-kernel-negative": pool(X, (2, -1), words=["kernel_size", ">= 1", "[2, -1]"]),
        "pool-kernel-triple": pool(X, (2, 2, 2), words=["kernel_size", "(2, 2, 2)"]),
        "pool-stride-negative": pool(X, 2, -2, words=["stride", ">= 1"]),
        "pool-dilation-negative": pool(X, 2, 2, 0, -1, words=["dilation", ">= 1"]),
        "pool-padding-over-half": pool(X, (3, 2), 1, (1, 2), words=["padding", "half the kernel", "[1, 2]", "[3, 2]"]),
        "pool-dilated-too-large": pool(lambda d: _t(1, 1, 4, 4, device=d), 3, 1, 0, 2,
                                       words=["output size is too small", "[1, 1, 4, 4]"]),
        "pool-bool": pool(lambda d: torch.ones(1, 1, 4, 4, dtype=torch.bool, device=d), 2,
                          words=["floating-point", "bool"]),
        "pool-complex": pool(lambda d: _t(1, 1, 4, 4, device=d).to(torch.complex64), 2,
                             words=["floating-point", "complex64"]),
        "pool-uint16": pool(lambda d: torch.ones(1, 1, 4, 4, dtype=torch.uint16, device=d), 2,
                            words=["floating-point or integer", "uint16"]),
        "pool-list": pool(lambda d: [[1.0]], 2, words=["input", "Tensor", "list"]),
        "c11-weight-3d": c11(X, lambda d: _t(4, 3, 1, device=d), words=["weight", "[C_out, C_in, 1, 1]", "[4, 3, 1]"]),
        "c11-weight-1x2": c11(X, lambda d: _t(4, 3, 1, 2, device=d), words=["weight", "[4, 3, 1, 2]"]),
        "c11-channels": c11(X, lambda d: _t(4, 5, device=d), words=["input channels", "5", "input has 3"]),
        "c11-stride-0": c11(X, W11, words=["stride", ">= 1", "[0, 0]"], stride=0),
        "c11-stride-triple": c11(X, W11, words=["stride", "(1, 1, 1)"], stride=(1, 1, 1)),
        "c11-int": c11(lambda d: torch.ones(2, 3, 8, 8, dtype=torch.int64, device=d),
                       lambda d: torch.ones(4, 3, dtype=torch.int64, device=d), words=["floating-point", "int64"]),
        "c11-weight-f64": c11(X, lambda d: _t(4, 3, dtype=torch.float64, device=d), words=["weight", "float64"]),
        "c11-bias-shape": c11(X, W11, bias=lambda d: _t(3, device=d), words=["bias", "[4]", "[3]"]),
        "c11-bias-meta": c11(X, W11, bias=lambda d: _t(4, device="meta"), words=["bias", "meta"]),
        "c11-residual-shape": c11(X, W11, res=lambda d: _t(2, 4, 8, 8, device=d), stride=2,
                                  words=["residual", "[2, 4, 4, 4]", "[2, 4, 8, 8]"]),
        "c11-weight-list": c11(X, lambda d: [[1.0]], words=["weight", "Tensor", "list"]),
        "c11-input-5d": c11(lambda d: _t(1, 2, 3, 8, 8, device=d), W11, words=["input", "4-d"]),
        "add-broadcast": add(lambda d: _t(2, 3, 4, device=d), lambda d: _t(2, 4, 4, device=d),
                             words=["cannot be broadcast", "[2, 3, 4]", "[2, 4, 4]"]),
        "add-broadcast-rank": add(lambda d: _t(5, device=d), lambda d: _t(2, 3, 4, device=d),
                                  words=["cannot be broadcast", "[5]", "[2, 3, 4]"]),
        "add-zero-vs-two": add(lambda d: _t(0, 3, device=d), lambda d: _t(2, 3, device=d),
                               words=["cannot be broadcast", "[0, 3]", "[2, 3]"]),
        "add-int": add(lambda d: torch.ones(3, dtype=torch.int32, device=d),
                       lambda d: torch.ones(3, dtype=torch.int32, device=d), words=["floating-point", "int32"]),
        "add-float-int": add(lambda d: _t(3, device=d), lambda d: torch.ones(3, dtype=torch.int64, device=d),
                             words=["other", "dtype", "int64", "does not match"]),
        "add-bool": add(lambda d: torch.ones(3, dtype=torch.bool, device=d),
                        lambda d: torch.ones(3, dtype=torch.bool, device=d), words=["floating-point", "bool"]),
        "add-bf16-f16": add(lambda d: _t(3, dtype=torch.bfloat16, device=d), lambda d: _t(3, dtype=torch.float16,
                                                                                          device=d),
                            words=["other", "float16", "bfloat16"]),
        # a Python number is a convenience of the Python API (tests/test_usability.py); other objects are not
        "add-string": add(lambda d: _t(3, device=d), lambda d: "1.0", words=["other", "Tensor", "str"]),
        "add-none": add(lambda d: None, lambda d: _t(3, device=d), words=["input", "Tensor", "NoneType"]),
        "add-meta": add(lambda d: _t(3, device=d), lambda d: _t(3, device="meta"), words=["other", "meta"]),
    }


OTHER_MATRIX = _other_matrix()


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("case", list(OTHER_MATRIX))
def test_pool_conv1x1_add_relu_bad_input_matrix(case, device):
    fn, words, watch = OTHER_MATRIX[case](device)
    _bad(fn, words, *watch)


@pytest.mark.cuda
@pytest.mark.parametrize("which", ["weight", "bias", "residual"])
def test_conv2d_mixed_cuda_cpu(which):
    """A CUDA input with one CPU tensor (and the reverse): ValueError naming the tensor and both devices."""
    for dev_x, dev_o in (("cuda", "cpu"), ("cpu", "cuda")):
        x, w = _t(2, 3, 8, 8, device=dev_x), _t(4, 3, 3, 3, device=dev_x)
        b, r = _t(4, device=dev_x), _t(2, 4, 6, 6, device=dev_x)
        args = {"weight": w, "bias": b, "residual": r}
        args[which] = args[which].to(dev_o)
        _bad(lambda: FF.conv2d(x, args["weight"], args["bias"], residual=args["residual"]),
             [which, dev_o.split(":")[0], dev_x], x, *args.values())
        _bad(lambda: torch.ops.fastcnn.conv2d(x, args["weight"], args["bias"], args["residual"]),
             [which, dev_o.split(":")[0]], x, *args.values())


@pytest.mark.cuda
def test_pool_add_relu_mixed_cuda_cpu():
    a, b = _t(2, 3, 4, device="cuda"), _t(2, 3, 4)
    _bad(lambda: FF.add_relu(a, b), ["other", "cpu", "cuda"], a, b)
    _bad(lambda: FF.add_relu(b, a), ["other", "cuda", "cpu"], a, b)
    g = torch.randn(2, 3, 4, 4, device="cuda")
    x = torch.randn(2, 3, 8, 8)
    _bad(lambda: torch.ops.fastcnn._max_pool2d_backward(g, x, torch.empty(0, dtype=torch.long), [2, 2], [2, 2],
                                                        [0, 0], [1, 1], False), ["grad_output", "cuda", "cpu"], g, x)


# Direct torch.ops calls (bypassing fastcnn.functional): the backend's own guard must raise.
# A meta tensor among real ones sends the call to the Meta kernel, i.e. the fake registered in
# fastcnn/_ops.py, whatever the backend: the fakes validate as the kernels do (fastcnn/_checks.py).
# Known failures are marked per backend (strict: a fix turns them into XPASS, which fails, so the
# marker gets removed). "triton" covers the interpreter and CUDA (same Python validation).
_F32 = torch.float32


def _direct_cases():
    ops_ = torch.ops.fastcnn
    L = torch.long

    def conv_bwd(grad, out, act="relu", w=None):
        def build(d):
            x = _t(2, 3, 8, 8, device=d)
            ww = w(d) if w else _t(4, 3, 3, 3, device=d)
            g, o = grad(d), (out(d) if out else None)
            fn = lambda: ops_._conv2d_backward(g, x, ww, o, [1, 1], [0, 0], [1, 1], 1, act,  # noqa: E731
                                               [True, True, True, True])
            return fn, (x, ww, g, o)
        return build

    def c11_bwd(grad, out, act="relu"):
        def build(d):
            x, w = _t(2, 3, 8, 8, device=d), _t(4, 3, 1, 1, device=d)
            g, o = grad(d), (out(d) if out else None)
            return (lambda: ops_._conv1x1_backward(g, x, w, o, [1, 1], act, [True, True, True, True])), (x, w, g, o)
        return build

    def pool_bwd(grad, idx):
        def build(d):
            x, g, i = _t(2, 3, 8, 8, device=d), grad(d), idx(d)
            return (lambda: ops_._max_pool2d_backward(g, x, i, [2, 2], [2, 2], [0, 0], [1, 1], False)), (x, g, i)
        return build

    def add_bwd(grad, out):
        def build(d):
            g, o = grad(d), out(d)
            return (lambda: ops_._add_relu_backward(g, o)), (g, o)
        return build

    def fwd(fn):
        def build(d):
            x, w = _t(2, 3, 8, 8, device=d), _t(4, 3, 3, 3, device=d)
            return (lambda: fn(x, w)), (x, w)
        return build

    G = lambda d: _t(2, 4, 6, 6, device=d)  # noqa: E731
    O = lambda d: _t(2, 4, 6, 6, device=d).relu()  # noqa: E731
    empty_idx = lambda d: torch.empty(0, dtype=L, device=d)  # noqa: E731
    return {
        # (builder, words, {backend: reason} known to fail)
        "conv2d_backward-output-shape": (
            conv_bwd(G, lambda d: _t(1, 1, 1, 1, device=d)), ["output", "2, 4, 6, 6"],
            {}),
        "conv2d_backward-output-dtype": (
            conv_bwd(G, lambda d: _t(2, 4, 6, 6, dtype=torch.float64, device=d)), ["output", "float64"],
            {}),
        "conv2d_backward-output-device": (
            conv_bwd(G, lambda d: _t(2, 4, 6, 6, device="meta")), ["output", "meta"],
            {}),
        "conv2d_backward-grad-dtype": (
            conv_bwd(lambda d: _t(2, 4, 6, 6, dtype=torch.float64, device=d), O), ["grad_output", "float64"],
            {}),
        "conv2d_backward-grad-int": (
            conv_bwd(lambda d: torch.ones(2, 4, 6, 6, dtype=L, device=d), O), ["grad_output", "int64"],
            {}),
        "conv2d_backward-grad-device": (
            conv_bwd(lambda d: _t(2, 4, 6, 6, device="meta"), O), ["grad_output", "meta"],
            {}),
        "conv2d_backward-grad-shape": (conv_bwd(lambda d: _t(2, 4, 6, 5, device=d), O),
                                       ["grad_output", "6, 6", "6, 5"], {}),
        "conv2d_backward-relu-no-output": (conv_bwd(G, None), ["output", "relu"], {}),
        "conv2d_backward-weight-dtype": (conv_bwd(G, O, w=lambda d: _t(4, 3, 3, 3, dtype=torch.float64, device=d)),
                                         ["weight", "float64"], {}),
        "conv2d_backward-activation": (conv_bwd(G, O, act="gelu"), ["activation", "gelu"], {}),
        "conv1x1_backward-output-shape": (
            c11_bwd(lambda d: _t(2, 4, 8, 8, device=d), lambda d: _t(3, device=d)), ["output", "2, 4, 8, 8"],
            {}),
        "conv1x1_backward-grad-device": (
            c11_bwd(lambda d: _t(2, 4, 8, 8, device="meta"), None, act="none"), ["grad_output", "meta"],
            {}),
        "max_pool2d_backward-grad-dtype": (
            pool_bwd(lambda d: _t(2, 3, 4, 4, dtype=torch.float64, device=d), empty_idx), ["grad_output", "float64"],
            {}),
        "max_pool2d_backward-grad-int": (
            pool_bwd(lambda d: torch.ones(2, 3, 4, 4, dtype=L, device=d), empty_idx), ["grad_output", "int64"],
            {}),
        "max_pool2d_backward-grad-device": (
            pool_bwd(lambda d: _t(2, 3, 4, 4, device="meta"), empty_idx), ["grad_output", "meta"],
            {}),
        "max_pool2d_backward-indices-device": (
            pool_bwd(lambda d: _t(2, 3, 4, 4, device=d), lambda d: torch.zeros(2, 3, 4, 4, dtype=L, device="meta")),
            ["indices", "meta"],
            {}),
        "max_pool2d_backward-indices-int32": (
            pool_bwd(lambda d: _t(2, 3, 4, 4, device=d), lambda d: torch.zeros(2, 3, 4, 4, dtype=torch.int32,
                                                                                 device=d)), ["indices", "int64"], {}),
        "max_pool2d_backward-indices-shape": (
            pool_bwd(lambda d: _t(2, 3, 4, 4, device=d), lambda d: torch.zeros(2, 3, 4, 3, dtype=L, device=d)),
            ["indices", "4, 4"], {}),
        "add_relu_backward-shape": (add_bwd(lambda d: _t(2, 3, device=d), lambda d: _t(3, 2, device=d)),
                                    ["grad_output", "output"], {}),
        "add_relu_backward-dtype": (add_bwd(lambda d: _t(2, 3, dtype=torch.float64, device=d),
                                            lambda d: _t(2, 3, device=d)), ["grad_output", "float64"], {}),
        "add_relu_backward-device": (
            add_bwd(lambda d: _t(2, 3, device="meta"), lambda d: _t(2, 3, device=d)), ["grad_output", "meta"],
{}),
        "conv2d-dilation-overflow": (
            fwd(lambda x, w: ops_.conv2d(x, w, None, None, [1, 1], [0, 0], [2**62, 1], 1, "none")), ["dilation"],
            {}),
        "conv2d-padding-overflow": (
            fwd(lambda x, w: ops_.conv2d(x, w, None, None, [1, 1], [2**62, 0], [1, 1], 1, "none")), ["padding"],
            {}),
        "conv2d-int": (fwd(lambda x, w: ops_.conv2d(x.long(), w.long())), ["input", "floating-point"], {}),
        "conv2d-groups-0": (fwd(lambda x, w: ops_.conv2d(x, w, None, None, [1, 1], [0, 0], [1, 1], 0, "none")),
                            ["groups"], {}),
        "conv1x1-int": (fwd(lambda x, w: ops_.conv1x1(x.long(), w[:, :, :1, :1].long())),
                        ["input", "floating-point"], {}),
        "max_pool2d-bool": (fwd(lambda x, w: ops_.max_pool2d(x > 0, [2, 2], [2, 2])),
                            ["input", "floating-point or integer", "bool"], {}),
        "max_pool2d-kernel-overflow": (fwd(lambda x, w: ops_.max_pool2d(x, [2**62, 2], [1, 1])),
                                       ["kernel_size", "2147483647"], {}),
        "add_relu-int": (fwd(lambda x, w: ops_.add_relu(x.long(), x.long())), ["input", "floating-point"], {}),
    }


DIRECT_CASES = _direct_cases()


def _known_key(backend_device):
    name, _ = backend_device
    return "triton" if name == "triton" else name


@pytest.mark.parametrize("case", list(DIRECT_CASES))
def test_direct_op_bad_input_matrix(case, backend_device, request):
    build, words, known = DIRECT_CASES[case]
    _, device = backend_device
    reason = known.get("*") or known.get(_known_key(backend_device))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    fn, watch = build(device)
    _bad(fn, words, *watch)


def test_int_tensor_cannot_enter_autograd():
    """requires_grad on an integer input is refused by torch itself; an integer input next to a float
    weight that requires grad is refused by fastcnn before any graph is built."""
    with pytest.raises(RuntimeError):
        torch.ones(3, dtype=torch.int64).requires_grad_()
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    with pytest.raises(ValueError, match="int64"):
        FF.conv2d(torch.ones(1, 3, 5, 5, dtype=torch.int64), w)
    assert w.grad is None


def test_no_hang_on_extreme_but_valid_arguments():
    """Huge strides and paddings that leave a small output are fine; ones that ask for an impossible
    output fail at the allocation with torch's own error (as F.conv2d), not a hang or a crash."""
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    assert FF.conv2d(x, w, stride=2**40).shape == (1, 3, 1, 1)
    assert FF.max_pool2d(x, 2, 2**40).shape == (1, 2, 1, 1)
    with pytest.raises((RuntimeError, ValueError)):
        FF.conv2d(x, w, padding=2**40)
