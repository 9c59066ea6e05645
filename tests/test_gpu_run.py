"""tools/gpu_run.py, the GPU window's script: its pieces and its dry run.

The record, the table and the summary are built from a state folder written here (made-up numbers:
these tests check the formats and the judging arithmetic, not fastcnn's speed); the sanitizer-log
parsing, the per-test pytest log, the timeout that ends a whole process group, part 2 on a fresh
machine, ``collect`` refusing dry-run records, the device commands in the docstring and
tools/GPU_WINDOW.md. The whole dry run is .ci/run's step (and ``test_dry_run_end_to_end``, slow);
``test_dry_run_subset`` runs a few of its steps on the CPU.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import gpu_report  # noqa: E402
import gpu_run  # noqa: E402

COLUMNS = ["timestamp", "git_sha", "device", "torch", "triton", "cuda", "kind", "name", "mode", "dtype", "layout",
           "batch", "shape", "provider", "ms_p50", "ms_p20", "ms_p80", "tflops", "gbps", "speedup", "table_line",
           "path", "bytes"]


def _csv(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})


def _jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _op(line, name, provider, ms, tflops=1.0, gbps=100.0, nbytes=10**9, path="p"):
    return {"timestamp": "t", "git_sha": "abc", "device": "NVIDIA H200", "kind": "op", "name": name, "mode": "fwd",
            "dtype": "bf16", "layout": "nhwc", "batch": 256, "provider": provider, "ms_p50": ms, "ms_p20": ms,
            "ms_p80": ms, "tflops": tflops, "gbps": gbps, "table_line": line, "path": path, "bytes": nbytes}


def _model(line, provider, ms, path="p"):
    return {"timestamp": "t", "git_sha": "abc", "device": "NVIDIA H200", "kind": "model", "name": line,
            "mode": "inference", "dtype": "bf16", "layout": "nhwc", "batch": 256, "provider": provider, "ms_p50": ms,
            "ms_p20": ms * 0.99, "ms_p80": ms * 1.01, "table_line": line, "path": path}


def make_state(tmp_path, steps=None, selftest_errors=0, memcheck_errors=0):
    """A state folder as the GPU steps leave it: 3 smoke checks (1 failed), 5 pytest outcomes, sweeps,
    peaks (1000 GB/s, 100 TFLOP/s: ridge 100 FLOP/B), one CSV row set per table line."""
    sd = tmp_path / "state"
    (sd / "bench").mkdir(parents=True)
    (sd / "logs").mkdir()
    _jsonl(sd / "smoke.jsonl", [{"what": "conv2d/cuda", "target": "cuda", "ok": True},
                                 {"what": "conv2d/triton", "target": "triton", "ok": True},
                                 {"what": "conv2d/sm90", "target": "sm90", "ok": False}])
    _jsonl(sd / "pytest.jsonl", [{"nodeid": f"t{i}", "outcome": o} for i, o in
                                  enumerate(["passed", "passed", "failed", "skipped", "error"])])
    _jsonl(sd / "sweep_memcheck.jsonl", [{"ok": True}] * 4)
    _jsonl(sd / "sweep_racecheck.jsonl", [{"ok": True}, {"ok": False}])
    state = {"run_timestamp": "2026-12-01T00:00:00+00:00", "git_sha": "abc123", "dry_run": False,
             "facts": {"device": "NVIDIA H200", "torch": "2.11.0+cu130", "triton": "3.6.0", "cuda": "13.0",
                       "l2_mb": 60.0},
             "peaks": {"peak_gbps": 1000.0, "peak_tflops": 100.0, "peak_matmul": "bf16 8192^3 matmul"},
             "sanitizer_selftest": {"errors": selftest_errors, "note": "n"},
             "sanitizer": {"memcheck": {"errors": memcheck_errors, "sanitizer": True},
                           "racecheck": {"errors": 0, "sanitizer": True}},
             "steps": steps if steps is not None else {n: {"status": "ok"} for n in gpu_run.STEP}}
    gpu_report.write_json(str(sd / "state.json"), state)
    ops = [_op("conv3x3", "a", "cudnn", 2.0), _op("conv3x3", "a", "fastcnn_cuda", 1.6, tflops=300),
           _op("conv3x3", "a", "fastcnn_sm90", 1.0, tflops=480, path="fprop: Hopper CUTLASS conv"),
           _op("conv3x3", "b", "cudnn", 1.0), _op("conv3x3", "b", "fastcnn_cuda", 1.25, tflops=200),
           # 1x1: intensity tflops*1e12/(gbps*1e9): layer m 10 FLOP/B (memory-bound), layer c 1000 (not)
           _op("conv1x1", "m", "cudnn", 1.0, tflops=1, gbps=100), _op("conv1x1", "m", "fastcnn_cuda", 0.5, tflops=9,
                                                                      gbps=900),
           _op("conv1x1", "c", "cudnn", 1.0, tflops=50, gbps=50), _op("conv1x1", "c", "fastcnn_cuda", 0.5,
                                                                      tflops=60, gbps=60),
           # pools: the small one (1 MB, under 4x the 60 MB L2) is listed but not judged
           _op("pool_add", "big", "cudnn", 1.0, gbps=700), _op("pool_add", "big", "fastcnn_cuda", 0.8, gbps=860),
           _op("pool_add", "tiny", "cudnn", 1.0, gbps=10, nbytes=10**6),
           _op("pool_add", "tiny", "fastcnn_cuda", 1.0, gbps=10, nbytes=10**6)]
    models = [_model("resnet50_infer", "cudnn", 30.0), _model("resnet50_infer", "fastcnn", 20.0),
              _model("resnet50_infer", "torch_compile", 21.0),
              _model("resnet50_train", "cudnn", 100.0), _model("resnet50_train", "fastcnn", 80.0),
              _model("googlenet_infer", "cudnn", 10.0), _model("googlenet_infer", "fastcnn", 7.0),
              _model("alexnet_infer", "cudnn", 10.0),
              _model("lenet5_latency", "cudnn", 0.05), _model("lenet5_latency", "fastcnn", 0.01)]
    _csv(str(sd / "bench" / "ops.csv"), ops)
    _csv(str(sd / "bench" / "models.csv"), models)
    return str(sd)


def test_record_table_and_summary(tmp_path):
    sd = make_state(tmp_path)
    out = tmp_path / "out"
    record, lines = gpu_report.write_files(sd, str(out), [s.name for s in gpu_run.STEPS])
    assert list(record) == gpu_report.RECORD_KEYS
    # smoke 2+1, pytest 2 passed / 2 failed (failed, error) / 1 skipped, sweeps 5+1
    assert (record["passed"], record["failed"], record["skipped"]) == (2 + 2 + 5, 1 + 2 + 1, 1)
    assert record["sanitizer_errors"] == 0 and record["device"] == "NVIDIA H200" and record["git_sha"] == "abc123"
    assert "pytest 5 outcomes" in record["scope"] and "racecheck kernel sweep 2 cases" in record["scope"]
    assert gpu_report.check_out(str(out), dry=False) == []
    by = {ln["line"]: ln for ln in lines}
    assert [r["line"] for r in gpu_report.read_csv(str(out / "gpu_table.csv"))] == [k for k, _, _ in gpu_report.TABLE]
    # ResNet-50 inference: 1.5x eager and 1.05x torch.compile (< 1.1): missed
    assert by["resnet50_infer"]["met"] == "no" and "1.50x eager" in by["resnet50_infer"]["measured"]
    assert "1.05x torch_compile" in by["resnet50_infer"]["measured"]
    assert by["resnet50_train"]["met"] == "yes" and "1.25x eager" in by["resnet50_train"]["measured"]
    assert by["googlenet_infer"]["met"] == "yes"
    assert by["alexnet_infer"]["met"] == "not measured"  # no fastcnn row
    assert by["lenet5_latency"]["met"] == "yes" and "5.00x" in by["lenet5_latency"]["measured"]
    # 3x3: per shape the fastest fastcnn path: a 2.0x (sm90), b 0.8x (cuda): worst 0.8x
    assert by["conv3x3"]["met"] == "no" and "worst 0.80x (b," in by["conv3x3"]["measured"]
    assert "Hopper CUTLASS conv" in by["conv3x3"]["path"]
    # 1x1: only the memory-bound layer m is judged: 900 of 1000 GB/s
    assert by["conv1x1"]["met"] == "yes" and "worst 90%" in by["conv1x1"]["measured"]
    # pools: only the layer moving >= 4x the L2: 860 of 1000 GB/s = 86% >= 85%
    assert by["pool_add"]["met"] == "yes" and "worst 86%" in by["pool_add"]["measured"] and "1 layers" in \
        by["pool_add"]["measured"]
    md = (out / "summary.md").read_text()
    for ln in lines:
        assert ln["what"] in md and ln["target"] in md
    missed = md.split("Missed targets")[1].split("##")[0]
    assert "ResNet-50 inference" in missed and "3x3 conv" in missed and "training step" not in missed
    assert json.loads((out / "validation.jsonl").read_text()) == record


def test_record_counts_what_did_not_run(tmp_path):
    steps = {n: {"status": "ok"} for n in gpu_run.STEP}
    steps["tests"] = {"status": "timeout", "note": "stopped"}
    steps["sanitizer"] = {"status": "pending", "note": "no time"}
    sd = make_state(tmp_path, steps=steps, selftest_errors=2, memcheck_errors=3)
    st = gpu_report.load_json(os.path.join(sd, "state.json"))
    st["sanitizer"]["racecheck"]["errors"] = None  # did not reach its summary
    gpu_report.write_json(os.path.join(sd, "state.json"), st)
    record, _ = gpu_report.write_files(sd, str(tmp_path / "out"), [s.name for s in gpu_run.STEPS])
    assert record["failed"] == 1 + 2 + 1 + 1  # smoke, pytest, racecheck sweep, + the timed-out tests step
    assert record["sanitizer_errors"] == 2 + 3 + 1
    assert "tests timed out" in record["scope"] and "sanitizer not run" in record["scope"]


def test_check_out_finds_problems(tmp_path):
    sd = make_state(tmp_path)
    out = tmp_path / "out"
    gpu_report.write_files(sd, str(out), [])
    rows = gpu_report.read_csv(str(out / "gpu_table.csv"))
    gpu_run_table = out / "gpu_table.csv"
    with open(gpu_run_table, "w", newline="") as f:  # a table missing its last line
        w = csv.DictWriter(f, fieldnames=gpu_report.TABLE_COLUMNS)
        w.writeheader()
        w.writerows(rows[:-1])
    for i in range(2):
        (out / f"extra{i}.txt").write_text("x")
    problems = gpu_report.check_out(str(out), dry=True)
    assert any("gpu_table.csv lines" in p for p in problems)
    assert any("9 files > 8" in p for p in problems)
    assert any("dry-run record device" in p for p in problems)
    assert any("alexnet_infer lacks a baseline or a fastcnn row" in p for p in problems)  # cudnn only


@pytest.mark.parametrize("text,want", [
    ("========= COMPUTE-SANITIZER\n========= ERROR SUMMARY: 0 errors\n", 0),
    ("========= Invalid __global__ write of size 4 bytes\n========= ERROR SUMMARY: 3 errors\n", 3),
    ("========= RACECHECK SUMMARY: 2 hazards displayed (1 error, 1 warning)\n", 1),
    ("========= RACECHECK SUMMARY: 2 hazards displayed (1 error, 1 warning)\n========= ERROR SUMMARY: 1 error\n", 1),
    ("Traceback (most recent call last):\nRuntimeError: no device\n", None),
])
def test_sanitizer_errors_in(tmp_path, text, want):
    log = tmp_path / "san.log"
    log.write_text(text)
    assert gpu_run.sanitizer_errors_in(str(log)) == want
    assert gpu_run.sanitizer_errors_in(str(tmp_path / "missing.log")) is None
    if "RACECHECK" in text:  # a planted race counts as found when shown as a warning too
        assert gpu_run.sanitizer_errors_in(str(log), hazards=True) == 2


def test_pytest_log_plugin(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "def test_ok(): pass\n"
        "def test_bad(): assert 1 == 2\n"
        "@pytest.mark.skip(reason='r')\n"
        "def test_skip(): pass\n"
        "@pytest.fixture\n"
        "def broken(): raise RuntimeError('setup')\n"
        "def test_error(broken): pass\n")
    log = tmp_path / "log.jsonl"
    env = dict(os.environ, FASTCNN_PYTEST_LOG=str(log), PYTHONPATH=os.path.join(REPO, "tools"))
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "gpu_pytest_log",
                    str(tmp_path / "test_x.py")], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    rows = gpu_report.read_jsonl(str(log))
    got = {r["nodeid"].split("::")[1]: r["outcome"] for r in rows}
    assert got == {"test_ok": "passed", "test_bad": "failed", "test_skip": "skipped", "test_error": "error"}
    assert gpu_report.pytest_counts(rows) == (1, 2, 1)
    assert "assert 1 == 2" in next(r for r in rows if r["outcome"] == "failed")["message"]


def test_sh_timeout_ends_the_process_group(tmp_path):
    pid_file = tmp_path / "pid"
    t0 = time.monotonic()
    rc, secs = gpu_run.sh(["bash", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], str(tmp_path / "log"), timeout=1)
    assert rc == 124 and time.monotonic() - t0 < 15
    child = int(pid_file.read_text())
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{child}") or "Z" in open(f"/proc/{child}/stat").read().split()[2]
    assert "TIMEOUT after 1 s" in (tmp_path / "log").read_text()
    rc, _ = gpu_run.sh(["bash", "-c", "echo one; echo two"], str(tmp_path / "log2"), timeout=10, stamp=True)
    text = (tmp_path / "log2").read_text().splitlines()
    assert rc == 0 and text[1].endswith("] one") and text[1].startswith("[")


def test_part2_on_a_fresh_machine(tmp_path):
    out = tmp_path / "out"
    rc = gpu_run.run_part(2, str(out), str(tmp_path / "no-state"), None, dry=False)
    assert rc == 3
    assert "FRESH MACHINE" in (out / "summary.md").read_text()
    assert not (out / "validation.jsonl").exists()


def test_interrupted_step_is_not_rerun(tmp_path):
    sd = str(tmp_path / "state")
    os.makedirs(sd)
    gpu_report.write_json(os.path.join(sd, "state.json"), {"steps": {"tests": {"status": "running"}}})
    ctx = gpu_run.Ctx(sd, str(tmp_path / "out"), dry=False, part=1, budget=100)
    assert ctx.state["steps"]["tests"]["status"] == "timeout"


def test_build_jobs_capped_by_memory():
    assert gpu_run.build_jobs({"cpus": 16, "mem_total_gb": 40})[0] == 16  # the kind's 128 GB: 36 > 16
    assert gpu_run.build_jobs({"cpus": 64, "mem_total_gb": 140})[0] == 40  # 140 / 3.5


def test_collect_refuses_dry_runs(tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setattr(gpu_report, "RESULTS", str(results))
    src = tmp_path / "dry"
    src.mkdir()
    (src / "validation.jsonl").write_text(json.dumps({"device": gpu_report.DRY_DEVICE}) + "\n")
    assert gpu_report.collect(str(src)) == 1
    assert not results.exists()
    sd = make_state(tmp_path)
    gpu_report.write_files(sd, str(tmp_path / "gpu"), [])
    assert gpu_report.collect(str(tmp_path / "gpu")) == 0
    assert len(gpu_report.read_jsonl(str(results / "validation.jsonl"))) == 1
    assert len(gpu_report.read_csv(str(results / "nvidia_h200" / "ops.csv"))) == 13


def test_device_commands_fit_the_tool():
    """The docstring's two commands are the ones tools/GPU_WINDOW.md gives, and fit the run tool."""
    doc = gpu_run.__doc__
    cmds = [ln.strip() for ln in doc.splitlines() if ln.strip().startswith("python3 tools/gpu_run.py part")]
    assert cmds[:2] == ['python3 tools/gpu_run.py part1 --out "$OUT"', 'python3 tools/gpu_run.py part2 --out "$OUT"']
    window = open(os.path.join(REPO, "tools", "GPU_WINDOW.md")).read()
    for c in cmds[:2]:
        assert c in window and len(c) <= 2000
    # 13 minutes: the machine's start (~90 s) and the gap between the calls (~20 s) included
    assert sum(gpu_run.PART_BUDGET.values()) + 90 + 20 <= 13 * 60
    import re

    table = dict(re.findall(r"^\| (\w+)\s+\|\s+(\d+) s \|", doc, re.M))
    for s in gpu_run.STEPS:  # the docstring's step table is the code's
        assert s.budget <= gpu_run.PART_BUDGET[1] and int(table[s.name]) == s.budget, s.name


def test_dry_run_subset(tmp_path):
    """A few of the dry run's steps on the CPU, through the command line, with the real file formats."""
    out = tmp_path / "dry"
    p = subprocess.run([sys.executable, os.path.join(REPO, "tools", "gpu_run.py"), "--dry-run", "--out", str(out),
                        "--steps", "build,smoke,peaks"], capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, 1), p.stdout + p.stderr
    assert gpu_report.check_out(str(out), dry=None) == [], p.stdout
    rec = gpu_report.read_jsonl(str(out / "validation.jsonl"))[0]
    assert rec["device"] == gpu_report.DRY_DEVICE and rec["passed"] > 0 and rec["failed"] == 0
    state = gpu_report.load_json(str(out / "state.json"))
    assert state["steps"]["smoke"]["status"] == "ok" and state["peaks"]["peak_gbps"] > 0


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path):
    out = tmp_path / "dry"
    p = subprocess.run([sys.executable, os.path.join(REPO, "tools", "gpu_run.py"), "--dry-run", "--out", str(out),
                        "--check"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
