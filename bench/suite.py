"""``python -m fastcnn bench`` (or ``fastcnn-bench``): the benchmark suite, per op and per network.

    python -m fastcnn bench                       # ops + networks on this machine's device
    python -m fastcnn bench --quick --out DIR     # a smoke run of about a minute (CPU included)
    python -m fastcnn bench ops --nets resnet50 --dtypes bf16 --layouts nhwc
    python -m fastcnn bench models --nets resnet50 --batches 1,32,256 --cuda-graphs
    python -m fastcnn bench plot --out DIR        # the PNGs again, from DIR's CSVs
    python -m fastcnn bench report --out DIR      # markdown tables from DIR's CSVs (for READMEs)

Rows are appended to ``DIR/ops.csv`` and ``DIR/models.csv`` (``--out DIR``; default
./bench-out/<device slug> under the current directory); the plots are drawn from those files, never
from memory: ``ops_speedup.png`` (speedup per layer against the baseline, one row per layer),
``roofline.png`` (achieved TFLOP/s against arithmetic intensity under the measured peaks, points
named by layer) and ``models_throughput.png`` (images/s per network, mode and provider, linear axes).

Speed is reported one way everywhere: speedup = baseline time / provider time (> 1: faster than
the baseline), from median times; the spread is the p20-p80 of the samples (networks: of every
round, and the range of the per-round speedups).

What each number means (bench/README.md says more): ``ms_p50`` the median time, ``ms_p20``/``ms_p80``
its spread; ``tflops`` counted FLOPs (2 per multiply-add) over the median; ``gbps`` the fewest bytes
the op must move (each input read once, each output written once) over the median; ``frac_peak_*``
these over the device's peaks measured at the start of the run (a large matmul, a large copy);
``speedup`` the baseline's median time over the provider's (baseline: ``cudnn`` on a GPU,
``torch_cpu`` on a CPU; > 1 is faster than it). dtype ``tf32`` is float32 with TF32 allowed on both sides; ``fp32``
is exact float32 on both sides.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import sys

import torch

from fastcnn._console import Progress

from . import bench_models, bench_ops, common

KINDS = ("ops", "models")
DTYPES = ("fp32", "tf32", "fp16", "bf16")
LAYOUTS = ("nchw", "nhwc")
OPS = ("conv2d", "conv1x1", "max_pool2d", "add_relu")
OP_NETS = ("lenet5", "alexnet", "googlenet", "resnet50")
MODEL_NETS = bench_models.DEFAULT_NETS

# Defaults per device kind. The GPU defaults are the (batch 1, 32, 256; bf16 channels_last
# is what a fused-CNN library is for); the CPU ones keep a full run to minutes on 2 cores.
DEFAULTS = {
    "cuda": {"dtypes": ["bf16"], "layouts": ["nhwc"], "op_modes": ["fwd", "bwd", "fwd+bwd"],
             "batches": [1, 32, 256]},
    "cpu": {"dtypes": ["fp32"], "layouts": ["nchw", "nhwc"], "op_modes": ["fwd", "bwd", "fwd+bwd"],
            "batches": [None]},  # None: bench_models.CPU_CONFIGS (issue 20's batch and image size)
}
# --quick: one small layer per op kind, LeNet-5 only, short timing; about a minute on 2 cores.
QUICK_LAYERS = {"lenet5.conv1", "lenet5.conv2", "lenet5.pool1", "resnet50.layer1.0.conv1", "resnet50.layer1.add"}


DEFAULT_OUT = "bench-out"  # relative to the current directory: never inside the installed package


def device_slug(device: str) -> str:
    name = common.device_name(device).split(" (")[0]
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "device"


# ------------------------------------------------------------------------------------------------
# device peaks
# ------------------------------------------------------------------------------------------------

def measure_peaks(device: str, quick: bool = False) -> dict:
    """The device's practical peaks, measured once per run: a large matmul (bf16 on a GPU, fp32 on
    a CPU) and a large device copy (bytes read + written per second)."""
    if device.startswith("cuda"):
        n, copy_bytes, dtype = (4096 if quick else 8192), (256 if quick else 1024) * 2**20, torch.bfloat16
    else:
        n, copy_bytes, dtype = (512 if quick else 1024), (32 if quick else 128) * 2**20, torch.float32
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    ms, _, _ = common.time_fn(lambda: torch.mm(a, b), device, quick)
    src = torch.empty(copy_bytes // 4, device=device)
    dst = torch.empty_like(src)
    ms_copy, _, _ = common.time_fn(lambda: dst.copy_(src), device, quick)
    return {"peak_tflops": 2 * n**3 / (ms * 1e-3) / 1e12, "peak_gbps": 2 * copy_bytes / (ms_copy * 1e-3) / 1e9,
            "peak_matmul": f"{'bf16' if dtype == torch.bfloat16 else 'fp32'} {n}^3 matmul"}


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------

def _with_peaks(rows, peaks):
    for r in rows:
        r.update(peaks)  # peaks carry the run's timestamp too: one run, one timestamp (plots pick the newest)
        r["frac_peak_flops"] = r["tflops"] / peaks["peak_tflops"] if r.get("tflops") else None
        r["frac_peak_bw"] = r["gbps"] / peaks["peak_gbps"] if r.get("gbps") else None
    return rows


def run_ops(a, device, peaks, out_csv, verbose=True):
    kind = "cuda" if device.startswith("cuda") else "cpu"
    layers = bench_ops.layers(a.nets_ops, a.ops)
    if a.quick:
        layers = [ly for ly in layers if f"{ly.net}.{ly.name}" in QUICK_LAYERS] or layers[:3]
    providers = a.providers or bench_ops.PROVIDERS[kind]
    rows = []
    total = len(layers) * len(a.layouts) * len(a.op_modes) * len(a.dtypes)
    prog = Progress(total, "ops", enabled=verbose, leave=False)
    try:
        for dtype in a.dtypes:
            for layer in layers:
                def echo(line, _layer=layer):
                    prog.echo(line, advance=line.startswith(_layer.net))
                rows += bench_ops.run(device, [layer.net], None, a.op_modes, a.layouts, dtype, providers,
                                      a.batch_ops, a.quick, None, echo=echo, only=[layer])
    finally:
        prog.close()
    _with_peaks(rows, peaks)
    common.append_csv(out_csv, rows)
    return rows


def run_models(a, device, peaks, out_csv, verbose=True):
    kind = "cuda" if device.startswith("cuda") else "cpu"
    nets = a.nets_models or (["lenet5"] if a.quick else list(MODEL_NETS))
    providers = a.providers_models or bench_models.PROVIDERS[kind]
    rows = []
    total = len(nets) * len(a.batches) * len(a.layouts) * len(a.dtypes) * len(a.model_modes)
    prog = Progress(total, "models", enabled=verbose, leave=False)
    try:
        for dtype in a.dtypes:
            for layout in a.layouts:
                for batch in a.batches:
                    for net in nets:
                        def echo(line):
                            prog.echo(line, advance=line.lstrip().startswith(tuple(a.model_modes)) and
                                      line.startswith("  ") and "ms" in line)
                        rows += bench_models.run(device, [net], a.model_modes, batch, dtype, layout, providers,
                                                 a.quick, None, rounds=a.rounds, echo=echo,
                                                 cuda_graphs=a.cuda_graphs)
    finally:
        prog.close()
    _with_peaks(rows, peaks)
    common.append_csv(out_csv, rows)
    return rows


# ------------------------------------------------------------------------------------------------
# tables and plots (from the CSV files)
# ------------------------------------------------------------------------------------------------

def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def latest(rows):
    """The rows of the newest run in a CSV (its newest timestamp + git_sha)."""
    if not rows:
        return []
    key = max((r["timestamp"], r["git_sha"]) for r in rows)
    return [r for r in rows if (r["timestamp"], r["git_sha"]) == key]


def ops_table(rows, baseline):
    """Per provider, mode, dtype and layout: the geomean speedup over the layers (baseline time /
    provider time, > 1: faster), the lowest and the highest."""
    import collections

    groups = collections.defaultdict(list)
    for r in rows:
        s = _f(r.get("speedup"))
        if r["provider"] != baseline and s:
            groups[(r["provider"], r["mode"], r["dtype"], r["layout"])].append(s)
    out = [{"provider": p, "mode": m, "dtype": d, "layout": lay, "layers": len(v),
            "geomean speedup": common.geomean(v), "lowest": min(v), "highest": max(v)}
           for (p, m, d, lay), v in sorted(groups.items())]
    return common.markdown_table(out, ["provider", "mode", "dtype", "layout", "layers", "geomean speedup",
                                       "lowest", "highest"])


def ops_header(baseline) -> str:
    return (f"Per op (speedup = {baseline} time / provider time, > 1: faster; geomean over the layers, lowest "
            "and highest layer):")


def models_header(baseline) -> str:
    return (f"Per network (speedup = {baseline} time / provider time, > 1: faster; ms: median, p20-p80 over "
            "the samples of every round; speedup range: over the rounds):")


def _spread(lo, hi) -> str:
    lo, hi = _f(lo), _f(hi)
    return "-" if lo is None or hi is None else f"{common._fmt_cell(lo)}-{common._fmt_cell(hi)}"


def models_table(rows):
    out = [{"network": r["name"], "mode": r["mode"], "dtype": r["dtype"], "layout": r["layout"],
            "batch": r["batch"], "provider": r["provider"], "ms": _f(r["ms_p50"]),
            "p20-p80 ms": _spread(r.get("ms_p20"), r.get("ms_p80")), "images/s": _f(r.get("images_per_s")),
            "speedup": _f(r.get("speedup")), "rounds": r.get("rounds") or "1",
            "speedup range": (_spread(r.get("speedup_lo"), r.get("speedup_hi"))
                              if int(_f(r.get("rounds")) or 1) > 1 else "-"),  # one round: no range
            "peak MB": _f(r.get("peak_mem_mb")), "graphs": r.get("cuda_graphs", "")} for r in rows]
    out = [{k: ("-" if v is None else v) for k, v in r.items()} for r in out]
    return common.markdown_table(out, ["network", "mode", "dtype", "layout", "batch", "provider", "ms", "p20-p80 ms",
                                       "images/s", "speedup", "rounds", "speedup range", "peak MB", "graphs"])


_SHORT = (("googlenet.", "GN."), ("resnet50.", "R50."), ("alexnet.", "AN."), ("lenet5.", "L5."),
          ("inception", ""), ("branch", "b"), ("downsample", "down"))


def short_name(name: str) -> str:
    """A layer name short enough to label a point (googlenet.inception3a.branch2.0 -> GN.3a.b2.0)."""
    for a, b in _SHORT:
        name = name.replace(a, b)
    return name


def _plot_ops_speedup(plt, ops, base, path):
    """One column per (mode, dtype, layout), one row per layer (names readable on the y axis), a bar
    per provider: the speedup over the baseline, 1 marked."""
    cases = sorted({(r["mode"], r["dtype"], r["layout"]) for r in ops})
    provs = sorted({r["provider"] for r in ops if r["provider"] != base})
    names = list(dict.fromkeys(r["name"] for r in ops))
    speed = {(r["name"], r["provider"], r["mode"], r["dtype"], r["layout"]): _f(r.get("speedup")) for r in ops}
    height = 0.8 / max(1, len(provs))
    fig, axes = plt.subplots(1, len(cases), sharey=True, sharex=True, squeeze=False,
                             figsize=(1.2 + 3.2 * len(cases), max(3.0, 1.6 + 0.16 * len(names) * max(1, len(provs) / 2))))
    top = 1.0
    for ax, case in zip(axes[0], cases):
        for i, p in enumerate(provs):
            xs = [speed.get((n, p) + case) or 0.0 for n in names]
            top = max(top, *xs)
            ax.barh([j + i * height for j in range(len(names))], xs, height, label=p)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_title(f"{case[0]}, {case[1]}, {case[2]}", fontsize=9)
        ax.set_xlabel(f"speedup over {base}\n(> 1: faster)", fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=7)
    axes[0][0].set_xlim(0, top * 1.05)
    ax0 = axes[0][0]
    ax0.set_yticks([j + height * (len(provs) - 1) / 2 for j in range(len(names))])
    ax0.set_yticklabels(names, fontsize=6.5)
    ax0.set_ylim(len(names) - 0.5 + height * len(provs), -0.5)  # first layer at the top
    if provs:
        axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"speedup per layer = {base} time / provider time (median times): {ops[0]['device']}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_roofline(plt, ops, path):
    """Achieved TFLOP/s against arithmetic intensity (forward) under the measured roofs; each
    fastcnn point named by its layer (short names)."""
    import numpy as np

    peak_t, peak_b = _f(ops[0].get("peak_tflops")), _f(ops[0].get("peak_gbps"))
    fig, ax = plt.subplots(figsize=(11, 8))
    pts = [(r, _f(r["tflops"]), _f(r["gbps"])) for r in ops if r["mode"] == "fwd"]
    pts = [(r, t, t * 1e3 / g) for r, t, g in pts if t and g]
    for p in sorted({r["provider"] for r, _, _ in pts}):
        sel = [(r, t, ai) for r, t, ai in pts if r["provider"] == p]
        ax.scatter([ai for _, _, ai in sel], [t for _, t, _ in sel], s=14, label=p,
                   marker="o" if p.startswith("fastcnn") else "x")
        if p.startswith("fastcnn"):
            labelled = set()
            for r, t, ai in sel:
                key = (r["name"], round(ai, 3))
                if key in labelled:  # the same layer in another layout: one label
                    continue
                labelled.add(key)
                ax.annotate(short_name(r["name"]), (ai, t), xytext=(2, 2), textcoords="offset points", fontsize=4.5,
                            alpha=0.8)
    if peak_t and peak_b:
        lo = min([ai for _, _, ai in pts] + [0.1]) / 2
        hi = max([ai for _, _, ai in pts] + [peak_t * 1e3 / peak_b]) * 2
        x = np.logspace(np.log10(lo), np.log10(hi), 200)
        ax.plot(x, np.minimum(peak_t, peak_b * x / 1e3), "k--", lw=1,
                label=f"measured roof: {peak_t:.3g} TFLOP/s, {peak_b:.3g} GB/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved, fewest bytes)")
    ax.set_ylabel("achieved TFLOP/s (forward)")
    ax.set_title(f"roofline: {ops[0]['device']} (labels: layers; GN = GoogLeNet, R50 = ResNet-50, AN = AlexNet, "
                 "L5 = LeNet-5)", fontsize=9)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _plot_models(plt, models, path):
    """images/s on linear axes: one panel per network setting (each its own scale, since LeNet-5 runs
    1000x more images/s than ResNet-50), a bar group per mode, a bar per provider with its speedup."""
    keys = list(dict.fromkeys((r["name"], r["batch"], r["dtype"], r["layout"]) for r in models))
    provs = list(dict.fromkeys(r["provider"] for r in models))
    modes = list(dict.fromkeys(r["mode"] for r in models))
    ncol = min(len(keys), 3)
    nrow = (len(keys) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, squeeze=False, figsize=(4.6 * ncol, 3.6 * nrow))
    width = 0.8 / max(1, len(provs))
    base = next((r["provider"] for r in models if _f(r.get("speedup")) == 1.0), None)
    for ax, key in zip(axes.flat, keys):
        sel = {(r["mode"], r["provider"]): r for r in models if (r["name"], r["batch"], r["dtype"], r["layout"]) == key}
        for i, p in enumerate(provs):
            xs = [j + i * width for j in range(len(modes))]
            rows = [sel.get((m, p)) for m in modes]
            ys = [(_f(r.get("images_per_s")) or 0.0) if r else 0.0 for r in rows]
            # the spread: images/s at the p80 and p20 times
            lo = [y - int(r["batch"]) / (_f(r.get("ms_p80")) * 1e-3) if r and _f(r.get("ms_p80")) else 0.0
                  for y, r in zip(ys, rows)]
            hi = [int(r["batch"]) / (_f(r.get("ms_p20")) * 1e-3) - y if r and _f(r.get("ms_p20")) else 0.0
                  for y, r in zip(ys, rows)]
            bars = ax.bar(xs, ys, width, label=p, color=f"C{i}", yerr=[lo, hi], capsize=3,
                          error_kw={"elinewidth": 0.8})
            for bar, r in zip(bars, rows):
                s = _f(r.get("speedup")) if r else None
                if s is not None and p != base:
                    ax.annotate(f"{s:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                                va="bottom", fontsize=7)
        ax.set_xticks([j + width * (len(provs) - 1) / 2 for j in range(len(modes))])
        ax.set_xticklabels(modes)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.12)  # room for the speedup labels
        ax.set_title(f"{key[0]}, batch {key[1]}, {key[2]} {key[3]}", fontsize=9)
        ax.set_ylabel("images / s (higher is better)", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"network throughput: {models[0]['device']} (labels: speedup = {base} time / provider time; "
                 "whiskers: p20-p80)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(out_dir, echo=print) -> list[str]:
    """PNG plots from out_dir's CSV files (the newest run in each); returns the paths written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        echo("plots skipped: matplotlib is not installed (pip install matplotlib)")
        return []
    written = []
    ops = latest(read_csv(os.path.join(out_dir, "ops.csv")))
    if ops:
        base = next((r["provider"] for r in ops if _f(r.get("speedup")) == 1.0), None)
        path = os.path.join(out_dir, "ops_speedup.png")
        _plot_ops_speedup(plt, ops, base, path)
        written.append(path)
        path = os.path.join(out_dir, "roofline.png")
        _plot_roofline(plt, ops, path)
        written.append(path)
    models = latest(read_csv(os.path.join(out_dir, "models.csv")))
    if models:
        path = os.path.join(out_dir, "models_throughput.png")
        _plot_models(plt, models, path)
        written.append(path)
    for p in written:
        echo(f"wrote {p}")
    return written


