"""``python -m fastcnn bench`` (or ``fastcnn-bench``): the benchmark suite, per op and per network.

    python -m fastcnn bench                       # ops + networks on this machine's device
    python -m fastcnn bench --quick --out DIR     # a smoke run of about a minute (CPU included)
    python -m fastcnn bench ops --nets resnet50 --dtypes bf16 --layouts nhwc
    python -m fastcnn bench models --nets resnet50 --batches 1,32,256 --cuda-graphs
    python -m fastcnn bench plot --out DIR        # the PNGs again, from DIR's CSVs
    python -m fastcnn bench report --out DIR      # markdown tables from DIR's CSVs (for READMEs)

Rows are appended to ``DIR/ops.csv`` and ``DIR/models.csv`` (default DIR: bench/results/<device
slug>); the plots are drawn from those files, never from memory: ``ops_speedup.png`` (time ratio per
layer against the baseline), ``roofline.png`` (achieved TFLOP/s against arithmetic intensity under
the measured peaks) and ``models_throughput.png`` (images/s per network and provider).

What each number means (bench/README.md says more): ``ms_p50`` the median time, ``ms_p20``/``ms_p80``
its spread; ``tflops`` counted FLOPs (2 per multiply-add) over the median; ``gbps`` the fewest bytes
the op must move (each input read once, each output written once) over the median; ``frac_peak_*``
these over the device's peaks measured at the start of the run (a large matmul, a large copy);
``speedup`` the baseline's time over the provider's (baseline: ``cudnn`` on a GPU, ``torch_cpu`` on a
CPU; > 1 is faster than it). dtype ``tf32`` is float32 with TF32 allowed on both sides; ``fp32``
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
            "batches": [None]},  # None: bench_models' CPU batch (LeNet 64, others 8)
}
# --quick: one small layer per op kind, LeNet-5 only, short timing; about a minute on 2 cores.
QUICK_LAYERS = {"lenet5.conv1", "lenet5.conv2", "lenet5.pool1", "resnet50.layer1.0.conv1", "resnet50.layer1.add"}


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
    """Per provider, mode, dtype and layout: geomean time ratio to the baseline, best and worst."""
    import collections

    groups = collections.defaultdict(list)
    for r in rows:
        s = _f(r.get("speedup"))
        if r["provider"] != baseline and s:
            groups[(r["provider"], r["mode"], r["dtype"], r["layout"])].append(1.0 / s)
    out = [{"provider": p, "mode": m, "dtype": d, "layout": lay, "layers": len(v),
            "geomean time ratio": common.geomean(v), "best": min(v), "worst": max(v)}
           for (p, m, d, lay), v in sorted(groups.items())]
    return common.markdown_table(out, ["provider", "mode", "dtype", "layout", "layers", "geomean time ratio",
                                       "best", "worst"])


def models_table(rows):
    out = [{"network": r["name"], "mode": r["mode"], "dtype": r["dtype"], "layout": r["layout"],
            "batch": r["batch"], "provider": r["provider"], "ms": _f(r["ms_p50"]),
            "images/s": _f(r.get("images_per_s")), "speedup": _f(r.get("speedup")),
            "p20-p80": (f"{_f(r['speedup_p20']):.2f}-{_f(r['speedup_p80']):.2f}"
                        if _f(r.get("speedup_p20")) and _f(r.get("speedup_p80")) else "-"),
            "peak MB": _f(r.get("peak_mem_mb")), "graphs": r.get("cuda_graphs", "")} for r in rows]
    out = [{k: ("-" if v is None else v) for k, v in r.items()} for r in out]
    return common.markdown_table(out, ["network", "mode", "dtype", "layout", "batch", "provider", "ms", "images/s",
                                       "speedup", "p20-p80", "peak MB", "graphs"])


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
        cases = sorted({(r["mode"], r["dtype"], r["layout"]) for r in ops})
        provs = sorted({r["provider"] for r in ops if r["provider"] != base})
        fig, axes = plt.subplots(len(cases), 1, figsize=(max(8, 0.25 * len(ops) / max(1, len(cases))),
                                                          3.2 * len(cases)), squeeze=False)
        for ax, (mode, dtype, layout) in zip(axes[:, 0], cases):
            sel = [r for r in ops if (r["mode"], r["dtype"], r["layout"]) == (mode, dtype, layout)]
            names = list(dict.fromkeys(r["name"] for r in sel))
            width = 0.8 / max(1, len(provs))
            for i, p in enumerate(provs):
                ys = [next((_f(r["speedup"]) or 0 for r in sel if r["name"] == n and r["provider"] == p), 0)
                      for n in names]
                ax.bar([j + i * width for j in range(len(names))], ys, width, label=p)
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
            ax.set_xticklabels(names, rotation=90, fontsize=6)
            ax.set_ylabel(f"speedup over {base}")
            ax.set_title(f"per layer, {mode}, {dtype}, {layout} (> 1: faster than {base})")
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, "ops_speedup.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        peak_t, peak_b = _f(ops[0].get("peak_tflops")), _f(ops[0].get("peak_gbps"))
        fig, ax = plt.subplots(figsize=(7, 5))
        pts = [(r, _f(r["tflops"]), _f(r["gbps"])) for r in ops if r["mode"] == "fwd"]
        for p in sorted({r["provider"] for r, _, _ in pts}):
            xs = [t * 1e3 / g for r, t, g in pts if r["provider"] == p and t and g]
            ys = [t for r, t, g in pts if r["provider"] == p and t and g]
            ax.scatter(xs, ys, s=12, label=p)
        if peak_t and peak_b:
            import numpy as np

            x = np.logspace(-1, 4, 200)
            ax.plot(x, np.minimum(peak_t, peak_b * x / 1e3), "k--", lw=1,
                    label=f"measured roof: {peak_t:.3g} TFLOP/s, {peak_b:.3g} GB/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP per byte moved, fewest bytes)")
        ax.set_ylabel("achieved TFLOP/s (forward)")
        ax.set_title(f"roofline: {ops[0]['device']}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, "roofline.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    models = latest(read_csv(os.path.join(out_dir, "models.csv")))
    if models:
        keys = list(dict.fromkeys((r["name"], r["mode"], r["batch"], r["dtype"], r["layout"]) for r in models))
        provs = list(dict.fromkeys(r["provider"] for r in models))
        fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(keys)), 4.5))
        width = 0.8 / max(1, len(provs))
        for i, p in enumerate(provs):
            ys = [next((_f(r.get("images_per_s")) or 0 for r in models
                        if (r["name"], r["mode"], r["batch"], r["dtype"], r["layout"]) == k and r["provider"] == p),
                       0) for k in keys]
            ax.bar([j + i * width for j in range(len(keys))], ys, width, label=p)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
        ax.set_xticklabels([f"{n}\n{m} b{b}\n{d} {lay}" for n, m, b, d, lay in keys], fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("images / s (higher is better)")
        ax.set_title(f"network throughput: {models[0]['device']}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, "models_throughput.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
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
        echo(f"Per op (time ratio to {base}; < 1 is faster):\n")
        echo(ops_table(ops, base) + "\n")
    if models:
        echo("Per network:\n")
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


def parser():
    ap = argparse.ArgumentParser(prog="python -m fastcnn bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="all", choices=["all", "ops", "models", "plot", "report"],
                    help="all (default): ops then models; plot/report: from --out's CSVs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="folder for ops.csv, models.csv and the PNGs "
                    "(default bench/results/<device>)")
    ap.add_argument("--quick", action="store_true", help="a one-minute smoke run: a few layers, LeNet-5, short "
                    "timing")
    ap.add_argument("--nets", default=None, help="networks: ops of lenet5,alexnet,googlenet,resnet50; models of "
                    "those and resnet18 (default: all)")
    ap.add_argument("--ops", default=None, help=f"op filter: {','.join(OPS)}")
    ap.add_argument("--dtypes", default=None, help="fp32 (exact), tf32, fp16, bf16 (default: bf16 on a GPU, "
                    "fp32 on a CPU)")
    ap.add_argument("--layouts", default=None, help="nchw, nhwc (default: nhwc on a GPU, both on a CPU)")
    ap.add_argument("--providers", default=None, help="cudnn, torch_compile, torch_compile_max_autotune, "
                    "fastcnn_cuda, fastcnn_triton, fastcnn (GPU); torch_cpu, fastcnn_cpu (CPU); the baseline "
                    "always runs")
    ap.add_argument("--modes", default=None, help="op modes fwd,bwd,fwd+bwd and/or network modes inference,train")
    ap.add_argument("--batch", type=int, default=None, help="op batch (default per network: bench_ops.BATCH)")
    ap.add_argument("--batches", default=None, help="network batches (default 1,32,256 on a GPU; 64/8 on a CPU)")
    ap.add_argument("--rounds", type=int, default=3, help="network timings: rounds, providers interleaved; "
                    "medians and p20-p80 over rounds")
    ap.add_argument("--cuda-graphs", action="store_true", help="networks: capture each step in a CUDA graph "
                    "(every provider) and time its replay")
    ap.add_argument("--no-plots", action="store_true")
    return ap


def main(argv=None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    device = a.device
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    d = DEFAULTS[kind]
    out_dir = a.out or os.path.join(common.RESULTS_DIR, device_slug(device))
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
        print(f"\nPer op (time ratio to {base}; < 1 is faster):\n")
        print(ops_table([{k: str(v) if v is not None else "" for k, v in r.items()} for r in rows], base))
    if a.what in ("all", "models"):
        rows = run_models(a, device, peaks, os.path.join(out_dir, "models.csv"))
        print("\nPer network:\n")
        print(models_table([{k: str(v) if v is not None else "" for k, v in r.items()} for r in rows]))
    if not a.no_plots:
        print()
        plot(out_dir)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
