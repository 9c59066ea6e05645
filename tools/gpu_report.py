"""The GPU run's report: the validation record, the benchmark table judged line by line from the CSVs,
summary.md, the logs tar, the check of the returned files and their collection into bench/results/.

Standard library only (tools/gpu_run.py's parent process and CI use it without torch). The record:

    {"timestamp", "git_sha", "device", "torch", "triton", "cuda", "passed", "failed", "skipped",
     "sanitizer_errors", "scope"}

passed/failed/skipped add up every correctness check that ran in the window: the smoke checks, the
pytest outcomes and the kernel-sweep cases (each checked against float64); a correctness step that
timed out adds one failure. sanitizer_errors adds the self-test's (errors on the clean probe, a missed
planted bug, a tool that could not run) and those memcheck and racecheck reported over the sweep; a
sanitizer run that did not reach its summary counts one. "scope" names what the counts cover.
"""

from __future__ import annotations

import csv
import datetime as dt
import glob
import json
import math
import os
import re
import shutil
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
# Kernel sweep per sanitizer tool: memcheck every family, dtype, layout and backend; racecheck (much
# slower; shared memory only) one round of every family and backend.
SANITIZER_TOOLS = (("memcheck", "full"), ("racecheck", "round1"))

DRY_DEVICE = "cpu (dry run)"
OUT_FILES = ("validation.jsonl", "summary.md", "gpu_table.csv", "ops.csv", "models.csv", "state.json",
             "logs.tar.gz")
MAX_OUT_FILES, MAX_OUT_BYTES = 8, 16 * 2**20

# The benchmark table (bf16, channels_last, one run): key, what, target. tools/gpu_bench.py
# measures each line (its rows carry the key in table_line); report() judges each from the CSVs.
TABLE = (
    ("resnet50_infer", "ResNet-50 inference, batch 256", ">= 1.5x eager, >= 1.1x torch.compile"),
    ("resnet50_train", "ResNet-50 training step, batch 256", ">= 1.15x eager"),
    ("googlenet_infer", "GoogLeNet inference, batch 128", ">= 1.3x eager"),
    ("alexnet_infer", "AlexNet inference, batch 256", ">= 1.2x eager"),
    ("lenet5_latency", "LeNet-5 batch-1 latency (CUDA graphs on both sides)", ">= 5x lower"),
    ("conv3x3", "3x3 conv + epilogue, every ResNet-50 shape, batch 256",
     ">= 1.0x cuDNN conv + separate epilogue; TFLOP/s (goal 550+)"),
    ("conv1x1", "1x1 conv + bias + residual + ReLU", ">= 80% of measured HBM bandwidth on memory-bound layers"),
    ("pool_add", "max_pool2d, add_relu", ">= 85% of measured HBM bandwidth"),
)
TARGET = {"resnet50_infer": (1.5, 1.1), "resnet50_train": 1.15, "googlenet_infer": 1.3, "alexnet_infer": 1.2,
          "lenet5_latency": 5.0, "conv3x3": 1.0, "conv1x1": 0.80, "pool_add": 0.85}
# The kernel work a missed line belongs to (summary.md lists it beside the measured value).
KERNEL_WORK = {
    "resnet50_infer": "the conv kernels on the paths named (3x3 and 1x1 lines) and fastcnn.fuse's coverage",
    "resnet50_train": "conv dgrad/wgrad kernels and the fused backward epilogue",
    "googlenet_infer": "small-map convs (7x7, 14x14) and the inception 1x1 GEMMs",
    "alexnet_infer": "large-kernel strided convs (11x11/4, 5x5)",
    "lenet5_latency": "per-launch overhead of tiny convs and pools (launch count, graph replay)",
    "conv3x3": "implicit-GEMM fprop tiles (Hopper CUTLASS wgmma, or the sm_80-style mma.sync kernels)",
    "conv1x1": "the 1x1 GEMM's memory path (epilogue loads/stores, residual read)",
    "pool_add": "max_pool2d / add_relu memory access (vector width, bytes in flight)",
}
TFLOPS_GOAL = 550
BIG_L2 = 4  # the bandwidth lines are judged on layers moving >= 4x the L2 (H200: 60 MB -> 240 MB)
TABLE_COLUMNS = ["line", "what", "target", "measured", "met", "path", "detail"]
RECORD_KEYS = ["timestamp", "git_sha", "device", "torch", "triton", "cuda", "passed", "failed", "skipped",
               "sanitizer_errors", "scope"]




