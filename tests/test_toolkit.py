"""The shared testing toolkit (``fastcnn.testing``: the error measure, the backend targets), the
self-check built on it, the one table formatter and progress bar (``fastcnn._console``) and the
benchmarks' CSV writer."""

from __future__ import annotations

import csv
import math

import pytest
import torch

import fastcnn
from fastcnn import _console, selfcheck, testing
from fastcnn.bench import common

import conftest


def test_rel_err_and_max_abs_err():
    ref = torch.tensor([3.0, -4.0, 0.0], dtype=torch.float64)
    assert testing.rel_err(ref.clone(), ref) == 0.0
    out = ref + torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64)
    assert testing.rel_err(out, ref) == pytest.approx(0.5 / 5.0)
    assert testing.max_abs_err(out, ref) == pytest.approx(0.5)
    assert testing.rel_err(out.float(), ref) == pytest.approx(0.1)  # compared in float64, any dtype
    # a NaN or inf where the reference is finite (an unwritten, poisoned element) fails outright
    bad = out.clone()
    bad[2] = float("nan")
    assert testing.rel_err(bad, ref) == math.inf and testing.max_abs_err(bad, ref) == math.inf
    # specials where the reference has the same ones are compared by value, the rest by norm
    ref_s = torch.tensor([float("nan"), float("inf"), 2.0], dtype=torch.float64)
    assert testing.rel_err(torch.tensor([float("nan"), float("inf"), 2.0]), ref_s) == 0.0
    assert testing.rel_err(torch.tensor([float("nan"), -float("inf"), 2.0]), ref_s) == math.inf
    assert testing.rel_err(torch.zeros(3), torch.zeros(3)) == 0.0  # zero reference: the absolute norm
    with pytest.raises(AssertionError, match=r"shape \(2,\) != reference \(3,\)"):
        testing.rel_err(torch.zeros(2), ref)


def test_assert_close_names_what_failed():
    ref = torch.ones(4, dtype=torch.float64)
    testing.assert_close(ref + 1e-6, ref, torch.float32)  # 1e-6 <= TOL[float32]
    with pytest.raises(AssertionError, match=r"grad_input: relative error 1\.000e-03 > 2\.0e-05 \(torch\.float32\)"):
        testing.assert_close(ref * 1.001, ref, torch.float32, what="grad_input")
    testing.assert_close(ref * 1.001, ref, torch.float32, tol=testing.TOL_TF32)
    assert conftest.TOL is testing.TOL and conftest.assert_close is testing.assert_close  # one copy


def test_targets_table_and_its_pytest_params():
    ids = [t.id for t in testing.TARGETS]
    assert len(set(ids)) == len(ids)
    assert [p.id for p in conftest.BACKEND_DEVICES] == ids
    runnable = testing.targets()
    assert runnable[0] == testing.Target("cpu", "cpu", "cpu")  # always there
    avail = fastcnn.available_backends()
    for t in testing.TARGETS:
        why = t.unavailable()
        assert (t in runnable) == (why is None)
        if why is None:
            assert t.backend in avail and (t.device == "cpu" or torch.cuda.is_available())
        else:
            assert isinstance(why, str) and why
    # Triton on CPU tensors only under the interpreter
    interp = next(t for t in testing.TARGETS if t.id == "triton-interp")
    assert (interp in runnable) == (testing.interpreting() and "triton" in avail)


def test_bench_providers_follow_the_targets():
    """Every timed target is a fastcnn_<backend> provider of the benchmarks on its device kind;
    the interpreter is not timed."""
    for t in testing.TARGETS:
        name = "fastcnn_" + t.backend.replace("-", "_")
        if t.timed:
            assert name in common.PROVIDERS[t.device] and common.FASTCNN_BACKEND[name] == t.backend
    assert common.PROVIDERS["cpu"][0] == common.BASELINE["cpu"] and common.PROVIDERS["cuda"][0] == common.BASELINE["cuda"]
    assert "fastcnn_triton" not in common.PROVIDERS["cpu"]  # triton-interp is not timed


def test_a_new_target_is_one_entry(monkeypatch):
    """A backend joins every check with one TARGETS entry; one this installation lacks is reported
    with its reason (pytest skips it with that reason)."""
    extra = testing.Target("cpu", "cpu", "cpu-again")
    missing = testing.Target("no-such-backend", "cpu", "missing")
    monkeypatch.setattr(testing, "TARGETS", testing.TARGETS + (extra, missing))
    assert extra in testing.targets() and missing not in testing.targets()
    assert "'no-such-backend' is not available" in missing.unavailable()
    param = conftest._param(missing)
    assert param.values == (("no-such-backend", "cpu"),) and param.id == "missing"
    assert [m.kwargs["reason"] for m in param.marks if m.name == "skip"] == [f"missing: {missing.unavailable()}"]
    rows = selfcheck.run(dtypes=[torch.float64])
    assert {r["backend"] for r in rows} == {t.backend for t in testing.targets()}
    assert len([r for r in rows if r["backend"] == "cpu"]) == 2 * 4  # cpu twice (cpu, cpu-again) x 4 ops


def test_selfcheck_table(monkeypatch):
    monkeypatch.setattr(testing, "TARGETS", testing.TARGETS[:1])
    rows = selfcheck.run(dtypes=[torch.float32])
    assert [r["result"] for r in rows] == ["PASS"] * 4
    lines = []
    assert selfcheck.print_table(rows, echo=lines.append)
    text = "\n".join(lines)
    assert text.splitlines()[0].split() == ["op", "backend", "device", "dtype", "fwd", "max", "abs", "err", "fwd",
                                            "rel", "err", "grad", "rel", "err", "result"]
    assert text.endswith("4/4 PASS")
    rows[1]["result"] = "FAIL"
    lines.clear()
    assert not selfcheck.print_table(rows, echo=lines.append) and lines[-1] == "3/4 PASS, 1 FAIL"


def test_format_table_text_and_markdown():
    rows = [{"name": "a", "ms": 1.23456, "n": 3}, {"name": "longer", "ms": 123.0, "n": None}]
    text = _console.format_table(rows, ["name", "ms", "n"], {"ms": "{:.1f}"})
    assert text.splitlines() == ["name    ms     n", "------  -----  -", "a       1.2    3", "longer  123.0"]
    md = common.markdown_table(rows, ["name", "ms", "n"])
    assert md.splitlines() == ["| name   | ms   | n |", "|--------|------|---|", "| a      | 1.23 | 3 |",
                               "| longer | 123  |   |"]


def test_progress_without_tqdm_numbers_the_steps(monkeypatch, capsys):
    monkeypatch.setattr(_console, "_has", lambda m: m != "tqdm")
    p = _console.Progress(2, "ops")
    assert not p.active
    p.echo("lenet5.conv1 12 ms", advance=True)
    p.echo("a note")
    p.echo("lenet5.conv2 3 ms", advance=True)
    p.close()
    assert capsys.readouterr().out.splitlines() == ["[ops 1/2] lenet5.conv1 12 ms", "a note",
                                                    "[ops 2/2] lenet5.conv2 3 ms"]


def test_append_csv_widens_the_header(tmp_path):
    path = str(tmp_path / "rows.csv")
    common.append_csv(path, [{"name": "a", "ms_p50": 1.0}])
    common.append_csv(path, [{"name": "b", "ms_p50": 2.0, "out_rel_err": 1e-7}])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["a", "b"]
    assert rows[0]["out_rel_err"] == "" and float(rows[1]["out_rel_err"]) == 1e-7
    with open(path, newline="") as f:
        assert len({len(r) for r in csv.reader(f)}) == 1  # every line under the same header
