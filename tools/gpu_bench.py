#!/usr/bin/env python3
"""The benchmark table's workloads for tools/gpu_run.py (child processes; rows written as they finish):

    python3 tools/gpu_bench.py peaks --out F.json                     # HBM copy, bf16 matmul
    python3 tools/gpu_bench.py ops|models|compile --state DIR --budget S [--until T] [--part-left S]

Built on fastcnn.bench (bench/): bench_ops.bench_case times one op case, bench_models' build_pair /
make_step / graphed time the networks, common.time_fn times (GPU: triton.testing.do_bench, CUDA
events, median with p20/p80), suite.measure_peaks measures the ceilings. Rows go to DIR/bench/ops.csv
and DIR/bench/models.csv in bench/common.py's columns plus EXTRA (table_line: the key of the table
line in gpu_report.TABLE; path: the code that ran), one timestamp and git sha for the whole window.

GPU cases are the issue's: bf16, channels_last, cudnn.benchmark=True, TF32 off; ops at the networks'
batches (ResNet-50 256, GoogLeNet 128, AlexNet 256); providers cudnn (PyTorch eager: conv, then the
epilogue as separate ops), fastcnn_cuda (the cuda backend, FASTCNN_SM90=off: the sm_80-style
kernels), fastcnn_sm90 (FASTCNN_SM90=force, convs the sm90 rule accepts), fastcnn_triton, and for
networks fastcnn (the default, auto). The dry run (CPU) runs the same lines at tiny sizes with
torch_cpu and fastcnn_cpu.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_report  # noqa: E402  (CSV reading; stdlib only)

from fastcnn.bench import bench_models, bench_ops, common, shapes, suite  # noqa: E402

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
DRY = os.environ.get("FASTCNN_GPU_RUN_DRY") == "1"
EXTRA = ["table_line", "path", "ran", "op", "bytes", "images_per_s", "cuda_graphs", "peak_mem_mb", "compile_s",
         "peak_tflops", "peak_gbps", "peak_matmul", "frac_peak_flops", "frac_peak_bw"]
MAX_AUTOTUNE_NEEDS_S = 600  # max-autotune of ResNet-50: minutes of Triton template autotuning (bench_models)


def sm90_module():
    import importlib.util

    if importlib.util.find_spec("fastcnn.sm90") is None:
        return None
    from fastcnn import sm90

    return sm90


@contextlib.contextmanager
def sm90_mode(mode):
    sm90 = sm90_module()
    if sm90 is None or mode is None:
        yield
        return
    with sm90.use_mode(mode):
        yield


def env_row():
    row = common.env_row(DEVICE)
    row["timestamp"] = os.environ.get("FASTCNN_GPU_RUN_TIMESTAMP", row["timestamp"])
    sha = os.environ.get("FASTCNN_GPU_RUN_SHA")
    if sha and sha != "unknown":
        row["git_sha"] = sha
    return row


def append(path, row):
    common.append_csv(path, [{**{k: None for k in common.COLUMNS + EXTRA}, **row}])


def peaks_of(state):
    try:
        with open(os.path.join(state, "peaks.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def with_peaks(row, pk):
    row.update({k: pk.get(k) for k in ("peak_tflops", "peak_gbps", "peak_matmul")})
    if pk.get("peak_tflops") and row.get("tflops"):
        row["frac_peak_flops"] = row["tflops"] / pk["peak_tflops"]
    if pk.get("peak_gbps") and row.get("gbps"):
        row["frac_peak_bw"] = row["gbps"] / pk["peak_gbps"]
    return row


def setup_flags():
    if GPU:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


# ------------------------------------------------------------------------------------------------
# peaks
# ------------------------------------------------------------------------------------------------

def smi_clocks():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,power.draw", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15).stdout.strip()
        return out or None
    except (OSError, subprocess.SubprocessError):
        return None


def cmd_peaks(out):
    torch.manual_seed(0)
    pk = suite.measure_peaks(DEVICE, quick=DRY or not GPU)
    pk["clocks_after"] = smi_clocks()
    pk["device"] = common.device_name(DEVICE)
    with open(out, "w") as f:
        json.dump(pk, f, indent=1)
    print(json.dumps(pk))
    return 0


# ------------------------------------------------------------------------------------------------
# op lines: 3x3 convs, 1x1 convs, pools and adds
# ------------------------------------------------------------------------------------------------

def _dedupe(layers):
    seen, out = set(), []
    for ly in layers:
        key = dataclasses.replace(ly, name="", count=1, net="")
        if key not in seen:
            seen.add(key)
            out.append(ly)
    return out


def op_lines():
    """(table_line, [Layer]) of the op lines, in the order they are measured (batch per network)."""
    r50 = shapes.resnet50()
    # "+ epilogue" / "+ bias": in inference BN folds into a per-channel bias, so the lines' convs carry one
    conv3 = _dedupe([dataclasses.replace(ly, bias=True) for ly in r50 if ly.op == "conv2d" and ly.R == 3])
    conv1 = _dedupe([dataclasses.replace(ly, bias=True) for ly in r50 if ly.op == "conv1x1"])
    pools = _dedupe([ly for ly in shapes.layers(ops=("max_pool2d", "add_relu")) if ly.net != "lenet5"])
    if not GPU:  # the dry run: one small layer per line is enough to exercise the formats
        small = lambda ls: sorted(ls, key=lambda ly: ly.C * ly.H * ly.W)[:1]  # noqa: E731
        return [("conv3x3", small(conv3)), ("conv1x1", small(conv1)),
                ("pool_add", small([ly for ly in pools if ly.op == "max_pool2d"]) +
                 small([ly for ly in pools if ly.op == "add_relu"]))]
    return [("conv3x3", conv3), ("conv1x1", conv1), ("pool_add", pools)]


def op_providers(layer):
    """(provider label, bench_ops provider, FASTCNN_SM90 mode) per layer."""
    if not GPU:
        return [("torch_cpu", "torch_cpu", None), ("fastcnn_cpu", "fastcnn_cpu", None)]
    sm90 = sm90_module()
    out = [("cudnn", "cudnn", None), ("fastcnn_cuda", "fastcnn_cuda", "off" if sm90 else None)]
    if sm90 is not None and sm90.available() and layer.op in ("conv2d", "conv1x1"):
        out.append(("fastcnn_sm90", "fastcnn_cuda", "force"))
    out.append(("fastcnn_triton", "fastcnn_triton", None))
    return out


def conv_paths(layer, batch, t, mode):
    """fastcnn.sm90's per-pass path for this layer's tensors in `mode`, or None without fastcnn.sm90."""
    sm90 = sm90_module()
    if sm90 is None or layer.op not in ("conv2d", "conv1x1"):
        return None
    return sm90.conv_path(t["x"], t["w"], t.get("b"), t.get("r"), layer.stride, layer.padding, layer.dilation,
                          layer.groups, mode_name=mode)


def ran(fn) -> str:
    """What fastcnn.explain saw one call of fn run: per (op, backend, kernel note) the number of calls,
    e.g. "conv2d->cuda[kernel: igemm 128x128] x1"; '' where fastcnn.explain does not exist."""
    import fastcnn

    if not hasattr(fastcnn, "explain"):
        return ""
    try:
        _, records = fastcnn.explain(fn)
    except Exception as exc:  # noqa: BLE001 - informative only
        return f"explain failed: {type(exc).__name__}"
    counts = {}
    for r in records:
        note = "; ".join(f"{k}: {v}" for k, v in r.notes.items() if k in ("kernel", "path", "config", "tile"))
        key = f"{r.op}->{r.backend}" + (f"[{note}]" if note else "")
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in counts.items())


def path_label(provider, layer, paths=None, passes=("fprop",)):
    conv = layer.op in ("conv2d", "conv1x1")
    if provider in ("cudnn", "torch_cpu"):
        return ("cuDNN conv + separate epilogue" if GPU else "oneDNN conv + separate epilogue") if conv else (
            "PyTorch eager" + (" (cuDNN)" if GPU else ""))
    if provider == "fastcnn_triton":
        return "Triton"
    if provider == "fastcnn_cpu":
        return "fastcnn C++ CPU"
    if not conv:
        return "CUDA C++"
    if paths:
        names = {"sm90-conv": "Hopper CUTLASS conv", "sm90-gemm": "Hopper CUTLASS GEMM", "cuda": "sm_80-style CUDA"}
        got = [f"{p}: {names.get(paths[p][0], paths[p][0])}" for p in passes]
        return ", ".join(got)
    return "sm_80-style CUDA (mma.sync)"


def cmd_ops(state, until):
    setup_flags()
    pk = peaks_of(state)
    out = os.path.join(state, "bench", "ops.csv")
    done = {(r["table_line"], r["name"], r["provider"]) for r in gpu_report.read_csv(out)}
    env = env_row()
    n = skipped = 0
    for line, layers in op_lines():
        for layer in layers:
            batch = 2 if not GPU else bench_ops.BATCH["cuda"][layer.net]
            name = f"{layer.net}.{layer.name}"
            todo = [p for p in op_providers(layer) if (line, name, p[0]) not in done]
            if not todo:
                continue  # measured in part 1: part 2 continues where it stopped
            if time.time() > until:
                skipped += 1
                continue
            t = bench_ops.make_inputs(layer, batch, bench_ops.DTYPES["bf16" if GPU else "fp32"], "nhwc", DEVICE,
                                      grad=False)
            group = {}
            for label, prov, mode in todo:
                try:
                    with sm90_mode(mode):
                        paths = conv_paths(layer, batch, t, mode) if label.startswith("fastcnn") and GPU else None
                        if label == "fastcnn_sm90" and paths and not paths["fprop"][0].startswith("sm90"):
                            print(f"  {name}: sm90 rejects fprop ({paths['fprop'][1]})", flush=True)
                            continue
                        row = bench_ops.bench_case(layer, prov, "fwd", "bf16" if GPU else "fp32", "nhwc", batch,
                                                   DEVICE, quick=not GPU, inputs=t)
                        if label.startswith("fastcnn"):
                            import fastcnn

                            with fastcnn.backend(common.FASTCNN_BACKEND[prov]), torch.no_grad():
                                row["ran"] = ran(bench_ops.fastcnn_fn(layer, t))
                except Exception as exc:  # noqa: BLE001 - a provider that cannot run a case is reported
                    print(f"  skip {label} {name}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                    continue
                row.update(provider=label, table_line=line, op=layer.op, path=path_label(label, layer, paths),
                           bytes=layer.bytes(batch, 2 if GPU else 4))
                group[label] = row
            base = group.get("cudnn" if GPU else "torch_cpu")
            for label, row in group.items():
                row["speedup"] = base["ms_p50"] / row["ms_p50"] if base else None
                append(out, with_peaks({**env, **row}, pk))
                n += 1
            print(f"{line:9s} {name:28s} " + "  ".join(f"{k} {v['ms_p50']:.3f}ms" for k, v in group.items()), flush=True)
            del t
    note = f"{n} rows" + (f"; {skipped} layers left (budget)" if skipped else "")
    with open(os.path.join(state, "bench_ops.json"), "w") as f:
        json.dump({"note": note, "rows": n, "left": skipped}, f)
    return 0


# ------------------------------------------------------------------------------------------------
# network lines
# ------------------------------------------------------------------------------------------------

def model_lines():
    """(table_line, network, mode, batch, CUDA graphs, providers) of the network lines."""
    if not GPU:
        return [("resnet50_infer", "resnet50", "inference", 1, False, ["torch_cpu", "fastcnn_cpu"]),
                ("resnet50_train", "resnet50", "train", 2, False, ["torch_cpu", "fastcnn_cpu"]),  # BN: 2 per channel
                ("googlenet_infer", "googlenet", "inference", 1, False, ["torch_cpu", "fastcnn_cpu", "fastcnn_nofusion"]),
                ("alexnet_infer", "alexnet", "inference", 1, False, ["torch_cpu", "fastcnn_cpu"]),
                ("lenet5_latency", "lenet5", "inference", 1, False, ["torch_cpu", "fastcnn_cpu"])]
    sm90 = ["fastcnn_sm90"] if (sm90_module() is not None and sm90_module().available()) else []
    return [("lenet5_latency", "lenet5", "inference", 1, True, ["cudnn", "fastcnn"]),
            ("resnet50_infer", "resnet50", "inference", 256, False, ["cudnn", "fastcnn"] + sm90),
            ("resnet50_train", "resnet50", "train", 256, False, ["cudnn", "fastcnn"]),
            # fastcnn_nofusion: the network fusions off (issue 18's target is measured on/off, same run)
            ("googlenet_infer", "googlenet", "inference", 128, False, ["cudnn", "fastcnn", "fastcnn_nofusion"] + sm90),
            ("alexnet_infer", "alexnet", "inference", 256, False, ["cudnn", "fastcnn"] + sm90)]


def network_path(provider, net):
    """Which code ran a network's convs: per pass, how many conv layers take each path."""
    if provider in ("cudnn", "torch_cpu"):
        return "cuDNN (PyTorch eager)" if GPU else "oneDNN (PyTorch eager)"
    if provider == "fastcnn_cpu":
        return "fastcnn C++ CPU"
    if provider.startswith("torch_compile"):
        return f"Inductor ({provider})"
    import fastcnn

    backend = fastcnn.resolve("conv2d", DEVICE)
    sm90 = sm90_module()
    if backend != "cuda" or sm90 is None:
        return f"{backend} backend" + (": sm_80-style CUDA" if backend == "cuda" else "")
    mode = "force" if provider == "fastcnn_sm90" else sm90.mode()
    rows = sm90.layer_paths([net], batch=8, capability=torch.cuda.get_device_capability(), mode_name=mode,
                            is_available=sm90.available())
    counts = {}
    for _, paths in rows:
        p = paths["fprop"][0]
        counts[p] = counts.get(p, 0) + 1
    return "fprop: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