def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)


def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass  # a line cut short by a kill
    except OSError:
        pass
    return out


def read_csv(path):
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


# ------------------------------------------------------------------------------------------------
# the report: record, benchmark table, summary, logs
# ------------------------------------------------------------------------------------------------

def _f(v):
    try:
        x = float(v)
        return x if x == x else None
    except (TypeError, ValueError):
        return None


def pytest_counts(rows):
    p = sum(r["outcome"] in ("passed", "xfailed") for r in rows)
    f = sum(r["outcome"] in ("failed", "error", "xpassed") for r in rows)
    s = sum(r["outcome"] == "skipped" for r in rows)
    return p, f, s


def case_counts(rows):
    """passed, failed, skipped of smoke/sweep rows (a case the sm90 rule declines is skipped)."""
    s = sum(bool(r.get("skipped")) for r in rows)
    p = sum(bool(r.get("ok")) and not r.get("skipped") for r in rows)
    return p, len(rows) - p - s, s


def make_record(state) -> dict:
    steps = state.get("steps", {})
    passed = failed = skipped = 0
    scope = []
    smoke = read_jsonl(os.path.join(state["_dir"], "smoke.jsonl"))
    if smoke or "smoke" in steps:
        p, f, s = case_counts(smoke)
        passed, failed, skipped = passed + p, failed + f, skipped + s
        scope.append(f"smoke {len(smoke)} checks ({', '.join(sorted({r.get('target', '?') for r in smoke})) or '-'})")
    rows = read_jsonl(os.path.join(state["_dir"], "pytest.jsonl"))
    if rows or "tests" in steps:
        p, f, s = pytest_counts(rows)
        passed, failed, skipped = passed + p, failed + f, skipped + s
        scope.append(f"pytest {p + f + s} outcomes [{state.get('tests_cmd', '?')}]")
    san = state.get("sanitizer", {})
    for tool, res in san.items():
        cases = read_jsonl(os.path.join(state["_dir"], f"sweep_{tool}.jsonl"))
        p, f, s = case_counts(cases)
        passed, failed, skipped = passed + p, failed + f, skipped + s
        scope.append(f"{tool} kernel sweep {len(cases)} cases" + ("" if res.get("sanitizer") else " (no sanitizer)"))
    for name in ("smoke", "tests", "sanitizer"):
        st = steps.get(name, {}).get("status")
        if st == "timeout":
            failed += 1
            scope.append(f"{name} timed out (+1 failed)")
        elif st in (None, "pending", "skipped", "running"):
            scope.append(f"{name} not run ({steps.get(name, {}).get('note', 'not reached')})")
    st = state.get("sanitizer_selftest", {})
    san_errors = st.get("errors", 1 if st == {} else 0)
    if not st:
        scope.append("sanitizer self-test not run (+1 error)")
    for tool, _ in SANITIZER_TOOLS:
        n = san.get(tool, {}).get("errors")
        if n is None:
            san_errors += 1  # the tool did not run to its summary over the sweep: an error on record
        else:
            san_errors += n
    scope.append("sanitizer errors: self-test probe + memcheck/racecheck over the kernel sweep")
    facts = state.get("facts", {})
    return {"timestamp": now_iso(), "git_sha": state.get("git_sha", "unknown"),
            "device": DRY_DEVICE if state.get("dry_run") else facts.get("device", "unknown"),
            "torch": facts.get("torch"), "triton": facts.get("triton"), "cuda": facts.get("cuda"),
            "passed": passed, "failed": failed, "skipped": skipped, "sanitizer_errors": san_errors,
            "scope": "; ".join(scope)}


def _fmt_x(v):
    return "-" if v is None else f"{v:.2f}x"


def _best(rows, key=lambda r: _f(r.get("ms_p50"))):
    """The fastest fastcnn row (provider fastcnn*) of rows, or None."""
    cands = [r for r in rows if r.get("provider", "").startswith("fastcnn") and key(r)]
    return min(cands, key=key) if cands else None


def _baseline(rows):
    return next((r for r in rows if r.get("provider") in ("cudnn", "torch_cpu")), None)