def report(out_dir, echo=print):
    """Markdown of the newest run in out_dir's CSVs, with the plots' file names."""
    ops = latest(read_csv(os.path.join(out_dir, "ops.csv")))
    models = latest(read_csv(os.path.join(out_dir, "models.csv")))
    if not ops and not models:
        echo(f"no results in {out_dir}")
        return 1
    first = (ops or models)[0]
    echo(f"{first['device']}, torch {first['torch']}, triton {first['triton']}, CUDA {first['cuda'] or '-'}, "
         f"git {first['git_sha']}, {first['timestamp']}")
    if first.get("peak_tflops"):
        echo(f"measured peaks: {float(first['peak_tflops']):.3g} TFLOP/s ({first.get('peak_matmul', '')}), "
             f"{float(first['peak_gbps']):.3g} GB/s (device copy)\n")
    if ops:
        base = next((r["provider"] for r in ops if _f(r.get("speedup")) == 1.0), "baseline")
        echo(ops_header(base) + "\n")
        echo(ops_table(ops, base) + "\n")
    if models:
        base = next((r["provider"] for r in models if _f(r.get("speedup")) == 1.0), "baseline")
        echo(models_header(base) + "\n")
        echo(models_table(models) + "\n")
    for name in ("ops_speedup.png", "roofline.png", "models_throughput.png"):
        if os.path.exists(os.path.join(out_dir, name)):
            echo(f"![{name}]({name})")
    return 0


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------

