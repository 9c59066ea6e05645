"""Triton kernels of fastcnn (installed as ``fastcnn.kernels``): one module per op stem.

Each module defines ``IMPLS``, a dict from op stem (``"conv2d"``, ``"conv2d_backward"``, ...) to a
function taking that op's schema arguments (see csrc/fastcnn.cpp) and returning what the op
returns. fastcnn/_ops.py registers each as the kernel of ``fastcnn::_triton_<stem>``, which the
``triton`` backend calls for CUDA tensors (and CPU tensors under ``TRITON_INTERPRET=1``).
"""

import importlib

import triton  # noqa: F401  (ImportError here disables the triton backend, nothing else)

IMPLS = {}
for _stem in ("conv2d", "conv1x1", "max_pool2d", "add_relu"):
    try:
        _mod = importlib.import_module(f"{__name__}.{_stem}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_stem}":
            raise
        continue
    IMPLS.update(_mod.IMPLS)
