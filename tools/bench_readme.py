"""The README's CPU benchmark tables, rendered from the committed CSVs (one source for the numbers).

    python tools/bench_readme.py            # rewrite the block between the markers in README.md
    python tools/bench_readme.py --check    # exit 1 when README.md differs from the CSVs (a test runs this)

Reads the newest run in bench/results/cpu_ops.csv and bench/results/cpu_models.csv. Speed is the
speedup everywhere: PyTorch's median time / fastcnn's (> 1: fastcnn is faster). Ops: the geomean
over the layer shapes, with the lowest and highest layer; networks: the medians with their p20-p80
spread, and the range of the per-round speedups when the run had several rounds.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

from fastcnn.bench import common, suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = "<!-- bench-cpu:begin: written by tools/bench_readme.py from bench/results/cpu_*.csv; do not edit -->"
END = "<!-- bench-cpu:end -->"
LAYOUT = {"nchw": "NCHW", "nhwc": "channels_last"}
NETWORK = {"lenet5": "LeNet-5", "alexnet": "AlexNet", "googlenet": "GoogLeNet", "resnet18": "ResNet-18",
           "resnet50": "ResNet-50"}


def _g(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _ms(r) -> str:
    p50, p20, p80 = (suite._f(r.get(k)) for k in ("ms_p50", "ms_p20", "ms_p80"))
    if p20 is None or p80 is None or _g(p20) == _g(p80):
        return _g(p50)
    return f"{_g(p50)} ({_g(p20)}-{_g(p80)})"


def ops_block(rows, base="torch_cpu") -> list[str]:
    groups = collections.defaultdict(list)
    for r in rows:
        s = suite._f(r.get("speedup"))
        if r["provider"] != base and s:
            groups[(r["layout"], r["mode"])].append(s)
    modes = [m for m in ("fwd", "bwd", "fwd+bwd") if any(k[1] == m for k in groups)]
    layouts = [lay for lay in LAYOUT if any(k[0] == lay for k in groups)]
    shapes = len({r["name"] for r in rows})
    lines = [f"| ops ({shapes} layer shapes): geomean speedup (lowest-highest layer) | " + " | ".join(modes) + " |",
             "|---|" + "---|" * len(modes)]
    for lay in layouts:
        cells = []
        for m in modes:
            v = groups.get((lay, m), [])
            cells.append(f"{common.geomean(v):.2f} ({min(v):.2f}-{max(v):.2f})" if v else "-")
        lines.append(f"| {LAYOUT[lay]} | " + " | ".join(cells) + " |")
    alls = [s for v in groups.values() for s in v]
    lines += ["", f"Overall geomean speedup {common.geomean(alls):.2f} over {len(alls)} cases (layer x layout x mode)."]
    return lines


def models_block(rows, base="torch_cpu") -> list[str]:
    by = {(r["name"], r["mode"], r["provider"]): r for r in rows}
    nets = list(dict.fromkeys(r["name"] for r in rows))
    fast = [p for p in dict.fromkeys(r["provider"] for r in rows) if p != base]
    rounds = sorted({int(r["rounds"]) for r in rows if r.get("rounds")})
    quantiles = []
    lines = ["| network (fp32, NCHW) | mode | PyTorch ms | fastcnn ms | speedup |", "|---|---|---|---|---|"]
    for net in nets:
        for mode in ("inference", "train"):
            b = by.get((net, mode, base))
            for p in fast:
                f = by.get((net, mode, p))
                if not (b and f):
                    continue
                s = suite._f(f.get("speedup"))
                lo, hi = suite._f(f.get("speedup_lo")), suite._f(f.get("speedup_hi"))
                if lo is None or hi is None:  # runs that recorded the p20-p80 of the per-round speedups
                    lo, hi = suite._f(f.get("speedup_p20")), suite._f(f.get("speedup_p80"))
                    quantiles.append(lo is not None)
                rng = f" ({lo:.2f}-{hi:.2f})" if lo is not None and hi is not None and int(f.get("rounds") or 1) > 1 else ""
                name = f"{NETWORK.get(net, net)}, batch {f['batch']}" + ("" if len(fast) == 1 else f", {p}")
                lines.append(f"| {name} | {mode} | {_ms(b)} | {_ms(f)} | {s:.2f}{rng} |")
    lines += ["", "ms: the median, in parentheses the 20th-80th percentile of the timed samples (none shown: one "
              "sample, the timer's one block of a slow step); "
              + ("rounds not recorded (the run predates the CSV's rounds column)." if not rounds else
                 "one round per provider." if rounds == [1] else
                 f"{'/'.join(map(str, rounds))} rounds per provider, alternating; the speedup's range is over the "
                 "rounds" + (" (this run: ms the median of the round medians and its 20th-80th percentile over rounds; speedup the "
                             "median of the per-round speedups, range their 20th-80th percentile)."
                             if any(quantiles) else "."))]
    return lines


def render(ops_rows, model_rows) -> str:
    ops, models = suite.latest(ops_rows), suite.latest(model_rows)
    first = (ops or models)[0]
    lines = [BEGIN,
             f"{first['device']}, torch {first['torch']}; ops run {ops[0]['timestamp'][:10] if ops else '-'} "
             f"(git {ops[0]['git_sha'] if ops else '-'}), networks run {models[0]['timestamp'][:10] if models else '-'} "
             f"(git {models[0]['git_sha'] if models else '-'}). Speedup = PyTorch time / fastcnn time: > 1 is "
             "faster, < 1 slower.", ""]
    if ops:
        lines += ops_block(ops) + [""]
    if models:
        lines += models_block(models)
    lines.append(END)
    return "\n".join(lines)


def splice(readme: str, block: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README.md has no block between {BEGIN!r} and {END!r}")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + block + tail


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when README.md is out of date")
    ap.add_argument("--readme", default=os.path.join(ROOT, "README.md"), help="default: the tree's README.md")
    ap.add_argument("--ops", default=os.path.join(ROOT, "bench", "results", "cpu_ops.csv"), help="ops CSV")
    ap.add_argument("--models", default=os.path.join(ROOT, "bench", "results", "cpu_models.csv"), help="networks CSV")
    a = ap.parse_args(argv)
    with open(a.readme) as f:
        old = f.read()
    new = splice(old, render(suite.read_csv(a.ops), suite.read_csv(a.models)))
    if a.check:
        if new != old:
            print(f"{a.readme}: the CPU tables differ from {a.ops} / {a.models}; run python tools/bench_readme.py")
            return 1
        print(f"{a.readme}: CPU tables match the CSVs")
        return 0
    if new != old:
        with open(a.readme, "w") as f:
            f.write(new)
    print(f"{a.readme}: CPU tables {'rewritten' if new != old else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