def _time_step(step):
    """Median, p20, p80 ms; the repetition window covers >= 10 steps (a ResNet-50 step is ~100 ms)."""
    if not GPU:  # the dry run: a warm-up and 3 timed steps (its numbers only exercise the formats)
        step()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        return times[1], times[0], times[2]
    step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    est = (time.perf_counter() - t0) * 1e3
    return common.time_gpu(step, warmup=max(25, 2 * est), rep=min(3000, max(100, 10 * est)))


def time_network(line, net, mode, batch, graphs, provider, pair, env, image_size=None):
    """One provider's step on one line; `pair` is bench_models.build_pair's (baseline, fastcnn) models,
    shared by a line's providers (each trains or runs its own model of the pair)."""
    base, fm = pair
    shape = bench_models.input_shape(net, image_size)
    g = torch.Generator().manual_seed(1)
    dtype = bench_ops.DTYPES["bf16" if GPU else "fp32"]
    x = torch.randn(batch, *shape, generator=g).to(device=DEVICE, dtype=dtype).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 10 if net == "lenet5" else 1000, (batch,), generator=g).to(DEVICE)
    prov = "fastcnn" if provider == "fastcnn_sm90" else provider
    smode = "force" if provider == "fastcnn_sm90" else ("off" if provider == "fastcnn_cuda" else None)
    with sm90_mode(smode), bench_models._provider_context(prov):
        model = bench_models._prepare(prov, base, fm, DEVICE, dtype, "nhwc")
        step = bench_models.make_step(model, mode, x, target)
        what_ran = ran(step) if prov.startswith("fastcnn") and mode == "inference" else ""
        if graphs:
            step = bench_models.graphed(step)
        if GPU:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        p50, p20, p80 = _time_step(step)
        secs = time.perf_counter() - t0
    row = {**env, "kind": "model", "name": net, "mode": mode, "dtype": "bf16" if GPU else "fp32", "layout": "nhwc",
           "batch": batch, "shape": "x".join(map(str, shape)), "provider": provider, "ms_p50": p50, "ms_p20": p20,
           "ms_p80": p80, "images_per_s": batch / (p50 * 1e-3), "cuda_graphs": graphs, "table_line": line,
           "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if GPU else None,
           "path": network_path(provider, net), "ran": what_ran}
    return row, secs


