"""What a user meets beyond the op contract: seeing what ran (fastcnn.explain, the "fastcnn"
logger), autocast, double backward, torch.export, the models' input-size errors, add_relu with a
Python number."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F

import fastcnn
import fastcnn.functional as FF
from fastcnn.testing.reference_models import plain_model
from fastcnn.testing import rel_err


# ------------------------------------------------------------------------------------------------
# what ran
# ------------------------------------------------------------------------------------------------

def test_explain_names_backend_and_kernel_per_call():
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    w = torch.randn(4, 8, 3, 3, requires_grad=True)

    def step():
        y = FF.max_pool2d(FF.conv2d(x, w, padding=1, activation="relu"), 2)
        y.sum().backward()
        return y

    _, ran = fastcnn.explain(step)
    ops = [d.op for d in ran]
    assert ops[:2] == ["conv2d", "max_pool2d"], ops
    assert set(ops[2:]) == {"max_pool2d_backward", "conv2d_backward"}, ops
    assert all(d.backend == "cpu" and d.device == "cpu" for d in ran)
    conv = ran[0]  # float32 on the CPU: oneDNN (issue 20); float64: fastcnn's own engine
    assert conv.notes["kernel"] == "oneDNN convolution (PyTorch's at::convolution)" and conv.notes["layout"] in ("NCHW", "NHWC")
    assert "conv2d on cpu -> cpu; kernel: oneDNN convolution" in str(conv)
    _, ran64 = fastcnn.explain(FF.conv2d, x.detach().double(), w.detach().double(), None, 1, 1)
    assert ran64[0].notes["kernel"] == "im2col panels + GEMM", ran64[0].notes
    _, ran = fastcnn.explain(FF.conv1x1, torch.randn(1, 8, 4, 4), torch.randn(4, 8, 1, 1))
    assert ran[0].notes["kernel"].startswith("oneDNN convolution"), ran[0].notes
    _, ran = fastcnn.explain(FF.conv1x1, torch.randn(1, 8, 4, 4, dtype=torch.float64),
                             torch.randn(4, 8, 1, 1, dtype=torch.float64))
    assert ran[0].notes["kernel"].startswith("GEMM on the input"), ran[0].notes
    # nothing is recorded outside explain
    assert fastcnn.explain(lambda: None)[1] == []


def test_debug_logging_reports_what_ran(caplog):
    x, w = torch.randn(1, 3, 6, 6), torch.randn(2, 3, 3, 3)
    with caplog.at_level(logging.DEBUG, logger="fastcnn"):
        FF.conv2d(x, w)
    assert any("conv2d: conv2d on cpu -> cpu" in r.getMessage() for r in caplog.records), caplog.records
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fastcnn"):
        FF.conv2d(x, w)
    assert not caplog.records


# ------------------------------------------------------------------------------------------------
# autocast
# ------------------------------------------------------------------------------------------------

def test_autocast_casts_as_pytorch_does():
    x, w, b = torch.randn(2, 4, 9, 9), torch.randn(6, 4, 3, 3), torch.randn(6)
    r = torch.randn(2, 6, 7, 7)
    with torch.autocast("cpu", torch.bfloat16):
        y = FF.conv2d(x, w, b, residual=r.bfloat16(), activation="relu")
        ref = F.conv2d(x, w, b)
        z = FF.conv1x1(x, torch.randn(6, 4, 1, 1))
        p = FF.max_pool2d(y, 2)
        s = FF.add_relu(y, r)  # bf16 + fp32 promotes to fp32, as torch.add
        s_ref = y + r
    assert y.dtype == ref.dtype == torch.bfloat16 and z.dtype == torch.bfloat16 and p.dtype == torch.bfloat16
    assert s.dtype == s_ref.dtype == torch.float32
    ref64 = F.relu(F.conv2d(x.bfloat16().double(), w.bfloat16().double(), b.bfloat16().double()) +
                   r.bfloat16().double())
    assert rel_err(y, ref64) < 1e-2
    with torch.autocast("cpu", torch.float16):  # float64 tensors are not cast (as PyTorch)
        assert FF.conv2d(x.double(), w.double()).dtype == torch.float64


@pytest.mark.parametrize("name", ["resnet18"])
def test_autocast_training_step_matches_pytorch(name):
    """One bf16-autocast training step of a ResNet: fastcnn's loss and weight gradients are as close to
    the float64 step as PyTorch's own autocast step is (within 2x)."""
    torch.manual_seed(0)
    plain = plain_model(name, num_classes=10)
    fast = getattr(fastcnn.models, name)(num_classes=10)
    fast.load_state_dict(plain.state_dict(), strict=True)
    x, target = torch.randn(4, 3, 48, 48), torch.randint(0, 10, (4,))

    def step(model, dtype=None):
        model = copy.deepcopy(model).train()
        if dtype is None:
            model = model.double()
            loss = F.cross_entropy(model(x.double()), target)
        else:
            with torch.autocast("cpu", dtype):
                loss = F.cross_entropy(model(x), target)
        loss.backward()
        return loss.detach().double(), {k: p.grad.double() for k, p in model.named_parameters()}

    loss64, g64 = step(plain)
    loss_t, g_t = step(plain, torch.bfloat16)
    loss_f, g_f = step(fast, torch.bfloat16)
    assert abs(loss_f - loss64) <= 2 * abs(loss_t - loss64) + 1e-2 * abs(loss64)
    for k in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.conv2.weight", "fc.weight"):
        e_f, e_t = rel_err(g_f[k], g64[k]), rel_err(g_t[k], g64[k])
        assert e_f <= 2 * e_t + 1e-3, f"{k}: fastcnn {e_f:.3e} vs PyTorch {e_t:.3e}"


