#!/usr/bin/env python3
"""The checks tools/gpu_run.py runs in child processes (each writes its results as it goes):

    python3 tools/gpu_checks.py facts --out F.json          # device and versions (fastcnn not imported)
    python3 tools/gpu_checks.py buildinfo --out F.json      # what the build produced: backends, sm90, .so files
    python3 tools/gpu_checks.py smoke --out F.jsonl         # one forward+backward per op and target
    python3 tools/gpu_checks.py sweep --scope full|round1 --out F.jsonl --until T
                                                            # small shapes of every kernel family (the
                                                            # sanitizer's workload), each case checked

Targets: on a GPU ``cuda`` (FASTCNN_SM90=off: the sm_80-style kernels), ``triton`` and ``sm90`` (the
cuda backend with FASTCNN_SM90=force, where fastcnn.sm90 exists and its kernels are registered); on the
CPU (the dry run) ``cpu``, ``triton-interp`` (TRITON_INTERPRET=1) and ``cuda-sim`` (when built). Every
case draws fresh random inputs (the seed is in its row), poisons outputs, runs forward and backward and
compares with torch.nn.functional in float64 on the CPU by relative norm error (tolerances:
fastcnn.testing, else tests/conftest.py). Under FASTCNN_SM90=force a conv pass the sm90 rule rejects
would raise, so only the passes it accepts are asked for (the others' gradients are not requested).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32,
          "fp64": torch.float64}


def write_line(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")


# ------------------------------------------------------------------------------------------------
# facts and build info
# ------------------------------------------------------------------------------------------------

def cmd_facts(out):
    facts = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton

        facts["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001 - a fact, not a failure
        facts["triton"] = f"import failed: {exc}"
    try:
        import numpy

        facts["numpy"] = numpy.__version__
    except ImportError:
        facts["numpy"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        facts.update(device=p.name, capability=f"{p.major}.{p.minor}", sm_count=p.multi_processor_count,
                     memory_gb=round(p.total_memory / 2**30, 1), l2_mb=round(getattr(p, "L2_cache_size", 0) / 2**20, 1),
                     cudnn=torch.backends.cudnn.version(), device_count=torch.cuda.device_count())
    else:
        facts.update(device="cpu", cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    with open(out, "w") as f:
        json.dump(facts, f, indent=1)
    print(json.dumps(facts))
    return 0


def sm90_module():
    """fastcnn.sm90 when the Hopper path exists in this tree, else None."""
    if importlib.util.find_spec("fastcnn.sm90") is None:
        return None
    from fastcnn import sm90

    return sm90


def cmd_buildinfo(out):
    info = {"imported": False}
    try:
        import fastcnn

        info.update(imported=True, file=fastcnn.__file__, with_cuda=bool(getattr(fastcnn._C, "with_cuda", False)),
                    backends=fastcnn.available_backends())
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        info["resolve"] = {}
        for stem in fastcnn._ops.STEMS:
            try:
                info["resolve"][stem] = fastcnn.resolve(stem, dev)
            except ValueError as exc:
                info["resolve"][stem] = f"ValueError: {exc}"
        sm90 = sm90_module()
        if sm90 is None:
            info["sm90"] = "absent in this tree (fastcnn.sm90 not found)"
        else:
            info["sm90"] = {"available": sm90.available(), "build": sm90.build(), "load_error": sm90.load_error(),
                            "mode": sm90.mode()}
        pkg = os.path.dirname(fastcnn.__file__)
        info["so"] = {n: os.path.getsize(os.path.join(pkg, n)) for n in sorted(os.listdir(pkg)) if n.endswith(".so")}
    except Exception as exc:  # noqa: BLE001 - recorded, the step fails on it
        info["error"] = f"{type(exc).__name__}: {exc}"
    with open(out, "w") as f:
        json.dump(info, f, indent=1, default=str)
    print(json.dumps(info, default=str))
    return 0 if info["imported"] else 1


# ------------------------------------------------------------------------------------------------
# targets, tolerances, one checked case
# ------------------------------------------------------------------------------------------------

def tolerances():
    try:
        from fastcnn.testing import TOL, TOL_TF32, rel_err
    except ImportError:  # before fastcnn.testing lands: the tests' own table (one place either way)
        sys.path.insert(0, os.path.join(REPO, "tests"))
        from conftest import TOL, TOL_TF32, rel_err
    return TOL, TOL_TF32, rel_err


@dataclass(frozen=True)
class Target:
    label: str
    backend: str
    device: str
    sm90_mode: str | None = None  # FASTCNN_SM90 for the cuda backend: off (sm_80-style) or force (Hopper)


def targets() -> list[Target]:
    import fastcnn

    avail = fastcnn.available_backends()
    sm90 = sm90_module()
    if torch.cuda.is_available():
        out = [Target("cuda", "cuda", "cuda", "off" if sm90 else None), Target("triton", "triton", "cuda")]
        if sm90 is not None and sm90.available():
            out.append(Target("sm90", "cuda", "cuda", "force"))
        return [t for t in out if t.backend in avail]
    out = [Target("cpu", "cpu", "cpu")]
    if "triton" in avail and os.environ.get("TRITON_INTERPRET") == "1":
        out.append(Target("triton-interp", "triton", "cpu"))
    if "cuda-sim" in avail:
        out.append(Target("cuda-sim", "cuda-sim", "cpu"))
    return out


@contextlib.contextmanager
def tf32(on: bool):
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@contextlib.contextmanager
def target_context(t: Target, dtype_name: str):
    import fastcnn

    with contextlib.ExitStack() as stack:
        stack.enter_context(fastcnn.backend(t.backend))
        if t.sm90_mode:
            stack.enter_context(sm90_module().use_mode(t.sm90_mode))
        stack.enter_context(tf32(dtype_name == "tf32"))
        yield


def sm90_passes(op, cfg, x, w, b, r, tf32_on):
    """The passes fastcnn.sm90's rule sends to the Hopper kernels for this call (force mode, this GPU)."""
    sm90 = sm90_module()
    if op == "conv1x1":
        stride, padding, dilation, groups = cfg[5], 0, 1, 1
    else:
        stride, padding, dilation, groups = cfg[7], cfg[8], cfg[9], cfg[10]
    paths = sm90.conv_path(x, w, b, r, stride, padding, dilation, groups, mode_name="force", tf32=tf32_on)
    return {p for p, (path, _) in paths.items() if path.startswith("sm90")}, paths


