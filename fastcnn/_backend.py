"""Which implementation runs the ops: ``auto`` (default), ``cpu``, ``cuda`` or ``triton``.

The choice is process-wide (held in the C++ extension, read by every kernel entry point) and is
applied per call from the inputs' device: ``auto`` runs CPU tensors on the C++ CPU kernels and CUDA
tensors on the CUDA kernels (Triton when fastcnn was built without CUDA). A backend that cannot run
a call's tensors raises a ``ValueError`` naming the backend and the device.
"""

from __future__ import annotations

import contextlib
import os

from . import _C

BACKENDS = ("auto", "cpu", "cuda", "triton")


def _triton_importable() -> bool:
    from . import _ops

    return _ops.TRITON_ERROR is None


def available_backends() -> list[str]:
    """Backends that can run on this installation (for some device)."""
    out = ["auto", "cpu"]
    if _C.with_cuda:
        out.append("cuda")
    if _triton_importable():
        out.append("triton")
    return out


def set_backend(name: str) -> None:
    """Select the backend for all following fastcnn calls (see ``backend`` for a scoped switch)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "cuda" and not _C.with_cuda:
        raise ValueError("backend 'cuda' is not available: fastcnn was built without CUDA (build on a machine with "
                         "CUDA torch and nvcc, or with FASTCNN_FORCE_CUDA=1)")
    if name == "triton" and not _triton_importable():
        from . import _ops

        raise ValueError(f"backend 'triton' is not available: {_ops.TRITON_ERROR}")
    _C._set_backend(BACKENDS.index(name))


def get_backend() -> str:
    return BACKENDS[_C._get_backend()]


@contextlib.contextmanager
def backend(name: str):
    """``with fastcnn.backend("triton"): ...`` runs the block on that backend, then restores the last one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        _C._set_backend(BACKENDS.index(previous))


def _init_from_env() -> None:
    name = os.environ.get("FASTCNN_BACKEND")
    if name:
        set_backend(name)
