#!/usr/bin/env python3
"""The GPU window in two device commands: build, smoke, correctness, sanitizer, benchmark table, record.

An H200 is lent now and then for 15 minutes of device time in all, its 1-2 minute start included;
each command at most 10 minutes; at most 8 files of at most 16 MiB come back from $OUT. This script
spends such a window on evidence, most valuable first, and is rehearsed on the CPU (``--dry-run``).

The two device commands (the ``run`` tool; ``tools/GPU_WINDOW.md`` has the whole procedure), verbatim:

    command 1, timeout_s 560, carry [".whl"]:
        python3 tools/gpu_run.py part1 --out "$OUT"
    command 2, issued at once (the machine stays warm 30 s), timeout_s 200, carry [".whl"]:
        python3 tools/gpu_run.py part2 --out "$OUT"

Part 1 (<= 510 s) runs the steps below in order; each step has its own timeout, and a step that does
not fit in what is left of the part is left for part 2. Part 2 (<= 160 s) runs every step part 1 did
not start, then writes the final files. Both parts end with the report (record, table, summary, logs),
so part 1's files are evidence on their own. State lives in ``build/gpu-run/`` (kept on a warm machine
between calls); every step writes its files as it goes, so a step killed at its timeout loses nothing
that earlier steps or its own finished cases wrote.

| step          | GPU budget | what                                                                        |
|---------------|-----------:|-----------------------------------------------------------------------------|
| preflight     |  45 s | GPU facts (name, SMs, clocks as read, driver, versions); compute-sanitizer    |
|               |       | memcheck/racecheck on tools/sanitizer_probe.cu: clean run 0 errors, planted    |
|               |       | bugs found (else counted as sanitizer errors; the other steps go on)          |
| wheels        |  20 s | .whl/*.whl -> build/gpu-run/site (nvidia-cutlass headers), on PYTHONPATH      |
| build         | 200 s | pip install -e . for sm_90a only (TORCH_CUDA_ARCH_LIST=9.0a), jobs capped by  |
|               |       | memory (3.5 GB per CUTLASS TU); per-TU times from ninja's log                 |
| smoke         |  60 s | import; one forward+backward per op and backend (cuda, triton, Hopper forced) |
|               |       | against float64 PyTorch                                                       |
| tests         | 150 s | pytest -m "cuda and not slow" (xdist): op tests on cuda/triton at the networks'|
|               |       | layer shapes, every dtype, both layouts, tests/test_gpu_layers.py, the GPU    |
|               |       | fuzz (FASTCNN_FUZZ_EXAMPLES), tests/test_sm90.py where it exists              |
| sanitizer     |  80 s | memcheck and racecheck over tools/gpu_checks.py's kernel sweep (small shapes  |
|               |       | of every kernel family and backend; each case checked against float64)       |
| peaks         |  25 s | HBM copy bandwidth (read + write) and the bf16 8192^3 matmul rate            |
| bench_ops     | 120 s | the op lines of the table (3x3 convs, 1x1 convs, max_pool2d, add_relu)       |
| bench_models  |  90 s | the network lines (eager cuDNN with cudnn.benchmark=True vs fastcnn)         |
| bench_compile |  90 s | torch.compile of ResNet-50 inference (max-autotune only if it fits its budget)|
| report        |  20 s | validation.jsonl, gpu_table.csv, summary.md, logs.tar.gz (always runs)        |

Build, decided from compile times measured on the CPU machine (nvcc 13.0, one core, CPU seconds):
the sm90 CUTLASS TUs 45-60 s and 3.5 GB each (7 TUs), csrc/cuda/conv2d_kernel.cu 43 s and
conv1x1_kernel.cu 50 s for sm_90a only (0.4 GB), the pool/add kernels 4-6 s, the C++ TUs against torch's
headers 12-31 s (1.6 GB). With 16 jobs the longest TU bounds each extension: ~55 s for fastcnn._C,
~60 s for fastcnn._C_sm90 (setuptools builds extensions one after the other), ~2-2.5 min with pip's
overhead: inside the 200 s budget, so everything is compiled there and nothing is carried but the
CUTLASS headers (precompiled sm90 objects would need setup.py to link prebuilt objects; not needed).

What it relies on about the GPU machine (KINDS.md, nvidia-h200, Firecracker runtime): x86-64, root,
``python3`` = /opt/torch/.venv/bin/python3 (Python 3.12) with torch 2.11+cu130, Triton 3.6, pytest,
pytest-xdist, pytest-timeout, hypothesis, numpy, matplotlib; nvcc 13.0 and compute-sanitizer on PATH
(or under /usr/local/cuda/bin); nvidia-smi; 16 cores and ~128 GiB RAM (MemTotal may read lower at
start on Firecracker: jobs are sized from the larger of the two); one H200 (sm_90, 132 SMs); no
network (every install is --no-index from .whl/); $OUT emptied before each command; ignored build
outputs (build/) kept between calls on a warm machine, gone on a fresh one; no .git in the copy (the
commit under test is read from .whl/git_sha, written by the procedure, or --git-sha).

On a fresh machine part 2 finds no build/gpu-run state: it says so, writes part-2 files that say so,
and exits 3 within seconds (a rebuild would take its whole budget); part 1's files are then the
window's evidence (tools/GPU_WINDOW.md: what to do next).

``--dry-run --out DIR`` runs the same steps on the CPU (CPU, Triton-interpreter and cuda-sim backends
where built; tiny sizes; the real file formats) in 50-110 s on the shared 2-core machine (~40 s of CPU,
one thread per step), state in DIR/state; its
record says "device": "cpu (dry run)". CI runs it (.ci/run) and ``--check DIR`` verifies the files.
This script only writes under build/, --out and --state: copying results into bench/results/ is
``collect`` (which refuses dry-run records).

    python3 tools/gpu_run.py part1|part2 --out DIR [--git-sha SHA] [--budget S] [--steps A,B] [--fresh]
    python3 tools/gpu_run.py --dry-run --out DIR [--check]
    python3 tools/gpu_run.py report --out DIR          # the files again from the state
    python3 tools/gpu_run.py --check DIR               # verify DIR's files (formats, one row per line)
    python3 tools/gpu_run.py collect DIR               # DIR (the returned files) -> bench/results/

This module imports only the standard library (the orchestrator must not hang with a CUDA call); the
work that needs torch runs in child processes: tools/gpu_checks.py (facts, smoke, kernel sweep) and
tools/gpu_bench.py (peaks and the benchmark table).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_report import (OUT_FILES, SANITIZER_TOOLS, check_out, collect, load_json,  # noqa: E402
                        now_iso, pytest_counts, read_csv, read_jsonl, write_files, write_json)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
STATE_DEFAULT = os.path.join(REPO, "build", "gpu-run")
RESULTS = os.path.join(REPO, "bench", "results")
PY = sys.executable

# Seconds per part: inside the device tool's 10-minute command limit; with the machine's start (~90 s)
# and the gap between the calls (~20 s) the window stays within 13 minutes (510 + 160 + 110 = 780 s).
PART_BUDGET = {1: 510, 2: 160}
DRY_BUDGET = 300          # the dry run's deadline, a guard against a hang (it needs ~1 min of CPU; CI budget 2)
REPORT_RESERVE = 20       # always left for the report
GB_PER_JOB = 3.5          # peak memory of one CUTLASS sm90 translation unit (design/hopper.md)
KIND_MEMORY_GB = 128      # the nvidia-h200 kind's memory (KINDS.md); MemTotal can start lower
FUZZ_EXAMPLES_GPU = 40    # hypothesis examples per op and GPU backend (Triton: up to one JIT compile each)


@dataclass(frozen=True)
class Step:
    name: str
    part: int        # the part it is planned in (part 1 runs on into later steps while its time lasts)
    budget: int      # its timeout on the GPU, seconds
    dry_budget: int  # its timeout in the dry run
    min_start: int   # it does not start with less than this left in the part
    what: str


STEPS = (
    Step("preflight", 1, 45, 30, 10, "GPU facts, versions, compute-sanitizer self-test"),
    Step("wheels", 1, 20, 20, 5, "carried wheels (.whl/) installed to build/gpu-run/site"),
    Step("build", 1, 200, 45, 120, "fastcnn built for sm_90a (Hopper TUs included)"),
    Step("smoke", 1, 60, 30, 20, "one call per op and backend against float64 PyTorch"),
    Step("tests", 1, 150, 60, 60, "pytest on the GPU backends (op tests, layer shapes, fuzz)"),
    Step("sanitizer", 1, 80, 40, 40, "memcheck and racecheck over the kernel sweep"),
    Step("peaks", 1, 25, 20, 10, "HBM copy bandwidth and bf16 matmul rate"),
    Step("bench_ops", 1, 120, 40, 30, "op lines of the benchmark table"),
    Step("bench_models", 2, 90, 75, 30, "network lines of the benchmark table"),
    Step("bench_compile", 2, 90, 0, 45, "torch.compile of ResNet-50 inference"),
)
STEP = {s.name: s for s in STEPS}

# ------------------------------------------------------------------------------------------------
# state: one JSON file, rewritten after every change
# ------------------------------------------------------------------------------------------------

class Ctx:
    """One part's run: the state folder, the clock, the environment of every child process."""

    def __init__(self, state_dir, out_dir, dry, part, budget, git_sha=None):
        self.state_dir, self.out, self.dry, self.part = state_dir, out_dir, dry, part
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget - REPORT_RESERVE
        os.makedirs(os.path.join(state_dir, "logs"), exist_ok=True)
        os.makedirs(os.path.join(state_dir, "bench"), exist_ok=True)
        self.path = os.path.join(state_dir, "state.json")
        self.state = load_json(self.path, None) or {}
        fresh = not self.state
        self.state.setdefault("run_timestamp", now_iso())
        self.state.setdefault("steps", {})
        self.state.setdefault("parts", [])
        for st in self.state["steps"].values():
            if st.get("status") == "running":  # the last command was killed while this step ran
                st.update(status="timeout", note="interrupted: the command ended (device tool limit) while it ran")
        self.state["dry_run"] = dry
        sha = git_sha or find_git_sha()
        self.state["git_sha"] = sha if sha != "unknown" else self.state.get("git_sha", sha)
        self.state["parts"].append({"part": part, "started": now_iso(), "budget_s": budget, "fresh_state": fresh})
        self.save()

    def f(self, *names) -> str:
        return os.path.join(self.state_dir, *names)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self):
        write_json(self.path, self.state)

    def env(self, **extra) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1", FASTCNN_GPU_RUN_STATE=self.state_dir,
                   FASTCNN_GPU_RUN_TIMESTAMP=self.state["run_timestamp"], FASTCNN_GPU_RUN_SHA=self.state["git_sha"])
        paths = [self.f("site"), TOOLS, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        cutlass = glob.glob(self.f("site", "cutlass_library", "source"))
        if cutlass:
            env.setdefault("CUTLASS_PATH", cutlass[0])
        env["TRITON_CACHE_DIR"] = self.f("triton-cache")  # part 2 reuses part 1's compiled kernels
        if self.dry:
            env["TRITON_INTERPRET"] = "1"
            env["FASTCNN_GPU_RUN_DRY"] = "1"
            # one thread: tiny sizes run as fast on one, and a shared CI machine's load cannot stall
            # a parallel region (which waits for every thread)
            env["OMP_NUM_THREADS"] = "1"
        else:
            env.pop("TRITON_INTERPRET", None)
            env.pop("FASTCNN_GPU_RUN_DRY", None)
            env["TORCH_CUDA_ARCH_LIST"] = "9.0a"
        env.update({k: str(v) for k, v in extra.items()})
        return env


def find_git_sha() -> str:
    """The commit under test: git here, else .whl/git_sha (the device copy has no .git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            sha = out.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open(os.path.join(REPO, ".whl", "git_sha")) as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


# ------------------------------------------------------------------------------------------------
# running things with a timeout that also ends their children
# ------------------------------------------------------------------------------------------------

def sh(cmd, log, env=None, timeout=60.0, cwd=REPO, append=False, stamp=False) -> tuple[int, float]:
    """Run cmd with stdout+stderr to log; after timeout seconds end its whole process group (xdist
    workers, sanitizer children) and return rc 124. stamp: prefix each line with the seconds since the
    start (ninja prints "[k/N] command" as each compile finishes: the build's per-TU times).
    Returns (rc, seconds)."""
    t0 = time.monotonic()
    timeout = max(1.0, timeout)
    with open(log, "a" if append else "w") as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n")
        f.flush()
        try:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE if stamp else f, stderr=subprocess.STDOUT, env=env,
                                 cwd=cwd, start_new_session=True, text=stamp or None, errors="replace" if stamp else None)
        except OSError as exc:
            f.write(f"could not start: {exc}\n")
            return 127, 0.0
        pump = None
        if stamp:
            def copy():
                for line in p.stdout:
                    f.write(f"[{time.monotonic() - t0:7.1f}s] {line}")
                    f.flush()
            pump = threading.Thread(target=copy, daemon=True)
            pump.start()
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(p)
            rc = 124
        if pump is not None:
            pump.join(timeout=5)
        if rc == 124:
            f.write(f"\nTIMEOUT after {timeout:.0f} s: process group ended\n")
    return rc, time.monotonic() - t0


def _kill_group(p):
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def which(name, extra=("/usr/local/cuda/bin", "/usr/local/cuda/compute-sanitizer")):
    found = shutil.which(name)
    if found:
        return found
    for d in extra:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def say(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------------
# steps (each returns (status, note); status ok | failed | timeout | skipped)
# ------------------------------------------------------------------------------------------------

def _child(ctx, script, args, name, timeout, **env):
    rc, secs = sh([PY, os.path.join(TOOLS, script), *args], ctx.f("logs", f"{name}.log"), ctx.env(**env), timeout)
    return rc


def step_preflight(ctx, timeout):
    end = time.monotonic() + timeout
    log = ctx.f("logs", "preflight.log")
    facts = {}
    smi = which("nvidia-smi")
    if smi:
        q = ("name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,memory.total,"
             "power.draw,power.limit,temperature.gpu,pstate")
        try:
            out = subprocess.run([smi, f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=20).stdout.strip().splitlines()
            facts["nvidia_smi"] = dict(zip(q.split(","), [v.strip() for v in out[0].split(",")])) if out else {}
        except (OSError, subprocess.SubprocessError, IndexError) as exc:
            facts["nvidia_smi"] = f"failed: {exc}"
    else:
        facts["nvidia_smi"] = "not found"
    for tool, arg in (("nvcc", "--version"), ("compute-sanitizer", "--version"), ("ncu", "--version")):
        path = which(tool)
        if not path:
            facts[tool] = "not found"
            continue
        try:
            out = subprocess.run([path, arg], capture_output=True, text=True, timeout=20).stdout
            facts[tool] = (re.findall(r"(?:release|Version) [\w.\-]+.*", out) or [out.strip()[-80:]])[-1]
        except (OSError, subprocess.SubprocessError) as exc:
            facts[tool] = f"failed: {exc}"
    try:
        facts["mem_total_gb"] = round(int(open("/proc/meminfo").readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        facts["mem_total_gb"] = None
    facts["cpus"] = os.cpu_count()
    ctx.state["facts_host"] = facts
    ctx.save()
    rc = _child(ctx, "gpu_checks.py", ["facts", "--out", ctx.f("facts.json")], "facts", max(5, min(40, end - time.monotonic())))
    ctx.state["facts"] = load_json(ctx.f("facts.json"), {})
    ctx.save()
    st = sanitizer_selftest(ctx, end, log)
    ctx.state["sanitizer_selftest"] = st
    ctx.save()
    note = f"{ctx.state['facts'].get('device', '?')}; sanitizer self-test: {st['note']}"
    if rc != 0:
        return ("timeout" if rc == 124 else "failed"), f"facts rc={rc}; " + note
    return "ok", note


def sanitizer_selftest(ctx, end, log):
    """compute-sanitizer on a purpose-written program: a clean run must report 0 errors, each planted
    bug must be found. Returns {"errors": n, "note": ...}: errors counts clean-run errors, missed
    planted bugs and each tool that could not run."""
    res = {"errors": 0, "runs": {}}
    nvcc, san = which("nvcc"), which("compute-sanitizer")
    exe = ctx.f("sanitizer_probe")
    if not nvcc:
        res.update(errors=2, note="nvcc not found: probe not built; memcheck and racecheck not run (2 errors)")
        return res
    rc, secs = sh([nvcc, "-O2", "-lineinfo", "-gencode=arch=compute_90a,code=sm_90a",
                   os.path.join(TOOLS, "sanitizer_probe.cu"), "-o", exe], log, timeout=max(5, end - time.monotonic()),
                  append=True)
    res["probe_build_s"] = round(secs, 1)
    if rc != 0:
        res.update(errors=2, note=f"probe did not compile (rc {rc}): 2 errors")
        return res
    if not san:
        res.update(errors=2, note="compute-sanitizer not found: memcheck and racecheck not run (2 errors)")
        return res
    notes = []
    for tool, planted in (("memcheck", "oob"), ("racecheck", "race")):
        for mode in ("clean", planted):
            rlog = ctx.f("logs", f"probe_{tool}_{mode}.log")
            rc, secs = sh([san, "--tool", tool, exe, mode], rlog, timeout=max(5, min(30, end - time.monotonic())))
            n = sanitizer_errors_in(rlog, hazards=mode != "clean")
            res["runs"][f"{tool}_{mode}"] = {"rc": rc, "errors": n, "seconds": round(secs, 1)}
            if n is None:
                res["errors"] += 1
                notes.append(f"{tool} {mode}: did not run to its summary (rc {rc})")
            elif mode == "clean" and n:
                res["errors"] += n
                notes.append(f"{tool} clean: {n} errors")
            elif mode != "clean" and n == 0:
                res["errors"] += 1
                notes.append(f"{tool} missed the planted bug")
    res["note"] = "; ".join(notes) if notes else "clean runs 0 errors, planted bugs found (memcheck, racecheck)"
    return res


SUMMARY_RE = re.compile(r"ERROR SUMMARY: (\d+) error")
RACE_RE = re.compile(r"RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?")


def sanitizer_errors_in(log, hazards=False):
    """Errors compute-sanitizer reported in log (ERROR SUMMARY, else racecheck's RACECHECK SUMMARY), or
    None when it printed no summary (it did not finish). hazards=True: every racecheck hazard shown
    counts, warnings too (a planted race must be found, whatever severity racecheck gives it)."""
    try:
        text = open(log, errors="replace").read()
    except OSError:
        return None
    race = [(int(h), int(e)) for h, e in RACE_RE.findall(text)]
    if hazards and race:
        return sum(h for h, _ in race)
    found = [int(n) for n in SUMMARY_RE.findall(text)]
    if not found:
        found = [e for _, e in race]
    return sum(found) if found else None


def step_wheels(ctx, timeout):
    wheels = sorted(glob.glob(os.path.join(REPO, ".whl", "*.whl")))
    if not wheels:
        return "skipped", "no .whl/*.whl carried (the Hopper TUs need nvidia-cutlass: see tools/GPU_WINDOW.md)"
    marker = ctx.f("site", ".installed")
    names = "\n".join(os.path.basename(w) for w in wheels)
    if os.path.exists(marker) and open(marker).read() == names:
        return "ok", "already installed: " + ", ".join(os.path.basename(w) for w in wheels)
    rc, secs = sh([PY, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
                   "--upgrade", "--target", ctx.f("site"), *wheels], ctx.f("logs", "wheels.log"), ctx.env(), timeout)
    if rc:
        return ("timeout" if rc == 124 else "failed"), f"pip install rc={rc}"
    with open(marker, "w") as f:
        f.write(names)
    return "ok", ", ".join(os.path.basename(w) for w in wheels) + f" ({secs:.0f} s)"


def build_jobs(facts_host) -> tuple[int, str]:
    cpus = facts_host.get("cpus") or os.cpu_count() or 1
    mem = max(facts_host.get("mem_total_gb") or 0, KIND_MEMORY_GB)
    jobs = max(1, min(cpus, int(mem // GB_PER_JOB)))
    return jobs, f"{jobs} jobs ({cpus} cpus, {mem:.0f} GB / {GB_PER_JOB} GB per CUTLASS TU)"


def step_build(ctx, timeout):
    end = time.monotonic() + timeout
    phases = {}
    if ctx.dry:
        # The dry run does not rebuild (CI built the package before it): it checks what a build
        # produced, as the GPU run does after compiling.
        phases["compile"] = "skipped (dry run: the package CI built)"
    else:
        jobs, why = build_jobs(ctx.state.get("facts_host", {}))
        say(f"  build: {why}, TORCH_CUDA_ARCH_LIST=9.0a")
        rc, secs = sh([PY, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps", "-v", "-e", "."],
                      ctx.f("logs", "build.log"), ctx.env(MAX_JOBS=jobs, FASTCNN_FORCE_CUDA=1), timeout, stamp=True)
        phases["compile_s"] = round(secs, 1)
        phases["jobs"] = why
        phases["tu_finished_s"] = ninja_times(ctx.f("logs", "build.log"))
        ctx.state["build"] = phases
        ctx.save()
        if rc:
            return ("timeout" if rc == 124 else "failed"), f"pip install -e . rc={rc} after {secs:.0f} s (logs/build.log)"
    t0 = time.monotonic()
    rc = _child(ctx, "gpu_checks.py", ["buildinfo", "--out", ctx.f("buildinfo.json")], "buildinfo",
                max(5, min(60, end - time.monotonic())))
    phases["import_s"] = round(time.monotonic() - t0, 1)
    info = load_json(ctx.f("buildinfo.json"), {})
    phases["info"] = info
    ctx.state["build"] = phases
    ctx.save()
    if rc or not info.get("imported"):
        return "failed", f"import fastcnn failed (rc {rc}; logs/buildinfo.log)"
    if not ctx.dry and not info.get("with_cuda"):
        return "failed", "fastcnn._C was built without CUDA"
    note = f"backends {info.get('backends')}; sm90: {info.get('sm90')}"
    if "compile_s" in phases:
        note = f"compiled in {phases['compile_s']:.0f} s with {phases['jobs']}; " + note
    return "ok", note


NINJA_LINE = re.compile(r"^\[\s*([\d.]+)s\]\s+\[(\d+)/(\d+)\] .*?(?:-c|--compile)\s+(\S+\.(?:cu|cpp|cc|c))\b")


def ninja_times(log) -> dict:
    """Seconds from the build's start at which each translation unit finished compiling (ninja prints
    a status line as each edge finishes), slowest first, from the stamped build log."""
    out = {}
    try:
        with open(log, errors="replace") as f:
            for line in f:
                m = NINJA_LINE.match(line)
                if m:
                    out[os.path.relpath(m.group(4), REPO) if m.group(4).startswith(REPO) else m.group(4)] = float(m.group(1))
    except OSError:
        pass
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def step_smoke(ctx, timeout):
    rc = _child(ctx, "gpu_checks.py", ["smoke", "--out", ctx.f("smoke.jsonl")], "smoke", timeout)
    rows = read_jsonl(ctx.f("smoke.jsonl"))
    bad = [r for r in rows if not r.get("ok")]
    note = f"{len(rows) - len(bad)}/{len(rows)} checks pass" + (": FAIL " + ", ".join(r["what"] for r in bad[:6])
                                                              if bad else "")
    if rc == 124:
        return "timeout", note
    return ("ok" if rc == 0 and rows and not bad else "failed"), note


# pytest on the GPU: every test marked cuda (the cuda/triton-cuda backends of the op tests, their
# network-layer cases, test_gpu_layers, the fuzz, graphs, numerics, sm90) except the slow ones.
# Op files first: xdist hands out tests in collection order, so a timeout cuts the least valuable.
TEST_ORDER = ["test_gpu_layers.py", "test_conv2d.py", "test_conv1x1.py", "test_max_pool2d.py", "test_add_relu.py",
              "test_conv_fast_paths.py", "test_sm90.py", "test_fuzz.py", "test_numerics.py"]
# The dry run: CPU targets of the op tests that take seconds, and the GPU layer test on the CPU
# backend at LeNet-5's shapes (FASTCNN_GPU_LAYERS_CPU=1), which checks that test's own logic.
DRY_TESTS = ["tests/test_add_relu.py", "tests/test_gpu_layers.py"]
DRY_K = "not triton-interp and (add_relu_shapes or (lenet5 and (cpu or cuda-sim)))"


def step_tests(ctx, timeout):
    log_jsonl = ctx.f("pytest.jsonl")
    if os.path.exists(log_jsonl):
        os.remove(log_jsonl)
    cmd = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "gpu_pytest_log", "-rfE",
           f"--junitxml={ctx.f('junit.xml')}"]
    env = {"FASTCNN_PYTEST_LOG": log_jsonl}
    if ctx.dry:
        cmd += DRY_TESTS + ["-k", DRY_K]
        env["FASTCNN_GPU_LAYERS_CPU"] = "1"
    else:
        files = sorted(glob.glob(os.path.join(REPO, "tests", "test_*.py")),
                       key=lambda p: (TEST_ORDER.index(os.path.basename(p)) if os.path.basename(p) in TEST_ORDER
                                      else len(TEST_ORDER), p))
        cmd += [os.path.relpath(p, REPO) for p in files if not p.endswith("test_gpu_run.py")]
        cmd += ["-m", "cuda and not slow"]
        env["FASTCNN_FUZZ_EXAMPLES"] = FUZZ_EXAMPLES_GPU
        if has_module("xdist"):  # loadgroup: test_gpu_layers' variants (dtype x layout x target) one per worker
            cmd += ["-n", str(min(16, os.cpu_count() or 1)), "--dist", "loadgroup"]
        env["OMP_NUM_THREADS"] = 1  # 16 workers: the float64 references on one thread each
        if has_module("pytest_timeout"):  # a hung kernel fails its test, not the whole step
            cmd += ["--timeout", "120"]
    # the record's scope: the selection and the options, not the plumbing (plugin, junit path, file list)
    sel = cmd[cmd.index("-rfE") + 2:]
    files = [c for c in sel if c.startswith("tests/")]
    opts = [c for c in sel if not c.startswith("tests/")]
    ctx.state["tests_cmd"] = (f"pytest {' '.join(opts)} over {len(files)} files"
                              + ("" if ctx.dry else f", FASTCNN_FUZZ_EXAMPLES={FUZZ_EXAMPLES_GPU}")
                              + (f" ({', '.join(os.path.basename(f) for f in files)})" if len(files) <= 3 else ""))
    rc, secs = sh(cmd, ctx.f("logs", "tests.log"), ctx.env(**env), timeout)
    p, f, s = pytest_counts(read_jsonl(log_jsonl))
    note = f"{p} passed, {f} failed, {s} skipped in {secs:.0f} s"
    if rc == 124:
        return "timeout", note + f" (stopped at its {timeout:.0f} s budget)"
    if rc not in (0, 1):
        return "failed", note + f" (pytest rc {rc}: logs/tests.log)"
    return ("ok" if rc == 0 and p > 0 else "failed"), note


def has_module(name) -> bool:
    try:
        return subprocess.run([PY, "-c", f"import importlib.util as u, sys; sys.exit(u.find_spec('{name}') is None)"],
                              timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def step_sanitizer(ctx, timeout):
    end = time.monotonic() + timeout
    san = which("compute-sanitizer")
    results, notes, status = {}, [], "ok"
    for i, (tool, scope) in enumerate(SANITIZER_TOOLS):
        share = (end - time.monotonic()) / (len(SANITIZER_TOOLS) - i)
        if share < 8:
            results[tool] = {"errors": None, "note": "no time left"}
            notes.append(f"{tool}: not run (no time left)")
            status = "timeout"
            continue
        jsonl = ctx.f(f"sweep_{tool}.jsonl")
        if os.path.exists(jsonl):
            os.remove(jsonl)
        # the sweep stops starting cases well before the share ends, so the sanitizer reaches its summary
        margin = 3 if ctx.dry else 12  # the sanitizer's summary and exit (no sanitizer in the dry run)
        sweep = [PY, os.path.join(TOOLS, "gpu_checks.py"), "sweep", "--scope", scope, "--out", jsonl,
                 "--until", f"{time.time() + share - margin:.1f}"]
        log = ctx.f("logs", f"{tool}.log")
        env = ctx.env(PYTORCH_NO_CUDA_MEMORY_CACHING=1)  # each tensor its own cudaMalloc: memcheck sees its edges
        if san and not ctx.dry:
            cmd = [san, "--tool", tool, "--print-limit", "100", *sweep]
        else:
            cmd = sweep  # no sanitizer here: the sweep itself still runs (and is checked)
        rc, secs = sh(cmd, log, env, share)
        cases = read_jsonl(jsonl)
        bad = sum(not c.get("ok") for c in cases)
        n = sanitizer_errors_in(log) if san and not ctx.dry else None
        results[tool] = {"errors": n, "rc": rc, "seconds": round(secs, 1), "cases": len(cases), "wrong": bad,
                         "sanitizer": bool(san and not ctx.dry)}
        what = f"{tool}: {len(cases)} cases" + (f", {bad} wrong" if bad else "")
        if not (san and not ctx.dry):
            what += " (compute-sanitizer not found: run without it; counted as 1 error)"
        elif n is None:
            what += f" (no sanitizer summary: rc {rc}; counted as 1 error)"
        else:
            what += f", {n} sanitizer errors"
        notes.append(what)
        if rc == 124:
            status = "timeout"
        elif rc != 0 or bad or (n or 0) > 0 or n is None:
            status = "failed" if status == "ok" else status
    ctx.state["sanitizer"] = results
    ctx.save()
    return status, "; ".join(notes)


def step_peaks(ctx, timeout):
    rc = _child(ctx, "gpu_bench.py", ["peaks", "--out", ctx.f("peaks.json")], "peaks", timeout)
    pk = load_json(ctx.f("peaks.json"), {})
    ctx.state["peaks"] = pk
    ctx.save()
    if rc or not pk:
        return ("timeout" if rc == 124 else "failed"), f"rc {rc} (logs/peaks.log)"
    return "ok", f"{pk['peak_gbps']:.4g} GB/s copy, {pk['peak_tflops']:.4g} TFLOP/s ({pk['peak_matmul']})"


def _bench(ctx, what, timeout):
    # --until: the wall-clock time after which the child starts no new case (its imports count too)
    args = [what, "--state", ctx.state_dir, "--budget", f"{timeout:.0f}", "--until", f"{time.time() + timeout - 8:.1f}"]
    if what == "compile":
        args += ["--part-left", f"{ctx.left():.0f}"]
    rc = _child(ctx, "gpu_bench.py", args, f"bench_{what}", timeout)
    rows = read_csv(ctx.f("bench", "models.csv" if what in ("models", "compile") else "ops.csv"))
    done = load_json(ctx.f(f"bench_{what}.json"), {})
    if what == "compile":
        ctx.state["compile"] = done or {"decision": f"no result (rc {rc}; logs/bench_compile.log)"}
        ctx.save()
    note = done.get("note", "") or f"{len(rows)} rows"
    if rc == 124:
        return "timeout", note
    return ("ok" if rc == 0 else "failed"), note


def step_bench_ops(ctx, timeout):
    return _bench(ctx, "ops", timeout)


def step_bench_models(ctx, timeout):
    return _bench(ctx, "models", timeout)


def step_bench_compile(ctx, timeout):
    if timeout <= 0:
        ctx.state["compile"] = {"decision": "not run: no budget in the dry run (torch.compile of ResNet-50 on 2 CPU "
                                            "cores takes minutes)"}
        return "skipped", ctx.state["compile"]["decision"]
    return _bench(ctx, "compile", timeout)


STEP_FN = {"preflight": step_preflight, "wheels": step_wheels, "build": step_build, "smoke": step_smoke,
           "tests": step_tests, "sanitizer": step_sanitizer, "peaks": step_peaks, "bench_ops": step_bench_ops,
           "bench_models": step_bench_models, "bench_compile": step_bench_compile}
NEEDS_BUILD = {"smoke", "tests", "sanitizer", "bench_ops", "bench_models", "bench_compile"}


def run_steps(ctx, only=None):
    for step in STEPS:
        if only and step.name not in only:
            continue
        st = ctx.state["steps"].get(step.name, {})
        if st.get("status") not in (None, "pending"):
            continue  # done in an earlier part (ok, failed, timeout or skipped)
        budget = step.dry_budget if ctx.dry else step.budget
        left = ctx.left()
        if step.name in NEEDS_BUILD and ctx.state["steps"].get("build", {}).get("status") != "ok":
            ctx.state["steps"][step.name] = {"status": "skipped", "note": "no working build", "part": ctx.part}
            ctx.save()
            say(f"[gpu_run] {step.name}: skipped (no working build)")
            continue
        if budget > 0 and left < min(step.min_start, budget):
            ctx.state["steps"][step.name] = {"status": "pending", "note": f"{left:.0f} s left in part {ctx.part}",
                                             "part": ctx.part}
            ctx.save()
            say(f"[gpu_run] {step.name}: left for the next part ({left:.0f} s left)")
            continue
        timeout = min(budget, max(0.0, left)) if budget > 0 else 0
        say(f"[gpu_run] {step.name} (timeout {timeout:.0f} s): {step.what}")
        ctx.state["steps"][step.name] = {"status": "running", "part": ctx.part, "budget": timeout}
        ctx.save()
        t0 = time.monotonic()
        try:
            status, note = STEP_FN[step.name](ctx, timeout)
        except Exception as exc:  # a broken step is recorded; the others still run
            status, note = "failed", f"{type(exc).__name__}: {exc}"
        secs = time.monotonic() - t0
        ctx.state["steps"][step.name] = {"status": status, "note": note, "seconds": round(secs, 1), "part": ctx.part,
                                         "budget": round(timeout)}
        ctx.save()
        say(f"[gpu_run] {step.name}: {status} in {secs:.1f} s: {note}")
        try:  # the returned files as they stand: a command killed later still brings these back
            write_files(ctx.state_dir, ctx.out, [s.name for s in STEPS])
        except Exception as exc:  # noqa: BLE001 - the final report tries again
            say(f"[gpu_run] interim report failed: {type(exc).__name__}: {exc}")


def report(ctx_or_state_dir, out_dir, plots=True):
    """Plots (from the CSVs, when asked), then gpu_report.write_files; prints the record and the table."""
    state_dir = ctx_or_state_dir if isinstance(ctx_or_state_dir, str) else ctx_or_state_dir.state_dir
    bench = os.path.join(state_dir, "bench")
    if plots and (read_csv(os.path.join(bench, "ops.csv")) or read_csv(os.path.join(bench, "models.csv"))):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(state_dir, "site"),
                                                            os.environ.get("PYTHONPATH", "")]))
        sh([PY, "-m", "fastcnn", "bench", "plot", "--out", bench], os.path.join(state_dir, "logs", "plots.log"), env, 60)
    record, lines = write_files(state_dir, out_dir, [s.name for s in STEPS])
    problems = check_out(out_dir, dry=None)
    say(f"[gpu_run] wrote {', '.join(OUT_FILES)} to {out_dir}" + (f"; PROBLEMS: {problems}" if problems else ""))
    say("RECORD " + json.dumps(record))
    for ln in lines:
        say(f"  {ln['line']:16s} {ln['met']:13s} {ln['measured']}")
    return record


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------

def run_part(part, out_dir, state_dir, git_sha, dry, only=None, budget=None):
    if part == 2 and not dry:
        st = load_json(os.path.join(state_dir, "state.json"), None)
        if not st or st.get("steps", {}).get("build", {}).get("status") != "ok":
            # A fresh machine (or part 1 never built): build/ is gone. Say so in files of their own.
            os.makedirs(out_dir, exist_ok=True)
            why = "no build/gpu-run/state.json" if not st else "part 1's build did not succeed"
            msg = (f"FRESH MACHINE or no build: {why}. Part 2 needs part 1's build (build/ on the same warm "
                   "machine); nothing was run. Part 1's returned files are this window's evidence; see "
                   "tools/GPU_WINDOW.md (what to do when command 2 lands on a fresh machine).")
            with open(os.path.join(out_dir, "summary.md"), "w") as f:
                f.write("# GPU run part 2: not run\n\n" + msg + "\n")
            say("[gpu_run] " + msg)
            return 3
    budget = budget or (DRY_BUDGET if dry else PART_BUDGET[part])
    ctx = Ctx(state_dir, out_dir, dry, part, budget, git_sha)
    say(f"[gpu_run] part {part}{' (dry run)' if dry else ''}: budget {budget} s, state {state_dir}, git {ctx.state['git_sha']}")
    if only:  # named steps run again even when an earlier part did them
        for name in only:
            ctx.state["steps"].pop(name, None)
    run_steps(ctx, only)
    ctx.state["parts"][-1]["seconds"] = round(time.monotonic() - ctx.t0, 1)
    ctx.save()
    t = time.monotonic()
    rec = report(ctx, out_dir, plots=dry or part == 2)
    ctx.state = load_json(ctx.path, ctx.state)
    ctx.state["parts"][-1]["report_s"] = round(time.monotonic() - t, 1)
    ctx.state["parts"][-1]["seconds"] = round(time.monotonic() - ctx.t0, 1)
    ctx.save()
    write_json(os.path.join(out_dir, "state.json"), ctx.state)
    say(f"[gpu_run] part {part} done in {time.monotonic() - ctx.t0:.0f} s")
    return 0 if rec["failed"] == 0 and rec["sanitizer_errors"] == 0 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", choices=["part1", "part2", "report", "collect"], default=None)
    ap.add_argument("dir", nargs="?", default=None, help="collect: the folder of returned files")
    ap.add_argument("--out", default=os.environ.get("OUT"))
    ap.add_argument("--state", default=None, help="state folder (default build/gpu-run; dry run: OUT/state)")
    ap.add_argument("--git-sha", default=None)
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny sizes")
    ap.add_argument("--budget", type=float, default=None, help="seconds for this part (default: part1 "
                    f"{PART_BUDGET[1]}, part2 {PART_BUDGET[2]}, dry run {DRY_BUDGET}); steps that do not fit wait")
    ap.add_argument("--fresh", action="store_true", help="part1: forget the state of an earlier run on this "
                    "machine (default: continue it; steps done are not rerun)")
    ap.add_argument("--steps", default=None, help=f"only these steps, comma-separated ({','.join(STEP)})")
    ap.add_argument("--check", nargs="?", const="", default=None, metavar="DIR",
                    help="verify the files in DIR (with --dry-run: the dry run's --out after it ran)")
    a = ap.parse_args(argv)
    if a.what == "collect":
        return collect(a.dir or a.out)
    if a.check and not a.dry_run and a.what is None:
        problems = check_out(a.check, dry=None)
        say("\n".join(problems) or f"{a.check}: files OK")
        return 1 if problems else 0
    only = [x for x in a.steps.split(",") if x] if a.steps else None
    for x in only or []:
        if x not in STEP:
            ap.error(f"unknown step {x!r}; steps: {','.join(STEP)}")
    if not a.out:
        ap.error("--out DIR is required ($OUT on the device machine)")
    a.out = os.path.abspath(a.out)
    if a.dry_run:
        state = os.path.abspath(a.state or os.path.join(a.out, "state"))
        if os.path.isdir(state):
            shutil.rmtree(state)
        t0 = time.monotonic()
        rc = run_part(1, a.out, state, a.git_sha, dry=True, only=only, budget=a.budget)
        problems = check_out(a.out, dry=True) if a.check is not None else []
        say(f"[gpu_run] dry run: {time.monotonic() - t0:.0f} s" + (f"; check: {problems or 'OK'}" if a.check is not None else ""))
        return 1 if problems else (0 if a.check is not None else rc)
    state = os.path.abspath(a.state or STATE_DEFAULT)
    if a.fresh and a.what == "part1" and os.path.isdir(state):
        keep = os.path.join(state, "site")  # the installed wheels and the Triton cache stay
        for name in os.listdir(state):
            if os.path.join(state, name) not in (keep, os.path.join(state, "triton-cache")):
                p = os.path.join(state, name)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    if a.what == "report":
        report(state, a.out)
        return 0
    if a.what not in ("part1", "part2"):
        ap.error("say part1, part2, report, collect, or --dry-run")
    return run_part(1 if a.what == "part1" else 2, a.out, state, a.git_sha, dry=False, only=only, budget=a.budget)


if __name__ == "__main__":
    sys.exit(main())
