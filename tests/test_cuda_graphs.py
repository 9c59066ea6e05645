"""CUDA graphs: capture and replay of the forward and backward of every op and of each network
(fastcnn.models: lenet5, alexnet, googlenet, resnet18, resnet50) on the GPU backends, compared with
eager execution on the same inputs. A capture fails if an op synchronises with the host (.item(),
a blocking copy, cudaDeviceSynchronize) or launches on a stream other than the current one; the
ops are also run under torch.cuda.set_sync_debug_mode("error"), which raises on any host sync.

All tests need a GPU (marked cuda); the GPU session runs them.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import fastcnn
import fastcnn.functional as FF
from conftest import BACKEND_DEVICES, TOL, rel_err

pytestmark = pytest.mark.cuda

GPU_BACKEND_DEVICES = [p for p in BACKEND_DEVICES if p.values[0][1] == "cuda"]
REPLAY_TOL = TOL[torch.float32]


@contextlib.contextmanager
def sync_debug_error():
    prev = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(prev)


def _close(a, b, what):
    err = rel_err(a, b)
    assert err <= REPLAY_TOL, f"{what}: replay differs from eager by {err:.3e}"


# ------------------------------------------------------------------------------------------------
# each op
# ------------------------------------------------------------------------------------------------

def _op_case(op, dtype):
    """(make_inputs(seed) -> list of leaf tensors, fn(*inputs) -> output tensor)."""
    cl = torch.channels_last

    def gen(seed, *shapes, fmt=None):
        g = torch.Generator(device="cuda").manual_seed(seed)
        out = []
        for s in shapes:
            t = torch.randn(s, generator=g, device="cuda", dtype=torch.float32).to(dtype)
            if fmt is not None and t.dim() == 4:
                t = t.contiguous(memory_format=fmt)
            out.append(t.requires_grad_())
        return out

    if op == "conv2d":
        return (lambda s: gen(s, (4, 16, 15, 15), (32, 16, 3, 3), (32,), (4, 32, 8, 8), fmt=cl),
                lambda x, w, b, r: FF.conv2d(x, w, b, 2, 1, residual=r, activation="relu"))
    if op == "conv2d_grouped":
        return (lambda s: gen(s, (2, 12, 9, 11), (12, 4, 5, 3), (12,)),
                lambda x, w, b: FF.conv2d(x, w, b, 1, (2, 1), 1, 3))
    if op == "conv1x1":
        return (lambda s: gen(s, (4, 32, 14, 14), (64, 32), (64,), (4, 64, 7, 7), fmt=cl),
                lambda x, w, b, r: FF.conv1x1(x, w, b, 2, residual=r))
    if op == "max_pool2d":
        return (lambda s: gen(s, (4, 16, 17, 17), fmt=cl),
                lambda x: FF.max_pool2d(x, 3, 2, 1, ceil_mode=True))
    if op == "max_pool2d_no_indices":
        return (lambda s: gen(s, (4, 16, 17, 17)),
                lambda x: torch.ops.fastcnn.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], False, False)[0])
    if op == "add_relu":
        return (lambda s: gen(s, (4, 16, 8, 8), (16, 1, 8), fmt=cl), lambda a, b: FF.add_relu(a, b))
    raise ValueError(op)


OPS = ["conv2d", "conv2d_grouped", "conv1x1", "max_pool2d", "max_pool2d_no_indices", "add_relu"]


def _step(fn, inputs):
    out = fn(*inputs)
    gy = torch.ones_like(out) * 0.5
    grads = torch.autograd.grad(out, inputs, gy)
    return out, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend_device", GPU_BACKEND_DEVICES, indirect=True)
def test_op_graph_capture_and_replay(op, dtype, backend_device):
    make, fn = _op_case(op, dtype)
    static = make(0)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):  # warm-up (Triton compiles here, outside the capture)
            _step(fn, static)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out, static_grads = _step(fn, static)
    for seed in (1, 2):
        fresh = make(seed)
        with torch.no_grad():
            for dst, src in zip(static, fresh):
                dst.copy_(src)
        graph.replay()
        torch.cuda.synchronize()
        out, grads = _step(fn, fresh)
        _close(static_out, out, f"{op} output (seed {seed})")
        for i, (a, b) in enumerate(zip(static_grads, grads)):
            _close(a, b, f"{op} grad {i} (seed {seed})")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend_device", GPU_BACKEND_DEVICES, indirect=True)
def test_op_no_host_sync(op, backend_device):
    make, fn = _op_case(op, torch.float32)
    inputs = make(0)
    _step(fn, inputs)  # first call outside (Triton compilation may sync)
    torch.cuda.synchronize()
    with sync_debug_error():
        _step(fn, inputs)


# ------------------------------------------------------------------------------------------------
# each network
# ------------------------------------------------------------------------------------------------

# (input shape, constructor kwargs); dropout off so eager and replay see the same function
NETS = {
    "lenet5": ((8, 1, 28, 28), {}),
    "alexnet": ((4, 3, 64, 64), {"num_classes": 10, "dropout": 0.0}),
    "googlenet": ((4, 3, 64, 64), {"num_classes": 10, "dropout": 0.0, "dropout_aux": 0.0}),
    "googlenet_no_aux": ((4, 3, 64, 64), {"num_classes": 10, "aux_logits": False, "dropout": 0.0}),
    "resnet18": ((4, 3, 64, 64), {"num_classes": 10}),
    "resnet50": ((4, 3, 64, 64), {"num_classes": 10}),
}


def _build(name, mode):
    factory = getattr(fastcnn.models, name.replace("_no_aux", ""))
    shape, kwargs = NETS[name]
    torch.manual_seed(0)
    model = factory(**kwargs).cuda().to(memory_format=torch.channels_last)
    model.train(mode == "train")
    return model, shape


def _loss(out):
    outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if o is not None]
    return sum((o.float() * torch.linspace(-1, 1, o.shape[-1], device=o.device)).square().mean() for o in outs)


def _fwd_bwd(model, x):
    out = model(x)
    loss = _loss(out)
    loss.backward()
    return out, loss


def _flat_outputs(out):
    return [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if o is not None]


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("backend_device", GPU_BACKEND_DEVICES, indirect=True)
def test_network_graph_capture_and_replay(name, mode, backend_device):
    model, shape = _build(name, mode)
    if name == "googlenet" and mode == "train":
        assert isinstance(model(torch.randn(shape, device="cuda")), tuple)  # aux logits in train mode
    params = [p for p in model.parameters() if p.requires_grad]
    static_x = torch.randn(shape, device="cuda").contiguous(memory_format=torch.channels_last)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            for p in params:
                p.grad = None
            _fwd_bwd(model, static_x)
    torch.cuda.current_stream().wait_stream(s)

    for p in params:
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out, static_loss = _fwd_bwd(model, static_x)

    for seed in (1, 2):
        x = torch.randn(shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(seed))
        static_x.copy_(x)
        buffers = [b.detach().clone() for b in model.buffers()]
        graph.replay()
        torch.cuda.synchronize()
        replay_out = [o.detach().clone() for o in _flat_outputs(static_out)]
        replay_grads = [p.grad.detach().clone() for p in params]
        replay_buffers = [b.detach().clone() for b in model.buffers()]
        # eager on the same input from the same state (BN running statistics restored)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        saved_grads = [p.grad for p in params]
        for p in params:
            p.grad = None
        out, loss = _fwd_bwd(model, x.contiguous(memory_format=torch.channels_last))
        for i, (a, b) in enumerate(zip(replay_out, _flat_outputs(out))):
            _close(a, b, f"{name} {mode}: output {i}")
        _close(static_loss, loss, f"{name} {mode}: loss")
        for (pname, p), g in zip([(n, p) for n, p in model.named_parameters() if p.requires_grad], replay_grads):
            _close(g, p.grad, f"{name} {mode}: grad {pname}")
        for i, (a, b) in enumerate(zip(replay_buffers, model.buffers())):
            _close(a.double(), b.double(), f"{name} {mode}: buffer {i}")
        for p, g in zip(params, saved_grads):  # the graph's static gradients again
            p.grad = g


@pytest.mark.parametrize("name", ["lenet5", "resnet18"])
@pytest.mark.parametrize("backend_device", GPU_BACKEND_DEVICES, indirect=True)
def test_network_make_graphed_callables(name, backend_device):
    """torch.cuda.make_graphed_callables on a whole network (eval mode: no in-place buffer updates)."""
    model, shape = _build(name, "eval")
    sample = torch.randn(shape, device="cuda").contiguous(memory_format=torch.channels_last).requires_grad_()
    graphed = torch.cuda.make_graphed_callables(model, (sample,))
    x = torch.randn(shape, device="cuda").contiguous(memory_format=torch.channels_last).requires_grad_()
    out = graphed(x)
    _loss(out).backward()
    got_x = x.grad.clone()
    got = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    x2 = x.detach().clone().requires_grad_()
    out2 = model(x2)
    _loss(out2).backward()
    _close(out, out2, f"{name}: output")
    _close(got_x, x2.grad, f"{name}: input grad")
    for a, p in zip(got, model.parameters()):
        _close(a, p.grad, f"{name}: param grad")


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "googlenet_no_aux"])
@pytest.mark.parametrize("backend_device", GPU_BACKEND_DEVICES, indirect=True)
def test_network_no_host_sync(name, backend_device):
    model, shape = _build(name, "train")
    x = torch.randn(shape, device="cuda").contiguous(memory_format=torch.channels_last)
    _fwd_bwd(model, x)
    torch.cuda.synchronize()
    with sync_debug_error():
        _fwd_bwd(model, x)
