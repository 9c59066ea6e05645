"""The Hopper path: fastcnn's convolutions on CUTLASS's SM90 kernels (wgmma + TMA im2col).

``fastcnn._C_sm90`` (built when CUDA torch, nvcc >= 12.3, 9.0 in ``TORCH_CUDA_ARCH_LIST`` and the
CUTLASS headers are there) holds the kernels; ``fastcnn._C`` routes each CUDA conv call through one
pure rule (``csrc/sm90_path.h``) that picks, per pass (fprop, dgrad, wgrad), the sm90 kernels or the
existing CUDA kernels, with the reason. ``FASTCNN_SM90`` (or :func:`set_mode`) selects:

* ``auto`` (default): takes the sm90 path once a committed GPU validation record covers it
  (``fastcnn::sm90::kAutoValidated``); until then it behaves as ``off``;
* ``force``: takes it, and raises ``ValueError`` naming the reason where it rejects a call;
* ``off``: never takes it.

``python -m fastcnn.sm90_paths`` prints the path of every conv layer of LeNet-5, AlexNet, GoogLeNet and
ResNet-50 (bench/shapes.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import warnings

import torch

from . import _C  # noqa: F401  (loads the ops)

MODES = ("auto", "force", "off")
PASSES = ("fprop", "dgrad", "wgrad")
_LOAD_ERROR: str | None = "not attempted"


def mode() -> str:
    return torch.ops.fastcnn._sm90_mode()


def set_mode(name: str) -> None:
    """Select ``auto``, ``force`` or ``off`` for all following calls (process-wide)."""
    if name not in MODES:
        raise ValueError(f"FASTCNN_SM90 must be one of {MODES}, got {name!r}")
    torch.ops.fastcnn._sm90_set_mode(name)


@contextlib.contextmanager
def use_mode(name: str):
    """``with fastcnn.sm90.use_mode("force"): ...`` runs the block in that mode, then restores the last one."""
    previous = mode()
    set_mode(name)
    try:
        yield
    finally:
        torch.ops.fastcnn._sm90_set_mode(previous)


def available() -> bool:
    """Whether fastcnn._C_sm90 is loaded and its kernels are registered with fastcnn._C."""
    return bool(torch.ops.fastcnn._sm90_available())


def build() -> str:
    """The registered kernels' build line (CUTLASS version, target, nvcc), or '' when none."""
    return torch.ops.fastcnn._sm90_build()


def load_error() -> str | None:
    """Why fastcnn._C_sm90 is not registered (None once it is)."""
    return _LOAD_ERROR


def _register() -> None:
    """Import fastcnn._C_sm90 when it was built and hand its kernel table to fastcnn._C."""
    global _LOAD_ERROR
    if importlib.util.find_spec("fastcnn._C_sm90") is None:
        _LOAD_ERROR = "fastcnn._C_sm90 was not built"
        return
    try:
        from . import _C_sm90
        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype = ctypes.c_void_p
        get.argtypes = [ctypes.py_object, ctypes.c_char_p]
        address = get(_C_sm90.table, b"fastcnn._C_sm90.table")
        torch.ops.fastcnn._sm90_register(address)
        _LOAD_ERROR = None
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        _LOAD_ERROR = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"fastcnn._C_sm90 was built but could not be registered ({_LOAD_ERROR}); "
                      "the sm90 path is unavailable", RuntimeWarning, stacklevel=2)


def _init() -> None:
    _register()
    name = os.environ.get("FASTCNN_SM90")
    if name:
        set_mode(name)


def _pair(v):
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _align(t: torch.Tensor) -> int:
    if t.device.type == "meta":  # no storage: the view offset is what a real tensor would add
        return (t.storage_offset() * t.element_size()) % 16
    return t.data_ptr() % 16


def _tf32_allowed() -> bool:
    return bool(torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32)


def conv_path(input, weight, bias=None, residual=None, stride=1, padding=0, dilation=1, groups=1, *,
              capability=None, tf32=None, mode_name=None, is_available=None, pad_channels=True) -> dict:
    """The path of each pass of this conv call: ``{"fprop": (path, reason), "dgrad": ..., "wgrad": ...}``
    with path in ``cuda`` (the existing kernels), ``sm90-conv``, ``sm90-gemm``. Tensors may live on any
    device (``meta`` included); the facts a call would read from its device default to it: the
    capability of ``input``'s CUDA device, the TF32 flags, the current mode and whether _C_sm90 is
    registered."""
    from ._ops import conv_format

    if capability is None:
        capability = torch.cuda.get_device_capability(input.device) if input.is_cuda else (0, 0)
    if tf32 is None:
        tf32 = _tf32_allowed()
    if mode_name is None:
        mode_name = mode()
    if is_available is None:
        is_available = available()
    out = torch.ops.fastcnn._sm90_conv_path(
        list(input.shape), list(input.stride()), _align(input), list(weight.shape), _pair(stride), _pair(padding),
        _pair(dilation), int(groups), input.dtype, conv_format(input, weight) == torch.channels_last,
        bias is not None, bias.stride(0) if bias is not None else 1, _align(bias) if bias is not None else 0,
        list(residual.stride()) if residual is not None else None, _align(residual) if residual is not None else 0,
        [int(capability[0]), int(capability[1])], bool(tf32), mode_name, bool(is_available), bool(pad_channels))
    return {p: (out[2 * i], out[2 * i + 1]) for i, p in enumerate(PASSES)}


def layer_paths(nets=None, batch=8, dtype=torch.bfloat16, capability=(9, 0), mode_name="force", is_available=True,
                channels_last=True, tf32=True, pad_channels=True):
    """(layer, {pass: (path, reason)}) for every conv layer of the networks in bench/shapes.py, on meta
    tensors: what a GPU of that capability would run, without one."""
    from .bench import shapes

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    rows = []
    for layer in shapes.layers(nets, ops=("conv2d", "conv1x1")):
        x = torch.empty(batch, layer.C, layer.H, layer.W, dtype=dtype, device="meta").contiguous(memory_format=fmt)
        w = torch.empty(layer.K, layer.C // layer.groups, layer.R, layer.S, dtype=dtype,
                        device="meta").contiguous(memory_format=fmt)
        b = torch.empty(layer.K, dtype=dtype, device="meta") if layer.bias else None
        r = (torch.empty(batch, layer.K, layer.P, layer.Q, dtype=dtype, device="meta").contiguous(memory_format=fmt)
             if layer.residual else None)
        rows.append((layer, conv_path(x, w, b, r, layer.stride, layer.padding, layer.dilation, layer.groups,
                                      capability=capability, tf32=tf32, mode_name=mode_name,
                                      is_available=is_available, pad_channels=pad_channels)))
    return rows
