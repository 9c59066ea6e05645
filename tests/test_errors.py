"""Bad input: a ValueError that names the argument and the sizes, through the public functions and
through torch.ops directly; never a crash, never a write to the caller's tensors."""

from __future__ import annotations

import re

import pytest
import torch

import fastcnn.functional as FF

ops = torch.ops.fastcnn


def x4(*s, dtype=torch.float32, device="cpu"):
    return torch.randn(*s, dtype=dtype, device=device)


CONV_CASES = [
    # (args, kwargs, words that must appear in the message)
    ((x4(2, 3), x4(4, 3, 3, 3)), {}, ["input", "4-d", "(2, 3)"]),
    ((x4(1, 2, 3, 5, 5), x4(4, 3, 3, 3)), {}, ["input", "4-d"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3)), {}, ["weight", "4-d", "(4, 3, 3)"]),
    ((x4(2, 3, 8, 8), x4(4, 2, 3, 3)), {}, ["weight", "input channels", "3"]),
    ((x4(2, 4, 8, 8), x4(6, 2, 3, 3)), {"groups": 3}, ["divisible by groups", "3"]),
    ((x4(2, 6, 8, 8), x4(5, 2, 3, 3)), {"groups": 3}, ["out-channels", "5", "groups"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3)), {"groups": 0}, ["groups"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3)), {"stride": 0}, ["stride", ">= 1"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3)), {"stride": (1, -1)}, ["stride"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3)), {"padding": -1}, ["padding", ">= 0"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3)), {"dilation": 0}, ["dilation"]),
    ((x4(2, 3, 4, 4), x4(4, 3, 7, 7)), {}, ["kernel", "larger than the padded input", "(2, 3, 4, 4)"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3), x4(5)), {}, ["bias", "(4,)", "(5,)"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3)), {"residual": x4(2, 4, 8, 8)}, ["residual", "(2, 4, 6, 6)", "(2, 4, 8, 8)"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3)), {"activation": "gelu"}, ["activation", "gelu"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3, dtype=torch.float64)), {}, ["weight", "dtype", "float64", "float32"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3, device="meta")), {}, ["weight", "meta", "cpu"]),
    ((torch.ones(2, 3, 8, 8, dtype=torch.int64), torch.ones(4, 3, 3, 3, dtype=torch.int64)), {},
     ["input", "floating-point", "int64"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3)), {"padding": "full"}, ["padding", "full"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3)), {"padding": "same", "stride": 2}, ["same", "strided"]),
    ((x4(2, 3, 8, 8), x4(4, 3, 3, 3)), {"stride": (1, 2, 3)}, ["stride", "pair"]),
]


def _check(exc_info, words):
    msg = str(exc_info.value)
    for w in words:
        assert w in msg, f"{w!r} not in message: {msg}"


@pytest.mark.parametrize("args,kwargs,words", CONV_CASES)
def test_conv2d_bad_input(args, kwargs, words):
    before = [a.clone() for a in args if a.device.type != "meta"]
    with pytest.raises(ValueError) as e:
        FF.conv2d(*args, **kwargs)
    _check(e, words)
    for a, b in zip([a for a in args if a.device.type != "meta"], before):
        assert torch.equal(a, b), "a caller's tensor was written"


