"""Triton kernels of fastcnn (installed as ``fastcnn.kernels``): one module per op stem.

Each op module defines ``IMPLS``, a dict from op stem (``"conv2d"``, ``"conv2d_backward"``, ...) to a
function taking that op's schema arguments (see csrc/fastcnn.cpp) and returning what the op returns.
fastcnn registers each as the kernel of ``fastcnn::_triton_<stem>``, the ``triton`` backend's
implementation op (CUDA tensors; CPU tensors too under ``TRITON_INTERPRET=1``). The launchers get
validated arguments: the router checks every call before any backend runs.

This package is a leaf: it imports nothing from ``fastcnn``. Importing it does not import Triton
(``_common`` serves installations without Triton); ``impls()`` does.
"""

from __future__ import annotations

import importlib

STEMS = ("conv2d", "conv1x1", "max_pool2d", "add_relu")


def impls() -> dict:
    """{op stem: launcher} of every Triton kernel; raises ImportError when Triton is missing."""
    import triton  # noqa: F401  (an ImportError here disables the triton backend, nothing else)

    out = {}
    for stem in STEMS:
        out.update(importlib.import_module(f"{__name__}.{stem}").IMPLS)
    return out
