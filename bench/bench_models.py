"""Whole-network benchmark: fastcnn.models against the same networks in plain PyTorch, inference and
a training step.

The baseline is torchvision's model when torchvision imports, else the plain-PyTorch copy in
``fastcnn.testing.reference_models`` (the same modules and forward); the fastcnn model loads the baseline's
state_dict, and its inference output is checked against the baseline's before timing. Both sides get
the same dtype, memory format and batch; on the GPU ``cudnn.benchmark=True`` and TF32 only for
``--dtype tf32``.

* ``inference``: ``model.eval()`` under ``torch.inference_mode()`` (fastcnn: BN folded and cached);
* ``train``: ``model.train()``, one SGD step (momentum 0.9) on cross-entropy (GoogLeNet: + 0.3 x each
  auxiliary loss, as torchvision's recipe): zero_grad, forward, backward, step.

Rows go to ``--out`` (bench/common.COLUMNS, kind ``model``, plus ``images_per_s``, ``rounds``,
``speedup_lo``, ``speedup_hi``); ``speedup`` is the baseline's time over the provider's (> 1:
faster). The summary prints the speedup per network and mode with its range over rounds and the
lowest one (``--min-speedup S`` makes the exit status 1 below S).

    python -m fastcnn.bench.bench_models --device cpu --nets lenet5,resnet18 --quick
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch
import torch.nn.functional as F

from fastcnn.testing import rel_err
from fastcnn.testing.reference_models import NAMES, plain_model

from . import common

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "fp64": torch.float64}
BATCH = {"cpu": {"lenet5": 64, "default": 8}, "cuda": {"lenet5": 1024, "default": 64}}
# The CPU defaults (batch, image size; None: the network's own): issue 20's configurations, seconds
# per training step on 2 cores. An explicit --batch / --image-size replaces them.
CPU_CONFIGS = {"lenet5": (64, None), "alexnet": (8, 127), "googlenet": (4, 112), "resnet18": (8, 112),
               "resnet50": (4, 112)}
BASELINE, FASTCNN_BACKEND = common.BASELINE, common.FASTCNN_BACKEND
# "fastcnn_fuse": fastcnn.fuse() of the baseline model itself (the torchvision-user path), on the
# auto backend; its speedup is over the same model unfused.
FUSE = "fastcnn_fuse"
PROVIDERS = {k: v + [FUSE] for k, v in common.PROVIDERS.items()}
# The network fusions (fastcnn.fusions: GoogLeNet's blocks without cat, sibling 1x1 convs, the pool
# in its projection) switched off, to measure them in the same run: the zoo model with
# network_fusions=False, and fuse(base, network_fusions=False). Opt-in (--providers).
NOFUSION = {"fastcnn_nofusion": "fastcnn", "fastcnn_fuse_nofusion": FUSE}
# Offered, not run by default: max-autotune compiles for minutes per network.
EXTRA_PROVIDERS = {"cpu": ["torch_compile"], "cuda": ["torch_compile_max_autotune"]}
MODES = ("inference", "train")
DEFAULT_NETS = ("lenet5", "alexnet", "googlenet", "resnet18", "resnet50")


def _kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def input_shape(name: str, image_size: int | None = None):
    """(C, H, W) of one image: LeNet-5 1x28x28, the others 3x224x224 (or ``image_size``)."""
    if name == "lenet5":
        return (1, 28, 28)
    s = image_size or 224
    return (3, s, s)


def _calibrate_bn(model, shape):
    """Running statistics from one random batch (fresh ones, mean 0 and variance 1, let the
    activations of a freshly initialised network fade, which would make the output check vacuous)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(4, *shape))
    for m, mom in zip(bns, saved):
        m.momentum = mom


