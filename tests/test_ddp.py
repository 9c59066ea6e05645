"""fastcnn models under DistributedDataParallel: 2 CPU processes (gloo), gradients equal to
single-process training.

Each rank trains on its half of a batch; DDP averages the gradients. The single-process reference
computes the same average: for LeNet-5 (no BatchNorm) that is the full-batch gradient; for ResNet-18
(train-mode BatchNorm normalises each rank's half with that half's statistics, as DDP without
SyncBatchNorm does) it is the mean of the two halves' gradients. After an SGD step both ranks hold the
reference parameters, and the eval forward (BN folded, the fold cache refreshed after the step; DDP
broadcasts rank 0's running statistics) gives the reference output.

The workers run in a subprocess (``python tests/test_ddp.py OUT_DIR``) that spawns the two ranks.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

NETS = {"lenet5": (1, 28), "resnet18": (3, 48)}  # input channels, size (48: 2x2 maps in layer4)
BATCH = 4  # 2 per rank
WORLD = 2
LR = 0.1


def _data(name):
    c, s = NETS[name]
    g = torch.Generator().manual_seed(11)
    x = torch.randn(BATCH, c, s, s, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (BATCH,), generator=g)
    return x, y


def _model(name):
    import fastcnn

    torch.manual_seed(0)
    model = fastcnn.models.MODELS[name](num_classes=10).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _worker(rank, out_dir, device):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{os.path.join(out_dir, 'rendezvous')}", rank=rank,
                            world_size=WORLD)
    dev = torch.device(f"cuda:{rank}") if device == "cuda" else torch.device("cpu")
    if device == "cuda":
        torch.cuda.set_device(dev)
    results = {}
    for name in NETS:
        model = _model(name).to(dev)
        ddp = DDP(model, device_ids=[rank] if device == "cuda" else None)
        x, y = _data(name)
        x, y = x.to(dev), y.to(dev)
        half = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        ddp.eval()
        with torch.no_grad():
            before = ddp(x)  # fills the fold cache
        ddp.train()
        F.cross_entropy(ddp(x[half]), y[half]).backward()
        grads = {k: p.grad.cpu().clone() for k, p in model.named_parameters()}
        with torch.no_grad():
            for p in model.parameters():
                p -= LR * p.grad
        ddp.eval()
        with torch.no_grad():
            after = ddp(x)
        results[name] = {"grads": grads, "params": {k: p.detach().cpu() for k, p in model.named_parameters()},
                         "before": before.cpu(), "after": after.cpu()}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def _reference(name):
    """Single process: the mean of the two halves' gradients, the SGD step, the eval outputs."""
    import copy

    model = _model(name)
    x, y = _data(name)
    model.eval()
    with torch.no_grad():
        before = model(x)
    grads, stats = {}, None
    for r in range(WORLD):
        m = copy.deepcopy(model).train()
        half = slice(r * BATCH // WORLD, (r + 1) * BATCH // WORLD)
        F.cross_entropy(m(x[half]), y[half]).backward()
        for k, p in m.named_parameters():
            grads[k] = grads.get(k, 0) + p.grad / WORLD
        if r == 0:  # DDP broadcasts rank 0's buffers at the next forward
            stats = {k: b.clone() for k, b in m.named_buffers()}
    full = copy.deepcopy(model).train()
    F.cross_entropy(full(x), y).backward()
    full_grads = {k: p.grad for k, p in full.named_parameters()}
    with torch.no_grad():
        for k, p in model.named_parameters():
            p -= LR * grads[k]
        for k, b in model.named_buffers():
            b.copy_(stats[k])
    model.eval()
    with torch.no_grad():
        after = model(x)
    return {"grads": grads, "full_grads": full_grads, "params": dict(model.named_parameters()), "before": before,
            "after": after}


def _run_workers(tmp_path, device):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(tmp_path), device], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"DDP workers failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


def _check(results):
    from conftest import assert_close

    f64 = torch.float64
    for name in NETS:
        ref = _reference(name)
        for rank, res in enumerate(results):
            got = res[name]
            assert_close(got["before"], ref["before"], f64, f"{name} rank {rank}: eval output")
            for k, g in ref["grads"].items():
                assert_close(got["grads"][k], g, f64, f"{name} rank {rank}: gradient of {k}")
                if name == "lenet5":  # no BatchNorm: the full-batch gradient
                    assert_close(got["grads"][k], ref["full_grads"][k], f64, f"{name}: full-batch gradient of {k}")
                assert_close(got["params"][k], ref["params"][k], f64, f"{name} rank {rank}: {k} after the step")
            assert_close(got["after"], ref["after"], f64, f"{name} rank {rank}: eval output after the step")


def test_ddp_gloo_two_cpu_processes(tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    _check(_run_workers(tmp_path, "cpu"))


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_nccl_two_gpus(tmp_path):
    _check(_run_workers(tmp_path, "cuda"))


if __name__ == "__main__":
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(sys.argv[1], sys.argv[2]), nprocs=WORLD, join=True)
