"""Python-side registration of the fastcnn ops: fake kernels, autograd, and the Triton backend.

The schemas, the router and the CPU/CUDA kernels live in C++ (csrc/). Here:
* ``register_fake`` for every public op and every implementation op ``_<tag>_<stem>``, producing the
  shapes, dtypes and strides the real kernels do, after the same checks (fastcnn/_checks.py);
* for the backward ops a node that makes a second derivative fail with a clear message (the forward
  ops' autograd is C++, csrc/autograd.cpp; its backward calls the ``_<op>_backward`` ops, which route
  like the forward ops);
* the Triton backend: ``fastcnn.kernels`` registered as the kernels of ``fastcnn::_triton_<stem>``
  (CUDA tensors; CPU tensors too when ``TRITON_INTERPRET=1``), or the reason it cannot run.
"""

from __future__ import annotations

import os

import torch
from torch._prims_common import suggest_memory_format

from . import _C  # noqa: F401  (loads the library: schemas, router and C++ kernels)
from . import _checks
from .kernels import _common
from .kernels._common import conv_format

ops = torch.ops.fastcnn
STEMS = tuple(_C.op_stems)  # conv2d, conv2d_backward, conv1x1, ...
TRITON_ERROR: str | None = "not initialised"


def set_poison(on: bool) -> None:
    """Fill every op output with NaN (-1 for integers) before a kernel writes it, on every backend
    (the C++ allocator and the Triton launchers' one), so an element a kernel forgets to write fails
    a comparison instead of passing by luck. For tests."""
    _C._set_poison(bool(on))
    _common.set_poison(bool(on))


def public_op(stem: str) -> str:
    """The public op of a stem: conv2d -> fastcnn::conv2d, conv2d_backward -> fastcnn::_conv2d_backward."""
    return f"fastcnn::_{stem}" if stem.endswith("_backward") else f"fastcnn::{stem}"


def impl_op(tag: str, stem: str) -> str:
    """The implementation op of a backend tag: (cpu, conv2d) -> fastcnn::_cpu_conv2d."""
    return f"fastcnn::_{tag}_{stem}"


def _empty(shape, like, fmt=torch.contiguous_format, dtype=None):
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=fmt)


def _empty0(like, dtype=None):
    return torch.empty((0,), dtype=dtype or like.dtype, device=like.device)


# ------------------------------------------------------------------------------------------------
# fake kernels (one per stem; registered for the public op and every implementation op)
# ------------------------------------------------------------------------------------------------

def _conv2d_fake(input, weight, bias=None, residual=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                 activation="none"):
    _checks.activation(activation, "conv2d")
    shape = _checks.conv("conv2d", input, weight, bias, residual, stride, padding, dilation, groups)
    return _empty(shape, input, conv_format(input, weight))


def _conv_backward_fake(grad_output, input, weight, output_mask):
    fmt = conv_format(input, weight)
    gi = _empty(input.shape, input, fmt) if output_mask[0] else _empty0(input)
    gw = _empty(weight.shape, input, suggest_memory_format(weight)) if output_mask[1] else _empty0(input)
    gb = _empty((weight.shape[0],), input) if output_mask[2] else _empty0(input)
    ga = _empty(grad_output.shape, input, fmt) if output_mask[3] else _empty0(input)
    return gi, gw, gb, ga


def _conv2d_backward_fake(grad_output, input, weight, output, stride, padding, dilation, groups, activation,
                          output_mask):
    _checks.conv_backward("conv2d_backward", grad_output, input, weight, output, stride, padding, dilation, groups,
                          activation)
    return _conv_backward_fake(grad_output, input, weight, output_mask)


def _conv1x1_fake(input, weight, bias=None, residual=None, stride=(1, 1), activation="relu"):
    _checks.activation(activation, "conv1x1")
    shape = _checks.conv("conv1x1", input, weight, bias, residual, stride, (0, 0), (1, 1), 1, one1x1=True)
    return _empty(shape, input, conv_format(input, weight))


def _conv1x1_backward_fake(grad_output, input, weight, output, stride, activation, output_mask):
    _checks.conv_backward("conv1x1_backward", grad_output, input, weight, output, stride, (0, 0), (1, 1), 1,
                          activation, one1x1=True)
    return _conv_backward_fake(grad_output, input, weight, output_mask)