# ------------------------------------------------------------------------------------------------
# double backward, export
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["conv2d", "conv1x1", "max_pool2d", "add_relu"])
def test_double_backward_is_a_clear_error(op):
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    y = {"conv2d": lambda: FF.conv2d(x, w, activation="relu"),
         "conv1x1": lambda: FF.conv1x1(x, w[:, :, :1, :1]),
         "max_pool2d": lambda: FF.max_pool2d(x, 2),
         "add_relu": lambda: FF.add_relu(x, x.flip(0))}[op]()
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=rf"fastcnn {op}: double backward is not supported"):
        torch.autograd.grad(gx.sum(), x)


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "googlenet"])
def test_export_round_trip(name):
    torch.manual_seed(0)
    kwargs = {"num_classes": 10} if name != "lenet5" else {}
    model = getattr(fastcnn.models, name)(**kwargs).eval()
    x = torch.randn(2, 1, 28, 28) if name == "lenet5" else torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
        ep = torch.export.export(model, (x,))
        got = ep.module()(x)
    assert any("fastcnn." in str(n.target) for n in ep.graph.nodes), "fastcnn ops kept in the exported graph"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_export_of_a_fused_model_round_trips():
    torch.manual_seed(0)
    plain = plain_model("resnet18", num_classes=10).eval()
    fused = fastcnn.fuse(copy.deepcopy(plain))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ep = torch.export.export(fused, (x,))
        torch.testing.assert_close(ep.module()(x), plain(x), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# models, add_relu with a number
# ------------------------------------------------------------------------------------------------

def test_lenet5_classic_32x32_input_and_clear_size_errors():
    m = fastcnn.models.lenet5(input_size=32)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"lenet5 was built for 1x28x28 inputs .*got shape \[2, 1, 32, 32\]; "
                                         r"lenet5\(input_size=32\) takes 32x32"):
        fastcnn.models.lenet5()(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="input_size must be 28"):
        fastcnn.models.lenet5(input_size=30)


def test_alexnet_names_its_minimum_input():
    m = fastcnn.models.alexnet(num_classes=10).eval()
    assert m(torch.randn(1, 3, 63, 63)).shape == (1, 10)
    with pytest.raises(ValueError, match=r"alexnet needs inputs of at least 63x63 .*got shape \[1, 3, 62, 62\]"):
        m(torch.randn(1, 3, 62, 62))


def test_add_relu_with_a_python_number_promotes_as_torch_add():
    x = torch.randn(3, 4)
    torch.testing.assert_close(FF.add_relu(x, 1.5), F.relu(x + 1.5))
    torch.testing.assert_close(FF.add_relu(-0.5, x), F.relu(-0.5 + x))
    i = torch.arange(-3, 3)
    out = FF.add_relu(i, 1.5)
    assert out.dtype == (i + 1.5).dtype == torch.float32
    torch.testing.assert_close(out, F.relu(i + 1.5))
    h = torch.randn(5, dtype=torch.float16, requires_grad=True)
    y = FF.add_relu(h, 2)
    assert y.dtype == torch.float16
    y.sum().backward()
    assert h.grad is not None