OP_CASES = [
    # direct torch.ops calls bypass the Python checks: the C++ guard must raise a clear ValueError
    (lambda: ops.conv2d(x4(2, 3, 8), x4(4, 3, 3, 3)), ["input", "4-d"]),
    (lambda: ops.conv2d(x4(2, 3, 8, 8), x4(4, 2, 3, 3)), ["weight expects 2 input channels", "input has 3"]),
    (lambda: ops.conv2d(x4(2, 3, 8, 8), x4(4, 3, 3, 3), None, None, [0, 1]), ["stride", ">= 1"]),
    (lambda: ops.conv2d(x4(2, 3, 8, 8), x4(4, 3, 3, 3), None, None, [1, 1], [-1, 0]), ["padding"]),
    (lambda: ops.conv2d(x4(2, 3, 2, 2), x4(4, 3, 3, 3)), ["larger than the padded input"]),
    (lambda: ops.conv2d(x4(2, 3, 8, 8), x4(4, 3, 3, 3), None, x4(2, 4, 3, 3)), ["residual", "[2, 4, 6, 6]"]),
    (lambda: ops.conv2d(x4(2, 3, 8, 8), x4(4, 3, 3, 3), None, None, [1, 1], [0, 0], [1, 1], 1, "tanh"),
     ["activation", "tanh"]),
    (lambda: ops.conv1x1(x4(2, 3, 8, 8), x4(4, 3, 3, 3)), ["weight", "[C_out, C_in, 1, 1]", "[4, 3, 3, 3]"]),
    (lambda: ops.max_pool2d(x4(2, 3, 8, 8), [3, 3], [2, 2], [2, 2]), ["padding", "half the kernel"]),
    (lambda: ops.max_pool2d(x4(2, 3, 8, 8), [0, 3], [2, 2]), ["kernel_size", ">= 1"]),
    (lambda: ops.max_pool2d(x4(2, 3, 2, 2), [5, 5], [1, 1]), ["output size is too small"]),
    (lambda: ops.max_pool2d(x4(3, 8, 8), [2, 2], [2, 2]), ["input", "4-d"]),
    (lambda: ops.add_relu(x4(2, 3), x4(3, 2)), ["cannot be broadcast", "[2, 3]", "[3, 2]"]),
    (lambda: ops.add_relu(x4(2, 3), x4(2, 3, dtype=torch.float64)), ["other", "dtype"]),
    (lambda: ops._max_pool2d_backward(x4(2, 3, 3, 3), x4(2, 3, 8, 8), torch.empty(0, dtype=torch.long), [2, 2],
                                      [2, 2], [0, 0], [1, 1], False), ["grad_output", "[2, 3, 4, 4]"]),
    (lambda: ops._conv2d_backward(x4(2, 4, 5, 5), x4(2, 3, 8, 8), x4(4, 3, 3, 3), None, [1, 1], [0, 0], [1, 1], 1,
                                  "none", [True, True, False, False]), ["grad_output", "[2, 4, 6, 6]"]),
    (lambda: ops._conv2d_backward(x4(2, 4, 6, 6), x4(2, 3, 8, 8), x4(4, 3, 3, 3), None, [1, 1], [0, 0], [1, 1], 1,
                                  "relu", [True, True, False, False]), ["output", "relu"]),
]


@pytest.mark.parametrize("i", range(len(OP_CASES)))
def test_direct_op_bad_input(i):
    fn, words = OP_CASES[i]
    with pytest.raises(ValueError) as e:
        fn()
    _check(e, words)


POOL_CASES = [
    ((x4(2, 3, 8, 8), 3, 2, 2), {}, ["padding", "half the kernel", "(2, 2)", "(3, 3)"]),
    ((x4(2, 3, 8, 8), 0), {}, ["kernel_size", ">= 1"]),
    ((x4(2, 3, 8, 8), 2, 0), {}, ["stride", ">= 1"]),
    ((x4(2, 3, 8, 8), 2, 2, -1), {}, ["padding", ">= 0"]),
    ((x4(2, 3, 8, 8), 2, 2, 0, 0), {}, ["dilation"]),
    ((x4(2, 3, 2, 2), 3, 1), {}, ["output size is too small", "(2, 3, 2, 2)"]),
    ((x4(8, 8), 2), {}, ["input", "4-d", "(8, 8)"]),
    ((torch.ones(1, 1, 4, 4, dtype=torch.int32), 2), {}, ["floating-point", "int32"]),
    ((x4(1, 0, 4, 4), 2), {}, ["channels", "positive"]),
]


@pytest.mark.parametrize("args,kwargs,words", POOL_CASES)
def test_max_pool2d_bad_input(args, kwargs, words):
    with pytest.raises(ValueError) as e:
        FF.max_pool2d(*args, **kwargs)
    _check(e, words)


@pytest.mark.parametrize("a,b,words", [
    (x4(2, 3), x4(4, 3), ["cannot be broadcast", "(2, 3)", "(4, 3)"]),
    (x4(2, 3), x4(2, 3, dtype=torch.float16), ["other", "float16"]),
    (x4(2, 3), x4(2, 3, device="meta"), ["other", "meta"]),
    (torch.ones(2, dtype=torch.int64), torch.ones(2, dtype=torch.int64), ["floating-point", "int64"]),
    (x4(2, 3), [1.0, 2.0, 3.0], ["other", "torch.Tensor", "list"]),
])
def test_add_relu_bad_input(a, b, words):
    with pytest.raises(ValueError) as e:
        FF.add_relu(a, b)
    _check(e, words)


def test_conv1x1_bad_input():
    with pytest.raises(ValueError, match=re.escape("(4, 3, 3, 3)")):
        FF.conv1x1(x4(2, 3, 8, 8), x4(4, 3, 3, 3))
    with pytest.raises(ValueError, match="activation"):
        FF.conv1x1(x4(2, 3, 8, 8), x4(4, 3), activation="sigmoid")
    with pytest.raises(ValueError, match=re.escape("(2, 4, 4, 4)")):
        FF.conv1x1(x4(2, 3, 8, 8), x4(4, 3), stride=2, residual=x4(2, 4, 8, 8))
