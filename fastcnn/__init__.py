"""fastcnn: fused CNN kernels for PyTorch.

Ops (``torch.ops.fastcnn.*``): ``conv2d`` (conv + bias + residual + ReLU), ``conv1x1`` (the
bottleneck 1x1 conv as a GEMM with the same epilogue), ``max_pool2d`` and ``add_relu``, each with
autograd, fake kernels and torch.compile support, on CPU (C++), CUDA (CUDA C++) and Triton.
"""

import torch  # noqa: F401  (loads libc10/libtorch, which fastcnn._C links against)

from ._versions import UnsupportedVersionWarning, warn_if_unsupported

warn_if_unsupported()  # before loading _C: outside the tested range a failure below may be why

try:
    from . import _C  # noqa: F401
except ImportError as exc:  # pragma: no cover - a broken or missing build
    raise ImportError(
        "fastcnn's C++ extension (fastcnn._C) could not be loaded. Build it with "
        "`pip install --no-build-isolation .` (or `make test`) against the torch you import: " + str(exc)
    ) from exc

from . import _ops  # noqa: F401  (fake kernels, autograd, the Triton backend)
from . import functional
from ._backend import Dispatch, available_backends, backend, explain, get_backend, resolve, set_backend, _init_from_env
from . import nn, models  # noqa: E402  (drop-in modules; networks with torchvision's names)
from .fuse import fuse, FuseReport  # noqa: E402  (ordinary model -> fastcnn layers)
from . import sm90  # noqa: E402  (the Hopper path: mode switch, _C_sm90 registration, path report)
from . import _cudasim  # noqa: E402  (the cuda-sim backend, where `make cuda-sim` built it)

__all__ = ["functional", "nn", "models", "fuse", "FuseReport", "backend", "set_backend", "get_backend",
           "available_backends", "resolve", "explain", "Dispatch", "UnsupportedVersionWarning"]
__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)

_cudasim.load()
_init_from_env()
sm90._init()