def _split(s):
    return [v for v in s.split(",") if v] if s else None


def _choices(values, allowed, what, ap):
    for v in values or []:
        if v not in allowed:
            ap.error(f"unknown {what} {v!r}; choose from {','.join(allowed)}")
    return values


def _defaults_text(key, fmt=lambda v: ",".join(map(str, v))) -> str:
    return "; ".join(f"{'GPU' if k == 'cuda' else 'CPU'} {fmt(d[key])}" for k, d in DEFAULTS.items())


def parser():
    ap = argparse.ArgumentParser(prog="python -m fastcnn bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="all", choices=["all", "ops", "models", "plot", "report"],
                    help="all (default): ops then models; ops or models alone; plot/report: the PNGs or markdown "
                    "tables again from --out's CSVs (newest run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu)")
    ap.add_argument("--out", default=None, metavar="DIR", help="folder for ops.csv, models.csv and the PNGs; rows "
                    f"are appended (default: ./{DEFAULT_OUT}/<device>, under the current directory)")
    ap.add_argument("--quick", action="store_true", help="a one-minute smoke run: a few layers, LeNet-5, short "
                    "timing, op batch 8 on a CPU")
    ap.add_argument("--nets", default=None, help="networks: ops of lenet5,alexnet,googlenet,resnet50; models of "
                    "those and resnet18 (default: all)")
    ap.add_argument("--ops", default=None, help=f"op filter: {','.join(OPS)} (default: all)")
    ap.add_argument("--dtypes", default=None, help="fp32 (exact), tf32, fp16, bf16 (default: "
                    + _defaults_text("dtypes") + ")")
    ap.add_argument("--layouts", default=None, help="nchw, nhwc (default: " + _defaults_text("layouts") + ")")
    ap.add_argument("--providers", default=None, help="cudnn, torch_compile, torch_compile_max_autotune, "
                    "fastcnn_cuda, fastcnn_triton, fastcnn (GPU); torch_cpu, fastcnn_cpu, torch_compile (CPU); "
                    "the baseline always runs (default: " + "; ".join(
                        f"{'GPU' if k == 'cuda' else 'CPU'} {','.join(v)}" for k, v in bench_ops.PROVIDERS.items()) + ")")
    ap.add_argument("--modes", default=None, help="op modes fwd,bwd,fwd+bwd and/or network modes inference,train "
                    "(default: every op mode (--quick: fwd,fwd+bwd) and both network modes)")
    ap.add_argument("--batch", type=int, default=None, help="op batch for every layer (default per network: " +
                    "; ".join(f"{'GPU' if k == 'cuda' else 'CPU'} " + ", ".join(f"{n} {b}" for n, b in v.items())
                              for k, v in bench_ops.BATCH.items()) + "; --quick on a CPU: 8)")
    ap.add_argument("--batches", default=None, help="network batches, comma list (default: GPU 1,32,256; CPU " +
                    ", ".join(f"{n} {b}" + (f" at {s}x{s}" if s else "") for n, (b, s) in
                              bench_models.CPU_CONFIGS.items()) + ")")
    ap.add_argument("--rounds", type=int, default=3, help="network timings: measure each provider this often, "
                    "alternating them; rows report the median over every round and the range of the per-round "
                    "speedups (default: 3)")
    ap.add_argument("--cuda-graphs", action="store_true", help="networks: capture each step in a CUDA graph "
                    "(every provider) and time its replay")
    ap.add_argument("--no-plots", action="store_true", help="write the CSVs only, not ops_speedup.png, roofline.png "
                    "and models_throughput.png (matplotlib is then not needed)")
    return ap


