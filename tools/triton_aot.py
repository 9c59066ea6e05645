"""Ahead-of-time compile of the Triton kernels fastcnn launches, for sm_90a and sm_80, without a GPU.

What is compiled is what the launchers would launch: each layer shape of LeNet-5, AlexNet, GoogLeNet
and ResNet-50 (bench/shapes.py, at the GPU benchmark's batch) in bf16, fp16, fp32 and tf32, NCHW and
channels_last, runs through the launchers' own plan code (kernels/_launch.py: collect() on meta
tensors, planned for an H100/H200 or an A100), forward and backward (dgrad, wgrad, split-K
reduction, the pools with and without indices, add_relu; the network fusions' conv1x1_into); on
sm_90 again with the TMA forward on (FASTCNN_TRITON_TMA=1); and every candidate config of
kernels/configs/candidates.json forced (FASTCNN_TRITON_CONFIG=<i>) on representative layers
(CONFIG_LAYERS; --full: every layer). Each launch is specialised as JITFunction.run does (Triton's
own binder: ints equal to 1 become constexprs, ints and pointers divisible by 16 get divisibility
hints); launches that specialise the same are one variant (what Triton's cache shares, so they
compile the same) and each variant is compiled once by triton.compile down to the cubin.

It fails on a compile error, any register spill (ptxas's log), shared memory over the target's
limit (227 KB on sm_90, 163 KB on sm_80), a tensor-core-eligible variant (16-bit or tf32,
BLOCK_M >= 64) that does not use wgmma on sm_90, and a launcher pick whose GEMM M is >= 64 with a
tile under 64 rows (16-bit and tf32). It writes one row per variant to bench/results/
triton_aot.csv (--full: triton_aot_full.csv); --check fails when the table differs from the
committed one. Results of unchanged compiles are cached (build/triton-aot-cache.json, keyed by
Triton's cache key) for reruns on a developer machine; CI starts without one.

    python tools/triton_aot.py [--full] [--check] [--jobs N] [--out CSV]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import multiprocessing
import os
import re
import resource
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "triton_aot.csv")
FULL_OUT = os.path.join(ROOT, "bench", "results", "triton_aot_full.csv")

ARCHS = {"sm90": (9, 0), "sm80": (8, 0)}
SM_COUNT = {"sm90": 132, "sm80": 108}  # H100 SXM / H200, A100: sizes the split-K choice
SHARED_LIMIT = {"sm90": 227 * 1024, "sm80": 163 * 1024}
DTYPES = ("bf16", "fp16", "fp32", "tf32")
LAYOUTS = ("nchw", "nhwc")
FIELDS = ["arch", "kernel", "config", "dtype", "layout", "constexprs", "variant", "source", "uses", "registers",
          "spill_bytes", "shared_bytes", "mma", "loads", "triton", "cache_key"]
# --check compiles every variant whose compile is new or changed (its Triton cache key is not in the
# committed table) and this many more drawn from the committed rows (seeded by the commit under
# test, so successive commits re-verify different rows; --seed repeats a draw); the other rows are
# taken from the table. 2,244 variants at ~0.85 CPU-s each are ~16 minutes on CI's 2 cores; the
# draw keeps an unchanged tree's check near 2 minutes. `python tools/triton_aot.py` (no --check)
# compiles every variant and rewrites the table.
VERIFY = 240
# the layers every candidate config is forced on (without --full): a 3x3 at stride 1, a 1x1 with
# a residual, a stem with a FLAT reduction and stride 2, a narrow 5x5 (LeNet), a pool, add_relu
CONFIG_LAYERS = {
    "lenet5": ("conv2",),
    "alexnet": (),
    "googlenet": (),
    "resnet50": ("conv1", "maxpool", "layer1.x.conv2", "layer1.0.conv3", "layer1.add"),
}


# ------------------------------------------------------------------------------------------------
# the launches: the launchers' plans on meta tensors
# ------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _fp32_mode(tf32: bool):
    """PyTorch's TF32 switches as the launchers read them (kernels/conv2d.py allow_tf32)."""
    import torch

    saved = []
    for obj, new_api in ((torch.backends.cuda.matmul, "fp32_precision"),
                         (getattr(torch.backends.cudnn, "conv", None), "fp32_precision")):
        if obj is not None and hasattr(obj, new_api):
            saved.append((obj, new_api, getattr(obj, new_api)))
            setattr(obj, new_api, "tf32" if tf32 else "ieee")
    if not saved:
        for obj in (torch.backends.cuda.matmul, torch.backends.cudnn):
            saved.append((obj, "allow_tf32", obj.allow_tf32))
            obj.allow_tf32 = tf32
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