def judge(key, ops, models, peaks, l2_bytes=None) -> dict:
    """One line of the table from this run's CSV rows: measured text, met (yes/no/not measured), path."""
    line = {"line": key, "what": dict((k, w) for k, w, _ in TABLE)[key], "target": dict((k, t) for k, _, t in TABLE)[key],
            "measured": "not measured", "met": "not measured", "path": "", "detail": ""}
    if key in ("resnet50_infer", "resnet50_train", "googlenet_infer", "alexnet_infer", "lenet5_latency"):
        rows = [r for r in models if r.get("table_line") == key]
        base, best = _baseline(rows), _best(rows)
        if not base or not best:
            line["detail"] = "no baseline row" if best else "no fastcnn row"
            return line
        speed = _f(base["ms_p50"]) / _f(best["ms_p50"])
        parts = [f"{speed:.2f}x eager ({best['provider']} {_f(best['ms_p50']):.3g} ms vs {base['provider']} "
                 f"{_f(base['ms_p50']):.3g} ms)"]
        met = speed >= (TARGET[key][0] if isinstance(TARGET[key], tuple) else TARGET[key])
        if key == "resnet50_infer":
            comp = next((r for r in rows if r.get("provider", "").startswith("torch_compile")), None)
            if comp and _f(comp.get("ms_p50")):
                cs = _f(comp["ms_p50"]) / _f(best["ms_p50"])
                parts.append(f"{cs:.2f}x {comp['provider']} ({_f(comp['ms_p50']):.3g} ms)")
                met = met and cs >= TARGET[key][1]
            else:
                parts.append("torch.compile not measured")
                met = None if met else False
        line["measured"] = "; ".join(parts)
        line["met"] = "not measured" if met is None else ("yes" if met else "no")
        line["path"] = best.get("path", "")
        line["detail"] = "; ".join(f"{r['provider']} {_f(r['ms_p50']):.3g} ms [{_f(r.get('ms_p20')) or 0:.3g}-"
                                   f"{_f(r.get('ms_p80')) or 0:.3g}]" for r in rows if _f(r.get("ms_p50")))
        return line
    rows = [r for r in ops if r.get("table_line") == key]
    layers = list(dict.fromkeys(r["name"] for r in rows))
    per = []
    for name in layers:
        lr = [r for r in rows if r["name"] == name]
        base, best = _baseline(lr), _best(lr)
        if best:
            per.append((name, base, best))
    if not per:
        return line
    if key == "conv3x3":
        speeds = [(_f(b["ms_p50"]) / _f(x["ms_p50"]) if b else None, n, x) for n, b, x in per]
        known = [s for s in speeds if s[0]]
        if not known:
            return line
        worst = min(known, key=lambda s: s[0])
        tfl = [_f(x.get("tflops")) for _, _, x in per if _f(x.get("tflops"))]
        line["measured"] = (f"worst {worst[0]:.2f}x ({worst[1]}, {worst[2].get('path', '')}), geomean "
                            f"{_geomean([s[0] for s in known]):.2f}x over {len(known)} shapes; "
                            f"{min(tfl):.3g}-{max(tfl):.3g} TFLOP/s (goal {TFLOPS_GOAL}+)")
        line["met"] = "yes" if worst[0] >= TARGET[key] else "no"
    else:
        ridge = (peaks.get("peak_tflops", 0) * 1e12) / (peaks.get("peak_gbps", 1) * 1e9) if peaks else None
        sel = per
        if key == "conv1x1" and ridge:  # memory-bound: arithmetic intensity under the measured ridge
            sel = [(n, b, x) for n, b, x in per if _f(x.get("tflops")) and _f(x.get("gbps")) and
                   _f(x["tflops"]) * 1e12 / (_f(x["gbps"]) * 1e9) < ridge]
        if l2_bytes:  # judged where the data is several times the L2 (from it, repeats would flatter)
            sel = [(n, b, x) for n, b, x in sel if (_f(x.get("bytes")) or 0) >= BIG_L2 * l2_bytes]
        fr = [(_f(x.get("gbps")) / peaks["peak_gbps"] if peaks and _f(x.get("gbps")) else None, n, x) for n, b, x in sel]
        fr = [t for t in fr if t[0] is not None]
        if not fr:
            line["detail"] = (f"no memory-bound layer moving >= {BIG_L2}x the L2 measured" if per else "")
            return line
        worst = min(fr, key=lambda t: t[0])
        line["measured"] = (f"worst {100 * worst[0]:.0f}% of {peaks['peak_gbps']:.0f} GB/s ({worst[1]}, "
                            f"{worst[2].get('path', '')}), median {100 * sorted(t[0] for t in fr)[len(fr) // 2]:.0f}% "
                            f"over {len(fr)} layers" + (f" (memory-bound: below {ridge:.3g} FLOP/B)"
                                                        if key == "conv1x1" and ridge else "") +
                            (f", each moving >= {BIG_L2}x the {l2_bytes / 2**20:.0f} MB L2" if l2_bytes else ""))
        line["met"] = "yes" if worst[0] >= TARGET[key] else "no"
    paths = sorted({x.get("path", "") for _, _, x in per})
    line["path"] = " | ".join(p for p in paths if p)
    line["detail"] = "; ".join(
        f"{n}: {x['provider']} {_f(x['ms_p50']):.3g} ms" + (f" vs {b['provider']} {_f(b['ms_p50']):.3g} ms" if b else "")
        for n, b, x in per)
    return line


