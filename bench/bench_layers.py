"""Per-layer profile of whole networks on the CPU: where a step's time goes, fastcnn against PyTorch.

Each network runs as in ``bench_models`` (same weights, same input, inference or a training step);
``torch.profiler`` records one step of each side per round, the two sides alternating (so that a
shared machine's load hits both alike), and every top-level op of the step is attributed to

* a **layer**: the conv it belongs to, named as the PyTorch model's module (``layer3.0.conv2``);
  the BatchNorm, ReLU and residual add that follow a conv belong to that conv's layer (fastcnn fuses
  them into the conv in inference), the max-pools are layers of their own, ``head`` is the
  classifier (avgpool, flatten, linear, loss), ``optimizer`` the SGD step and ``zero_grad``,
  ``params`` the gradient accumulation;
* a **pass**: ``fwd`` or ``bwd`` (a backward node is attributed to the forward op that created it,
  through the autograd sequence number);
* a **kind**: ``conv``, ``bn``, ``relu``, ``add``, ``add_relu``, ``pool``, ``head``, ...

Rows (one per network, mode, layer, pass, kind; plus ``kind=all`` per layer and pass, and a
``layer=total`` row per network, mode and pass): the median (``--stat min``: the fastest) over
rounds of the ms per step on each side, and ``speedup`` = PyTorch ms / fastcnn ms (> 1: faster). Profiling adds a few microseconds per op to both sides; the network totals of
``bench_models`` (no profiler) are the numbers to quote, these say where the difference sits.

    python -m fastcnn.bench.bench_layers --nets resnet18 --modes train --rounds 5 \
        --out bench/results/cpu_layers.csv
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from . import bench_models, common

# The CPU configurations of issue 20 (batch, image size): small enough for minutes per network.
CPU_CONFIGS = {"resnet18": (8, 112), "resnet50": (4, 112), "googlenet": (4, 112), "alexnet": (8, 127),
               "lenet5": (64, None)}
SMALL = False  # (debugging: tiny inputs)
DEFAULT_NETS = ("resnet18", "resnet50", "googlenet", "alexnet")
FIELDS = ["timestamp", "git_sha", "device", "torch", "threads", "network", "mode", "batch", "shape", "layer", "geometry",
          "pass", "kind", "calls", "stat", "fastcnn_ms", "torch_ms", "speedup"]


def kind_of(name: str) -> str:
    n = name.lower()
    if n.startswith("optimizer."):
        return "optimizer"
    if "accumulategrad" in n:
        return "accumulate"
    if "conv" in n:
        return "conv"
    if "batch_norm" in n or "batchnorm" in n:
        return "bn"
    if "add_relu" in n or "addrelu" in n:
        return "add_relu"
    if "relu" in n or "threshold" in n:
        return "relu"
    if "max_pool" in n or "maxpool" in n:
        return "pool"
    if any(k in n for k in ("adaptive", "avg_pool", "mean", "linear", "addmm", "flatten", "view", "reshape",
                            "cross_entropy", "log_softmax", "nll", "mmbackward", "tbackward", "::t", "::mm")):
        return "head"
    if "add" in n:
        return "add"
    if "cat" in n:
        return "cat"
    if "dropout" in n:
        return "dropout"
    return "other"


def _top_level(events):
    return [e for e in events if e.cpu_parent is None]


def _root(e):
    while e.cpu_parent is not None:
        e = e.cpu_parent
    return e


def attribute(prof):
    """{(layer index or label, pass, kind): (ms, calls)} of one profiled step, and the conv geometry
    per layer index (input and weight shapes)."""
    events = list(prof.events())
    top = sorted(_top_level(events), key=lambda e: e.time_range.start)
    bwd_prefix = "autograd::engine::evaluate_function: "
    fwd = [e for e in top if not e.name.startswith(bwd_prefix) and kind_of(e.name) != "optimizer"]
    # layer of each forward top-level op: the index of the conv it follows
    layer_of, geom, conv_i, pool_i = {}, {}, -1, 0
    for e in fwd:
        k = kind_of(e.name)
        if k == "conv":
            conv_i += 1
            layer_of[e.id] = conv_i
            shapes = e.input_shapes or []
            geom[conv_i] = " ".join("x".join(map(str, s)) for s in shapes[:2] if s)
        elif k == "pool":
            pool_i += 1
            layer_of[e.id] = f"pool{pool_i}"
        elif k == "head":
            layer_of[e.id] = "head"
        else:
            layer_of[e.id] = conv_i if conv_i >= 0 else "input"
    # autograd sequence number -> forward top-level op (last one wins: an op that creates no node
    # peeks the number the next node will get)
    seq_owner = {}
    for e in sorted(events, key=lambda e: e.time_range.start):
        if e.name.startswith(bwd_prefix) or e.sequence_nr is None or e.sequence_nr < 0:
            continue
        r = _root(e)
        if r.id in layer_of:
            seq_owner[e.sequence_nr] = r
    out = collections.defaultdict(lambda: [0.0, 0])
    for e in top:
        ms = e.cpu_time_total / 1e3
        k = kind_of(e.name)
        if e.name.startswith(bwd_prefix):
            k = kind_of(e.name[len(bwd_prefix):])
            owner = seq_owner.get(e.sequence_nr)
            if k == "accumulate":
                key = ("params", "bwd", k)
            elif owner is not None:
                key = (layer_of[owner.id], "bwd", kind_of(owner.name) if k == "other" else k)
            else:
                key = ("unmatched", "bwd", k)
        elif k == "optimizer":
            key = ("optimizer", "step", k)
        else:
            key = (layer_of[e.id], "fwd", k)
        out[key][0] += ms
        out[key][1] += 1
    return out, geom


def _rekey(table, remap):
    out = collections.defaultdict(lambda: [0.0, 0])
    for (layer, pss, kind), (ms, n) in table.items():
        k = (remap.get(layer, layer) if isinstance(layer, int) else layer, pss, kind)
        out[k][0] += ms
        out[k][1] += n
    return out


def conv_names(model):
    """Module names of the model's convs in call order (one forward on a tiny batch is not needed:
    hooks record the order of the timed steps themselves)."""
    order = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp, _n=name: order.append(_n))
             for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return order, hooks


def profile_step(step):
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    return prof


def run(nets=None, modes=bench_models.MODES, rounds=5, out=None, echo=print, stat="median"):
    import fastcnn

    env = {**common.env_row("cpu"), "threads": torch.get_num_threads(), "stat": stat}
    reduce = {"median": statistics.median, "min": min}[stat]
    rows = []
    for name in nets or DEFAULT_NETS:
        batch, size = CPU_CONFIGS[name] if not SMALL else (2, 64)
        shape = bench_models.input_shape(name, size)
        for mode in modes:
            base, fm = bench_models.build_pair(name, image_size=size)
            g = torch.Generator().manual_seed(1)
            x = torch.randn(batch, *shape, generator=g)
            target = torch.randint(0, 10 if name == "lenet5" else 1000, (batch,), generator=g)
            names, hooks = conv_names(base)
            steps = {"torch": bench_models.make_step(base, mode, x, target),
                     "fastcnn": bench_models.make_step(fm, mode, x, target)}
            with fastcnn.backend("cpu"):
                for _ in range(2):  # warm-up (weight caches, allocator)
                    for s in steps.values():
                        s()
                names.clear()
                steps["torch"]()
                layer_names = list(names)
                for h in hooks:
                    h.remove()
                per = {"torch": [], "fastcnn": []}
                geoms = {}
                for _ in range(rounds):
                    for side, s in steps.items():
                        table, geom = attribute(profile_step(s))
                        per[side].append(table)
                        geoms[side] = geom
            # the two models may run a block's convs in another order (fastcnn computes the
            # shortcut before conv2): fastcnn's convs take the name of the PyTorch conv with the
            # same geometry, in order of occurrence
            remap = {}
            for side in ("fastcnn",):
                free = collections.defaultdict(list)
                for i in sorted(geoms["torch"]):
                    free[geoms["torch"][i]].append(i)
                for i in sorted(geoms[side]):
                    q = free.get(geoms[side][i])
                    remap[i] = q.pop(0) if q else f"unmatched{i}"
            per["fastcnn"] = [_rekey(t, remap) for t in per["fastcnn"]]

            def label(li):
                return layer_names[li] if isinstance(li, int) and li < len(layer_names) else str(li)

            keys = sorted({k for side in per.values() for t in side for k in t}, key=str)
            med = {side: {k: reduce([t.get(k, (0.0, 0))[0] for t in per[side]]) for k in keys}
                   for side in per}
            calls = {k: max(t.get(k, (0.0, 0))[1] for side in per.values() for t in side) for k in keys}
            agg = collections.defaultdict(lambda: {"fastcnn": 0.0, "torch": 0.0})
            tot = collections.defaultdict(lambda: {"fastcnn": 0.0, "torch": 0.0})
            for k in keys:
                for side in per:
                    agg[(k[0], k[1])][side] += med[side][k]
                    tot[k[1]][side] += med[side][k]

            def row(layer, pss, kind, f, t, n=""):
                li = layer if isinstance(layer, int) else None
                return {**env, "network": name, "mode": mode, "batch": batch, "shape": "x".join(map(str, shape)),
                        "layer": label(layer), "geometry": geoms["torch"].get(li, "") if li is not None else "",
                        "pass": pss, "kind": kind, "calls": n, "fastcnn_ms": round(f, 4), "torch_ms": round(t, 4),
                        "speedup": round(t / f, 3) if f > 0 and t > 0 else ""}  # > 1: fastcnn faster

            for k in keys:
                rows.append(row(k[0], k[1], k[2], med["fastcnn"][k], med["torch"][k], calls[k]))
            for (layer, pss), v in agg.items():
                rows.append(row(layer, pss, "all", v["fastcnn"], v["torch"]))
            for pss, v in tot.items():
                rows.append(row("total", pss, "all", v["fastcnn"], v["torch"]))
            echo(f"{name} {mode}: " + "  ".join(f"{p} fastcnn {v['fastcnn']:.1f} ms / torch {v['torch']:.1f} ms"
                                               for p, v in tot.items()))
            worst = sorted(((v["fastcnn"] - v["torch"], k) for k, v in agg.items()), reverse=True)[:8]
            for d, (layer, pss) in worst:
                v = agg[(layer, pss)]
                echo(f"    {label(layer):24s} {pss:4s} fastcnn {v['fastcnn']:7.2f} torch {v['torch']:7.2f} "
                     f"(+{d:.2f} ms)")
    if out:
        common.append_csv(out, rows)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default=",".join(DEFAULT_NETS))
    ap.add_argument("--modes", default="inference,train")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--stat", default="median", choices=["median", "min"], help="per layer and pass over the "
                    "rounds: the median, or the fastest round (the least disturbed on a loaded machine)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", default=None, help="CSV to append to (bench/results/cpu_layers.csv)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    nets = [n for n in a.nets.split(",") if n]
    for n in nets:
        if n not in CPU_CONFIGS:
            ap.error(f"unknown network {n!r}; choose from {','.join(CPU_CONFIGS)}")
    run(nets, [m for m in a.modes.split(",") if m], a.rounds, a.out, stat=a.stat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