def _rnd(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale


def run_case(op, cfg, target: Target, dtype_name: str, layout: str, seed: int) -> dict:
    """One op call forward and backward on target against float64 PyTorch; returns the row."""
    import fastcnn.functional as FF

    TOL, TOL_TF32, rel_err = tolerances()
    dtype = DTYPES[dtype_name]
    tol = TOL_TF32 if dtype_name == "tf32" else TOL[dtype]
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    gen = torch.Generator().manual_seed(seed)
    dev = target.device

    def put(t, four_d=True):  # rounded to dtype first: the reference sees exactly the kernel's inputs
        t = t.to(dtype)
        t = t.to(dev)
        return t.contiguous(memory_format=fmt) if four_d and t.dim() == 4 else t

    row = {"op": op, "cfg": list(cfg), "target": target.label, "dtype": dtype_name, "layout": layout, "seed": seed}
    if op in ("conv2d", "conv1x1"):
        if op == "conv2d":
            N, C, H, W, K, R, S, stride, padding, dilation, groups = cfg
        else:
            N, C, H, W, K, stride = cfg
            R = S = 1
            padding, dilation, groups = 0, 1, 1
        x = put(_rnd(gen, N, C, H, W))
        w = put(_rnd(gen, K, C // groups, R, S, scale=(C // groups * R * S) ** -0.5))
        b = put(_rnd(gen, K, scale=0.5), four_d=False)
        P = (H + 2 * padding - dilation * (R - 1) - 1) // stride + 1
        Q = (W + 2 * padding - dilation * (S - 1) - 1) // stride + 1
        r = put(_rnd(gen, N, K, P, Q))
        inputs = {"input": x, "weight": w, "bias": b, "residual": r}
        want = set(inputs)
        if target.sm90_mode == "force":
            passes, paths = sm90_passes(op, cfg, x, w, b, r, dtype_name == "tf32")
            row["sm90"] = {p: v[0] for p, v in paths.items()}
            if "fprop" not in passes:  # counted as skipped, with the rule's reason
                row.update(ok=True, skipped=f"fprop not on the sm90 path: {paths['fprop'][1]}")
                return row
            want = {"residual"} | ({"input"} if "dgrad" in passes else set()) | (
                {"weight", "bias"} if "wgrad" in passes else set())

        def ours(t):
            if op == "conv2d":
                return FF.conv2d(t["input"], t["weight"], t["bias"], stride, padding, dilation, groups,
                                 residual=t["residual"], activation="relu")
            return FF.conv1x1(t["input"], t["weight"], t["bias"], stride, residual=t["residual"], activation="relu")

        def ref(t):
            return F.relu(F.conv2d(t["input"], t["weight"], t["bias"], stride, padding, dilation, groups) + t["residual"])
    elif op == "max_pool2d":
        N, C, H, W, k, s, p, ceil = cfg
        inputs, want = {"input": put(_rnd(gen, N, C, H, W))}, {"input"}

        def ours(t):
            return FF.max_pool2d(t["input"], k, s, p, ceil_mode=ceil)

        def ref(t):
            return F.max_pool2d(t["input"], k, s, p, ceil_mode=ceil)
    else:
        N, C, H, W = cfg
        inputs = {"input": put(_rnd(gen, N, C, H, W)), "other": put(_rnd(gen, N, C, H, W))}
        want = set(inputs)

        def ours(t):
            return FF.add_relu(t["input"], t["other"])

        def ref(t):
            return F.relu(t["input"] + t["other"])

    leaves = {k: v.detach().requires_grad_(k in want) for k, v in inputs.items()}
    refs = {k: v.detach().to("cpu", torch.float64).requires_grad_(k in want) for k, v in inputs.items()}
    t0 = time.perf_counter()
    try:
        with target_context(target, dtype_name):
            out = ours(leaves)
            gy = _rnd(gen, *out.shape).to(dtype).to(dev)
            names = [k for k in leaves if k in want]
            grads = torch.autograd.grad(out, [leaves[k] for k in names], gy)
            if dev == "cuda":
                torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - a case that raises is a failed case, recorded with the reason
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:400]}", seconds=round(time.perf_counter() - t0, 3))
        return row
    row["seconds"] = round(time.perf_counter() - t0, 3)
    expect = ref(refs)
    errs = {"output": rel_err(out, expect)}
    ref_grads = torch.autograd.grad(expect, [refs[k] for k in names], gy.to("cpu", torch.float64))
    for k, g, rg in zip(names, grads, ref_grads):
        errs[f"grad_{k}"] = rel_err(g, rg)
    row["errors"] = {k: float(f"{v:.3e}") for k, v in errs.items()}
    row["tol"] = tol
    row["ok"] = all(v <= tol for v in errs.values())
    return row


# ------------------------------------------------------------------------------------------------
# smoke and sweep
# ------------------------------------------------------------------------------------------------

SMOKE = [
    ("conv2d", (2, 16, 10, 10, 32, 3, 3, 1, 1, 1, 1)),
    ("conv1x1", (2, 16, 8, 8, 32, 1)),
    ("max_pool2d", (2, 16, 11, 11, 3, 2, 1, True)),
    ("add_relu", (2, 16, 9, 7)),
]

# Small shapes of every kernel family: odd sizes (scalar paths), aligned channels (16-byte loads),
# K > 64 (128-wide tensor-core tiles), stride, dilation, groups, depthwise, the 7x7/2 stem, 1x1 as GEMM,
# pools with ceil mode and padding, the elementwise add.
SWEEP = [
    ("conv2d", (2, 5, 9, 11, 7, 3, 3, 1, 1, 1, 1)),
    ("conv2d", (2, 16, 9, 9, 32, 3, 3, 1, 1, 1, 1)),
    ("conv2d", (2, 64, 10, 10, 128, 3, 3, 2, 1, 1, 1)),
    ("conv2d", (2, 32, 8, 8, 64, 3, 3, 1, 2, 2, 1)),
    ("conv2d", (2, 32, 7, 9, 64, 3, 3, 1, 1, 1, 2)),
    ("conv2d", (1, 3, 23, 23, 16, 7, 7, 2, 3, 1, 1)),
    ("conv2d", (2, 8, 8, 8, 8, 3, 3, 1, 1, 1, 8)),
    ("conv1x1", (2, 64, 8, 8, 256, 1)),
    ("conv1x1", (2, 64, 9, 9, 128, 2)),
    ("conv1x1", (3, 6, 5, 7, 10, 1)),
    ("max_pool2d", (2, 16, 13, 13, 3, 2, 1, True)),
    ("max_pool2d", (2, 6, 10, 11, 2, 2, 0, False)),
    ("add_relu", (2, 16, 9, 7)),
]
# Rounds of (dtype, layout): the first covers every family and target once; a sweep cut short by its
# budget has still seen each dtype and each layout after four rounds.
ROUNDS_GPU = [("bf16", "nhwc"), ("fp32", "nchw"), ("fp16", "nchw"), ("tf32", "nhwc"), ("bf16", "nchw"),
              ("fp16", "nhwc"), ("fp32", "nhwc"), ("tf32", "nchw")]
ROUNDS_CPU = [("fp32", "nhwc"), ("bf16", "nchw")]
# The interpreter runs each Triton program in numpy: seconds per conv even at these sizes.
INTERP_OPS = {"max_pool2d", "add_relu"}


def _seed():
    return int.from_bytes(os.urandom(4), "little")


def _plan(cases, rounds, tgts):
    for dtype, layout in rounds:
        for op, cfg in cases:
            for t in tgts:
                if t.label == "sm90" and op not in ("conv2d", "conv1x1"):
                    continue  # the Hopper path is for convolutions only
                if t.label == "triton-interp" and op not in INTERP_OPS:
                    continue
                if dtype == "tf32" and (t.device == "cpu" or op in ("max_pool2d", "add_relu")):
                    continue  # tf32 is a matrix-unit mode of the GPU's convs
                yield op, cfg, t, dtype, layout


def _poison_on():
    try:
        from fastcnn.testing import set_poison  # the one switch (C++ and Triton allocators)
    except ImportError:
        from fastcnn._ops import set_poison
    set_poison(True)


def missing_targets() -> list[dict]:
    """On a GPU: a failed row for each target the window must exercise but cannot (a build without
    CUDA, Triton not importing, fastcnn.sm90 present but its kernels not registered)."""
    if not torch.cuda.is_available():
        return []
    import fastcnn

    have = {t.label for t in targets()}
    rows = []
    for label in ("cuda", "triton"):
        if label not in have:
            why = fastcnn._backend._why_not(label) if label in fastcnn._backend._names() else "unknown backend"
            rows.append({"what": f"{label} backend", "target": label, "ok": False, "error": f"not available: {why}"})
    sm90 = sm90_module()
    if sm90 is not None and "sm90" not in have:
        rows.append({"what": "sm90 path", "target": "sm90", "ok": False,
                     "error": f"fastcnn._C_sm90 not registered: {sm90.load_error()}"})
    return rows


def cmd_smoke(out):
    import fastcnn

    _poison_on()
    if os.path.exists(out):
        os.remove(out)
    gpu = torch.cuda.is_available()
    rounds = [("bf16", "nhwc")] if gpu else [("fp32", "nhwc")]
    failed = 0
    for row in missing_targets():
        write_line(out, row)
        failed += 1
        print(f"{row['what']:22s} FAIL {row['error']}", flush=True)
    for op, cfg, t, dtype, layout in _plan(SMOKE, rounds, targets()):
        row = run_case(op, cfg, t, dtype, layout, _seed())
        row["what"] = f"{op}/{t.label}"
        try:
            with fastcnn.backend(t.backend):
                row["resolved"] = fastcnn.resolve(op, t.device)
        except ValueError as exc:
            row["resolved"] = f"ValueError: {exc}"
        write_line(out, row)
        failed += not row["ok"]
        print(f"{row['what']:22s} {dtype} {layout} {'ok' if row['ok'] else 'FAIL'} "
              f"{row.get('errors') or row.get('error') or row.get('skipped')}", flush=True)
    return 1 if failed else 0


def cmd_sweep(scope, out, until):
    _poison_on()
    gpu = torch.cuda.is_available()
    rounds = ROUNDS_GPU if gpu else ROUNDS_CPU
    if scope == "round1":
        rounds = rounds[:1]
    cases = SWEEP
    if not gpu:  # the dry run: the same families at the smallest of these shapes
        cases = [SWEEP[0], SWEEP[5], SWEEP[9], SWEEP[10], SWEEP[12]]
    failed = n = 0
    for op, cfg, t, dtype, layout in _plan(cases, rounds, targets()):
        if time.time() > until:
            print(f"sweep: its time is up after {n} cases", flush=True)
            break
        row = run_case(op, cfg, t, dtype, layout, _seed())
        write_line(out, row)
        n += 1
        failed += not row["ok"]
        if not row["ok"]:
            print(f"FAIL {row}", flush=True)
    print(f"sweep: {n} cases, {failed} wrong", flush=True)
    return 1 if failed else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["facts", "buildinfo", "smoke", "sweep"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--scope", default="full", choices=["full", "round1"])
    ap.add_argument("--until", type=float, default=None, help="sweep: start no case after this time (time.time())")
    a = ap.parse_args(argv)
    if a.what == "facts":
        return cmd_facts(a.out)
    if a.what == "buildinfo":
        return cmd_buildinfo(a.out)
    if a.what == "smoke":
        return cmd_smoke(a.out)
    return cmd_sweep(a.scope, a.out, a.until if a.until is not None else time.time() + 60)


if __name__ == "__main__":
    sys.exit(main())