def _geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def write_table(path, lines):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        w.writeheader()
        for line in lines:
            w.writerow(line)


def summary_md(state, record, lines, steps) -> str:
    facts, host = state.get("facts", {}), state.get("facts_host", {})
    smi = host.get("nvidia_smi") if isinstance(host.get("nvidia_smi"), dict) else {}
    pk = state.get("peaks", {})
    out = [f"# GPU run {state.get('run_timestamp')} ({'dry run on the CPU' if state.get('dry_run') else 'device'})", ""]
    out.append(f"- device: {record['device']}; SMs {facts.get('sm_count', '-')}, capability "
               f"{facts.get('capability', '-')}, L2 {facts.get('l2_mb', '-')} MB, memory {facts.get('memory_gb', '-')} GB")
    if smi:
        out.append(f"- nvidia-smi: driver {smi.get('driver_version')}, SM clock {smi.get('clocks.sm')} (max "
                   f"{smi.get('clocks.max.sm')}), memory clock {smi.get('clocks.mem')} (max {smi.get('clocks.max.mem')}), "
                   f"{smi.get('power.draw')} of {smi.get('power.limit')}, {smi.get('temperature.gpu')} C, {smi.get('pstate')}")
    out.append(f"- torch {record['torch']}, triton {record['triton']}, CUDA {record['cuda']}, nvcc {host.get('nvcc', '-')}, "
               f"compute-sanitizer {host.get('compute-sanitizer', '-')}; git {record['git_sha']}")
    if pk:
        out.append(f"- measured peaks: {pk.get('peak_gbps', 0):.4g} GB/s device copy (read + write), "
                   f"{pk.get('peak_tflops', 0):.4g} TFLOP/s ({pk.get('peak_matmul')}); ridge "
                   f"{pk.get('peak_tflops', 0) * 1e3 / max(pk.get('peak_gbps', 1), 1e-9):.3g} FLOP/byte; clocks after: "
                   f"{pk.get('clocks_after') or '-'}")
    out += ["", "## Record", "", "```", json.dumps(record), "```", ""]
    if state.get("dry_run"):
        out += ["Dry run: fp32 on the CPU at tiny sizes (torch_cpu against fastcnn_cpu); the figures exercise",
                "the formats and the judging, they are not evidence of anything.", ""]
    out += ["## Benchmark table (bf16, channels_last, one run)", "",
            "| what | target | measured | met | path |", "|---|---|---|---|---|"]
    for ln in lines:
        out.append(f"| {ln['what']} | {ln['target']} | {ln['measured']} | {ln['met']} | {ln['path'] or '-'} |")
    missed = [ln for ln in lines if ln["met"] == "no"]
    if missed:
        out += ["", "Missed targets (measured values; kernel work, not a failure of this run):", ""]
        out += [f"- {ln['what']}: {ln['measured']} (target {ln['target']}); kernel work: {KERNEL_WORK[ln['line']]}"
                for ln in missed]
    comp = state.get("compile", {})
    if comp:
        out += ["", f"torch.compile: {comp.get('decision', '-')}"]
    out += ["", "## Steps", "", "| step | part | status | seconds | budget | note |", "|---|---|---|---|---|---|"]
    for name in steps:
        st = state.get("steps", {}).get(name, {})
        out.append(f"| {name} | {st.get('part', '-')} | {st.get('status', 'not reached')} | {st.get('seconds', '-')} | "
                   f"{st.get('budget', '-')} | {str(st.get('note', '')).replace('|', '/')} |")
    b = state.get("build", {})
    if b.get("compile_s") is not None:
        out += ["", f"Build: {b['compile_s']} s with {b.get('jobs')}; import check {b.get('import_s')} s. Last "
                "translation units to finish (seconds after the start): " +
                ", ".join(f"{k} {v}" for k, v in list(b.get("tu_finished_s", {}).items())[:10])]
    st = state.get("sanitizer_selftest")
    if st:
        out += ["", f"Sanitizer self-test: {st.get('note')}"]
    out += ["", "Files: validation.jsonl (the record), gpu_table.csv (one row per table line), ops.csv and models.csv "
            "(every timed case; bench/common.py columns plus path, table_line), state.json (steps, facts), "
            "logs.tar.gz (logs, junit, per-test and per-case JSONL, plots).", ""]
    return "\n".join(out)