def _max_pool2d_fake(input, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False,
                     with_indices=False):
    shape = _checks.max_pool2d("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode)
    fmt = suggest_memory_format(input)
    out = _empty(shape, input, fmt)
    idx = _empty(shape, input, fmt, torch.int64) if with_indices else _empty0(input, torch.int64)
    return out, idx


def _max_pool2d_backward_fake(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    _checks.max_pool2d_backward("max_pool2d_backward", grad_output, input, indices, kernel_size, stride, padding,
                                dilation, ceil_mode)
    return _empty(input.shape, input, suggest_memory_format(input))


def _add_relu_fake(input, other):
    _checks.add_relu("add_relu", input, other)
    return torch.empty_like(input + other)  # TensorIterator's layout, as the real kernel


def _add_relu_backward_fake(grad_output, output):
    _checks.add_relu_backward("add_relu_backward", grad_output, output)
    return torch.empty_like(grad_output + output)


def _conv2d_into_fake(input, weight, bias, residual, stride, padding, dilation, groups, activation, out):
    _checks.activation(activation, "conv2d_into")
    _checks.conv2d_into("conv2d_into", input, weight, bias, residual, stride, padding, dilation, groups, out)


def _conv1x1_into_fake(input, weight, bias, stride, activations, pool, out):
    _checks.conv1x1_into("conv1x1_into", input, weight, bias, stride, activations, pool, out, "out")


def _conv1x1_into_backward_fake(grad_outputs, input, weight, outputs, stride, activations, pool, output_mask):
    op = "conv1x1_into_backward"
    _checks.conv1x1_into(op, input, weight, None, stride, activations, pool, grad_outputs, "grad_outputs",
                         slices=False)
    # With a pool the input gradient is _max_pool2d_backward's (the input's format), else the conv's.
    gi_fmt = suggest_memory_format(input) if len(pool) else conv_format(input, weight)
    gi = _empty(input.shape, input, gi_fmt) if output_mask[0] else _empty0(input)
    gw = _empty(weight.shape, input, suggest_memory_format(weight)) if output_mask[1] else _empty0(input)
    gb = _empty((weight.shape[0],), input) if output_mask[2] else _empty0(input)
    return gi, gw, gb


FAKES = {
    "conv2d": _conv2d_fake,
    "conv2d_backward": _conv2d_backward_fake,
    "conv1x1": _conv1x1_fake,
    "conv1x1_backward": _conv1x1_backward_fake,
    "max_pool2d": _max_pool2d_fake,
    "max_pool2d_backward": _max_pool2d_backward_fake,
    "add_relu": _add_relu_fake,
    "add_relu_backward": _add_relu_backward_fake,
    "conv2d_into": _conv2d_into_fake,
    "conv1x1_into": _conv1x1_into_fake,
}
assert set(FAKES) == set(STEMS), "a fake kernel per op stem"


def register_fakes(tag: str | None) -> None:
    """Fake kernels for the public ops (tag None) or for one backend's implementation ops."""
    for stem, fake in FAKES.items():
        torch.library.register_fake(public_op(stem) if tag is None else impl_op(tag, stem))(fake)


register_fakes(None)
torch.library.register_fake("fastcnn::_conv1x1_into_backward")(_conv1x1_into_backward_fake)
for _name in _C._backend_names()[1:]:
    register_fakes(_C._backend_info(_name)["tag"])


# ------------------------------------------------------------------------------------------------
# autograd
# ------------------------------------------------------------------------------------------------

# The forward ops' autograd is C++ (csrc/autograd.cpp: torch::autograd::Functions for the Autograd
# key, whose backward calls the routed _<op>_backward ops): torch.library.register_autograd's Python
# wrapper cost ~150-250 us per conv per training step. Here: the backward ops' own node.

def _no_double_backward(stem):
    def backward(ctx, *grads):
        raise RuntimeError(f"fastcnn {stem[:-len('_backward')]}: double backward is not supported (the gradient of "
                           f"fastcnn::_{stem}, reached through create_graph=True); compute higher-order "
                           "derivatives with the torch.nn.functional ops")
    return backward


# The backward ops record a node under create_graph=True so that differentiating the gradients
# again fails with this message rather than with autograd's generic "does not require grad".
for _stem in STEMS:
    if _stem.endswith("_backward"):
        torch.library.register_autograd(public_op(_stem), _no_double_backward(_stem),
                                        setup_context=lambda ctx, inputs, output: None)


# ------------------------------------------------------------------------------------------------
# the Triton backend
# ------------------------------------------------------------------------------------------------

def _register_triton():
    """Register fastcnn.kernels as the kernels of fastcnn::_triton_<stem>; returns None or why not."""
    from . import kernels

    try:
        impls = kernels.impls()
    except Exception as exc:  # triton missing or broken: the other backends still work
        why = f"Triton could not be imported ({type(exc).__name__}: {exc}); pip install triton"
        _C._set_backend_reason("triton", "cpu", why)
        _C._set_backend_reason("triton", "cuda", why)
        return why
    devices = ["cuda"]
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        devices.append("cpu")
    else:
        _C._set_backend_reason("triton", "cpu", "Triton runs CPU tensors only in its interpreter; set "
                               "TRITON_INTERPRET=1 before importing fastcnn")
    for stem, fn in impls.items():
        torch.library.register_kernel(impl_op("triton", stem), devices, fn)
    return None


TRITON_ERROR = _register_triton()