def build_pair(name: str, num_classes: int = 1000, seed: int = 0, image_size: int | None = None):
    """(baseline, fastcnn) float32 models with the same weights and calibrated BN statistics."""
    import fastcnn

    torch.manual_seed(seed)
    kwargs = {} if name == "lenet5" else {"num_classes": num_classes}
    base = plain_model(name, prefer_torchvision=True, **kwargs)
    _calibrate_bn(base, input_shape(name, image_size))
    fm = fastcnn.models.MODELS[name](**kwargs)
    fm.load_state_dict(base.state_dict(), strict=True)
    return base, fm


def _loss(out, target):
    if isinstance(out, tuple):  # GoogLeNet in train mode: (logits, aux2, aux1)
        logits, *aux = out
        return F.cross_entropy(logits, target) + sum(0.3 * F.cross_entropy(a, target) for a in aux if a is not None)
    return F.cross_entropy(out, target)


def make_step(model, mode: str, x, target):
    """The timed callable: an inference forward, or a full SGD training step."""
    if mode == "inference":
        model.eval()

        def step():
            with torch.inference_mode():
                return model(x)
        return step
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = _loss(model(x), target)
        loss.backward()
        opt.step()
        return loss
    return step


@contextlib.contextmanager
def _provider_context(provider: str):
    if provider in FASTCNN_BACKEND or provider == FUSE or provider in NOFUSION:
        import fastcnn

        with fastcnn.backend(FASTCNN_BACKEND.get(provider, "auto")):
            yield
    else:
        yield


def _prepare(provider, base, fm, device, dtype, layout):
    import copy

    if provider in (FUSE, "fastcnn_fuse_nofusion"):
        import fastcnn

        model = fastcnn.fuse(base, network_fusions=provider == FUSE)  # a deep copy
    elif provider == "fastcnn_nofusion":
        model = copy.deepcopy(fm)
        if hasattr(model, "set_network_fusions"):
            model.set_network_fusions(False)
    else:
        model = fm if provider in FASTCNN_BACKEND else base
    model = model.to(device=device, dtype=dtype)
    if layout == "nhwc":
        model = model.to(memory_format=torch.channels_last)
    if provider == "torch_compile":
        model = torch.compile(model)
    elif provider == "torch_compile_max_autotune":
        model = torch.compile(model, mode="max-autotune-no-cudagraphs")
    return model


def graphed(step):
    """The step captured in a CUDA graph (after warm-up on a side stream, as torch.cuda.graph's
    documentation does); the timed callable replays it. Same for every provider."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    return g.replay


def _flops(base, shape, mode):
    """FLOPs of one image (inference) or one image's training step, counted on the baseline."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(base).train(mode == "train")  # a train forward would move base's running stats
    x = torch.randn(1, *shape)
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            if mode == "train":
                m.zero_grad(set_to_none=True)
                _loss(m(torch.cat([x, x])), torch.zeros(2, dtype=torch.long)).backward()
            else:
                with torch.no_grad():
                    m(x)
    except Exception:  # FLOPs are informative only
        return None
    return counter.get_total_flops() / (2 if mode == "train" else 1)


def _check_outputs(base, fm, x, dtype_name, echo):
    """Inference outputs of the two models (fp32/fp64 only): a broken model is not benchmarked.
    Returns the relative error (None for other dtypes)."""
    if dtype_name not in ("fp32", "fp64"):
        return None
    base.eval()
    fm.eval()
    with torch.inference_mode():
        err = rel_err(fm(x), base(x))
    if not err < 1e-3:
        raise RuntimeError(f"fastcnn output differs from the baseline: relative error {err:.3e}")
    echo(f"  outputs agree (relative error {err:.1e})")
    return err


