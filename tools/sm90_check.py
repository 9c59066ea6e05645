#!/usr/bin/env python3
"""Compile every Hopper-path translation unit (csrc/cuda/sm90/*.cu) on its own and check its SASS.

    python3 tools/sm90_check.py [--jobs N] [--csv bench/results/sm90_sass.csv] [--tu fprop_bf16 ...]

(--tu rebuilds only those TUs and replaces their rows in the CSV.)

(`make sm90-check`). No GPU needed. Installs the pinned CUTLASS headers and the cuobjdump/nvdisasm
wheels with --no-deps when missing, then per TU runs exactly

    nvcc -std=c++17 -O3 --expt-relaxed-constexpr -DNDEBUG -DFASTCNN_WITH_SM90
         -gencode=arch=compute_90a,code=sm_90a -Icsrc -I<cutlass>/source/include
         -I<cutlass>/source/tools/util/include -Xptxas -v -c <tu>.cu

and fails on ptxas warning C7510 (wgmma serialised: every HGMMA waits alone), on any spill, or when a
CUTLASS kernel's SASS lacks HGMMA or UTMALDG (the fixed-order wgrad reduction kernel is plain SIMT and
is exempt from that rule). Writes one row per kernel to the CSV (committed as evidence). Jobs run in
parallel, capped by memory: a TU takes 2-3.5 GB and ~60-200 CPU-seconds.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import datetime as dt
import glob
import importlib.metadata
import importlib.util
import os
import re
import resource
import shutil
import subprocess
import sys
import sysconfig
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUTLASS_PIN = "nvidia-cutlass==4.2.0.0"
# cuobjdump/nvdisasm of CUDA 13.2 read nvcc 13.0's sm_90a cubins (the CUDA install here has neither).
SASS_TOOL_PINS = ["nvidia-cuda-cuobjdump==13.2.86", "nvidia-cuda-nvdisasm==13.2.86"]
GB_PER_JOB = 3.5
# SASS opcodes counted per kernel.
COUNTED = ("HGMMA", "UTMALDG", "UTMASTG", "FMNMX")
EXEMPT = ("wgrad_reduce_kernel",)  # SIMT helper kernels: no wgmma/TMA expected


def pip_install(specs):
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"] + specs
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def cutlass_root(install: bool) -> str:
    if os.environ.get("CUTLASS_PATH"):
        return os.environ["CUTLASS_PATH"]
    spec = importlib.util.find_spec("cutlass_library")
    want = CUTLASS_PIN.split("==")[1]
    have = None
    if spec is not None:
        try:
            have = importlib.metadata.version("nvidia-cutlass")
        except importlib.metadata.PackageNotFoundError:
            pass
    if have != want:
        if not install:
            raise SystemExit(f"sm90-check: {CUTLASS_PIN} is not installed (found {have}); run without --no-install")
        pip_install([CUTLASS_PIN])
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("cutlass_library")
    return os.path.join(list(spec.submodule_search_locations)[0], "source")


def sass_tools(install: bool) -> str:
    """The directory holding cuobjdump and nvdisasm (13.2 wheels: they read nvcc 13.0 output)."""
    def find():
        spec = importlib.util.find_spec("nvidia")
        for root in (list(spec.submodule_search_locations) if spec else []):
            for d in glob.glob(os.path.join(root, "cu*", "bin")):
                if os.path.exists(os.path.join(d, "cuobjdump")) and os.path.exists(os.path.join(d, "nvdisasm")):
                    return d
        return None

    d = find()
    if d is None:
        if not install:
            raise SystemExit("sm90-check: cuobjdump/nvdisasm wheels are not installed; run without --no-install")
        pip_install(SASS_TOOL_PINS)
        importlib.invalidate_caches()
        d = find()
    if d is None:
        raise SystemExit("sm90-check: cuobjdump/nvdisasm not found after installing " + " ".join(SASS_TOOL_PINS))
    return d


def mem_jobs() -> int:
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        by_mem = max(1, int(kb / (GB_PER_JOB * 1024 * 1024)))
    except (OSError, StopIteration, ValueError):
        by_mem = 1
    return max(1, min(os.cpu_count() or 1, by_mem))


def nvcc_cmd(nvcc, cutlass, tu, obj):
    return [nvcc, "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-DNDEBUG", "-DFASTCNN_WITH_SM90",
            "-gencode=arch=compute_90a,code=sm_90a", "-Icsrc", f"-I{cutlass}/include",
            f"-I{cutlass}/tools/util/include", "-Xptxas", "-v", "-c", tu, "-o", obj]


def compile_tu(nvcc, cutlass, tu, outdir):
    name = os.path.splitext(os.path.basename(tu))[0]
    obj = os.path.join(outdir, name + ".o")
    t0 = time.time()
    p = subprocess.run(nvcc_cmd(nvcc, cutlass, os.path.relpath(tu, REPO), obj), cwd=REPO, capture_output=True,
                       text=True)
    return name, obj, p.returncode, p.stdout + p.stderr, time.time() - t0


def parse_ptxas(log):
    """{mangled function: {registers, spill_stores, spill_loads}} and the warning lines."""
    funcs, cur = {}, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            cur = m.group(1)
            funcs[cur] = {"registers": 0, "spill_stores": 0, "spill_loads": 0}
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and cur:
            funcs[cur]["spill_stores"], funcs[cur]["spill_loads"] = int(m.group(1)), int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m and cur:
            funcs[cur]["registers"] = int(m.group(1))
    warnings = [line for line in log.splitlines() if "warning" in line.lower()]
    return funcs, warnings


def parse_sass(text):
    """{mangled function: {opcode: count, 'instructions': n}} from cuobjdump -sass."""
    out, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = m.group(1)
            out[cur] = {k: 0 for k in COUNTED}
            out[cur]["instructions"] = 0
            continue
        if cur and re.match(r"\s*/\*[0-9a-f]{4,}\*/", line):
            out[cur]["instructions"] += 1
            body = line.split("*/", 1)[1]
            for k in COUNTED:
                if re.search(r"\b" + k + r"\b", body):
                    out[cur][k] += 1
    return out


def parse_res_usage(text):
    out, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            cur = m.group(1)
            continue
        m = re.search(r"SHARED:(\d+)", line)
        if m and cur:
            out[cur] = int(m.group(1))
    return out


def kernel_info(obj):
    """The FASTCNN_SM90_INFO string sm90_conv.cuh puts into the object: smem, threads, stages, tile."""
    with open(obj, "rb") as f:
        data = f.read()
    i = data.find(b"FASTCNN_SM90_INFO ")
    if i < 0:
        return {}
    text = data[i:data.index(b"\0", i)].decode()
    return dict(kv.split("=", 1) for kv in text.split()[1:])


def short_name(mangled):
    for entry in ("wgrad_split_kernel", "wgrad_reduce_kernel", "device_kernel"):
        if entry in mangled:
            break
    else:
        entry = mangled[:40]
    kind = "GemmUniversal" if "GemmUniversal" in mangled else "ConvUniversal" if "ConvUniversal" in mangled else ""
    mma = re.search(r"MMA_(\d+x\d+x\d+)_F32(\w+?)_SS", mangled)
    return entry + (f"<{kind}>" if kind else "") + (f" {mma.group(1)}" if mma else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("SM90_CHECK_JOBS", "0")) or None)
    ap.add_argument("--csv", default=os.path.join(REPO, "bench", "results", "sm90_sass.csv"))
    ap.add_argument("--out", default=os.path.join(REPO, "build", "sm90-check"), help="objects and logs")
    ap.add_argument("--tu", nargs="*", help="only these TUs (names without .cu)")
    ap.add_argument("--no-install", action="store_true", help="fail instead of pip-installing the pinned tools")
    args = ap.parse_args(argv)
    t_start = time.time()

    nvcc = shutil.which(os.environ.get("NVCC", "nvcc"))
    if not nvcc:
        print("sm90-check: nvcc not found")
        return 1
    cutlass = cutlass_root(not args.no_install)
    bindir = sass_tools(not args.no_install)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    tus = sorted(glob.glob(os.path.join(REPO, "csrc", "cuda", "sm90", "*.cu")))
    if args.tu:
        tus = [t for t in tus if os.path.splitext(os.path.basename(t))[0] in args.tu]
    if not tus:
        print("sm90-check: no translation units")
        return 1
    os.makedirs(args.out, exist_ok=True)
    jobs = args.jobs or mem_jobs()
    nvcc_version = re.search(r"release (\S+),", subprocess.run([nvcc, "--version"], capture_output=True,
                                                                text=True).stdout)
    print(f"sm90-check: {len(tus)} TUs, {jobs} parallel jobs ({GB_PER_JOB} GB each), CUTLASS {cutlass}", flush=True)

    failures, rows = [], []
    with cf.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(compile_tu, nvcc, cutlass, tu, args.out) for tu in tus]
        for fut in cf.as_completed(futures):
            name, obj, rc, log, secs = fut.result()
            with open(os.path.join(args.out, name + ".log"), "w") as f:
                f.write(log)
            print(f"  [{secs:6.1f}s] {name}: rc={rc}", flush=True)
            if rc != 0:
                failures.append(f"{name}: nvcc failed (rc={rc}); log in {args.out}/{name}.log")
                print(log[-3000:])
                continue
            funcs, warns = parse_ptxas(log)
            for w in warns:
                print(f"    {name}: {w.strip()}")
                if "C7510" in w:
                    failures.append(f"{name}: ptxas C7510 (wgmma serialised): {w.strip()}")
            sass = parse_sass(subprocess.run(["cuobjdump", "-sass", obj], capture_output=True, text=True, env=env,
                                             check=True).stdout)
            static_smem = parse_res_usage(subprocess.run(["cuobjdump", "-res-usage", obj], capture_output=True,
                                                         text=True, env=env, check=True).stdout)
            info = kernel_info(obj)
            for fn, regs in funcs.items():
                counts = sass.get(fn, {k: 0 for k in COUNTED + ("instructions",)})
                exempt = any(e in fn for e in EXEMPT)
                row = {"tu": name, "kernel": short_name(fn), "registers": regs["registers"],
                       "spill_stores": regs["spill_stores"], "spill_loads": regs["spill_loads"],
                       "smem_static": static_smem.get(fn, 0),
                       "smem_dynamic": 0 if exempt else int(info.get("smem", 0)),
                       "threads": 256 if exempt else int(info.get("threads", 0)),
                       "stages": "" if exempt else info.get("stages", ""),
                       "tile": "" if exempt else info.get("tile", ""),
                       "hgmma": counts["HGMMA"], "utmaldg": counts["UTMALDG"], "utmastg": counts["UTMASTG"],
                       "fmnmx": counts["FMNMX"], "sass_instructions": counts["instructions"]}
                rows.append(row)
                if regs["spill_stores"] or regs["spill_loads"]:
                    failures.append(f"{name} {row['kernel']}: spills ({regs['spill_stores']} B stores, "
                                    f"{regs['spill_loads']} B loads)")
                if not exempt and (counts["HGMMA"] == 0 or counts["UTMALDG"] == 0):
                    failures.append(f"{name} {row['kernel']}: SASS lacks HGMMA or UTMALDG "
                                    f"(HGMMA {counts['HGMMA']}, UTMALDG {counts['UTMALDG']})")

    # The extension's host-compiled module (the table + PyInit): a syntax check with the Python and
    # CUTLASS headers, so a CUDA build's host side is known to compile too.
    module = os.path.join("csrc", "cuda", "sm90", "module.cpp")
    cxx = os.environ.get("CXX", "c++")
    pyinc = sysconfig.get_paths()["include"]
    p = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Icsrc",
                        "-isystem", f"{cutlass}/include", "-isystem", pyinc, module], cwd=REPO, capture_output=True,
                       text=True)
    print(f"  {cxx} -fsyntax-only {module}: rc={p.returncode}", flush=True)
    if p.returncode != 0:
        print(p.stdout + p.stderr)
        failures.append(f"{module}: host syntax check failed")

    rows.sort(key=lambda r: (r["tu"], r["kernel"]))
    stamp = {"nvcc": nvcc_version.group(1) if nvcc_version else "?",
             "cutlass": CUTLASS_PIN.split("==")[1], "sass_tools": SASS_TOOL_PINS[0].split("==")[1],
             "git_sha": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True).stdout.strip(),
             "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if rows:
        out_rows = [{**r, **stamp} for r in rows]
        if args.tu and os.path.exists(args.csv):  # --tu: replace those TUs' rows, keep the others
            with open(args.csv, newline="") as f:
                kept = [r for r in csv.DictReader(f) if r["tu"] not in args.tu]
            out_rows = sorted(kept + out_rows, key=lambda r: (r["tu"], r["kernel"]))
        os.makedirs(os.path.dirname(args.csv), exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) + list(stamp))
            w.writeheader()
            w.writerows(out_rows)
        print(f"sm90-check: wrote {len(out_rows)} rows to {os.path.relpath(args.csv, REPO)}")
    hdr = f"{'tu':14s} {'kernel':44s} {'regs':>4s} {'spill':>5s} {'smem':>7s} {'HGMMA':>5s} {'UTMALDG':>7s}"
    print(hdr)
    for r in rows:
        print(f"{r['tu']:14s} {r['kernel'][:44]:44s} {r['registers']:4d} {r['spill_stores'] + r['spill_loads']:5d} "
              f"{r['smem_dynamic']:7d} {r['hgmma']:5d} {r['utmaldg']:7d}")
    elapsed = time.time() - t_start
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime  # all compiler processes: the wall time an idle machine of N cores needs ~ cpu / N
    for f in failures:
        print("FAIL", f)
    print(f"sm90-check: {'FAILED' if failures else 'OK'} in {elapsed:.0f} s wall, {cpu:.0f} CPU-s "
          f"({len(tus)} TUs, {jobs} jobs, ~{cpu / jobs:.0f} s on {jobs} idle cores)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
