"""The ahead-of-time Triton check (tools/triton_aot.py, `make triton-aot`): its machinery, fast.

The sweep itself runs in CI as its own step; here: the launches it compiles are the launchers' own
(kernels/_launch.py collect()), specialised as Triton's runtime does; one real compile reads
registers, spills, shared memory and the MMA kind; the failure rules fire; the committed table is
well formed and clean.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "bench", "results", "triton_aot.csv")

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                                reason="the AOT check compiles; the interpreter replaces the compiler")


@pytest.fixture(scope="module")
def aot():
    spec = importlib.util.spec_from_file_location("triton_aot", os.path.join(ROOT, "tools", "triton_aot.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["triton_aot"] = mod
    spec.loader.exec_module(mod)
    return mod


def _variants(aot, layer, dtype=torch.bfloat16, layout="nhwc", arch="sm90"):
    """The variants of one layer's launches (planned for arch), as the sweep builds them."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    from fastcnn.kernels import _launch

    cap = aot.ARCHS[arch]
    backend = make_backend(GPUTarget("cuda", cap[0] * 10 + cap[1], 32))
    with _launch.collect(_launch.Target(False, aot.SM_COUNT[arch], cap)) as recs:
        aot._layer_launches(layer, 8, dtype, layout)
    out = []
    for rec in recs:
        fn = rec.kernel
        kwargs = dict(rec.constexprs, **rec.options, debug=False, instrumentation_mode="")
        bound, spec, opts = create_function_from_signature(fn.signature, fn.params, backend)(*rec.args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, opts)
        v = aot.Variant(arch, rec, signature, constexprs, attrs, options, str(spec))
        v.dtypes.add("bf16")
        v.tensor_core = aot._tensor_core(rec, "bf16")
        out.append(v)
    return out


def _layer(**kw):
    from fastcnn.bench.shapes import Layer

    return Layer(**{"net": "test", "name": "conv", "op": "conv2d", "C": 64, "H": 14, "W": 14, "K": 64, "R": 3,
                    "S": 3, "padding": 1, **kw})


def test_launches_are_the_launchers_and_specialised_as_triton_does(aot):
    vs = _variants(aot, _layer())
    names = [v.name for v in vs]
    # a 14x14 layer at batch 8: 4 wgrad tiles for 132 SMs, so split-K and its two reductions
    assert names == ["_conv_fwd_kernel", "_conv_dgrad_kernel", "_conv_wgrad_kernel"] + ["_splitk_reduce_kernel"] * 2
    fwd = vs[0]
    # NHWC: the channel strides are 1 -> constexprs (as JITFunction.run), so are stride/dilation 1;
    # the padding 1 too; the channel counts (64) and pixel strides (multiples of 64) get div-16 hints
    for name in ("sxc", "syc", "stride_h", "stride_w", "dil_h", "dil_w", "pad_h"):
        assert fwd.signature[name] == "constexpr", name
    hinted = {fwd.kernel.arg_names[path[0]] for path, attr in fwd.attrs.items() if "tt.divisibility" in str(attr)}
    assert {"C_g", "K_g", "sxh", "sxw", "x_ptr", "y_ptr"} <= hinted
    assert "M" not in hinted and fwd.signature["M"] == "i32"  # do_not_specialize: sizes


def test_compile_reads_registers_spills_shared_and_mma(aot):
    if "nvidia" not in getattr(triton.backends, "backends", {}):
        pytest.skip("Triton's NVIDIA backend is not installed")
    import tempfile

    from triton import knobs

    knobs.cache.dir = tempfile.mkdtemp()
    fwd = _variants(aot, _layer())[0]
    aot._JOBS = [fwd]
    _, regs, spill, shared, mma, loads, err = aot._compile(0)
    assert not err and 0 < regs <= 255 and spill == 0 and 0 < shared <= aot.SHARED_LIMIT["sm90"]
    assert mma == "wgmma" and loads == "ptr"
    assert aot.failures(fwd, (0, regs, spill, shared, mma, loads, err)) == []


def test_failure_rules(aot):
    v = _variants(aot, _layer())[0]  # a bf16 64-row tile: tensor-core eligible
    v.pick_gemm_m = 8 * 14 * 14
    assert any("spills" in f for f in aot.failures(v, (0, 255, 8, 1024, "wgmma", "ptr", "")))
    assert any("shared memory" in f for f in aot.failures(v, (0, 128, 0, 300 * 1024, "wgmma", "ptr", "")))
    assert any("without wgmma" in f for f in aot.failures(v, (0, 128, 0, 1024, "mma", "ptr", "")))
    assert any("compile error" in f for f in aot.failures(v, (0, 0, 0, 0, "", "", "boom")))
    v.block_m = 32  # a pick with a 32-row tile on a GEMM with M >= 64
    assert any("BLOCK_M 32 < 64" in f for f in aot.failures(v, (0, 128, 0, 1024, "mma", "ptr", "")))


def test_committed_table_is_clean():
    """The committed sweep: both targets, every dtype and layout, the Triton version, no spill, no
    error, wgmma for every tensor-core tile of 64 rows or more on sm_90."""
    with open(TABLE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["arch"] for r in rows} == {"sm90", "sm80"}
    assert {d for r in rows for d in r["dtype"].split("|")} == {"bf16", "fp16", "fp32", "tf32"}
    assert {lay for r in rows for lay in r["layout"].split("|")} == {"nchw", "nhwc"}
    assert {r["triton"] for r in rows} == {"3.6.0"}
    assert all(r["spill_bytes"] == "0" and not r["mma"].startswith("error") for r in rows)
    assert any(r["loads"] == "tma" for r in rows if r["arch"] == "sm90")
    kernels = {r["kernel"] for r in rows}
    assert {"_conv_fwd_kernel", "_conv_dgrad_kernel", "_conv_wgrad_kernel", "_splitk_reduce_kernel",
            "_conv_fwd_tma_kernel", "_max_pool2d_forward_kernel", "_max_pool2d_backward_kernel",
            "_add_relu_flat_kernel"} <= kernels


def test_check_draws_every_kernel_and_reuses_only_committed_rows(aot):
    """--check compiles what is not in the table and a seeded draw of what is, one of each kernel
    and target first; a row is reused only under its own cache key."""
    class V:
        def __init__(self, arch, name):
            self.arch, self.name = arch, name

    jobs = [V(a, n) for a in ("sm90", "sm80") for n in ("fwd", "wgrad", "pool") for _ in range(10)]
    keys = [f"k{i}" for i in range(len(jobs))]
    committed = {k: (64, 0, 1024, "wgmma", "ptr", "") for k in keys[:-3]}  # the last three are new
    drawn = aot._draw(jobs, keys, committed, 8, seed=1)
    assert len(drawn) == 8
    assert drawn <= set(committed) and drawn == aot._draw(jobs, keys, committed, 8, seed=1)
    assert {(jobs[keys.index(k)].arch, jobs[keys.index(k)].name) for k in drawn} == \
        {(v.arch, v.name) for v in jobs}
    rows = [{"cache_key": "a", "registers": "96", "spill_bytes": "0", "shared_bytes": "4096", "mma": "wgmma",
             "loads": "tma"}, {"cache_key": "b", "registers": "0", "spill_bytes": "0", "shared_bytes": "0",
                               "mma": "error: boom", "loads": ""}]
    assert aot._committed_results(rows) == {"a": (96, 0, 4096, "wgmma", "tma", "")}  # an error row recompiles
