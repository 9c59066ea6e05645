"""Launch records: what a launcher decides, as data, and the one place kernels are launched.

Each launcher turns its validated arguments into a plan, a list of ``Launch`` records (kernel, grid,
positional arguments, constexprs, launch options), from facts about where it runs (``Target``), and
runs it. ``collect(target)`` diverts the records instead of launching them: tools/triton_aot.py calls
the launchers on meta tensors under it and compiles exactly what they would launch on that target
(with the specialisation Triton's runtime applies), so the ahead-of-time check never re-implements a
launcher's choice of kernel, tile or flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os

import torch
from triton import knobs

# FP fusion pinned on (today's default): LLVM and ptxas may contract a*b + c into one FMA, one
# rounding instead of two. The fp32 "ieee" dot and the fp64 broadcast dot are chains of
# multiply-adds: unfused, each product is rounded before the add, which doubles the error bound the
# accuracy tests allow for (n*u*sum|a*b| becomes 2*n*u*sum|a*b|) and departs from the CUDA
# backend, compiled with nvcc's default --fmad=true. Passed as a launch option on every launch (so a
# user's TRITON_DEFAULT_FP_FUSION=0 for their own kernels does not reach ours), and the variable
# set when unset: Triton >= 3.9 warns that its default changes in 3.10.
FP_FUSION = True
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

# The register cap given to ptxas on every launch: the hardware's 255 (also the most 8 warps can
# hold: 255 x 256 threads fit the 64K-register file). Without an explicit cap ptxas trades a few
# spills for occupancy on its own: sm_90, AlexNet pool5 NCHW fp16 max-pool backward 64x16: 56
# registers + 8 B of spills; with .maxnreg 255: 78 registers, none (tools/triton_aot.py found 40 such
# variants at 56-168 registers across the pools, the conv kernels' narrow tiles and fp32).
MAXNREG = 255

# Triton's interpreter runs the kernels (CPU tensors under TRITON_INTERPRET=1); read as the
# @triton.jit decorators do, when the kernel modules are imported.
INTERPRETER = bool(knobs.runtime.interpret)


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a plan runs: Triton's interpreter, or a CUDA device with ``sm_count`` SMs and compute
    capability ``capability``."""
    interpreter: bool
    sm_count: int = 1
    capability: tuple[int, int] = (0, 0)

    @property
    def kind(self) -> str:
        return "cpu" if self.interpreter else "cuda"


@dataclasses.dataclass(frozen=True)
class Launch:
    kernel: object  # a triton.JITFunction
    grid: tuple
    args: tuple
    constexprs: dict
    options: dict
    # a GEMM kernel's M and its tile (the dimension tensor cores take as M), for the AOT check's
    # rule that GEMMs with M >= 64 get tiles of 64 or more, which reach wgmma on sm_90
    gemm_m: int = 0
    tile_m: int = 0

    def __call__(self):
        self.kernel[self.grid](*self.args, **self.constexprs, **self.options)


def launch(kernel, grid, args, constexprs, options, gemm_m: int = 0, tile_m: int | None = None) -> Launch:
    options = dict(options)
    options.setdefault("enable_fp_fusion", FP_FUSION)
    options.setdefault("maxnreg", MAXNREG)
    tile_m = constexprs.get("BLOCK_M", 0) if tile_m is None else tile_m
    return Launch(kernel, tuple(grid), tuple(args), dict(constexprs), options, gemm_m, tile_m)


_COLLECT: list | None = None
_TARGET: Target | None = None


@functools.lru_cache(None)
def _cuda_target(index: int) -> Target:
    props = torch.cuda.get_device_properties(index)
    return Target(False, props.multi_processor_count, (props.major, props.minor))


def target_of(t: torch.Tensor) -> Target:
    """The Target of a call on tensor ``t`` (the collecting target under collect())."""
    if _TARGET is not None:
        return _TARGET
    if not t.is_cuda:
        return Target(interpreter=True)
    return _cuda_target(t.device.index if t.device.index is not None else torch.cuda.current_device())


def run(plan: list[Launch]) -> None:
    if _COLLECT is not None:
        _COLLECT.extend(plan)
        return
    for rec in plan:
        rec()


@contextlib.contextmanager
def collect(target: Target):
    """Record the launches of the launchers called inside, planned for ``target``, instead of
    running them (call the launchers on meta tensors: nothing is computed)."""
    global _COLLECT, _TARGET
    saved = _COLLECT, _TARGET
    _COLLECT, _TARGET = [], target
    try:
        yield _COLLECT
    finally:
        _COLLECT, _TARGET = saved
