"""Which implementation runs the ops: a thin view of the C++ backend table (csrc/backend.h).

``auto`` (default) runs CPU tensors on the C++ CPU kernels and CUDA tensors on the CUDA kernels
(Triton when fastcnn was built without CUDA); ``cpu``, ``cuda``, ``triton`` and ``cuda-sim`` (the
CUDA kernels emulated on the CPU, never chosen by ``auto``) force one. The choice is process-wide
and applied per call from the inputs' device; a backend that cannot run a call's tensors raises a
``ValueError`` naming the backend, the op and the device, and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import torch

from . import _C, _ops
from .kernels import _common

_FRAGMENTS = []  # torch.library fragments of backends added at run time (kept alive)


def _names() -> list[str]:
    return list(_C._backend_names())


def _runs_here(info: dict) -> bool:
    return info["runs_cpu"] or (info["runs_cuda"] and torch.cuda.is_available())


def available_backends() -> list[str]:
    """The backends that can run on this machine: ``auto`` and each backend with kernels for CPU
    tensors, or for CUDA tensors when a CUDA device is visible."""
    return ["auto"] + [n for n in _names()[1:] if _runs_here(_C._backend_info(n))]


def _why_not(name: str) -> str:
    info = _C._backend_info(name)
    reasons = [r for r in (info["why_not_cpu"], info["why_not_cuda"]) if r]
    if info["runs_cuda"] and not torch.cuda.is_available():
        reasons.append("no CUDA device is visible")
    return "; ".join(reasons) or "it has no kernels here"


def set_backend(name: str) -> None:
    """Select the backend for all following fastcnn calls (``backend(name)`` is the scoped form)."""
    names = _names()
    if name not in names:
        raise ValueError(f"backend must be one of {names}, got {name!r}")
    if name != "auto" and name not in available_backends():
        raise ValueError(f"backend {name!r} is not available here: {_why_not(name)}")
    _C._set_backend(name)


def get_backend() -> str:
    """The backend in force (``auto`` unless ``set_backend``, ``backend(...)`` or ``FASTCNN_BACKEND``
    chose another); ``resolve(op, device)`` says which one ``auto`` picks for a call."""
    return _C._get_backend()


def resolve(stem: str, device: torch.device | str) -> str:
    """The backend that runs op ``stem`` (e.g. ``"conv2d"``, ``"conv2d_backward"``) on ``device`` now,
    with ``auto`` resolved; ``ValueError`` when none can."""
    return _C._resolve(stem, str(torch.device(device)))


@dataclasses.dataclass
class Dispatch:
    """One routed op call: the op stem, the backend that ran it, the device, and what the kernel
    chose (kernel, path, tile or config, and why) as it reported it."""

    op: str
    backend: str
    device: str
    notes: dict

    def __str__(self) -> str:
        extra = "".join(f"; {k}: {v}" for k, v in self.notes.items())
        return f"{self.op} on {self.device} -> {self.backend}{extra}"


def explain(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` and return ``(result, [Dispatch, ...])``: one record per fastcnn
    op call it made on this thread (backward ops included when ``fn`` runs a backward), read from
    the router's table and the kernels' own choices.

    >>> out, ran = fastcnn.explain(FF.conv2d, x, w, padding=1)
    >>> print(*ran, sep="\n")
    conv2d on cpu -> cpu; kernel: im2col panels + GEMM; layout: NHWC; compute: Float
    """
    _C._trace_begin()
    _common.trace(True)
    try:
        result = fn(*args, **kwargs)
    finally:
        records = _C._trace_end()
        triton_notes = iter(_common.trace(False) or [])
    out = []
    for r in records:
        notes = dict(r["notes"])
        if r["backend"] == "triton":  # the Triton launchers note in Python, in call order
            notes.update(next(triton_notes, {}))
        out.append(Dispatch(r["op"], r["backend"], r["device"], notes))
    return result, out


@contextlib.contextmanager
def backend(name: str):
    """``with fastcnn.backend("triton"): ...`` runs the block on that backend, then restores the last one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        _C._set_backend(previous)


def add_backend(name: str, tag: str, auto: bool = False) -> None:
    """Add a backend to the table: its implementation ops are ``fastcnn::_<tag>_<stem>`` (schemas
    are defined here when they do not exist yet, with fake kernels); register its kernels with
    ``torch.library.register_kernel`` (or ``impl``) on them. ``auto=True`` lets ``auto`` pick it
    after the built-in backends."""
    if not tag.isidentifier():
        raise ValueError(f"backend tag must be an identifier, got {tag!r}")
    lib = None
    for stem in _ops.STEMS:
        impl = _ops.impl_op(tag, stem)
        if hasattr(torch.ops.fastcnn, impl.split("::")[1]):
            continue
        if lib is None:
            lib = torch.library.Library("fastcnn", "FRAGMENT")
            _FRAGMENTS.append(lib)
        public = getattr(torch.ops.fastcnn, _ops.public_op(stem).split("::")[1]).default
        lib.define(str(public._schema).split("::", 1)[1].replace(public._schema.name.split("::")[1],
                                                                  impl.split("::")[1], 1))
    if lib is not None:
        _ops.register_fakes(tag)
    _C._add_backend(name, tag, auto)


def _init_from_env() -> None:
    name = os.environ.get("FASTCNN_BACKEND")
    if name:
        try:
            set_backend(name)
        except ValueError as exc:
            raise ValueError(f"FASTCNN_BACKEND={name!r}: {exc}") from None