@contextlib.contextmanager
def _forced_config(index):
    old = os.environ.get("FASTCNN_TRITON_CONFIG")
    if index is not None:
        os.environ["FASTCNN_TRITON_CONFIG"] = str(index)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FASTCNN_TRITON_CONFIG", None)
        else:
            os.environ["FASTCNN_TRITON_CONFIG"] = old


def _layer_launches(layer, batch, dtype, layout, full=False):
    """Run the launchers of one layer (forward and backward) on meta tensors (under collect())."""
    import torch

    from fastcnn.kernels import add_relu as kadd
    from fastcnn.kernels import conv2d as kconv
    from fastcnn.kernels import max_pool2d as kpool

    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format

    def t(*shape, fmt_=fmt):
        return torch.empty(*shape, dtype=dtype, device="meta").contiguous(memory_format=fmt_)

    x = t(batch, layer.C, layer.H, layer.W)
    if layer.op in ("conv2d", "conv1x1"):
        w = t(layer.K, layer.C // layer.groups, layer.R, layer.S)
        b = torch.empty(layer.K, dtype=dtype, device="meta") if layer.bias else None
        r = t(batch, layer.K, layer.P, layer.Q) if layer.residual else None
        geo = ((layer.stride,) * 2, (layer.padding,) * 2, (layer.dilation,) * 2, layer.groups)
        act = "relu" if layer.relu else "none"
        y = kconv.conv_forward(x, w, b, r, *geo, act, family=layer.op)
        # training as the benchmark: every gradient but the network input's
        mask = [layer.name != "conv1", True, b is not None, r is not None]
        kconv.conv_backward(torch.empty_like(y), x, w, y, *geo, act, mask, family=layer.op)
        _fused_launches(layer, batch, dtype, fmt)
    elif layer.op == "max_pool2d":
        geo = ((layer.R, layer.S), (layer.stride,) * 2, (layer.padding,) * 2, (layer.dilation,) * 2)
        out, idx = kpool.max_pool2d(x, *geo, layer.ceil_mode, True)  # training: the indices for backward
        kpool.max_pool2d_backward(torch.empty_like(out), x, idx, *geo, layer.ceil_mode)
        kpool.max_pool2d(x, *geo, layer.ceil_mode, False)  # inference
        if full:  # a direct backward call without indices: the forward writes int32 scratch ones
            kpool.max_pool2d_backward(torch.empty_like(out), x, idx[:0], *geo, layer.ceil_mode)
    elif layer.op == "add_relu":
        out = kadd.add_relu(x, t(batch, layer.C, layer.H, layer.W))
        kadd.add_relu_backward(torch.empty_like(out), out)


def _fused_launches(layer, batch, dtype, fmt):
    """The network fusions' conv1x1_into (issue 18) where a layer starts one: GoogLeNet's three 1x1
    siblings (at branch1) and its pool projection (at branch4.1: the 3x3/1/1 ceil max-pool in the
    operand load), each into its channel slice of the inception's concat buffer; ResNet-50
    layer1.0's conv1 + downsample (at layer1.0.conv1: both 1x1 at stride 1 on the block input)."""
    import torch

    from fastcnn.bench import shapes
    from fastcnn.kernels import conv1x1 as k1x1

    def t(*shape):
        return torch.empty(*shape, dtype=dtype, device="meta").contiguous(memory_format=fmt)

    block, _, branch = layer.name.partition(".")
    x = t(batch, layer.C, layer.H, layer.W)
    if layer.net == "googlenet" and branch in ("branch1", "branch4.1"):
        _, c1, r3, c3, r5, c5, pp = shapes.INCEPTION[block]
        concat = t(batch, c1 + c3 + c5 + pp, layer.H, layer.W)
        if branch == "branch1":  # the 1x1 branch's slice and the two reduces' own outputs
            ks, outs, pool = (c1, r3, r5), [concat[:, :c1], t(batch, r3, layer.H, layer.W),
                                            t(batch, r5, layer.H, layer.W)], []
        else:
            ks, outs, pool = (pp,), [concat[:, c1 + c3 + c5:]], [3, 3, 1, 1, 1, 1, 1]
        w = t(sum(ks), layer.C, 1, 1)
        k1x1.conv1x1_into(x, w, None, (1, 1), ["relu"] * len(ks), pool, outs)
    elif layer.net == "resnet50" and layer.name == "layer1.0.conv1":
        width, cout = layer.K, 4 * layer.K
        w = t(width + cout, layer.C, 1, 1)
        outs = [t(batch, width, layer.H, layer.W), t(batch, cout, layer.H, layer.W)]
        k1x1.conv1x1_into(x, w, None, (1, 1), ["relu", "none"], [], outs)


def _config_name(rec) -> str:
    c = rec.constexprs
    if "BLOCK_M" in c:
        s = f"{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']}"
    elif "BLOCK_R" in c:
        s = f"{c['BLOCK_R']}x{c['BLOCK_C']}"
    else:
        s = str(c.get("BLOCK", ""))
    return f"{s} w{rec.options.get('num_warps', 4)} s{rec.options.get('num_stages', 3)}"


def _short(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    return str(v).replace("torch.", "").replace("triton.language.", "")


_SKIP_CONSTS = {"BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_R", "BLOCK_C", "BLOCK"}


class Variant:
    def __init__(self, arch, rec, signature, constexprs, attrs, options, key):
        self.arch, self.kernel = arch, rec.kernel
        self.signature, self.constexprs, self.attrs, self.options = signature, constexprs, attrs, options
        self.key = key
        self.config = _config_name(rec)
        self.consts = " ".join(f"{k}={_short(v)}" for k, v in rec.constexprs.items() if k not in _SKIP_CONSTS)
        self.block_m = rec.tile_m  # the tensor cores' M tile (the column tile of a SWAP wgrad)
        self.dtypes, self.layouts, self.sources, self.uses = set(), set(), set(), 0
        self.pick_gemm_m = 0  # the largest GEMM M of a launcher pick compiled as this variant
        self.tensor_core = False  # 16-bit operands or tf32 products in a tl.dot

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__


def _tensor_core(rec, dtype_name) -> bool:
    c = rec.constexprs
    if "DOT_PREC" not in c or c.get("FP64") or c.get("UPCAST"):
        return False
    return dtype_name in ("bf16", "fp16") or (dtype_name == "tf32" and c["DOT_PREC"] == "tf32")


def _tma(on: bool):
    return _env("FASTCNN_TRITON_TMA", "1" if on else None)


@contextlib.contextmanager
def _env(name, value):
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def collect_variants(full: bool, log=print):
    """{arch: {key: Variant}} of every launch of the sweep."""
    import torch
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    from fastcnn.bench import bench_ops, shapes
    from fastcnn.kernels import _launch, _tuning

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32}
    n_configs = max(len(c) for c in _tuning.candidates().values())
    variants = {arch: {} for arch in ARCHS}
    binders = {}
    n_launches = 0
    for arch, cap in ARCHS.items():
        target = _launch.Target(False, SM_COUNT[arch], cap)
        backend = make_backend(GPUTarget("cuda", cap[0] * 10 + cap[1], 32))
        runs = [("pick", None, False)] + ([("pick", None, True)] if cap >= (9, 0) else [])
        runs += [("table", i, False) for i in range(n_configs)]
        for dtype_name in DTYPES:
            with _fp32_mode(dtype_name == "tf32"):
                for layout in LAYOUTS:
                    for layer in shapes.layers():
                        batch = bench_ops.BATCH["cuda"][layer.net]
                        for source, index, tma in runs:
                            if source == "table" and not full and layer.name not in CONFIG_LAYERS[layer.net]:
                                continue
                            with _forced_config(index), _tma(tma), _launch.collect(target) as recs:
                                _layer_launches(layer, batch, torch_dtype[dtype_name], layout, full)
                            for rec in recs:
                                n_launches += 1
                                fn = rec.kernel
                                if (fn, arch) not in binders:
                                    binders[fn, arch] = create_function_from_signature(fn.signature, fn.params,
                                                                                       backend)
                                kwargs = dict(rec.constexprs, **rec.options)
                                kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
                                kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
                                bound, spec, opts = binders[fn, arch](*rec.args, **kwargs)
                                key = f"{arch}|{fn.fn.__qualname__}|{spec}|{sorted(opts.items())}"
                                v = variants[arch].get(key)
                                if v is None:
                                    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound,
                                                                                          spec, opts)
                                    v = variants[arch][key] = Variant(arch, rec, signature, constexprs, attrs,
                                                                      options, key)
                                v.dtypes.add(dtype_name)
                                v.layouts.add(layout)
                                v.sources.add(source)
                                v.uses += 1
                                v.tensor_core |= _tensor_core(rec, dtype_name)
                                if source == "pick" and _tensor_core(rec, dtype_name):
                                    v.pick_gemm_m = max(v.pick_gemm_m, rec.gemm_m)
    log(f"triton-aot: {n_launches} launches, {sum(len(v) for v in variants.values())} variants "
        f"({', '.join(f'{a}: {len(v)}' for a, v in variants.items())})")
    return variants