def run(device="cpu", nets=None, modes=MODES, batch=None, dtype="fp32", layout="nchw", providers=None,
        quick=False, out=None, image_size=None, rounds=1, num_classes=1000, echo=print, cuda_graphs=False):
    """Time every (network, mode, provider); returns the rows (appended to ``out`` when given).

    ``rounds`` > 1 repeats each provider's measurement, alternating providers; each row reports the
    median and p20/p80 over the samples of every round, and ``speedup_lo``/``speedup_hi``, the
    range of the per-round speedups (baseline round median / provider round median). On the CPU,
    ``batch``/``image_size`` None take CPU_CONFIGS."""
    kind = _kind(device)
    providers = list(providers or PROVIDERS[kind])
    base_name = BASELINE[kind]
    if base_name not in providers:
        providers = [base_name] + providers
    if kind == "cuda":
        torch.backends.cudnn.benchmark = True
        tf32 = dtype == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    tdtype = DTYPES[dtype]
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    env = common.env_row(device)
    rows = []
    size_arg = image_size
    for name in nets or DEFAULT_NETS:
        cfg_b, cfg_s = CPU_CONFIGS.get(name, (None, None)) if kind == "cpu" else (None, None)
        b = batch or cfg_b or BATCH[kind].get(name, BATCH[kind]["default"])
        image_size = size_arg or cfg_s
        shape = input_shape(name, image_size)
        base, fm = build_pair(name, num_classes, image_size=image_size)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(b, *shape, generator=g).to(device=device, dtype=tdtype).contiguous(memory_format=fmt)
        target = torch.randint(0, 10 if name == "lenet5" else num_classes, (b,), generator=g).to(device)
        echo(f"{name} batch {b} input {'x'.join(map(str, shape))} {dtype} {layout}")
        flops_of = {mode: _flops(base, shape, mode) for mode in modes}  # on the CPU in float32, once
        for mode in modes:
            flops = flops_of[mode]
            steps, out_err = {}, {}
            for prov in providers:
                try:
                    model = _prepare(prov, base, fm, device, tdtype, layout)
                    if prov.startswith("fastcnn") and mode == "inference":
                        with _provider_context(prov):
                            out_err[prov] = _check_outputs(_prepare(base_name, base, fm, device, tdtype, layout),
                                                           model, x, dtype, echo)
                    step = make_step(model, mode, x, target)
                    if cuda_graphs and kind == "cuda":
                        with _provider_context(prov):
                            step = graphed(step)
                    steps[prov] = (model, step)
                except Exception as exc:  # a provider that cannot run is reported, not fatal
                    echo(f"  skip {prov} {name} {mode}: {type(exc).__name__}: {exc}")
            # Rounds alternate the providers (a shared machine's load comes and goes). A row reports
            # the median over every sample of every round with its p20/p80, and the range of the
            # per-round speedups: the spread, never the best round.
            taken, peak_mb = {prov: [] for prov in steps}, {}
            for _ in range(max(1, rounds)):
                for prov, (_, step) in steps.items():
                    if kind == "cuda":
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    with _provider_context(prov):
                        taken[prov].append(common.samples(step, device, quick))
                    if kind == "cuda":  # the allocator's peak while the step ran (CPU: not measured)
                        peak_mb[prov] = max(peak_mb.get(prov, 0.0), torch.cuda.max_memory_allocated() / 2**20)
            stats = {prov: common.summary([t for rnd in got for t in rnd]) for prov, got in taken.items() if got}
            base_ms = stats.get(base_name, (None,))[0]
            for prov, (p50, p20, p80) in stats.items():
                per_round = ([common.summary(b)[0] / common.summary(t)[0] for b, t in zip(taken[base_name], taken[prov])]
                             if base_ms else [])
                rows.append({**env, "kind": "model", "name": name, "mode": mode, "dtype": dtype, "layout": layout,
                             "batch": b, "shape": "x".join(map(str, shape)), "provider": prov, "ms_p50": p50,
                             "ms_p20": p20, "ms_p80": p80,
                             "tflops": flops * b / (p50 * 1e-3) / 1e12 if flops else None, "gbps": None,
                             "speedup": base_ms / p50 if base_ms else None, "images_per_s": b / (p50 * 1e-3),
                             "cuda_graphs": bool(cuda_graphs and kind == "cuda"), "peak_mem_mb": peak_mb.get(prov),
                             "out_rel_err": out_err.get(prov), "rounds": len(taken[prov]),
                             "speedup_lo": min(per_round) if per_round else None,
                             "speedup_hi": max(per_round) if per_round else None})
            echo("  " + f"{mode:9s} " + "  ".join(f"{p} {t[0]:.2f}ms" for p, t in stats.items()))
            # the train step mutated the models' weights: restore them for the next mode
            base, fm = build_pair(name, num_classes, image_size=image_size)
    if out:
        common.append_csv(out, rows)
    return rows


