#!/usr/bin/env python3
"""GPU smoke test of the Hopper path for the GPU-window script (<= 2 minutes on an H100/H200).

    python3 tools/sm90_smoke.py

With FASTCNN_SM90=force on the CUDA backend: fprop, dgrad and wgrad of an N = 8, 56x56, C = K = 64,
3x3 conv (bf16, channels_last, bias, ReLU) at stride 1 and 2 (dgrad as four stride-phase convs)
against F.conv2d in float64 on the CPU, and dgrad/wgrad bitwise repeatable; a pass the rule rejects
must raise ValueError under force and match the reference under off. Then the rejections (groups = 2, NCHW, odd K, float64, a misaligned view) must raise
ValueError under force. Prints one PASS/FAIL line per check; exits non-zero on any failure.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

import fastcnn
from fastcnn import sm90

CL = torch.channels_last
TOL = 1e-2  # bf16 relative-norm error (tests/conftest.py)
failures = 0


def report(ok: bool, what: str) -> None:
    global failures
    failures += not ok
    print(("PASS " if ok else "FAIL ") + what, flush=True)


def rel_err(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def conv(x, w, b, stride, act="relu"):
    return torch.ops.fastcnn.conv2d(x, w, b, None, [stride] * 2, [1, 1], [1, 1], 1, act)


def backward(gy, x, w, out, stride, mask):
    return torch.ops.fastcnn._conv2d_backward(gy, x, w, out, [stride] * 2, [1, 1], [1, 1], 1, "relu", mask)


def check_conv(stride: int) -> None:
    torch.manual_seed(stride)
    x = torch.randn(8, 64, 56, 56, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=CL)
    w = (torch.randn(64, 64, 3, 3, device="cuda", dtype=torch.bfloat16) / 24).contiguous(memory_format=CL)
    b = torch.randn(64, device="cuda", dtype=torch.bfloat16)
    paths = sm90.conv_path(x, w, b, None, stride, 1, mode_name="force")
    x64, w64, b64 = (t.double().cpu().requires_grad_() for t in (x, w, b))
    y64 = F.conv2d(x64, w64, b64, stride, 1)
    tag = f"N8 56x56 C64 K64 3x3 s{stride}"
    with fastcnn.backend("cuda"):
        with sm90.use_mode("force"):
            out = conv(x, w, b, stride)
        report(rel_err(out, torch.relu(y64)) <= TOL,
               f"fprop {tag} [{paths['fprop'][0]}]: rel err {rel_err(out, torch.relu(y64)):.2e}")
        gy = torch.randn_like(out)
        gx_ref, gw_ref = torch.autograd.grad(y64, [x64, w64], gy.double().cpu() * (out.double().cpu() > 0))
        for i, (name, ref) in enumerate((("dgrad", gx_ref), ("wgrad", gw_ref))):
            mask = [i == 0, i == 1, False, False]
            if paths[name][0] == "cuda":
                try:
                    with sm90.use_mode("force"):
                        backward(gy, x, w, out, stride, mask)
                    report(False, f"{name} {tag}: the rule rejects it ({paths[name][1]}) but force did not raise")
                except ValueError as exc:
                    report("rejects this call" in str(exc), f"{name} {tag}: rejected under force as the rule says "
                           f"({paths[name][1]})")
                with sm90.use_mode("off"):
                    got = backward(gy, x, w, out, stride, mask)[i]
                err = rel_err(got, ref)
                report(err <= TOL, f"{name} {tag} [off, existing kernels]: rel err {err:.2e}")
            else:
                with sm90.use_mode("force"):
                    got = backward(gy, x, w, out, stride, mask)[i]
                    again = backward(gy, x, w, out, stride, mask)[i]
                report(rel_err(got, ref) <= TOL, f"{name} {tag} [{paths[name][0]}]: rel err {rel_err(got, ref):.2e}")
                report(torch.equal(got, again), f"{name} {tag}: bitwise repeatable")


def check_rejections() -> None:
    def case(name, x, w, groups=1):
        try:
            with sm90.use_mode("force"), fastcnn.backend("cuda"):
                torch.ops.fastcnn.conv2d(x, w, None, None, [1, 1], [1, 1], [1, 1], groups, "relu")
            report(False, f"reject {name}: force did not raise")
        except ValueError as exc:
            report("rejects this call" in str(exc), f"reject {name}: {str(exc).split('rejects this call: ')[-1]}")

    dev, bf = "cuda", torch.bfloat16
    x = torch.randn(2, 64, 12, 12, device=dev, dtype=bf).contiguous(memory_format=CL)
    case("groups=2", x, torch.randn(64, 32, 3, 3, device=dev, dtype=bf).contiguous(memory_format=CL), groups=2)
    case("NCHW", x.contiguous(), torch.randn(64, 64, 3, 3, device=dev, dtype=bf))
    case("odd K", x, torch.randn(13, 64, 3, 3, device=dev, dtype=bf).contiguous(memory_format=CL))
    case("float64", x.double(), torch.randn(64, 64, 3, 3, device=dev, dtype=torch.float64).contiguous(memory_format=CL))
    flat = torch.empty(x.numel() + 1, device=dev, dtype=bf)
    view = flat[1:].as_strided(x.shape, x.stride()).copy_(x)
    case("misaligned view", view, torch.randn(64, 64, 3, 3, device=dev, dtype=bf).contiguous(memory_format=CL))


def main() -> int:
    t0 = time.time()
    if not torch.cuda.is_available():
        report(False, "a CUDA device")
        return 1
    cap = torch.cuda.get_device_capability()
    report(cap == (9, 0), f"device {torch.cuda.get_device_name()} has compute capability {cap[0]}.{cap[1]} (need 9.0)")
    report(sm90.available(), f"fastcnn._C_sm90 registered: {sm90.build() or sm90.load_error()}")
    if failures:
        return 1
    for stride in (1, 2):
        check_conv(stride)
    check_rejections()
    print(f"sm90 smoke: {'FAILED' if failures else 'OK'} ({failures} failures) in {time.time() - t0:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