# ------------------------------------------------------------------------------------------------
# compile and read the results
# ------------------------------------------------------------------------------------------------

_REGS = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_JOBS: list = []


def _cache_key(v) -> str:
    """Triton's own cache key of the compile (source and callees, specialisation, options, target)
    plus the Triton version: the key of this tool's result cache."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.compiler.compiler import get_cache_key
    from triton._C.libtriton import get_cache_invalidating_env_vars

    cap = ARCHS[v.arch]
    backend = make_backend(GPUTarget("cuda", cap[0] * 10 + cap[1], 32))
    src = ASTSource(v.kernel, v.signature, v.constexprs, v.attrs)
    return triton.__version__ + "-" + get_cache_key(src, backend, v.options, get_cache_invalidating_env_vars())


def _compile(i):
    """(index, registers, spill bytes, shared bytes, mma kind, loads, error) of variant _JOBS[i]."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    v = _JOBS[i]
    cap = ARCHS[v.arch]
    knobs.compilation.always_compile = True  # a cache hit would skip ptxas and its log
    knobs.nvidia.dump_ptxas_log = True
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            k = triton.compile(ASTSource(v.kernel, v.signature, v.constexprs, v.attrs),
                               target=GPUTarget("cuda", cap[0] * 10 + cap[1], 32), options=v.options.__dict__)
    except Exception as exc:  # noqa: BLE001 (reported as the variant's failure)
        return i, 0, 0, 0, "", "", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    log = out.getvalue()
    regs = [int(m) for m in _REGS.findall(log)]
    spills = [int(a) + int(b) for a, b in _SPILL.findall(log)]
    if not regs:
        return i, 0, 0, 0, "", "", "no ptxas register report"
    ptx = k.asm["ptx"]
    mma = "wgmma" if "wgmma.mma_async" in ptx else "mma" if "mma.sync" in ptx else "fma" if "DOT_PREC" in str(
        v.consts) else "-"
    loads = "tma" if "cp.async.bulk.tensor" in ptx else "ptr"
    return i, max(regs), sum(spills), int(k.metadata.shared), mma, loads, ""


