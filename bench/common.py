"""Timing, environment facts and CSV output shared by the benchmarks.

GPU code is timed with ``triton.testing.do_bench`` (CUDA events, warm-up; every call's time), CPU
code with ``torch.utils.benchmark.Timer`` (blocked autorange; each block's time per call); a row
reports the median of those samples and their 20th/80th percentiles as its spread.
Speed is always a speedup: the baseline's median time over the provider's (> 1: faster).
Rows are appended to CSV files whose columns are ``COLUMNS`` (plus any extra keys at the end).
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import subprocess
from functools import lru_cache

import torch

from fastcnn._console import format_table
from fastcnn.testing import TARGETS

COLUMNS = ["timestamp", "git_sha", "device", "torch", "triton", "cuda", "kind", "name", "mode", "dtype", "layout",
           "batch", "shape", "provider", "ms_p50", "ms_p20", "ms_p80", "tflops", "gbps", "speedup"]

# The committed results of this source tree (bench/results/*.csv; never written by default: a run
# without --out writes under the current directory, see suite.DEFAULT_OUT).
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# Providers: PyTorch's (the baseline first) and one fastcnn_<backend> per timed target of
# fastcnn.testing.TARGETS on that device kind, plus "fastcnn" (the auto backend) on a GPU.
BASELINE = {"cpu": "torch_cpu", "cuda": "cudnn"}


def _provider(backend: str) -> str:
    return "fastcnn_" + backend.replace("-", "_")


FASTCNN_BACKEND = {**{_provider(t.backend): t.backend for t in TARGETS if t.timed}, "fastcnn": "auto"}
PROVIDERS = {
    "cpu": ["torch_cpu", *[_provider(t.backend) for t in TARGETS if t.timed and t.device == "cpu"]],
    "cuda": ["cudnn", "torch_compile", *[_provider(t.backend) for t in TARGETS if t.timed and t.device == "cuda"],
             "fastcnn"],
}


@lru_cache(None)
def git_sha() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10)
        sha = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


@lru_cache(None)
def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


@lru_cache(None)
def versions() -> dict:
    try:
        import triton

        tv = triton.__version__
    except Exception:
        tv = ""
    return {"torch": torch.__version__, "triton": tv, "cuda": torch.version.cuda or ""}


def env_row(device: str) -> dict:
    return {"timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "git_sha": git_sha(),
            "device": device_name(device), **versions()}


def _quantile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def cpu_samples(fn, min_run_time=0.3) -> list[float]:
    """Per-call times in ms of ``fn()`` on the CPU: torch.utils.benchmark's blocked autorange after
    one warm-up call, each block's mean per call (a block is as many calls as fill ~0.1 s)."""
    from torch.utils.benchmark import Timer

    fn()  # warm-up (first-call allocations, lazy init)
    m = Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time)
    return [t / m.number_per_run * 1e3 for t in m.raw_times]


def gpu_samples(fn, warmup=25, rep=100) -> list[float]:
    """Per-call times in ms of ``fn()`` on the GPU: triton.testing.do_bench (CUDA events, warm-up, the
    L2 cache flushed before each call), every call's time."""
    from triton.testing import do_bench

    return list(do_bench(fn, warmup=warmup, rep=rep, return_mode="all"))


def samples(fn, device: str, quick=False) -> list[float]:
    if device.startswith("cuda"):
        return gpu_samples(fn, warmup=10 if quick else 25, rep=30 if quick else 100)
    return cpu_samples(fn, min_run_time=0.05 if quick else 0.3)


def summary(times) -> tuple[float, float, float]:
    """(median, 20th, 80th percentile) of the times: the number reported and its spread."""
    return _quantile(times, 0.5), _quantile(times, 0.2), _quantile(times, 0.8)


def time_fn(fn, device: str, quick=False) -> tuple[float, float, float]:
    """Median, p20, p80 in ms of ``fn()`` (``samples`` summarised)."""
    return summary(samples(fn, device, quick))


def append_csv(path: str, rows: list[dict]) -> None:
    if not rows:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    extra = [k for k in rows[0] if k not in COLUMNS]
    fields = COLUMNS + extra
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    if not new:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            old = list(reader)
            header = list(reader.fieldnames or [])
        if header:
            fields = header + [k for k in fields if k not in header]
        if fields != header:  # a new column: rewrite the file under the wider header (old rows: empty)
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(old)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})


def geomean(xs) -> float:
    import math

    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def _fmt_cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "" if v is None else str(v)


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    """The benchmarks' tables (for READMEs): fastcnn's one table formatter, markdown, 3 digits."""
    return format_table(rows, cols, default=_fmt_cell, markdown=True)
