"""The benchmark suite's arithmetic and its command line (bench/, installed as fastcnn.bench).

FLOPs count a multiply-add as 2 (bias, residual and ReLU are not counted); bytes are the fewest a
forward must move: each input, weight and bias read once, the residual read once, the output
written once.
"""

from __future__ import annotations

import csv
import os

import pytest

from fastcnn.bench import common, suite
from fastcnn.bench.shapes import Layer, layers


def test_flops_googlenet_5x5_with_and_without_reduction():
    """The Inception v1 example: a 5x5 conv over 14x14x480 with 48 filters, directly (2 * 14*14 *
    48 * 480*25 = 225.8 MFLOP per image) or after a 16-channel 1x1 reduction (1x1 480->16, then
    5x5 16->48: 2 * 14*14 * (480*16 + 16*48*25) = 10.5 MFLOP), the ~21x saving the paper motivates."""
    direct = Layer("googlenet", "5x5", "conv2d", C=480, H=14, W=14, K=48, R=5, S=5, padding=2)
    reduce = Layer("googlenet", "reduce", "conv1x1", C=480, H=14, W=14, K=16)
    after = Layer("googlenet", "5x5r", "conv2d", C=16, H=14, W=14, K=48, R=5, S=5, padding=2)
    assert (direct.P, direct.Q) == (14, 14)
    assert direct.flops(1) == 2 * 14 * 14 * 48 * 480 * 25 == 225_792_000
    assert reduce.flops(1) + after.flops(1) == 2 * 14 * 14 * (480 * 16 + 16 * 48 * 25) == 10_536_960
    assert direct.flops(32) == 32 * direct.flops(1)
    assert round(direct.flops(1) / (reduce.flops(1) + after.flops(1)), 1) == 21.4


