"""Per-op benchmark: every conv / pool / 1x1 / add layer shape of LeNet-5, AlexNet, GoogLeNet and
ResNet-50 (bench/shapes.py), fastcnn against PyTorch.

Baselines compute what a PyTorch user writes for the same layer: ``relu(conv2d(x, w, b) + r)`` with
separate bias/add/ReLU passes (cuDNN or oneDNN conv), ``max_pool2d``, ``relu(a + b)``. Both sides
get the same dtype and memory format; on the GPU ``cudnn.benchmark=True``.

Modes: ``fwd`` (no autograd), ``bwd`` (backward of a retained graph), ``fwd+bwd``. A network's first
layer computes no input gradient, as in training.

    python -m fastcnn.bench.bench_ops --device cpu            # the CPU check of issue 2
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch
import torch.nn.functional as F

from . import common
from .shapes import Layer, layers

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "fp64": torch.float64}
BATCH = {
    "cpu": {"lenet5": 64, "alexnet": 4, "googlenet": 4, "resnet50": 4},
    "cuda": {"lenet5": 256, "alexnet": 256, "googlenet": 128, "resnet50": 256},
}
BASELINE, PROVIDERS, FASTCNN_BACKEND = common.BASELINE, common.PROVIDERS, common.FASTCNN_BACKEND


def is_first(layer: Layer) -> bool:
    return layer.name == "conv1"


def make_inputs(layer: Layer, batch: int, dtype, layout: str, device: str, grad: bool, seed: int = 0):
    # drawn on the device: a ResNet-50 batch-256 activation is 200M values, seconds of CPU randn each
    g = torch.Generator(device=device).manual_seed(seed)
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format

    def rnd(*shape, scale=1.0, fmt_=None):
        t = (torch.randn(*shape, generator=g, device=device) * scale).to(dtype=dtype)
        return t.contiguous(memory_format=fmt_) if fmt_ is not None else t

    t = {"x": rnd(batch, layer.C, layer.H, layer.W, fmt_=fmt)}
    if layer.op in ("conv2d", "conv1x1"):
        fan_in = (layer.C // layer.groups) * layer.R * layer.S
        t["w"] = rnd(layer.K, layer.C // layer.groups, layer.R, layer.S, scale=fan_in ** -0.5, fmt_=fmt)
        t["b"] = rnd(layer.K, scale=0.1) if layer.bias else None
        t["r"] = rnd(batch, layer.K, layer.P, layer.Q, fmt_=fmt) if layer.residual else None
    elif layer.op == "add_relu":
        t["y"] = rnd(batch, layer.C, layer.H, layer.W, fmt_=fmt)
    if grad:
        for k, v in t.items():
            if v is not None and not (k == "x" and is_first(layer)):
                v.requires_grad_(True)
    return t


def torch_fn(layer: Layer, t):
    """The plain PyTorch computation of the layer (conv, then bias/residual/ReLU as separate ops)."""
    if layer.op in ("conv2d", "conv1x1"):
        def f():
            y = F.conv2d(t["x"], t["w"], t["b"], layer.stride, layer.padding, layer.dilation, layer.groups)
            if t["r"] is not None:
                y = y + t["r"]
            return F.relu(y) if layer.relu else y
    elif layer.op == "max_pool2d":
        def f():
            return F.max_pool2d(t["x"], layer.R, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)
    else:
        def f():
            return F.relu(t["x"] + t["y"])
    return f


def fastcnn_fn(layer: Layer, t):
    import fastcnn.functional as FF

    act = "relu" if layer.relu else None
    if layer.op == "conv1x1":
        return lambda: FF.conv1x1(t["x"], t["w"], t["b"], layer.stride, residual=t["r"], activation=act)
    if layer.op == "conv2d":
        return lambda: FF.conv2d(t["x"], t["w"], t["b"], layer.stride, layer.padding, layer.dilation, layer.groups,
                                 residual=t["r"], activation=act)
    if layer.op == "max_pool2d":
        return lambda: FF.max_pool2d(t["x"], layer.R, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)
    return lambda: FF.add_relu(t["x"], t["y"])


def provider_fn(provider: str, layer: Layer, t):
    if provider in ("torch_cpu", "cudnn"):
        return torch_fn(layer, t), contextlib.nullcontext
    if provider.startswith("torch_compile"):
        mode = "max-autotune" if provider.endswith("max_autotune") else None
        return torch.compile(torch_fn(layer, t), mode=mode, dynamic=False), contextlib.nullcontext
    import fastcnn

    backend = FASTCNN_BACKEND[provider]
    return fastcnn_fn(layer, t), (lambda: fastcnn.backend(backend))


def bench_case(layer, provider, mode, dtype_name, layout, batch, device, quick=False, inputs=None):
    """One timed case; ``inputs`` (make_inputs' dict, ``fwd`` mode only) lets providers share one draw."""
    dtype = DTYPES[dtype_name]
    grad = mode != "fwd"
    t = inputs if inputs is not None and not grad else make_inputs(layer, batch, dtype, layout, device, grad)
    fn, ctx = provider_fn(provider, layer, t)
    leaves = [v for v in t.values() if v is not None and v.requires_grad]
    with ctx():
        if mode == "fwd":
            def run():
                with torch.no_grad():
                    return fn()
        else:
            y = fn()
            gy = torch.randn_like(y)
            if mode == "bwd":
                def run():
                    return torch.autograd.grad(y, leaves, gy, retain_graph=True)
            else:
                def run():
                    return torch.autograd.grad(fn(), leaves, gy)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        p50, p20, p80 = common.time_fn(run, device, quick)
        peak_mb = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    mult = {"fwd": 1, "bwd": 2, "fwd+bwd": 3}[mode]
    elem = torch.finfo(dtype).bits // 8
    row = {"kind": "op", "name": f"{layer.net}.{layer.name}", "op": layer.op, "mode": mode, "dtype": dtype_name,
           "layout": layout, "batch": batch, "shape": layer.shape, "provider": provider, "ms_p50": p50,
           "ms_p20": p20, "ms_p80": p80, "tflops": layer.flops(batch) * mult / (p50 * 1e-3) / 1e12,
           "gbps": layer.bytes(batch, elem) * (1 if mode == "fwd" else 3) / (p50 * 1e-3) / 1e9,
           "peak_mem_mb": peak_mb}
    return row


def run(device="cpu", nets=None, ops=None, modes=("fwd", "fwd+bwd"), layouts=("nchw", "nhwc"), dtype="fp32",
        providers=None, batch=None, quick=False, out=None, echo=print, only=None):
    providers = providers or PROVIDERS["cuda" if device.startswith("cuda") else "cpu"]
    base = BASELINE["cuda" if device.startswith("cuda") else "cpu"]
    if base not in providers:
        providers = [base] + list(providers)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        tf32 = dtype == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    todo = only or layers(nets, ops or ("conv2d", "conv1x1", "max_pool2d", "add_relu"))
    rows = []
    env = common.env_row(device)
    for layer in todo:
        b = batch or BATCH["cuda" if device.startswith("cuda") else "cpu"][layer.net]
        for layout in layouts:
            for mode in modes:
                group = {}
                for prov in providers:
                    try:
                        group[prov] = bench_case(layer, prov, mode, dtype, layout, b, device, quick)
                    except Exception as exc:  # a provider that cannot run a case is reported, not fatal
                        echo(f"  skip {prov} {layer.net}.{layer.name} {mode} {layout}: {type(exc).__name__}: {exc}")
                base_ms = group.get(base, {}).get("ms_p50")
                for prov, r in group.items():
                    r["speedup"] = base_ms / r["ms_p50"] if base_ms else None
                    rows.append({**env, **r})
                if base_ms:
                    line = "  ".join(f"{p} {r['ms_p50']:.3f}ms" for p, r in group.items())
                    echo(f"{layer.net:9s} {layer.name:22s} {layer.shape:36s} {mode:7s} {layout}  {line}")
    if out:
        common.append_csv(out, rows)
    return rows


def summarize(rows, baseline, echo=print):
    """Speedup (baseline time / provider time, > 1: faster) per provider, mode and layout: the
    geomean over the layers, the lowest and the highest; returns the overall geomean."""
    import collections

    groups = collections.defaultdict(list)
    for r in rows:
        if r["provider"] != baseline and r.get("speedup"):
            groups[(r["provider"], r["mode"], r["layout"])].append(r["speedup"])
    summary = []
    for (prov, mode, layout), speedups in sorted(groups.items()):
        summary.append({"provider": prov, "mode": mode, "layout": layout, "layers": len(speedups),
                        "geomean speedup": common.geomean(speedups), "lowest": min(speedups),
                        "highest": max(speedups)})
    alls = [r["speedup"] for r in rows if r["provider"] != baseline and r.get("speedup")]
    echo(f"speedup = {baseline} time / provider time per layer (> 1: faster)")
    echo(common.markdown_table(summary, ["provider", "mode", "layout", "layers", "geomean speedup", "lowest",
                                         "highest"]))
    echo(f"overall geomean speedup vs {baseline}: {common.geomean(alls):.3f} over {len(alls)} cases (> 1: faster)")
    return common.geomean(alls)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cpu or cuda (default: cuda when a GPU is visible, else cpu)")
    ap.add_argument("--nets", default=None, help="comma list of lenet5,alexnet,googlenet,resnet50 (default: all)")
    ap.add_argument("--ops", default=None, help="comma list of conv2d,conv1x1,max_pool2d,add_relu (default: all)")
    ap.add_argument("--modes", default="fwd,fwd+bwd", help="fwd, bwd, fwd+bwd (default: fwd,fwd+bwd)")
    ap.add_argument("--layouts", default="nchw,nhwc", help="nchw, nhwc (default: both)")
    ap.add_argument("--dtype", default=None, help="fp32 (CPU default), tf32, fp16, bf16 (GPU default)")
    ap.add_argument("--providers", default=None, help="comma list (default: the baseline and fastcnn's backends of "
                    "this device: " + "; ".join(f"{k}: {','.join(v)}" for k, v in PROVIDERS.items()) + ")")
    ap.add_argument("--batch", type=int, default=None, help="images per call (default per network: " +
                    "; ".join(f"{k} " + ", ".join(f"{n} {b}" for n, b in v.items()) for k, v in BATCH.items()) + ")")
    ap.add_argument("--quick", action="store_true", help="short timing (CI's smoke run)")
    ap.add_argument("--out", default=None, help="CSV to append the rows to (default: none, only the table)")
    a = ap.parse_args(argv)
    split = lambda s: [v for v in s.split(",") if v] if s else None  # noqa: E731
    dtype = a.dtype or ("bf16" if a.device.startswith("cuda") else "fp32")
    rows = run(a.device, split(a.nets), split(a.ops), split(a.modes), split(a.layouts), dtype, split(a.providers),
               a.batch, a.quick, a.out)
    g = summarize(rows, BASELINE["cuda" if a.device.startswith("cuda") else "cpu"])
    return 0 if g == g else 1


if __name__ == "__main__":
    sys.exit(main())