def write_files(state_dir, out_dir, steps):
    """The returned files from the state: validation.jsonl (one record), gpu_table.csv, summary.md,
    ops.csv, models.csv, state.json, logs.tar.gz. Returns (record, table lines)."""
    state = load_json(os.path.join(state_dir, "state.json"), {}) or {}
    state["_dir"] = state_dir
    os.makedirs(out_dir, exist_ok=True)
    bench = os.path.join(state_dir, "bench")
    ops, models = read_csv(os.path.join(bench, "ops.csv")), read_csv(os.path.join(bench, "models.csv"))
    l2 = state.get("facts", {}).get("l2_mb")
    lines = [judge(k, ops, models, state.get("peaks", {}), l2 * 2**20 if l2 else None) for k, _, _ in TABLE]
    record = make_record(state)
    state.pop("_dir")
    with open(os.path.join(out_dir, "validation.jsonl"), "w") as f:
        f.write(json.dumps(record) + "\n")
    write_table(os.path.join(out_dir, "gpu_table.csv"), lines)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary_md(state, record, lines, steps))
    for name in ("ops.csv", "models.csv"):
        src = os.path.join(bench, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(out_dir, name))
        else:
            open(os.path.join(out_dir, name), "w").close()
    write_json(os.path.join(out_dir, "state.json"), state)
    with tarfile.open(os.path.join(out_dir, "logs.tar.gz"), "w:gz") as tar:
        for p in sorted(glob.glob(os.path.join(state_dir, "**", "*"), recursive=True)):
            rel = os.path.relpath(p, state_dir)
            if os.path.isfile(p) and not rel.startswith(("site", "triton-cache")) and not rel.endswith(".tmp") \
                    and os.path.basename(p) != "sanitizer_probe" and os.path.getsize(p) < 8 * 2**20:
                tar.add(p, arcname=os.path.join("gpu-run", rel))
    with open(os.path.join(state_dir, "record.jsonl"), "a") as f:  # every part's record, kept with the state
        f.write(json.dumps(record) + "\n")
    return record, lines


# ------------------------------------------------------------------------------------------------
# checking the files (CI, tests) and collecting them into bench/results
# ------------------------------------------------------------------------------------------------

