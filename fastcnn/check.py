"""Self-check: every fused op, forward and backward, against PyTorch in float64 on every backend and
device this installation can run. Prints a table of errors with PASS/FAIL (``python -m fastcnn check``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from . import _backend
from . import functional as FF

# Relative-norm error bounds per dtype (as in tests/conftest.py).
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def _rel(out, ref):
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out).all():
        return float("inf"), float("inf")
    d = (out - ref)
    scale = ref.norm().item()
    return d.abs().max().item(), (d.norm().item() / scale if scale else d.norm().item())


def _cases(device, dtype, gen):
    def rnd(*s):
        return torch.randn(*s, generator=gen).to(device=device, dtype=dtype)

    x = rnd(2, 6, 11, 9).contiguous(memory_format=torch.channels_last)
    w3 = rnd(8, 3, 3, 3) / 4
    b = rnd(8)
    r3 = rnd(2, 8, 6, 5)
    w1 = rnd(8, 6, 1, 1) / 3
    r1 = rnd(2, 8, 11, 9)
    y = rnd(2, 6, 11, 9)
    return [
        ("conv2d 3x3/2 g2 +bias+res+relu",
         lambda a, w, bb, rr: FF.conv2d(a, w, bb, 2, 1, 1, 2, residual=rr, activation="relu"),
         lambda a, w, bb, rr: F.relu(F.conv2d(a, w, bb, 2, 1, 1, 2) + rr), [x, w3, b, r3]),
        ("conv1x1 +bias+res+relu", lambda a, w, bb, rr: FF.conv1x1(a, w, bb, residual=rr),
         lambda a, w, bb, rr: F.relu(F.conv2d(a, w, bb) + rr), [x, w1, b, r1]),
        ("max_pool2d 3x3/2 p1 ceil", lambda a: FF.max_pool2d(a, 3, 2, 1, ceil_mode=True),
         lambda a: F.max_pool2d(a, 3, 2, 1, ceil_mode=True), [x]),
        ("add_relu", FF.add_relu, lambda a, c: F.relu(a + c), [x, y]),
    ]


def targets():
    """(backend, device) pairs this installation can run."""
    out = [("cpu", "cpu")]
    avail = _backend.available_backends()
    if "triton" in avail and os.environ.get("TRITON_INTERPRET") == "1":
        out.append(("triton", "cpu"))
    if torch.cuda.is_available():
        if "cuda" in avail:
            out.append(("cuda", "cuda"))
        if "triton" in avail:
            out.append(("triton", "cuda"))
    return out


def run(dtypes=None, echo=print) -> list[dict]:
    rows = []
    for backend, device in targets():
        dts = dtypes or ([torch.float32, torch.float64] if device == "cpu" else [torch.float32, torch.bfloat16])
        for dtype in dts:
            gen = torch.Generator().manual_seed(0)
            for name, ours, ref_fn, inputs in _cases(device, dtype, gen):
                leaves = [t.detach().clone().requires_grad_() for t in inputs]
                refs = [t.detach().double().cpu().requires_grad_() for t in inputs]
                with _backend.backend(backend):
                    out = ours(*leaves)
                    ref = ref_fn(*refs)
                    gy = torch.randn(out.shape, generator=gen).to(device=device, dtype=dtype)
                    grads = torch.autograd.grad(out, leaves, gy)
                ref_grads = torch.autograd.grad(ref, refs, gy.double().cpu())
                fwd_abs, fwd_rel = _rel(out, ref)
                g_rel = max(_rel(g, rg)[1] for g, rg in zip(grads, ref_grads))
                ok = fwd_rel <= TOL[dtype] and g_rel <= TOL[dtype]
                rows.append({"op": name, "backend": backend, "device": device, "dtype": str(dtype).replace("torch.", ""),
                             "fwd max abs err": fwd_abs, "fwd rel err": fwd_rel, "grad rel err": g_rel,
                             "result": "PASS" if ok else "FAIL"})
    return rows


def print_table(rows, echo=print):
    cols = ["op", "backend", "device", "dtype", "fwd max abs err", "fwd rel err", "grad rel err", "result"]
    fmt = lambda v: f"{v:.2e}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = [max(len(c), *(len(fmt(r[c])) for r in rows)) for c in cols]
    echo("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    echo("  ".join("-" * w for w in widths))
    for r in rows:
        echo("  ".join(fmt(r[c]).ljust(w) for c, w in zip(cols, widths)))
    n_fail = sum(r["result"] != "PASS" for r in rows)
    echo(f"{len(rows) - n_fail}/{len(rows)} PASS" + (f", {n_fail} FAIL" if n_fail else ""))
    return n_fail == 0


def main() -> int:
    rows = run()
    return 0 if print_table(rows) else 1
