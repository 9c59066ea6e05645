"""Triton kernels of fastcnn (installed as ``fastcnn.kernels``).

``IMPLS`` maps each op stem to the function that fastcnn/_ops.py registers as the kernel of
``fastcnn::_triton_<stem>``; each function takes the op's schema arguments.
"""

import triton  # noqa: F401  (ImportError here disables the triton backend, nothing else)

IMPLS = {}
