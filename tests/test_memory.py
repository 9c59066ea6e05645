"""Memory: no growth over 10,000 calls of each op, forward and backward.

CPU: the process's resident set (RSS, /proc/self/statm) after a warm-up and after 10,000 more
calls differ by less than a fixed slack (20 MB: allocator arenas and Python's own caches, not a
percentage). The 10,000 calls run on one thread (each parallel region costs milliseconds on a
loaded 2-core machine: 13.7 ms instead of 0.43 ms per conv2d call measured here), then 200 more
on the default thread count cover the multi-threaded paths (per-thread scratch and partials).
GPU: torch.cuda.memory_allocated() returns to its value after the warm-up (the caching allocator
may keep blocks reserved; live tensors may not grow).
"""

from __future__ import annotations

import gc
import os

import pytest
import torch

import fastcnn.functional as FF
from conftest import BACKEND_DEVICES

CALLS = int(os.environ.get("FASTCNN_MEMORY_CALLS", "10000"))
THREADED_CALLS = 200
WARMUP = 200
RSS_SLACK = 20 * 2**20
CUDA_SLACK = 0  # bytes of live CUDA tensors allowed to remain: none

# the CPU backend and the GPU backends (the interpreter and cuda-sim are far too slow for 10,000 calls)
MEMORY_BACKENDS = [p for p in BACKEND_DEVICES if p.values[0] not in (("triton", "cpu"), ("cuda-sim", "cpu"))]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _step_factory(op, device):
    """A closure running one forward+backward of op on small inputs, alternating NCHW and
    channels_last, with every fused input present (bias, residual, ReLU)."""
    g = torch.Generator().manual_seed(0)

    def r(*s):
        return torch.randn(*s, generator=g).to(device)

    cl = torch.channels_last
    if op in ("conv2d", "conv1x1"):
        k = 3 if op == "conv2d" else 1
        xs = [r(2, 6, 9, 9).requires_grad_(), r(2, 6, 9, 9).contiguous(memory_format=cl).requires_grad_()]
        w = r(8, 6, k, k).requires_grad_()
        b = r(8).requires_grad_()
        res = r(2, 8, 9, 9).requires_grad_()

        def step(i):
            x = xs[i % 2]
            if op == "conv2d":
                out = FF.conv2d(x, w, b, padding=1, residual=res, activation="relu")
            else:
                out = FF.conv1x1(x, w, b, residual=res)
            return torch.autograd.grad(out.sum(), (x, w, b, res))
    elif op == "max_pool2d":
        xs = [r(2, 6, 11, 11).requires_grad_(), r(2, 6, 11, 11).contiguous(memory_format=cl).requires_grad_()]

        def step(i):
            x = xs[i % 2]
            out = FF.max_pool2d(x, 3, 2, 1, ceil_mode=bool(i % 3 == 0))
            return torch.autograd.grad(out.sum(), x)
    else:
        a = r(2, 6, 9, 9).requires_grad_()
        bs = [r(2, 6, 9, 9).requires_grad_(), r(6, 1, 9).requires_grad_()]

        def step(i):
            b = bs[i % 2]
            out = FF.add_relu(a, b)
            return torch.autograd.grad(out.sum(), (a, b))
    return step


@pytest.mark.parametrize("op", ["conv2d", "conv1x1", "max_pool2d", "add_relu"])
@pytest.mark.parametrize("backend_device", MEMORY_BACKENDS, indirect=True)
def test_no_memory_growth(op, backend_device):
    _, device = backend_device
    step = _step_factory(op, device)
    threads = torch.get_num_threads()
    for i in range(THREADED_CALLS // 4):  # warm the multi-threaded paths' caches too
        step(i)
    torch.set_num_threads(1)
    try:
        for i in range(WARMUP):
            step(i)
        gc.collect()
        if device == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
        rss_before = rss_bytes()
        for i in range(CALLS):
            step(i)
    finally:
        torch.set_num_threads(threads)
    for i in range(THREADED_CALLS):
        step(i)
    gc.collect()
    rss_after = rss_bytes()
    grown = rss_after - rss_before
    print(f"{op}: RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MB")
    assert grown < RSS_SLACK, (f"{op}: RSS grew by {grown / 2**20:.1f} MB over {CALLS + THREADED_CALLS} "
                               f"forward+backward calls ({rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MB)")
    if device == "cuda":
        torch.cuda.synchronize()
        after = torch.cuda.memory_allocated()
        assert after - before <= CUDA_SLACK, (f"{op}: torch.cuda.memory_allocated grew by {after - before} bytes "
                                              f"over {CALLS + THREADED_CALLS} calls")
