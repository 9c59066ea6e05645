"""float32 accuracy on long reductions: per op, forward and every gradient, fastcnn's error against a
float64 reference is at most 2x PyTorch's own float32 error on the same inputs.

Each case reduces over 10^5 terms or more (the channel x tap sum of the forward and of dgrad, the
pixel sum of wgrad and dbias), where the summation order decides the error: blocked or pairwise
sums keep it near sqrt(n) ulps, a naive running sum grows like n. TF32 is off (exact float32 is the
contract). The CPU backend runs in CI; the interpreter and cuda-sim take minutes here (--runslow),
CUDA and Triton on a GPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastcnn
import fastcnn.functional as FF
from conftest import BACKEND_DEVICES, rel_err
from fastcnn.testing import TARGETS as ALL_TARGETS

SLOW = {"triton-interp", "cuda-sim", "cuda-sim-rev"}
TARGETS = [pytest.param(t, id=p.id, marks=list(p.marks) + ([pytest.mark.slow] if p.id in SLOW else []))
           for t, p in zip(ALL_TARGETS, BACKEND_DEVICES)]

# (name, build inputs, fastcnn call, PyTorch call); every reduction >= 10^5 terms.
CASES = {
    # forward and dgrad: C*R*S = 4096*25 = 102,400 terms per output; wgrad/dbias: N*P*Q = 4*158*158
    "conv2d-channels": (lambda: dict(x=torch.randn(1, 4096, 7, 7), w=torch.randn(3, 4096, 5, 5), b=torch.randn(3)),
                        lambda t: FF.conv2d(t["x"], t["w"], t["b"], padding=1),
                        lambda t: F.conv2d(t["x"], t["w"], t["b"], padding=1)),
    "conv2d-pixels": (lambda: dict(x=torch.randn(4, 2, 160, 160), w=torch.randn(3, 2, 3, 3), b=torch.randn(3)),
                      lambda t: FF.conv2d(t["x"], t["w"], t["b"]),
                      lambda t: F.conv2d(t["x"], t["w"], t["b"])),
    "conv2d-relu-dgrad": (lambda: dict(x=torch.randn(1, 8, 6, 6), w=torch.randn(4096, 8, 5, 5) * 0.1),
                          lambda t: FF.conv2d(t["x"], t["w"], padding=2, activation="relu"),
                          lambda t: F.relu(F.conv2d(t["x"], t["w"], padding=2))),
    "conv1x1-channels": (lambda: dict(x=torch.randn(1, 102400, 2, 2), w=torch.randn(3, 102400, 1, 1)),
                         lambda t: FF.conv1x1(t["x"], t["w"], activation=None),
                         lambda t: F.conv2d(t["x"], t["w"])),
    "conv1x1-pixels": (lambda: dict(x=torch.randn(4, 3, 160, 160), w=torch.randn(5, 3, 1, 1), b=torch.randn(5)),
                       lambda t: FF.conv1x1(t["x"], t["w"], t["b"]),
                       lambda t: F.relu(F.conv2d(t["x"], t["w"], t["b"]))),
    "max_pool2d": (lambda: dict(x=torch.randn(4, 3, 161, 161)),
                   lambda t: FF.max_pool2d(t["x"], 3, 1, 1),
                   lambda t: F.max_pool2d(t["x"], 3, 1, 1)),
    "add_relu-broadcast": (lambda: dict(a=torch.randn(4, 8, 64, 64), b=torch.randn(1, 8, 1, 1)),
                           lambda t: FF.add_relu(t["a"], t["b"]),
                           lambda t: F.relu(t["a"] + t["b"])),
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", list(CASES))
def test_fp32_long_reductions_as_accurate_as_pytorch(case, target):
    device = target.device
    make, ours, theirs = CASES[case]
    torch.manual_seed(0)
    base = make()
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        def run(fn, dtype, dev):
            t = {k: v.to(dev, dtype).requires_grad_() for k, v in base.items()}
            y = fn(t)
            g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dev, dtype)
            y.backward(g)
            return [y] + [t[k].grad for k in base]

        ref = run(theirs, torch.float64, "cpu")
        pt = run(theirs, torch.float32, device)
        with target.use():
            fc = run(ours, torch.float32, device)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev
    names = ["output"] + [f"grad_{k}" for k in base]
    for name, r, p, f in zip(names, ref, pt, fc):
        e_pt, e_fc = rel_err(p, r), rel_err(f, r)
        assert e_fc <= 2 * e_pt + 1e-9, f"{case} {name}: fastcnn {e_fc:.3e} vs PyTorch {e_pt:.3e}"


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_float32_stays_float32_under_reduced_onednn_precision(precision):
    """torch.backends.mkldnn.conv.fp32_precision = "bf16" lets oneDNN compute float32 convs in bf16
    (PyTorch's own conv then errs ~2e-3); fastcnn's CPU float32 conv keeps float32 accuracy."""
    conv = getattr(torch.backends.mkldnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        pytest.skip("this torch has no torch.backends.mkldnn.conv.fp32_precision")
    x = torch.randn(2, 64, 14, 14)
    w = torch.randn(64, 64, 3, 3) / 24
    ref = F.conv2d(x.double(), w.double(), padding=1)
    old = conv.fp32_precision
    conv.fp32_precision = precision
    try:
        y = FF.conv2d(x, w, padding=1, activation="relu")
    finally:
        conv.fp32_precision = old
    assert rel_err(y, ref.relu()) < 1e-6