def _dry_image(net):
    # the dry run: the ImageNet networks at the smallest input they take (AlexNet's pools need 63+)
    return None if net == "lenet5" else (64 if net == "alexnet" else 32)


def cmd_models(state, until):
    setup_flags()
    pk = peaks_of(state)
    out = os.path.join(state, "bench", "models.csv")
    done = {(r["table_line"], r["provider"]) for r in gpu_report.read_csv(out)}
    env = env_row()
    n = left = 0
    for line, net, mode, batch, graphs, provs in model_lines():
        rows, pair = {}, None
        image = None if GPU else _dry_image(net)
        for prov in provs:
            if (line, prov) in done:
                continue
            if time.time() > until:
                left += 1
                continue
            try:
                pair = pair or bench_models.build_pair(net, image_size=image)
                row, secs = time_network(line, net, mode, batch, graphs, prov, pair, env, image_size=image)
            except Exception as exc:  # noqa: BLE001 - reported; the other providers and lines go on
                print(f"  skip {prov} {line}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                continue
            rows[prov] = row
            print(f"{line:16s} {prov:14s} {row['ms_p50']:.3f} ms  ({secs:.1f} s)", flush=True)
        base = rows.get("cudnn" if GPU else "torch_cpu")
        for prov, row in rows.items():
            row["speedup"] = base["ms_p50"] / row["ms_p50"] if base else None
            append(out, with_peaks(row, pk))
            n += 1
        if GPU:
            torch.cuda.empty_cache()
    note = f"{n} rows" + (f"; {left} cases left (budget)" if left else "")
    with open(os.path.join(state, "bench_models.json"), "w") as f:
        json.dump({"note": note, "rows": n, "left": left}, f)
    return 0


def compile_mode(budget, part_left):
    """max-autotune only when its compile fits both this step's budget and what is left of the part."""
    room = min(budget, part_left)
    if room >= MAX_AUTOTUNE_NEEDS_S:
        return "max-autotune", f"max-autotune (fits: {room:.0f} s >= {MAX_AUTOTUNE_NEEDS_S} s)"
    return None, (f"default torch.compile: max-autotune needs ~{MAX_AUTOTUNE_NEEDS_S} s of compile, "
                  f"the step has {room:.0f} s")


def cmd_compile(state, budget, part_left):
    setup_flags()
    mode, decision = compile_mode(budget, part_left)
    pk = peaks_of(state)
    out = os.path.join(state, "bench", "models.csv")
    info = {"decision": decision, "mode": mode or "default"}
    path = os.path.join(state, "bench_compile.json")

    def save(**kw):
        info.update(kw)
        info["note"] = f"{decision}; " + ", ".join(f"{k} {v}" for k, v in kw.items())
        with open(path, "w") as f:
            json.dump(info, f)

    save(status="compiling")
    net, batch = "resnet50", (256 if GPU else 1)
    base, _ = bench_models.build_pair(net, image_size=None if GPU else _dry_image(net))
    dtype = bench_ops.DTYPES["bf16" if GPU else "fp32"]
    shape = bench_models.input_shape(net, None if GPU else _dry_image(net))
    x = torch.randn(batch, *shape).to(device=DEVICE, dtype=dtype).contiguous(memory_format=torch.channels_last)
    model = base.to(device=DEVICE, dtype=dtype).to(memory_format=torch.channels_last).eval()
    cmodel = torch.compile(model, mode=mode)
    step = bench_models.make_step(cmodel, "inference", x, None)
    t0 = time.perf_counter()
    step()
    if GPU:
        torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    save(status="compiled", compile_s=round(compile_s, 1))
    p50, p20, p80 = _time_step(step)
    prov = "torch_compile_max_autotune" if mode else "torch_compile"
    row = {**env_row(), "kind": "model", "name": net, "mode": "inference", "dtype": "bf16" if GPU else "fp32",
           "layout": "nhwc", "batch": batch, "shape": "x".join(map(str, shape)), "provider": prov, "ms_p50": p50,
           "ms_p20": p20, "ms_p80": p80, "images_per_s": batch / (p50 * 1e-3), "cuda_graphs": False,
           "table_line": "resnet50_infer", "compile_s": compile_s, "path": network_path(prov, net)}
    base_ms = next((float(r["ms_p50"]) for r in gpu_report.read_csv(out)
                    if r["table_line"] == "resnet50_infer" and r["provider"] in ("cudnn", "torch_cpu")), None)
    row["speedup"] = base_ms / p50 if base_ms else None
    append(out, with_peaks(row, pk))
    save(status="ok", compile_s=round(compile_s, 1), ms=round(p50, 3))
    print(f"torch.compile ({mode or 'default'}): compile {compile_s:.1f} s, {p50:.3f} ms", flush=True)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["peaks", "ops", "models", "compile"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--state", default=None)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--until", type=float, default=None, help="start no case after this time (time.time())")
    ap.add_argument("--part-left", type=float, default=0.0)
    a = ap.parse_args(argv)
    if a.what == "peaks":
        return cmd_peaks(a.out)
    os.makedirs(os.path.join(a.state, "bench"), exist_ok=True)
    until = a.until if a.until is not None else time.time() + a.budget
    if a.what == "ops":
        return cmd_ops(a.state, until)
    if a.what == "models":
        return cmd_models(a.state, until)
    return cmd_compile(a.state, a.budget, a.part_left)


if __name__ == "__main__":
    sys.exit(main())