def check_out(out_dir, dry=True) -> list[str]:
    """What is wrong with out_dir's files: the record's keys and types, one table row per table line
    in order, the CSV headers, at most 8 files of at most 16 MiB. dry=True also requires what a dry
    run must show (device "cpu (dry run)", passed > 0, rows behind every op and network line)."""
    problems = []
    files = [f for f in os.listdir(out_dir) if os.path.isfile(os.path.join(out_dir, f))]
    if len(files) > MAX_OUT_FILES:
        problems.append(f"{len(files)} files > {MAX_OUT_FILES}")
    for f in files:
        if os.path.getsize(os.path.join(out_dir, f)) > MAX_OUT_BYTES:
            problems.append(f"{f} over 16 MiB")
    for f in OUT_FILES:
        if f not in files:
            problems.append(f"missing {f}")
    recs = read_jsonl(os.path.join(out_dir, "validation.jsonl"))
    if len(recs) != 1:
        problems.append(f"validation.jsonl has {len(recs)} records, want 1")
    else:
        rec = recs[0]
        if list(rec) != RECORD_KEYS:
            problems.append(f"record keys {list(rec)} != {RECORD_KEYS}")
        for k in ("passed", "failed", "skipped", "sanitizer_errors"):
            if not isinstance(rec.get(k), int):
                problems.append(f"record {k} is not an int: {rec.get(k)!r}")
        if dry:
            if rec.get("device") != DRY_DEVICE:
                problems.append(f"dry-run record device {rec.get('device')!r}")
            if not (isinstance(rec.get("passed"), int) and rec["passed"] > 0):
                problems.append("dry-run record has passed == 0")
    table = read_csv(os.path.join(out_dir, "gpu_table.csv"))
    if [r.get("line") for r in table] != [k for k, _, _ in TABLE]:
        problems.append(f"gpu_table.csv lines {[r.get('line') for r in table]} != the table's {len(TABLE)} lines")
    for r in table:
        if r.get("met") not in ("yes", "no", "not measured"):
            problems.append(f"gpu_table.csv {r.get('line')}: met {r.get('met')!r}")
    for name in ("ops.csv", "models.csv"):
        rows = read_csv(os.path.join(out_dir, name))
        for col in ("timestamp", "git_sha", "device", "name", "provider", "ms_p50", "path", "table_line"):
            if rows and col not in rows[0]:
                problems.append(f"{name} lacks column {col}")
        if dry:  # every line measured on both sides: the baseline and a fastcnn provider
            want = [k for k, _, _ in TABLE if (k in ("conv3x3", "conv1x1", "pool_add")) == (name == "ops.csv")]
            for k in want:
                provs = {r.get("provider", "") for r in rows if r.get("table_line") == k}
                if not provs:
                    problems.append(f"{name} has no row for table line {k}")
                elif not any(p.startswith("fastcnn") for p in provs) or not provs & {"cudnn", "torch_cpu"}:
                    problems.append(f"{name}: table line {k} lacks a baseline or a fastcnn row ({sorted(provs)})")
    return problems


def collect(src_dir, device_dir=None) -> int:
    """Copy a GPU run's returned files into bench/results: the record appended to validation.jsonl,
    the CSVs appended to bench/results/<device>/{ops,models}.csv (python -m fastcnn bench report reads
    them), the table, summary and logs beside them. Refuses dry-run records."""
    recs = read_jsonl(os.path.join(src_dir, "validation.jsonl"))
    if len(recs) != 1:
        print(f"collect: {src_dir}/validation.jsonl has {len(recs)} records")
        return 1
    rec = recs[0]
    if rec.get("device") == DRY_DEVICE or "dry run" in str(rec.get("device")):
        print("collect: a dry-run record is never added to bench/results/validation.jsonl")
        return 1
    slug = device_dir or re.sub(r"[^a-z0-9]+", "_", str(rec.get("device", "gpu")).lower()).strip("_")
    dest = os.path.join(RESULTS, slug)
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(RESULTS, "validation.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")
    for name in ("ops.csv", "models.csv"):
        rows = read_csv(os.path.join(src_dir, name))
        if not rows:
            continue
        path = os.path.join(dest, name)
        old = read_csv(path)
        fields = list(old[0]) if old else list(rows[0])
        fields += [k for k in rows[0] if k not in fields]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for r in old + rows:
                w.writerow({k: r.get(k, "") for k in fields})
    stamp = rec["timestamp"].replace(":", "").replace("-", "")[:15]
    for name, new in (("gpu_table.csv", f"gpu_table_{stamp}.csv"), ("summary.md", f"summary_{stamp}.md"),
                      ("logs.tar.gz", f"gpu_run_logs_{stamp}.tar.gz")):
        if os.path.exists(os.path.join(src_dir, name)):
            shutil.copy(os.path.join(src_dir, name), os.path.join(dest, new))
    print(f"collect: record appended to bench/results/validation.jsonl; files in {os.path.relpath(dest, REPO)}")
    return 0
