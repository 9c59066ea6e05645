"""Per-kernel resource usage of the CUDA kernels as ptxas reports it (registers, spills, stack,
shared memory), for sm_80 and sm_90, as CSV rows; used to show that a source change leaves the
generated code's resources as they were (diff two runs) and as evidence in bench/results.

    python tools/ptxas_usage.py --out build/ptxas_before.csv [--log build/ptxas_before.log] [files...]

Flags are `make cuda-check`'s (-O3, sm_80 + sm_90). Needs nvcc, no GPU.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
FUNC = re.compile(r"Function properties for (\S+)")
STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?(.*)")
SMEM = re.compile(r"(\d+) bytes smem")


def compile_one(path: str, nvcc: str, log, root: str = HERE) -> list[dict]:
    cmd = [nvcc, "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Icsrc", "-Xptxas", "-v",
           "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
           "-c", path, "-o", os.devnull]
    t0 = time.time()
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    log.write(f"$ {' '.join(cmd)}\n{res.stderr}\n")
    if res.returncode != 0:
        sys.exit(f"nvcc failed on {path}:\n{res.stderr[-4000:]}")
    rows, cur, props = [], None, {}
    for line in res.stderr.splitlines():
        m = ENTRY.search(line)
        if m:
            cur = {"file": os.path.basename(path), "kernel": m.group(1), "arch": m.group(2)}
            continue
        m = FUNC.search(line)
        if m:
            props = {"name": m.group(1)}
            continue
        m = STACK.search(line)
        if m and cur is not None and props.get("name") == cur["kernel"]:
            cur.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
            continue
        m = USED.search(line)
        if m and cur is not None:
            sm = SMEM.search(m.group(3) or "")
            cur.update(registers=int(m.group(1)), barriers=int(m.group(2) or 0),
                       smem=int(sm.group(1)) if sm else 0)
            rows.append(cur)
            cur = None
    print(f"{path}: {len(rows)} kernel x arch entries ({time.time() - t0:.0f} s)", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="default: csrc/cuda/*.cu")
    ap.add_argument("--out", required=True, help="CSV path")
    ap.add_argument("--log", help="raw ptxas output")
    ap.add_argument("--nvcc", default=os.environ.get("NVCC", "nvcc"))
    ap.add_argument("--root", default=HERE, help="source tree (default: this checkout)")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    files = args.files or sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "csrc/cuda/*.cu")))
    rows = []
    with open(args.log or os.devnull, "w") as log:
        for f in files:
            rows += compile_one(f, args.nvcc, log, root)
    rows.sort(key=lambda r: (r["kernel"], r["arch"]))
    cols = ["kernel", "arch", "registers", "spill_stores", "spill_loads", "stack", "smem", "barriers", "file"]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    print(f"{len(rows)} rows -> {args.out}")


if __name__ == "__main__":
    main()