def test_flops_of_strided_grouped_and_pool_layers():
    # AlexNet conv1: 11x11 stride 4 pad 2 over 3x224x224 -> 64x55x55
    conv1 = Layer("alexnet", "conv1", "conv2d", C=3, H=224, W=224, K=64, R=11, S=11, stride=4, padding=2)
    assert (conv1.P, conv1.Q) == (55, 55)
    assert conv1.flops(2) == 2 * 2 * 64 * 55 * 55 * 3 * 121
    grouped = Layer("x", "g", "conv2d", C=8, H=5, W=7, K=4, R=3, S=3, padding=1, groups=2)
    assert grouped.flops(1) == 2 * 4 * 5 * 7 * (8 // 2) * 9
    # max-pool: one comparison per tap; ceil_mode adds the partial last window
    pool = Layer("alexnet", "pool", "max_pool2d", C=64, H=55, W=55, R=3, S=3, stride=2)
    assert (pool.P, pool.Q) == (27, 27) and pool.flops(1) == 64 * 27 * 27 * 9
    ceil = Layer("googlenet", "pool", "max_pool2d", C=64, H=112, W=112, R=3, S=3, stride=2, ceil_mode=True)
    assert (ceil.P, ceil.Q) == (56, 56)


def test_bytes_fewest_moved():
    conv = Layer("x", "c", "conv2d", C=2, H=4, W=4, K=3, R=3, S=3, padding=1, residual=True)
    # input 2*4*4, weight 3*2*9 + bias 3, output 3*4*4 written + residual 3*4*4 read; float32
    assert conv.bytes(1, 4) == 4 * (32 + 54 + 3 + 2 * 48)
    nobias = Layer("x", "c", "conv1x1", C=2, H=4, W=4, K=3, bias=False)
    assert nobias.bytes(2, 2) == 2 * (2 * 32 + 6 + 2 * 48)
    pool = Layer("x", "p", "max_pool2d", C=3, H=4, W=4, R=2, S=2, stride=2)
    assert pool.bytes(1, 4) == 4 * (48 + 12)
    add = Layer("x", "a", "add_relu", C=3, H=4, W=4)
    assert add.bytes(1, 2) == 2 * 3 * 48


def test_every_network_layer_has_a_sane_count():
    for ly in layers():
        assert ly.flops(1) > 0 and ly.bytes(1, 4) > 0, ly
        assert ly.P >= 1 and ly.Q >= 1, ly


def test_cli_quick_writes_csv_and_plots(tmp_path, monkeypatch):
    """The command line in-process on two layers and LeNet-5, timing cut short: the CSV columns and
    values are the documented ones, the baseline's speedup is 1, and the plots are written."""
    monkeypatch.setattr(suite, "QUICK_LAYERS", {"lenet5.conv2", "lenet5.pool1"})
    monkeypatch.setattr(common, "cpu_samples", lambda fn, min_run_time=0.3: [_time_once(fn)[0]])
    out = tmp_path / "res"
    rc = suite.main(["--quick", "--device", "cpu", "--out", str(out), "--nets", "lenet5", "--layouts", "nhwc",
                     "--modes", "fwd,fwd+bwd,inference,train", "--rounds", "1"])
    assert rc == 0
    for name in ("ops.csv", "models.csv"):
        with open(out / name, newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows, name
        assert set(common.COLUMNS) <= set(rows[0]), f"{name}: missing {set(common.COLUMNS) - set(rows[0])}"
        for r in rows:
            assert r["kind"] == ("op" if name == "ops.csv" else "model")
            assert r["dtype"] in ("fp32", "tf32", "fp16", "bf16") and r["layout"] in ("nchw", "nhwc")
            assert float(r["ms_p50"]) > 0 and float(r["tflops"]) > 0
            assert float(r["peak_tflops"]) > 0 and float(r["peak_gbps"]) > 0
            if r["provider"] == "torch_cpu":
                assert float(r["speedup"]) == 1.0
        assert len({r["timestamp"] for r in rows}) == 1  # one run, one timestamp
    models = list(csv.DictReader(open(out / "models.csv", newline="")))
    for r in models:  # one round: its speedup range is the speedup itself
        assert r["rounds"] == "1" and float(r["speedup_lo"]) == float(r["speedup_hi"]) == pytest.approx(
            float(r["speedup"]))
    ops = list(csv.DictReader(open(out / "ops.csv", newline="")))
    assert {r["name"] for r in ops} == {"lenet5.conv2", "lenet5.pool1"}
    assert {r["mode"] for r in ops} == {"fwd", "fwd+bwd"}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.skip("matplotlib not installed: no plots")
    for png in ("ops_speedup.png", "roofline.png", "models_throughput.png"):
        assert os.path.getsize(out / png) > 10_000, png
    assert suite.report(str(out), echo=lambda *_: None) == 0


def test_rounds_report_the_median_and_the_spread_not_the_best(monkeypatch):
    """Three rounds of made-up times: the row's ms_p50 is the median over every round's samples,
    speedup = baseline median / fastcnn median, speedup_lo/hi the range of the per-round speedups."""
    from fastcnn.bench import bench_models

    times = {"torch_cpu": iter([[10.0, 10.0], [12.0, 12.0], [20.0, 20.0]]),
             "fastcnn_cpu": iter([[5.0, 5.0], [8.0, 8.0], [40.0, 40.0]])}
    current = {}
    real_context = bench_models._provider_context

    def context(prov):
        current["p"] = prov
        return real_context(prov)

    monkeypatch.setattr(bench_models, "_provider_context", context)
    monkeypatch.setattr(common, "samples", lambda fn, device, quick=False: next(times[current["p"]]))
    rows = bench_models.run("cpu", ["lenet5"], ["train"], batch=2, quick=True, rounds=3, echo=lambda *_: None,
                            providers=["torch_cpu", "fastcnn_cpu"])
    by = {r["provider"]: r for r in rows}
    assert by["torch_cpu"]["ms_p50"] == 12.0 and by["fastcnn_cpu"]["ms_p50"] == 8.0  # not the best (10, 5)
    assert by["fastcnn_cpu"]["speedup"] == pytest.approx(12.0 / 8.0)
    assert by["fastcnn_cpu"]["speedup_lo"] == pytest.approx(0.5) and by["fastcnn_cpu"]["speedup_hi"] == 2.0
    assert by["fastcnn_cpu"]["rounds"] == 3


def test_tables_say_speedup_and_greater_is_faster():
    rows = [{"provider": "torch_cpu", "mode": "fwd", "dtype": "fp32", "layout": "nchw", "speedup": "1.0"},
            {"provider": "fastcnn_cpu", "mode": "fwd", "dtype": "fp32", "layout": "nchw", "speedup": "2.0"},
            {"provider": "fastcnn_cpu", "mode": "fwd", "dtype": "fp32", "layout": "nchw", "speedup": "0.5"}]
    table = suite.ops_table(rows, "torch_cpu")
    header, _, row = table.splitlines()
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert (cells["geomean speedup"], cells["lowest"], cells["highest"]) == ("1", "0.5", "2")  # geomean(2, 0.5)
    assert "> 1: faster" in suite.ops_header("torch_cpu") and "> 1: faster" in suite.models_header("torch_cpu")
    assert "ratio" not in table


def test_readme_tables_match_the_committed_csvs():
    """The README's CPU numbers are rendered from bench/results/cpu_*.csv (tools/bench_readme.py)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "tools", "bench_readme.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_default_output_is_under_the_current_directory(tmp_path, monkeypatch):
    """Without --out the CSVs go to ./bench-out/<device>, never into the installed package."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(suite, "QUICK_LAYERS", {"lenet5.pool1"})
    monkeypatch.setattr(common, "cpu_samples", lambda fn, min_run_time=0.3: [_time_once(fn)[0]])
    assert suite.main(["ops", "--quick", "--device", "cpu", "--nets", "lenet5", "--layouts", "nchw", "--modes",
                       "fwd", "--no-plots"]) == 0
    written = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs]
    assert written and all(p.startswith(str(tmp_path / "bench-out")) for p in written), written
    assert not os.path.exists(os.path.join(os.path.dirname(suite.__file__), "results", suite.device_slug("cpu")))


def test_every_option_has_help():
    for action in suite.parser()._actions:
        assert action.help, action.option_strings
    text = " ".join(suite.parser().format_help().split())  # argparse wraps at the terminal's width
    assert "lenet5 64" in text and "(default: 3)" in text  # --batch's numbers, --rounds' default


def test_cli_rejects_unknown_names(capsys):
    for bad in (["--nets", "vgg16"], ["--dtypes", "fp8"], ["--providers", "tensorrt"], ["--layouts", "nwhc"]):
        with pytest.raises(SystemExit):
            suite.main(["--device", "cpu", *bad])
        assert "unknown" in capsys.readouterr().err


def _time_once(fn):
    import time

    fn()
    t = time.perf_counter()
    fn()
    ms = (time.perf_counter() - t) * 1e3
    return ms, ms, ms