def summarize(rows, baseline, echo=print):
    """Speedup (baseline time / provider time, > 1: faster) per network and mode, with its range over
    rounds; returns the lowest speedup."""
    table, lowest = [], float("nan")
    for r in rows:
        if r["provider"] != baseline and r.get("speedup"):
            s = r["speedup"]
            table.append({"network": r["name"], "mode": r["mode"], "provider": r["provider"], "batch": r["batch"],
                          "ms": r["ms_p50"], "images/s": r["images_per_s"], "speedup": s,
                          "rounds": r.get("rounds"), "speedup range": _range(r.get("speedup_lo"), r.get("speedup_hi"))})
            lowest = s if not lowest <= s else lowest
    echo(f"speedup = {baseline} time / provider time (> 1: faster); ms: the median over every round's samples")
    echo(common.markdown_table(table, ["network", "mode", "provider", "batch", "ms", "images/s", "speedup", "rounds",
                                       "speedup range"]))
    echo(f"lowest speedup vs {baseline}: {lowest:.3f}; geomean {common.geomean([t['speedup'] for t in table]):.3f} "
         "(> 1: faster)")
    return lowest


def _range(lo, hi) -> str:
    return f"{lo:.3g}-{hi:.3g}" if lo is not None and hi is not None else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cpu or cuda (default: cuda when a GPU is visible, else cpu)")
    ap.add_argument("--nets", default=None, help=f"comma list of {','.join(NAMES)} (default "
                    f"{','.join(DEFAULT_NETS)})")
    ap.add_argument("--modes", default="inference,train", help="inference and/or train (default: both)")
    ap.add_argument("--dtype", default="fp32", help="fp32 (exact), tf32, fp16, bf16 (default: fp32)")
    ap.add_argument("--layout", default="nchw", choices=["nchw", "nhwc"], help="memory format (default: nchw)")
    ap.add_argument("--providers", default=None, help="comma list (default: the baseline and fastcnn's backends of "
                    "this device: " + "; ".join(f"{k}: {','.join(v)}" for k, v in PROVIDERS.items()) + ")")
    ap.add_argument("--batch", type=int, default=None, help="images per step (default on the CPU: CPU_CONFIGS; "
                    "1024 and 64 on the GPU)")
    ap.add_argument("--image-size", type=int, default=None, help="input size of the ImageNet networks (default on "
                    "the CPU: CPU_CONFIGS; 224 on the GPU)")
    ap.add_argument("--rounds", type=int, default=1, help="measure each provider this often, alternating them; "
                    "report the median over all rounds and the per-round speedups' range (default: 1)")
    ap.add_argument("--quick", action="store_true", help="short timing (CI's smoke run)")
    ap.add_argument("--min-speedup", type=float, default=None, help="exit 1 when a speedup (baseline time / "
                    "fastcnn time) falls below this")
    ap.add_argument("--out", default=None, help="CSV to append the rows to (default: none, only the table)")
    a = ap.parse_args(argv)
    split = lambda s: [v for v in s.split(",") if v] if s else None  # noqa: E731
    for n in split(a.nets) or []:
        if n not in NAMES:
            ap.error(f"unknown network {n!r}; choose from {','.join(NAMES)}")
    rows = run(a.device, split(a.nets), split(a.modes), a.batch, a.dtype, a.layout, split(a.providers), a.quick,
               a.out, a.image_size, a.rounds)
    lowest = summarize(rows, BASELINE[_kind(a.device)])
    if a.min_speedup is not None and not lowest >= a.min_speedup:
        print(f"lowest speedup {lowest:.3f} is below --min-speedup {a.min_speedup}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
