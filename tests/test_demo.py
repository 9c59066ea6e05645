"""``python -m fastcnn demo``: the reduced run (``--quick``) end to end, the data loaders (the
digits' stratified split, MNIST's IDX files), deterministic training, and ``import fastcnn``
without the demo's extras (scikit-learn, matplotlib, tqdm)."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys

import pytest
import torch

from fastcnn import _console
from fastcnn import data as fdata
from fastcnn import demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def _synthetic(n_train=96, n_test=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    y_train = torch.arange(n_train) % 10
    y_test = torch.arange(n_test) % 10
    # Each class a bright blob at its own place, plus noise: learnable in a few steps.
    def images(y):
        x = torch.randn(len(y), 1, 28, 28, generator=g) * 0.3
        for i, c in enumerate(y.tolist()):
            r, col = 2 + (c // 5) * 13, 2 + (c % 5) * 5
            x[i, 0, r:r + 10, col:col + 4] += 2.0
        return x
    return fdata.Dataset("synthetic", images(y_train), y_train, images(y_test), y_test)


# ------------------------------------------------------------------------------------------------
# the whole demo, reduced
# ------------------------------------------------------------------------------------------------

def test_demo_quick_end_to_end(tmp_path):
    pytest.importorskip("sklearn", reason="the demo's digits need scikit-learn (`make demo` installs it)")
    pytest.importorskip("matplotlib", reason="the demo's plot needs matplotlib (`make demo` installs it)")
    out = tmp_path / "demo out"  # a space: the path is printed and used as given
    proc = subprocess.run([sys.executable, "-m", "fastcnn", "demo", "--quick", "--out", str(out)], cwd=tmp_path,
                          env=dict(os.environ), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    text = proc.stdout
    # step 1: the PASS table
    assert "[1] every fused op" in text
    n_pass = [line for line in text.splitlines() if line.endswith(" PASS") and "/" in line]
    assert n_pass and "FAIL" not in n_pass[0], text
    # step 2: accuracy printed
    assert "test accuracy of LeNet-5 (ReLU):" in text
    # step 3: the ablation table, one row per variant, and the PNG
    assert "final train loss" in text and "test accuracy %" in text
    for key, label, _ in demo.VARIANTS:
        assert any(line.startswith(key) and label in line for line in text.splitlines()), (key, text)
    png = out / "ablation_loss.png"
    w, h = _png_size(png)
    assert w >= 800 and h >= 400
    assert str(png) in text
    # step 4: the timing table and the pointer to the full suite
    assert "speedup" in text and "fastcnn ms" in text and "python -m fastcnn bench" in text
    # every file in the printed folder
    assert f"output folder: {out}" in text
    results = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in results["ablation"]] == ["v1", "v2", "v3", "v4"]
    assert all(0.0 <= r["test accuracy %"] <= 100.0 and r["final train loss"] > 0 for r in results["ablation"])
    assert {r["network"] for r in results["timing"]} == {"lenet5", "resnet18"} or torch.cuda.is_available()
    assert all(r["PyTorch ms"] > 0 and r["fastcnn ms"] > 0 for r in results["timing"])
    assert all(r["result"] == "PASS" for r in results["check"])
    from fastcnn.models import lenet5

    lenet5().load_state_dict(torch.load(out / "lenet5_relu.pt"))


def test_demo_on_mnist_idx_files(tmp_path, capsys):
    """``--data DIR``: the IDX reader feeds steps 2 and 3 (in-process, no check, no timing)."""
    pytest.importorskip("matplotlib", reason="the demo's plot needs matplotlib (`make demo` installs it)")
    root = _write_mnist(tmp_path / "mnist", n_train=64, n_test=30)
    rc = demo.main(["--quick", "--data", str(root), "--skip-check", "--skip-bench", "--out", str(tmp_path / "o")])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "MNIST" in text and "64 training / 30 test images" in text
    _png_size(tmp_path / "o" / "ablation_loss.png")


def test_demo_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        demo.main(["--epochs", "0"])
    pytest.importorskip("matplotlib")
    rc = demo.main(["--quick", "--data", str(tmp_path), "--skip-check", "--skip-bench", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "missing MNIST file(s)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------

def test_training_is_deterministic_and_learns():
    ds = _synthetic()
    runs = []
    with demo.num_threads(1):
        for _ in range(2):
            model = demo.build(dict(activation="relu"), seed=3)
            runs.append(demo.train(model, ds, epochs=4, seed=3, bars="none"))
    assert runs[0].iter_loss == runs[1].iter_loss  # bit-identical
    assert runs[0].epoch_acc == runs[1].epoch_acc
    assert len(runs[0].iter_loss) == 4 * runs[0].iters_per_epoch == 4 * 3
    assert runs[0].epoch_loss[-1] < runs[0].epoch_loss[0]
    assert runs[0].final_acc > 0.5  # chance is 0.1


def test_ablation_variants_build_and_share_the_init():
    x = torch.randn(2, 1, 28, 28)
    for key, _, kw in demo.VARIANTS:
        model = demo.build(kw, seed=0)
        assert model(x).shape == (2, 10), key
    a = demo.build(dict(activation="sigmoid"), seed=0)
    b = demo.build(dict(activation="relu"), seed=0)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)  # v1 and v2 differ only in the activation


def test_progress_falls_back_to_lines_without_tqdm(monkeypatch, capsys):
    monkeypatch.setattr(_console, "_has", lambda m: False if m == "tqdm" else True)
    with demo.num_threads(1):
        demo.train(demo.build(dict(activation="relu"), seed=0), _synthetic(32, 10), epochs=2, seed=0, bars="epoch")
    lines = [line for line in capsys.readouterr().out.splitlines() if "train loss" in line]
    assert len(lines) == 2 and lines[0].strip().startswith("epoch 1/2: train loss")


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------

def test_digits_split_is_stratified_and_normalised():
    pytest.importorskip("sklearn", reason="the digits come with scikit-learn")
    ds = fdata.load_digits(seed=0)
    assert ds.x_train.shape == (1438, 1, 28, 28) and ds.x_test.shape == (359, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-4
    counts_test, counts_all = torch.bincount(ds.y_test), torch.bincount(torch.cat([ds.y_train, ds.y_test]))
    assert torch.equal(counts_test, torch.round(0.2 * counts_all.double()).long())
    again = fdata.load_digits(seed=0)
    assert torch.equal(ds.x_test, again.x_test) and torch.equal(ds.y_train, again.y_train)
    other = fdata.load_digits(seed=1)
    assert not torch.equal(ds.y_test, other.y_test)


def test_stratified_split_without_sklearn():
    y = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    tr, te = fdata._stratified_split(y, 0.2, seed=0)
    assert sorted(torch.cat([tr, te]).tolist()) == list(range(20))  # a partition
    assert torch.bincount(y[te], minlength=3).tolist() == [2, 1, 1]  # round(0.2 * n_c) each


def _idx_bytes(t: torch.Tensor, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, t.dim()]) + b"".join(struct.pack(">I", s) for s in t.shape)
    if t.dtype == torch.uint8:
        return header + t.numpy().tobytes()
    return header + t.numpy().astype(t.numpy().dtype.newbyteorder(">")).tobytes()


def _write_mnist(root, n_train, n_test):
    os.makedirs(root, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    files = {
        "train-images-idx3-ubyte.gz": torch.randint(0, 256, (n_train, 28, 28), generator=g, dtype=torch.uint8),
        "train-labels-idx1-ubyte.gz": torch.arange(n_train, dtype=torch.uint8) % 10,
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (n_test, 28, 28), generator=g, dtype=torch.uint8),
        "t10k-labels.idx1-ubyte": torch.arange(n_test, dtype=torch.uint8) % 10,  # the dotted spelling
    }
    for name, t in files.items():
        opener = gzip.open if name.endswith(".gz") else open
        with opener(os.path.join(root, name), "wb") as f:
            f.write(_idx_bytes(t))
    return root


def test_mnist_idx_reader(tmp_path):
    root = _write_mnist(tmp_path, n_train=20, n_test=12)
    ds = fdata.load_mnist(str(root))
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (12, 1, 28, 28)
    assert ds.y_train.tolist() == [i % 10 for i in range(20)] and ds.y_test.dtype == torch.int64
    assert abs(ds.x_train.mean().item()) < 1e-4
    raw = fdata.read_idx(os.path.join(root, "t10k-images-idx3-ubyte"))
    assert raw.dtype == torch.uint8 and raw.shape == (12, 28, 28)
    # big-endian multi-byte types
    t = torch.tensor([[1, -2, 300], [70000, 5, -6]], dtype=torch.int32)
    p = tmp_path / "ints.idx"
    p.write_bytes(_idx_bytes(t, 0x0C))
    assert torch.equal(fdata.read_idx(str(p)), t)
    # torchvision's layout: <root>/MNIST/raw
    nested = tmp_path / "tv"
    _write_mnist(nested / "MNIST" / "raw", n_train=10, n_test=10)
    assert len(fdata.load_mnist(str(nested)).y_train) == 10


def test_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        fdata.load_mnist(str(tmp_path / "nope"))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 1, 2, 2) + b"1234")
    with pytest.raises(FileNotFoundError) as e:
        fdata.load_mnist(str(tmp_path))
    msg = str(e.value)
    assert "train-labels-idx1-ubyte" in msg and "t10k-images-idx3-ubyte" in msg and "train-images" not in msg
    bad = tmp_path / "bad"
    bad.write_bytes(b"GIF89a....")
    with pytest.raises(ValueError, match="not an IDX file"):
        fdata.read_idx(str(bad))
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"123")
    with pytest.raises(ValueError, match="data bytes"):
        fdata.read_idx(str(short))


# ------------------------------------------------------------------------------------------------
# the extras stay optional
# ------------------------------------------------------------------------------------------------

_BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('sklearn', 'matplotlib', 'tqdm'):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _Block())
import importlib.util
_find = importlib.util.find_spec
def find_spec(name, package=None):
    if name.split('.')[0] in ('sklearn', 'matplotlib', 'tqdm'):
        return None
    return _find(name, package)
importlib.util.find_spec = find_spec
"""


def test_fastcnn_imports_without_the_demo_extras(tmp_path):
    code = _BLOCK + """
import fastcnn, fastcnn.data, fastcnn.demo, fastcnn.models, fastcnn.nn
assert not any(m.split('.')[0] in ('sklearn', 'matplotlib', 'tqdm') for m in sys.modules)
from fastcnn.__main__ import main
sys.exit(main(['demo', '--out', sys.argv[1]]))
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], env=dict(os.environ), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pip install matplotlib scikit-learn" in proc.stderr and "make demo" in proc.stderr
