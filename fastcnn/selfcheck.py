"""The installation's self-check (``python -m fastcnn check``, step 1 of the demo): every fused op,
forward and backward, against PyTorch in float64 on every (backend, device) target this installation
can run (``fastcnn.testing.targets()``), with the test suite's tolerances and error measure. Prints
a table of errors with PASS/FAIL. (``fastcnn._checks`` is something else: the argument validation.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import functional as FF
from ._console import format_table
from .testing import TOL, max_abs_err, rel_err, targets


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


def run(dtypes=None, echo=print) -> list[dict]:
    rows = []
    for target in targets():
        backend, device = target.backend, target.device
        dts = dtypes or ([torch.float32, torch.float64] if device == "cpu" else [torch.float32, torch.bfloat16])
        for dtype in dts:
            gen = torch.Generator().manual_seed(0)
            for name, ours, ref_fn, inputs in _cases(device, dtype, gen):
                leaves = [t.detach().clone().requires_grad_() for t in inputs]
                refs = [t.detach().double().cpu().requires_grad_() for t in inputs]
                with target.use():  # its backend (cuda-sim: and its scheduling order)
                    out = ours(*leaves)
                    ref = ref_fn(*refs)
                    gy = torch.randn(out.shape, generator=gen).to(device=device, dtype=dtype)
                    grads = torch.autograd.grad(out, leaves, gy)
                ref_grads = torch.autograd.grad(ref, refs, gy.double().cpu())
                fwd_abs, fwd_rel = max_abs_err(out, ref), rel_err(out, ref)
                g_rel = max(rel_err(g, rg) for g, rg in zip(grads, ref_grads))
                ok = fwd_rel <= TOL[dtype] and g_rel <= TOL[dtype]
                rows.append({"op": name, "backend": backend, "device": device, "dtype": str(dtype).replace("torch.", ""),
                             "fwd max abs err": fwd_abs, "fwd rel err": fwd_rel, "grad rel err": g_rel,
                             "result": "PASS" if ok else "FAIL"})
    return rows


COLUMNS = ["op", "backend", "device", "dtype", "fwd max abs err", "fwd rel err", "grad rel err", "result"]


def print_table(rows, echo=print) -> bool:
    """The table and a PASS count; True when every row passed."""
    echo(format_table(rows, COLUMNS, default=lambda v: f"{v:.2e}" if isinstance(v, float) else str(v)))
    n_fail = sum(r["result"] != "PASS" for r in rows)
    echo(f"{len(rows) - n_fail}/{len(rows)} PASS" + (f", {n_fail} FAIL" if n_fail else ""))
    return n_fail == 0


def main() -> int:
    rows = run()
    return 0 if print_table(rows) else 1
