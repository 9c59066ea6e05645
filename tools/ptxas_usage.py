"""Per-kernel resource usage of the CUDA kernels as ptxas reports it (registers, spills, stack,
shared memory) and their __launch_bounds__ (the PTX .maxntid), for sm_80 and sm_90, as CSV rows:
the evidence in bench/results/cuda_ptxas.csv (also cuda-sim's list of the nvcc build's kernels and
their launch bounds), and the way to show that a source change leaves the generated code's
resources as they were (diff two runs).

    python tools/ptxas_usage.py --out build/ptxas_before.csv [--log build/ptxas_before.log] [files...]
    python tools/ptxas_usage.py --diff build/ptxas_before.csv build/ptxas_after.csv

Flags are `make cuda-check`'s (-O3, sm_80 + sm_90). Needs nvcc, no GPU.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
FUNC = re.compile(r"Function properties for (\S+)")
STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?(.*)")
SMEM = re.compile(r"(\d+) bytes smem")


PTX_ENTRY = re.compile(r"\.entry\s+([A-Za-z0-9_$]+)\s*\(")
PTX_MAXNTID = re.compile(r"\.maxntid\s+(\d+)\s*,\s*(\d+)\s*,\s*(\d+)")
PTX_TARGET = re.compile(r"^\.target\s+(sm_\d+)", re.M)


def ptx_bounds(keep_dir: str) -> dict:
    """(kernel, arch) -> __launch_bounds__ max threads (0: none), from the kept PTX files."""
    out = {}
    for f in glob.glob(os.path.join(keep_dir, "*.ptx")):
        text = open(f).read()
        t = PTX_TARGET.search(text)
        arch = t.group(1) if t else "?"
        for m in PTX_ENTRY.finditer(text):
            # directives sit between the parameter list and the body
            body = text.find("{", text.find(")", m.end()))
            mt = PTX_MAXNTID.search(text, m.end(), body)
            out[(m.group(1), arch)] = int(mt.group(1)) * int(mt.group(2)) * int(mt.group(3)) if mt else 0
    return out


def compile_one(path: str, nvcc: str, log, root: str = HERE) -> list[dict]:
    keep = tempfile.mkdtemp(prefix="fastcnn_ptxas_")
    cmd = [nvcc, "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Icsrc", "-Xptxas", "-v",
           "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
           "-keep", "-keep-dir", keep, "-c", path, "-o", os.path.join(keep, "out.o")]
    t0 = time.time()
    try:
        res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        bounds = ptx_bounds(keep)
    finally:
        shutil.rmtree(keep, ignore_errors=True)
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
            cur["max_threads"] = bounds.get((cur["kernel"], cur["arch"]), "")
            rows.append(cur)
            cur = None
    print(f"{path}: {len(rows)} kernel x arch entries ({time.time() - t0:.0f} s)", flush=True)
    return rows


# nvcc names an anonymous namespace after a hash of the file's path (length-prefixed, so the length
# varies too): normalised to the host compiler's _GLOBAL__N_1 for comparisons (as fastcnn/_cudasim.py).
def normalize(name: str) -> str:
    out, i = [], 0
    while True:
        k = name.find("_GLOBAL__N_", i)
        if k < 0:
            return "".join(out) + name[i:]
        j = k
        while j > i and name[j - 1].isdigit():
            j -= 1
        length = int(name[j:k]) if j < k else len("_GLOBAL__N_1")
        out.append(name[i:j] + "12_GLOBAL__N_1")
        i = k + length


RES = ("registers", "spill_stores", "spill_loads", "stack", "smem", "barriers")


def load(path: str) -> dict:
    rows = {}
    for r in csv.DictReader(open(path)):
        rows[(normalize(r["kernel"]), r["arch"], r["file"])] = tuple(r[c] for c in RES)
    return rows


def diff(a_path: str, b_path: str) -> int:
    a, b = load(a_path), load(b_path)
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    print(f"{a_path}: {len(a)} kernel x arch entries; {b_path}: {len(b)}")
    print(f"only in the first: {len(only_a)}, only in the second: {len(only_b)}, resources differ: {len(changed)}")
    for k in only_a[:20]:
        print("  -", k[1], k[0])
    for k in only_b[:20]:
        print("  +", k[1], k[0])
    for k in changed[:50]:
        print(f"  {k[1]} {k[0]}: " + ", ".join(f"{c} {x}->{y}" for c, x, y in zip(RES, a[k], b[k]) if x != y))
    return 1 if (only_a or only_b or changed) else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="default: csrc/cuda/*.cu")
    ap.add_argument("--out", help="CSV path")
    ap.add_argument("--diff", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two CSVs (exit 1 if they differ)")
    ap.add_argument("--log", help="raw ptxas output")
    ap.add_argument("--nvcc", default=os.environ.get("NVCC", "nvcc"))
    ap.add_argument("--root", default=HERE, help="source tree (default: this checkout)")
    args = ap.parse_args()
    if args.diff:
        sys.exit(diff(*args.diff))
    if not args.out:
        ap.error("--out is required")
    root = os.path.abspath(args.root)
    files = args.files or sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "csrc/cuda/*.cu")))
    rows = []
    with open(args.log or os.devnull, "w") as log:
        for f in files:
            rows += compile_one(f, args.nvcc, log, root)
    rows.sort(key=lambda r: (r["kernel"], r["arch"]))
    cols = ["kernel", "arch", "registers", "spill_stores", "spill_loads", "stack", "smem", "barriers", "max_threads",
            "file"]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    print(f"{len(rows)} rows -> {args.out}")


if __name__ == "__main__":
    main()