def main(argv=None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    device = a.device
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    d = DEFAULTS[kind]
    out_dir = a.out or os.path.join(DEFAULT_OUT, device_slug(device))
    if a.what == "plot":
        return 0 if plot(out_dir) else 1
    if a.what == "report":
        return report(out_dir)
    nets = _split(a.nets)
    _choices(nets, bench_models.NAMES, "network", ap)
    a.nets_ops = [n for n in nets if n in OP_NETS] if nets else None
    a.nets_models = nets
    a.ops = _choices(_split(a.ops), OPS, "op", ap)
    a.dtypes = _choices(_split(a.dtypes), DTYPES, "dtype", ap) or d["dtypes"]
    if kind == "cpu" and any(x in ("tf32", "fp16", "bf16") for x in a.dtypes):
        ap.error("on a CPU only fp32 is benchmarked (the CPU kernels compute half types in float32)")
    a.layouts = _choices(_split(a.layouts), LAYOUTS, "layout", ap) or d["layouts"]
    modes = _split(a.modes) or []
    _choices(modes, ("fwd", "bwd", "fwd+bwd", "inference", "train"), "mode", ap)
    a.op_modes = [m for m in modes if m in ("fwd", "bwd", "fwd+bwd")] or (["fwd", "fwd+bwd"] if a.quick
                                                                           else d["op_modes"])
    a.model_modes = [m for m in modes if m in ("inference", "train")] or ["inference", "train"]
    provs = _split(a.providers)
    known = bench_ops.PROVIDERS[kind] + bench_models.EXTRA_PROVIDERS[kind] + (
        ["torch_compile_max_autotune"] if kind == "cuda" else [])
    _choices(provs, known, "provider", ap)
    a.providers, a.providers_models = provs, provs
    a.batch_ops = a.batch
    a.batches = [int(b) for b in _split(a.batches)] if a.batches else ([None] if a.quick else d["batches"])
    if a.quick and kind == "cpu":
        a.batch_ops = a.batch_ops or 8
    os.makedirs(out_dir, exist_ok=True)

    torch.manual_seed(0)
    peaks = measure_peaks(device, a.quick)
    peaks["timestamp"] = common.env_row(device)["timestamp"]
    print(f"fastcnn bench on {common.device_name(device)}: peaks {peaks['peak_tflops']:.3g} TFLOP/s "
          f"({peaks['peak_matmul']}), {peaks['peak_gbps']:.3g} GB/s (copy); results in {out_dir}")
    base = bench_ops.BASELINE[kind]
    if a.what in ("all", "ops"):
        rows = run_ops(a, device, peaks, os.path.join(out_dir, "ops.csv"))
        print("\n" + ops_header(base) + "\n")
        print(ops_table([{k: str(v) if v is not None else "" for k, v in r.items()} for r in rows], base))
    if a.what in ("all", "models"):
        rows = run_models(a, device, peaks, os.path.join(out_dir, "models.csv"))
        print("\n" + models_header(base) + "\n")
        print(models_table([{k: str(v) if v is not None else "" for k, v in r.items()} for r in rows]))
    if not a.no_plots:
        print()
        plot(out_dir)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
