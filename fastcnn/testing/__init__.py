"""What fastcnn's correctness checks share: tolerances, the error measure, the (backend, device)
targets this installation can run, and the plain-PyTorch reference networks (``reference_models``).

Used by ``tests/conftest.py`` (which turns ``TARGETS`` into pytest parameters), by
``python -m fastcnn check`` (``fastcnn.selfcheck``) and by the benchmarks (``fastcnn.bench``).
Importing it needs neither pytest nor anything outside torch.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from .._ops import set_poison  # noqa: F401  (the one poison switch: the C++ and the Triton allocators)

__all__ = ["TOL", "TOL_TF32", "rel_err", "max_abs_err", "assert_close", "Target", "TARGETS", "targets",
           "interpreting", "set_poison"]

# Relative-norm error bounds ||out - ref|| / ||ref|| against a float64 reference computed from the
# same (rounded) inputs. float32 sums are fp32-exact; fp16/bf16 carry one output rounding (2^-11,
# 2^-8) plus fp32 accumulation; tf32 rounds the operands to 10 mantissa bits.
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
TOL_TF32 = 5e-3


# ------------------------------------------------------------------------------------------------
# the error measure
# ------------------------------------------------------------------------------------------------

def _as64(out: torch.Tensor, ref: torch.Tensor):
    out = out.detach().to("cpu", torch.float64)
    ref = ref.detach().to("cpu", torch.float64)
    if out.shape != ref.shape:
        raise AssertionError(f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    finite = torch.isfinite(ref)
    # NaN/inf must sit where the reference has them, with the same value (NaN, +inf or -inf)
    same_specials = torch.equal(torch.isfinite(out), finite) and torch.equal(
        out[~finite].nan_to_num(0, 1, -1), ref[~finite].nan_to_num(0, 1, -1))
    return out, ref, finite, same_specials


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 over the reference's finite elements; a NaN or inf in out
    that the reference does not have at that place (or the other way round) gives inf."""
    out, ref, finite, same = _as64(out, ref)
    if not same:
        return float("inf")
    diff = (out[finite] - ref[finite]).norm().item()
    scale = ref[finite].norm().item()
    return diff / scale if scale > 0 else diff


def max_abs_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| over the reference's finite elements (inf as ``rel_err``)."""
    out, ref, finite, same = _as64(out, ref)
    if not same:
        return float("inf")
    d = (out[finite] - ref[finite]).abs()
    return d.max().item() if d.numel() else 0.0


def assert_close(out, ref, dtype, what="output", tol=None):
    """``rel_err(out, ref) <= tol`` (default ``TOL[dtype]``), else an AssertionError naming ``what``."""
    tol = tol if tol is not None else TOL[dtype]
    err = rel_err(out, ref)
    if not err <= tol:
        raise AssertionError(f"{what}: relative error {err:.3e} > {tol:.1e} ({dtype})")


# ------------------------------------------------------------------------------------------------
# backend targets
# ------------------------------------------------------------------------------------------------

def interpreting() -> bool:
    """Triton's interpreter is on (``TRITON_INTERPRET=1``): Triton kernels run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@dataclass(frozen=True)
class Target:
    """One (backend, device) pair a correctness check runs: ``with fastcnn.backend(backend)`` on
    tensors of ``device``. ``id`` names it in test ids and tables."""

    backend: str
    device: str  # "cpu" or "cuda": where the tensors live
    id: str
    interpreted: bool = False  # Triton on CPU tensors: only under TRITON_INTERPRET=1 (slow: small shapes)
    timed: bool = True  # the benchmarks time it (not an interpreter or a simulator)
    sim_order: str = ""  # cuda-sim: the scheduling order of warps and lanes (fwd, rev, rand:<seed>)

    @contextlib.contextmanager
    def use(self):
        """Run the block on this target's backend (and, for cuda-sim, in its scheduling order)."""
        import fastcnn

        with fastcnn.backend(self.backend), contextlib.ExitStack() as stack:
            if self.sim_order:
                from .. import _cudasim

                stack.enter_context(_cudasim.order(self.sim_order))
            yield

    def unavailable(self) -> str | None:
        """Why this installation cannot run the target now, or None when it can."""
        if self.device == "cuda" and not torch.cuda.is_available():
            return "needs a CUDA GPU"
        if self.interpreted and not interpreting():
            return "TRITON_INTERPRET=1 not set"
        import fastcnn

        avail = fastcnn.available_backends()
        if self.backend not in avail:
            return f"backend {self.backend!r} is not available in this installation (available: {', '.join(avail)})"
        return None


# Every target a check may run, in order; adding a backend is one entry here.
TARGETS = (
    Target("cpu", "cpu", "cpu"),
    Target("triton", "cpu", "triton-interp", interpreted=True, timed=False),
    # The CUDA kernels emulated on the CPU (fastcnn._C_cudasim, `make cuda-sim`), in two orders: a
    # schedule that keeps warps in step hides a missing barrier, so each case runs warps first-to-
    # last and last-to-first (small shapes: an emulated thread costs ~0.1-1 us per instruction).
    Target("cuda-sim", "cpu", "cuda-sim", timed=False, sim_order="fwd"),
    Target("cuda-sim", "cpu", "cuda-sim-rev", timed=False, sim_order="rev"),
    Target("cuda", "cuda", "cuda"),
    Target("triton", "cuda", "triton-cuda"),
)


def targets() -> list[Target]:
    """The targets this installation can run now (``TARGETS`` less the unavailable ones)."""
    return [t for t in TARGETS if t.unavailable() is None]
