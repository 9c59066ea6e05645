"""Mutation test of cuda-sim (on demand, not in CI): does the cuda-sim test suite catch a deleted
barrier or a too-shallow cp.async wait in the conv kernels?

For each mutation -- every __syncthreads() of the conv kernels (the implicit-GEMM main loops in
csrc/cuda/igemm_*.cuh, the bias-gradient reduction in conv2d_kernel.cu) deleted, one at a time, and
every cp_async_wait<N>() made one stage too shallow (N+1) -- the tool applies it to a scratch copy of
this checkout, rebuilds fastcnn._C_cudasim there (incremental: only the mutated kernel file
recompiles) and runs the cuda-sim op tests on it. A mutation must make them fail.

    python tools/mutate_cuda.py [--pytest-args "..."] [--only N] [--keep] [--csv bench/results/cuda_mutants.csv]

Prints one row per mutation (file:line, the change, killed / SURVIVED, the first failing test) and
exits 1 if a mutation survived that is not a known equivalent one (EQUIVALENT: a change no test on
any machine can see, with the reason; the table says which, they are not hidden).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ["csrc/cuda/igemm_fprop.cuh", "csrc/cuda/igemm_wgrad.cuh", "csrc/cuda/conv2d_kernel.cu"]
# Mutations that cannot change any result, on a GPU or in the sim (keyed by file and the mutated
# line's code). The wait<0> after the main loop: iteration kt commits tile kt+STAGES-1's group, empty
# once that is past num_k, and iteration num_k-1's wait<STAGES-2> has already retired tile num_k-1's
# group (the last non-empty one, for any num_k >= 1: the prologue commits STAGES-1 groups too). So
# every group still pending after the loop is empty and wait<1> retires as much data as wait<0>:
# the final wait is a guard for a future change of the pipeline, not a synchronisation of today's.
POST_LOOP_WAIT = ("empty groups only: every group pending after the main loop is past num_k (the "
                  "last data group retired at iteration num_k-1's wait<STAGES-2>)")
EQUIVALENT = {
    ("csrc/cuda/igemm_fprop.cuh", "cp_async_wait<0>();"): POST_LOOP_WAIT,
    ("csrc/cuda/igemm_wgrad.cuh", "cp_async_wait<0>();"): POST_LOOP_WAIT,
}
DEFAULT_TESTS = ("tests/test_conv2d.py tests/test_conv1x1.py tests/test_cuda_sim.py -k 'cuda-sim or cuda_sim' "
                 "-x -q -p no:cacheprovider")
WAIT = re.compile(r"cp_async_wait<([^>]+)>\(\)")


def mutations() -> list[tuple[str, int, str, str]]:
    """(file, line number, original line, mutated line)."""
    out = []
    for rel in TARGETS:
        lines = open(os.path.join(HERE, rel)).read().split("\n")
        for i, line in enumerate(lines):
            code = line.split("//")[0]
            if "__syncthreads();" in code:
                out.append((rel, i + 1, line, line.replace("__syncthreads();", "/* mutation: barrier deleted */")))
            m = WAIT.search(code)
            if m:
                out.append((rel, i + 1, line, line[:m.start()] + f"cp_async_wait<({m.group(1)}) + 1>()" + line[m.end():]))
    return out


def copy_tree(dst: str) -> None:
    ignore = shutil.ignore_patterns(".git", "build", "__pycache__", ".pytest_cache", ".hypothesis", "demo-out",
                                    "*.egg-info", "_C_cudasim*.so")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(HERE, dst, ignore=ignore, symlinks=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pytest-args", default=DEFAULT_TESTS)
    ap.add_argument("--only", type=int, action="append", help="run mutation number N only (repeatable)")
    ap.add_argument("--scratch", default=os.path.join(HERE, "build", "mutate"))
    ap.add_argument("--keep", action="store_true", help="keep the scratch copy")
    ap.add_argument("--csv", help="also write the table as CSV (e.g. bench/results/cuda_mutants.csv)")
    args = ap.parse_args()

    muts = mutations()
    work = os.path.join(args.scratch, "tree")
    copy_tree(work)
    env = dict(os.environ, PYTHONPATH=work + os.pathsep + os.environ.get("PYTHONPATH", ""),
               FASTCNN_SIM_ASAN="0")
    check = subprocess.run([sys.executable, "-c", "import fastcnn, sys; sys.stdout.write(fastcnn.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True)
    if not check.stdout.startswith(work):
        sys.exit(f"the scratch copy's fastcnn is not the one imported ({check.stdout or check.stderr}); "
                 "uninstall the editable install or run from a plain checkout")
    print(f"{len(muts)} mutations; baseline build in {work}", flush=True)
    build = [sys.executable, os.path.join(work, "tools", "build_cudasim.py"), "--require"]

    def run_tests() -> tuple[bool, str]:
        cmd = [sys.executable, "-m", "pytest"] + shlex.split(args.pytest_args)
        res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        failed = [l for l in res.stdout.splitlines() if l.startswith("FAILED") or l.startswith("ERROR")]
        return res.returncode == 0, (failed[0] if failed else res.stdout.strip().splitlines()[-1] if res.stdout else "")

    if subprocess.run(build, cwd=work, env=env).returncode != 0:
        sys.exit("baseline build failed")
    ok, summary = run_tests()
    if not ok:
        sys.exit(f"the unmutated tests fail: {summary}")
    print(f"baseline: tests pass ({summary})", flush=True)

    rows = []
    for n, (rel, lineno, orig, mutated) in enumerate(muts):
        if args.only and n not in args.only:
            continue
        path = os.path.join(work, rel)
        text = open(path).read().split("\n")
        assert text[lineno - 1] == orig
        text[lineno - 1] = mutated
        open(path, "w").write("\n".join(text))
        t0 = time.time()
        try:
            if subprocess.run(build, cwd=work, env=env, capture_output=True).returncode != 0:
                result, detail = "killed", "build failed"
            else:
                ok, detail = run_tests()
                result = "SURVIVED" if ok else "killed"
        finally:
            text[lineno - 1] = orig
            open(path, "w").write("\n".join(text))
        change = "delete __syncthreads()" if "barrier deleted" in mutated else \
            f"{WAIT.search(orig).group(0)} -> one stage shallower"
        equivalent = EQUIVALENT.get((rel, orig.split("//")[0].strip()), "")
        if result == "SURVIVED" and equivalent:
            result = "survived (equivalent)"
        rows.append((n, f"{rel}:{lineno}", change, result, detail, time.time() - t0, equivalent))
        print(f"[{n}] {rel}:{lineno} {change}: {result} ({time.time() - t0:.0f} s) {detail}", flush=True)
    subprocess.run(build, cwd=work, env=env, capture_output=True)  # leave the scratch build unmutated

    print("\n| # | where | mutation | result | first failure / why equivalent |\n|---|---|---|---|---|")
    for n, where, change, result, detail, _, equivalent in rows:
        print(f"| {n} | {where} | {change} | {result} | {(equivalent or detail)[:120]} |")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["n", "where", "code", "mutation", "result", "first_failure", "equivalent_because", "seconds"])
            for (n, where, change, result, detail, sec, equivalent), m in zip(rows, [muts[r[0]] for r in rows]):
                w.writerow([n, where, m[2].strip(), change, result, detail if "killed" in result else "",
                            equivalent, f"{sec:.0f}"])
    if not args.keep:
        shutil.rmtree(args.scratch, ignore_errors=True)
    sys.exit(1 if any(r[3] == "SURVIVED" for r in rows) else 0)


if __name__ == "__main__":
    main()
