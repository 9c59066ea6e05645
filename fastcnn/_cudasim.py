"""cuda-sim: fastcnn's CUDA kernels executed on the CPU.

``make cuda-sim`` builds ``fastcnn._C_cudasim``: the CUDA kernels' own source and their torch-aware
launchers compiled by the host compiler against a SIMT emulation (csrc/cuda/sim/simt.h). It runs
CPU tensors; every CUDA thread is a fiber, warps run depth-first, and what a GPU leaves undefined
(divergent collectives, reads before a cp.async wait, shared memory out of bounds, launch limits) is
reported as a ``RuntimeError`` naming the kernel, the CTA and the thread.

Switches (environment, read when the module loads; the ops in ``torch.ops.fastcnn_cudasim`` change
them at run time):

* ``FASTCNN_SIM_ORDER``: scheduling order of warps and lanes, ``fwd`` (default), ``rev``,
  ``rand:<seed>``;
* ``FASTCNN_SIM_THREADS``: host threads running CTAs (default: the core count);
* ``FASTCNN_SIM_SMS``: the SM count the launchers plan for (default 132, an H100/H200);
* ``FASTCNN_SIM_FORCE``: forced dispatch choices, ``kind=value,...`` (tests: every tile and path);
* ``FASTCNN_SIM_ASAN=1``: load the AddressSanitizer build ``_C_cudasim_asan`` instead (built by
  ``make cuda-sim FASTCNN_SIM_ASAN_BUILD=1``; the process needs the ASan runtime preloaded, and
  libstdc++ with it: ``LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so.6)"``).
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import importlib.util
import os

import torch

from . import _C

ERROR: str | None = None  # why the sim module is unavailable, once load() failed
_ops = None

# The nvcc build's kernels with their __launch_bounds__ (tools/ptxas_usage.py, from `make cuda-check`
# sources): the sim refuses launches over a kernel's bound, as the GPU does.
PTXAS_CSV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "results",
                         "cuda_ptxas.csv")


def module_name() -> str:
    return "_C_cudasim_asan" if os.environ.get("FASTCNN_SIM_ASAN", "0") == "1" else "_C_cudasim"


def normalize_mangled(name: str) -> str:
    """The host compiler's mangled name for a kernel nvcc mangled: nvcc names an anonymous namespace
    `_GLOBAL__N__<hash>_<file>_cu_<hash>_<n>` (length-prefixed), g++ `_GLOBAL__N_1`."""
    out, i = [], 0
    while True:
        k = name.find("_GLOBAL__N_", i)
        if k < 0:
            out.append(name[i:])
            return "".join(out)
        j = k
        while j > i and name[j - 1].isdigit():
            j -= 1
        length = int(name[j:k]) if j < k else len("_GLOBAL__N_1")
        out.append(name[i:j] + "12_GLOBAL__N_1")
        i = k + length


def nvcc_kernels(path: str = PTXAS_CSV) -> dict[str, int]:
    """Kernel (mangled as the host compiler does) -> __launch_bounds__ max threads (0: none) of the
    nvcc build (sm_90 rows)."""
    out: dict[str, int] = {}
    if not os.path.exists(path):
        return out
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("arch") == "sm_90":
                out[normalize_mangled(row["kernel"])] = int(row.get("max_threads") or 0)
    return out


def load():
    """torch.ops.fastcnn_cudasim once the sim module is loaded, or None (see ERROR). Loading it
    registers the ``fastcnn::_cudasim_<stem>`` implementation ops, which makes the ``cuda-sim``
    backend runnable, and binds _C's services (the poison switch, the "what ran" trace)."""
    global _ops, ERROR
    if _ops is not None or ERROR is not None:
        return _ops
    name = module_name()
    if importlib.util.find_spec(f"{__package__}.{name}") is None:
        ERROR = f"fastcnn.{name} is not built (make cuda-sim{' FASTCNN_SIM_ASAN_BUILD=1' if name.endswith('asan') else ''})"
        _C._set_backend_reason("cuda-sim", "cpu", ERROR)
        return None
    try:
        importlib.import_module(f"{__package__}.{name}")
    except ImportError as e:  # built against another torch, or the ASan runtime is not preloaded
        ERROR = f"fastcnn.{name} does not load ({e})"
        _C._set_backend_reason("cuda-sim", "cpu", ERROR)
        return None
    ops = torch.ops.fastcnn_cudasim
    ops.bind_services(_C._services_address())
    bounds = {k: v for k, v in nvcc_kernels().items() if v > 0}
    if bounds:
        ops.set_launch_bounds(",".join(f"{k}={v}" for k, v in sorted(bounds.items())))
    _C._set_backend_reason("cuda-sim", "cpu", "")
    _ops = ops
    return _ops


@contextlib.contextmanager
def _switched(setting: str, value: str):
    """Set one of the sim module's run-time switches (``order``, ``force``) for a block, then restore
    the previous value."""
    ops = load()
    if ops is None:
        raise RuntimeError(f"cuda-sim unavailable: {ERROR}")
    previous = getattr(ops, f"get_{setting}")()
    getattr(ops, f"set_{setting}")(value)
    try:
        yield
    finally:
        getattr(ops, f"set_{setting}")(previous)


@contextlib.contextmanager
def order(name: str):
    """``with fastcnn._cudasim.order("rev"): ...`` runs the block's launches in that scheduling
    order (``fwd``, ``rev``, ``rand:<seed>``), then restores the previous one (tests: one cuda-sim
    target per order)."""
    with _switched("order", name):
        yield


@contextlib.contextmanager
def forced(spec: str):
    """``with fastcnn._cudasim.forced("conv_tile=2,conv_vec=0"): ...`` forces the launchers' dispatch
    choices (the ``FASTCNN_PICK`` kinds: tile configs, loader paths, index widths, split counts) for
    the block, then restores the previous ones (tests: every kernel instantiation on small shapes)."""
    with _switched("force", spec):
        yield