def compile_all(jobs_list, keys, jobs: int, cache_path=None, reuse=None, log=print):
    """[(variant, result)] for the variants of jobs_list (Triton cache keys `keys`), compiled in
    `jobs` processes; results of unchanged compiles are read from the JSON cache at cache_path
    (keyed by Triton's cache key) and from `reuse` ({key: result}, the committed table's rows)."""
    global _JOBS
    cache = {}
    if cache_path and os.path.exists(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    reuse = reuse or {}
    results = [None] * len(jobs_list)
    todo = []
    for i, k in enumerate(keys):
        if k in reuse:
            results[i] = (i, *reuse[k])
        elif len(cache.get(k, ())) == 6:  # (registers, spills, shared, mma, loads, error)
            results[i] = (i, *cache[k])
        else:
            todo.append(i)
    # the launchers' picks first, sm_90 first: what a cut-short run has looked at
    todo.sort(key=lambda i: ("pick" not in jobs_list[i].sources, jobs_list[i].arch != "sm90"))
    _JOBS = jobs_list
    t0 = time.time()
    log(f"triton-aot: compiling {len(todo)} variants ({len(jobs_list) - len(todo)} from the table or the cache) "
        f"in {jobs} processes")
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs) if jobs > 1 and len(todo) > 1 else contextlib.nullcontext() as pool:
        it = pool.imap_unordered(_compile, todo) if pool else map(_compile, todo)
        for n, res in enumerate(it, 1):
            results[res[0]] = res
            if not res[6]:
                cache[keys[res[0]]] = list(res[1:])
            if n % 100 == 0 or n == len(todo):
                log(f"triton-aot: compiled {n}/{len(todo)} ({time.time() - t0:.0f} s)")
                _save(cache, cache_path)  # as it goes: an interrupted sweep keeps what it compiled
    return list(zip(jobs_list, results)), set(todo)


def _save(cache, cache_path):
    if cache_path:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        with open(cache_path + ".tmp", "w") as f:
            json.dump(cache, f)
        os.replace(cache_path + ".tmp", cache_path)


def _short_key(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _committed_results(rows) -> dict:
    """{short cache key: result tuple} of the committed table's clean rows."""
    out = {}
    for r in rows:
        if r.get("cache_key") and not r["mma"].startswith("error"):
            out[r["cache_key"]] = (int(r["registers"]), int(r["spill_bytes"]), int(r["shared_bytes"]), r["mma"],
                                   r["loads"], "")
    return out


def _draw(jobs, keys, committed, n, seed):
    """The short keys of `n` committed variants to compile again anyway: one of each kernel and
    target first, the rest at random (seeded)."""
    import random

    rng = random.Random(seed)
    pool = sorted({(v.arch, v.name, k) for v, k in zip(jobs, keys) if k in committed})
    rng.shuffle(pool)
    drawn, groups = [], set()
    for arch, name, k in pool:
        if (arch, name) not in groups:
            groups.add((arch, name))
            drawn.append(k)
    first = set(drawn)
    drawn += [k for _, _, k in pool if k not in first]
    return set(drawn[:n])


def _seed() -> int:
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        return int(head.stdout.strip()[:8], 16)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return 0


def _row(v, res, triton_version, key):
    _, regs, spill, shared, mma, loads, err = res
    digest = hashlib.sha1(v.key.encode()).hexdigest()[:10]
    return {"arch": v.arch, "kernel": v.name, "config": v.config, "dtype": "|".join(sorted(v.dtypes)),
            "layout": "|".join(sorted(v.layouts)), "constexprs": v.consts, "variant": digest,
            "source": "|".join(sorted(v.sources)), "uses": v.uses, "registers": regs, "spill_bytes": spill,
            "shared_bytes": shared, "mma": mma if not err else f"error: {err}", "loads": loads,
            "triton": triton_version, "cache_key": key}


def failures(v, res) -> list[str]:
    _, regs, spill, shared, mma, loads, err = res
    what = f"{v.arch} {v.name} {v.config} {'|'.join(sorted(v.dtypes))} {'|'.join(sorted(v.layouts))} [{v.consts}]"
    if err:
        return [f"compile error: {what}: {err}"]
    out = []
    if spill:
        out.append(f"spills {spill} B ({regs} registers): {what}")
    if shared > SHARED_LIMIT[v.arch]:
        out.append(f"shared memory {shared} B > {SHARED_LIMIT[v.arch]} B: {what}")
    if v.arch == "sm90" and v.tensor_core and v.block_m >= 64 and mma != "wgmma":
        out.append(f"tensor-core tile without wgmma ({mma}): {what}")
    if v.arch == "sm90" and v.pick_gemm_m >= 64 and v.block_m < 64:
        out.append(f"launcher pick with BLOCK_M {v.block_m} < 64 for GEMM M {v.pick_gemm_m}: {what}")
    return out


def summary(pairs) -> str:
    lines = []
    for arch in ARCHS:
        sel = [(v, r) for v, r in pairs if v.arch == arch]
        spilled = [(v, r) for v, r in sel if r[2]]
        picks = [(v, r) for v, r in sel if "pick" in v.sources]
        eligible = [(v, r) for v, r in sel if v.tensor_core and v.block_m >= 64]
        wg = sum(r[4] == "wgmma" for _, r in eligible)
        lines.append(f"{arch}: {len(sel)} variants ({len(picks)} launcher picks), {len(spilled)} with spills "
                     f"({sum('pick' in v.sources for v, _ in spilled)} picks), tensor-core tiles with BLOCK_M >= 64: "
                     f"{wg}/{len(eligible)} wgmma, {sum(r[5] == 'tma' for _, r in sel)} with TMA loads, "
                     f"max shared {max((r[3] for _, r in sel), default=0)} B, "
                     f"max registers {max((r[1] for _, r in sel), default=0)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="every candidate config on every layer")
    ap.add_argument("--out", default=None, help=f"CSV (default {os.path.relpath(DEFAULT_OUT, ROOT)}, "
                    f"{os.path.relpath(FULL_OUT, ROOT)} with --full)")
    ap.add_argument("--check", action="store_true", help="fail when the table differs from the committed --out")
    ap.add_argument("--verify", type=int, default=VERIFY,
                    help=f"with --check: committed rows to compile again besides the new ones (default {VERIFY})")
    ap.add_argument("--seed", type=int, default=None, help="with --check: the draw's seed (default: from git HEAD)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", default=os.path.join(ROOT, "build", "triton-aot-cache.json"),
                    help="result cache (JSON, keyed by Triton's cache key); '' for none")
    args = ap.parse_args(argv)
    t0 = time.time()
    os.environ.pop("TRITON_INTERPRET", None)  # the compiler, not the interpreter (read at kernel import)
    sys.path.insert(0, ROOT)
    import triton
    from triton import knobs

    knobs.cache.dir = tempfile.mkdtemp(prefix="fastcnn-triton-aot-")
    out_path = args.out or (FULL_OUT if args.full else DEFAULT_OUT)
    variants = collect_variants(args.full)
    jobs = [v for arch in variants for v in variants[arch].values()]
    keys = [_short_key(_cache_key(v)) for v in jobs]
    old, reuse = None, {}
    if args.check and os.path.exists(out_path):
        with open(out_path, newline="") as f:
            old = list(csv.DictReader(f))
        committed = _committed_results(old)
        seed = _seed() if args.seed is None else args.seed
        drawn = _draw(jobs, keys, committed, args.verify, seed)
        reuse = {k: r for k, r in committed.items() if k not in drawn}
        print(f"triton-aot: {len(set(keys) - set(committed))} variants new or changed, {len(drawn)} committed rows "
              f"drawn to compile again (--seed {seed}), {sum(k in reuse for k in keys)} rows from the table")
    pairs, compiled = compile_all(jobs, keys, max(1, args.jobs), None if args.check else (args.cache or None), reuse)
    pairs = [(v, r, k) for (v, r), k in zip(pairs, keys)]
    pairs.sort(key=lambda p: (p[0].arch, p[0].name, p[0].config, "|".join(sorted(p[0].dtypes)),
                              "|".join(sorted(p[0].layouts)), p[0].consts, p[0].key))
    rows = [_row(v, r, triton.__version__, k) for v, r, k in pairs]
    bad = [f for v, r, _ in pairs for f in failures(v, r)]
    print(summary([(v, r) for v, r, _ in pairs]))
    with open(out_path if not args.check else out_path + ".new", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    for line in bad:
        print("FAIL", line)
    status = 1 if bad else 0
    if args.check:
        new = [{k: str(v) for k, v in r.items()} for r in rows]
        if old != new:
            old_set = {tuple(r.items()) for r in (old or [])}
            changed = [r for r in new if tuple(r.items()) not in old_set]
            for r in changed[:20]:
                print(f"FAIL not in the committed table: {r['arch']} {r['kernel']} {r['config']} {r['dtype']} "
                      f"{r['layout']} [{r['constexprs']}] registers {r['registers']} spills {r['spill_bytes']} "
                      f"shared {r['shared_bytes']} {r['mma']}")
            print(f"FAIL {os.path.relpath(out_path, ROOT)} differs from this run's table ({out_path}.new: "
                  f"{len(old or [])} committed rows, {len(new)} now, {len(changed)} rows new or different); "
                  f"regenerate it with `python tools/triton_aot.py` and commit it")
            status = 1
        else:
            os.remove(out_path + ".new")
    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    print(f"triton-aot: {'FAIL' if status else 'OK'} ({len(rows)} variants, {len(compiled)} compiled, "
          f"{len(bad)} failures) in {time.time() - t0:.0f} s ({cpu:.0f} CPU-s, {args.jobs} jobs)")
    return status


if __name__ == "__main__":
    sys.exit(main())
