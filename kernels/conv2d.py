"""Triton conv2d: implicit-GEMM forward, dgrad and wgrad with the epilogue and the ReLU mask fused.

Forward, act(conv(x, w) + bias + residual), as a GEMM per group:
    M = N*P*Q output pixels, N = K/groups output channels, K = R*S*C/groups taps x channels.
The A tile (im2col rows) is gathered straight from x with masks (padding, odd sizes); bias,
residual and ReLU are applied to the fp32 accumulator in registers before the one store.

Backward:
* dgrad (grad_input): a GEMM over input pixels x input channels, reducing over taps x output
  channels. For stride > 1 only taps with (h + pad - r*dil) divisible by the stride contribute
  to an input row h; the input pixels are split into stride_h*stride_w phases (h mod stride_h,
  w mod stride_w) whose valid taps are one arithmetic progression, so every tap the loop visits
  is real work (a masked loop would waste 3/4 of the MMAs at stride 2).
* wgrad (grad_weight): a GEMM [K/groups, R*S*C/groups] reducing over the N*P*Q pixels, split
  over the pixels (split-K) into an fp32 workspace when the output tiles alone cannot fill the
  GPU (ResNet 3x3 64->64 has 9 tiles of 64x64 for 132 SMs), then summed in a fixed order
  (deterministic, no atomics).
* The ReLU mask (grad where out > 0; a NaN output passes, as torch.threshold_backward) is
  applied as the incoming gradient is loaded, in both kernels: no masked copy of grad_output.
* grad_bias is the row sum of the gradient tiles the wgrad kernel loads anyway; grad_act (the
  masked gradient = the residual's gradient) is stored from the same tiles by the programs of
  the first weight column tile, only when it is asked for.

Layouts: every tensor is passed with its element strides, so NCHW, NHWC (channels_last), views
with a storage offset and other strided views all run without copies. The reduction's inner
index is the channel (taps outer), so NHWC loads are contiguous along the loaded channels.
Channel counts that are not a multiple of BLOCK_K and below 64 (image stems with C = 3, LeNet)
use a flattened (r, s, c) reduction index instead: a 7x7 stem reduces over 147 values in 10
chunks of 16 rather than 49 chunks of which 13/16 would be padding.

Precision: fp32 inputs use exact fp32 products (input_precision="ieee") unless TF32 is allowed
(see allow_tf32); fp16/bf16 multiply on tensor cores with fp32 accumulation; fp64 accumulates in
fp64 as a broadcast multiply and sum on CUDA cores: fp64 tl.dot lowering has changed across
recent Triton releases (fp64 MMA support was being added for sm80/sm90), this is exact on any.
Offsets and pixel indices are int32 while every tensor spans < 2^30 elements and int64 beyond
(IDX); the weight is packed as [K, R, S, C] so that NHWC loads are contiguous (pack_weight).
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from . import _common, _launch, _tuning
from ._conv_igemm import _conv_dgrad_kernel, _conv_fwd_kernel
from ._conv_tma import _conv_fwd_tma_kernel
from ._conv_wgrad import _conv_wgrad_kernel, _splitk_reduce_kernel

# Offsets are int32 unless a tensor (or the pixel count) spans 2^30 elements: the 2-D address
# tiles then take half the registers (ptxas, sm_90, runtime strides: the fp32 64x64x32 forward
# needs 255 registers + 392 B of spills with int64 offsets, 162 registers with int32; the fp16
# 128x64x32 one 2456 B vs 528 B of spills). The 2x margin below 2^31 covers masked tail lanes,
# whose offsets may point up to about one image or tap past the end.
_IDX32_SPAN = 2**30
_MAX_GRID_YZ = 65535  # CUDA's limit on grid dimensions 1 and 2 (groups, dgrad phases, splits)

# The TMA-descriptor forward (kernels/_conv_tma.py) on Hopper, off by default until a GPU validation
# record covers it; under Triton's interpreter (which runs descriptors) the switch turns it on too.
TMA_ENV = "FASTCNN_TRITON_TMA"
_TMA_WAVES = 4  # grids of at most this many waves of programs run as a persistent tile loop

# ------------------------------------------------------------------------------------------------
# launch helpers
# ------------------------------------------------------------------------------------------------

# device types whose fp64 tiles are capped (tests add "cpu" to run the capped tiles in the interpreter)
FP64_TILE_CAP_DEVICES = {"cuda"}
_REDUCE_BLOCK = 1024  # split-K sum: a streaming kernel, 1024 elements per program saturate HBM


def _tf32_flag(section, legacy) -> bool:
    """One PyTorch TF32 switch, read through the fp32_precision API of torch >= 2.9 where it
    exists (reading the legacy allow_tf32 flag raises once the new API has been used)."""
    prec = getattr(section, "fp32_precision", None) if section is not None else None
    if prec is None:
        return bool(legacy.allow_tf32)
    return prec == "tf32"


def allow_tf32() -> bool:
    """TF32 products for float32 inputs only when both of PyTorch's switches allow them, as the
    CUDA backend does: the GEMM one (torch.backends.cuda.matmul.allow_tf32,
    set_float32_matmul_precision("high"); off by default, so fp32 stays exact by default) and the
    convolution one (torch.backends.cudnn.allow_tf32, on by default: alone it would make every
    fp32 conv TF32, ~1e-3 relative error, unless the user opts out)."""
    return (_tf32_flag(torch.backends.cuda.matmul, torch.backends.cuda.matmul)
            and _tf32_flag(getattr(torch.backends.cudnn, "conv", None), torch.backends.cudnn))


def dot_mode(dtype: torch.dtype, interpreter: bool) -> dict:
    """The precision constexprs of the GEMM kernels for an input dtype."""
    if dtype == torch.float32:
        prec = "tf32" if allow_tf32() else "ieee"
    else:
        prec = "tf32"  # Triton's default; ignored for 16-bit operands, unused for fp64
    return dict(FP64=dtype == torch.float64, UPCAST=dtype == torch.bfloat16 and interpreter, DOT_PREC=prec)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def shape_key(x, w, stride, padding, dilation, groups) -> str:
    """Key of the tuned-config tables: sizes, geometry, dtype and layout."""
    fmt = "cl" if _common.conv_format(x, w) == torch.channels_last else "nchw"
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    return (f"{str(x.dtype).replace('torch.', '')}-{fmt}-n{N}c{C}h{H}w{W}-k{K}r{R}s{S}"
            f"-st{stride[0]}x{stride[1]}-p{padding[0]}x{padding[1]}-d{dilation[0]}x{dilation[1]}-g{groups}")


def _config(family: str, key: str, channels: int, dtype: torch.dtype, target: _launch.Target,
            config: int | None = None, channel_block: str = "BLOCK_N"):
    """(kernel meta-parameters, launch options, split_k) for a kernel family and shape.
    ``channels`` is the GEMM dimension tiled by ``channel_block`` that holds channels."""
    cfgs = _tuning.configs(family)
    if config is not None:
        cfg = dict(cfgs[config % len(cfgs)])
    else:
        # Untuned shapes: the first config, or the first with narrow channel tiles when there
        # are few channels per group (LeNet's 6 and 16, depthwise 1): a 64-wide tile would
        # compute 2-64x more products than needed. For wgrad that is the SWAP 32x64x32 (weight
        # columns x channels, so the tensor cores' M is the 64 columns): ptxas, sm_90, LeNet-5
        # conv2: bf16 128 registers, tf32 127, no spills, wgmma; the former 32x64x64 (channels
        # x columns) took 168 registers + 20 B of spills (bf16), 255 + 428-496 B (tf32), and
        # mma.sync at its 32 rows.
        default = 0
        if channels <= 32:
            default = next((i for i, c in enumerate(cfgs) if c[channel_block] <= 32), 0)
        cfg = _tuning.pick(family, key, default)
    split_k = cfg.pop("SPLIT_K", 1)
    meta, launch = _tuning.split(cfg)
    if dtype == torch.float64 and target.kind in FP64_TILE_CAP_DEVICES:
        # The fp64 path holds a BLOCK_M x BLOCK_K x BLOCK_N product in registers (no MMA): cap
        # it at 8K values (64 fp64 per thread at 4 warps) so it does not spill. Not in the
        # interpreter, which has no registers and runs 4-8x fewer programs x iterations uncapped.
        meta["BLOCK_M"] = min(meta["BLOCK_M"], 32)
        meta["BLOCK_N"] = min(meta["BLOCK_N"], 32)
        meta["BLOCK_K"] = min(meta["BLOCK_K"], 8)
    if dtype == torch.float32 and not allow_tf32() and target.kind in FP64_TILE_CAP_DEVICES:
        # fp32 with TF32 off is an FMA dot (input_precision="ieee"), its operands in registers:
        # BLOCK_K 16 and 2K-value tiles. ptxas (maxnreg 255), sm_90, 64x64x16: wgrad NCHW 255
        # registers + 36-176 B of spills (AlexNet conv1 160 B, ResNet-50 conv1 168 B, 1x1 108 B),
        # fwd/dgrad 1x1 NHWC 255 + 16-60 B; at 32x64x16 (wgrad) 220-248 registers and 64x32x16
        # (fwd/dgrad) 114-214, none, on sm_80 too (the 64x64x32 default spilled up to 456 B).
        meta["BLOCK_K"] = min(meta["BLOCK_K"], 16)
        if family.endswith("wgrad"):
            meta["BLOCK_M"] = min(meta["BLOCK_M"], 32)
        else:
            meta["BLOCK_M"] = min(meta["BLOCK_M"], 64)
            meta["BLOCK_N"] = min(meta["BLOCK_N"], 32)
    elif dtype == torch.float32 and target.kind in FP64_TILE_CAP_DEVICES and (
            family.endswith("wgrad") or meta["BLOCK_M"] > 64
            or (family.endswith("dgrad") and target.capability < (9, 0))):
        # TF32 wgrad: both operands are gathered fp32 tiles with per-element addresses. 64x64x32,
        # NCHW 1x1 with grad_act (ResNet-50): 255 registers + 12 B of spills on sm_90, + 68-76 B
        # on sm_80; BLOCK_K 16 (two k8 MMA steps a tile): none, see bench/results/triton_aot.csv.
        # The same for 128-row TF32 tiles: 128x64x32 fwd/dgrad spilled up to 688 B (sm_80,
        # LeNet-5 conv2 dgrad, FLAT 5x5), 128x128x32 up to 256 B; and TF32 dgrad on sm_80, where
        # 64x64x32 spilled 32-68 B (LeNet-5 conv2, FLAT 5x5; sm_90's wgmma path: none).
        meta["BLOCK_K"] = min(meta["BLOCK_K"], 16)
    return meta, launch, split_k


def _use_flat(R: int, S: int, channels: int, block: int) -> bool:
    """Flattened (tap, channel) index for a reduction (forward, dgrad) or weight-column (wgrad)
    dimension whose channel count does not fill `block`-wide chunks: a stem with C = 3 reduces
    147 values in 10 chunks of 16 instead of 49 chunks that are 13/16 padding, a depthwise dgrad
    (K/groups = 1) 9 values in one chunk instead of 9. Per-tap chunks otherwise: their address
    math is per row and per column, not per element."""
    return R * S > 1 and channels % block != 0 and channels < 64


def _check_grid(groups: int, what: str):
    if groups > _MAX_GRID_YZ:
        raise ValueError(f"{what}: the triton backend supports at most {_MAX_GRID_YZ} groups, got {groups}")


def device_guard(t: torch.Tensor):
    """Triton launches on the current CUDA device, not the tensors': make it the tensors'."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _dummy(t):
    return t  # a valid pointer for arguments that a constexpr flag leaves unused


# ------------------------------------------------------------------------------------------------
# plans (what to launch, as Launch records) and launchers
# ------------------------------------------------------------------------------------------------

def tma_enabled() -> bool:
    return os.environ.get(TMA_ENV, "0") == "1"


def _tma_geometry(x, wp, stride, padding, groups, block_k, target):
    """"2d" (a 1x1 stride-1 conv as a GEMM over [N*H*W, C]), "4d" (a stride-1 conv, boxes of
    [N, H, W, C] shifted per tap) or None (the pointer kernel) for a forward on ``target``."""
    if not tma_enabled() or not (target.interpreter or target.capability >= (9, 0)):
        return None
    if not (x.dtype in (torch.float16, torch.bfloat16) or (x.dtype == torch.float32 and allow_tf32())):
        return None  # descriptors feed the tensor cores; fp32-ieee and fp64 keep their FMA kernels
    elem = x.element_size()
    if groups != 1 or not x.is_contiguous(memory_format=torch.channels_last) or x.shape[1] * elem % 16:
        return None  # descriptor strides must be 16-byte multiples, the channels dense and innermost
    if x.data_ptr() % 16 or wp.data_ptr() % 16 or block_k * elem % 16 or tuple(stride) != (1, 1):
        return None  # a view with an unaligned storage offset, a box row under 16 bytes, a strided conv
    if max(x.numel(), wp.numel()) >= _IDX32_SPAN:
        return None
    R, S = wp.shape[2], wp.shape[3]
    return "2d" if R == S == 1 and tuple(padding) == (0, 0) else "4d"


def _spatial_tile(P: int, Q: int, block_m: int) -> tuple[int, int]:
    """(TILE_H, TILE_W) with TILE_H * TILE_W = block_m covering P x Q with the fewest padded
    rows (ties: the wider tile, whose rows are longer runs of memory)."""
    best = None
    tw = 1
    while tw <= block_m:
        th = block_m // tw
        area = triton.cdiv(P, th) * th * triton.cdiv(Q, tw) * tw
        if best is None or area <= best[0]:
            best = (area, th, tw)
        tw *= 2
    return best[1], best[2]


def _plan_forward_tma(x, wp, b, r, y, geometry, has_bias, has_res, activation, padding, dilation, meta, launch,
                      target):
    from triton.tools.tensor_descriptor import TensorDescriptor

    N, C, H, W = x.shape
    K, _, R, S = wp.shape
    P, Q = y.shape[2], y.shape[3]
    BM, BN, BK = meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"]
    # dense channels_last strides from the sizes (the reported stride of a size-1 dim is arbitrary)
    if geometry == "2d":
        th, tw = 1, 1
        x_desc = TensorDescriptor(x, [N * H * W, C], [C, 1], [BM, BK])
        num_m = triton.cdiv(N * P * Q, BM)
    else:
        th, tw = _spatial_tile(P, Q, BM)
        x_desc = TensorDescriptor(x, [N, H, W, C], [H * W * C, W * C, C, 1], [1, th, tw, BK])
        num_m = N * triton.cdiv(P, th) * triton.cdiv(Q, tw)
    w_desc = TensorDescriptor(wp, [K, R * S, C], [R * S * C, C, 1], [BN, 1, BK])
    tiles = num_m * triton.cdiv(K, BN)
    persistent = target.sm_count < tiles <= _TMA_WAVES * target.sm_count
    grid = (target.sm_count if persistent else tiles,)
    args = (x_desc, w_desc, b, r, y,
            N, K, C, P, Q,
            b.stride(0) if has_bias else 0,
            *(r.stride() if has_res else (0, 0, 0, 0)),
            *y.stride(),
            padding[0], padding[1], dilation[0], dilation[1])
    consts = dict(R=R, S=S, HAS_BIAS=has_bias, HAS_RES=has_res, RELU=activation == "relu",
                  GEMM2D=geometry == "2d", PERSISTENT=persistent, **dot_mode(x.dtype, target.interpreter),
                  TILE_H=th, TILE_W=tw, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK)
    return [_launch.launch(_conv_fwd_tma_kernel, grid, args, consts, launch, gemm_m=N * P * Q)]


def plan_forward(x, w, bias, residual, y, stride, padding, dilation, groups, activation, target, *,
                 family="conv2d", flat=None, config=None) -> list:
    """The launches computing y = act(conv2d(x, w) + bias + residual) on ``target``."""
    N, C, H, W = x.shape
    K, C_g, R, S = w.shape
    G = groups
    K_g = K // G
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    P, Q = y.shape[2], y.shape[3]
    M = N * P * Q
    meta, launch, _ = _config(f"{family}_fwd", shape_key(x, w, stride, padding, dilation, groups), K_g, x.dtype,
                              target, config)
    b = bias if bias is not None else _dummy(y)
    r = residual if residual is not None else _dummy(y)
    wp = pack_weight(w)
    geometry = _tma_geometry(x, wp, stride, padding, groups, meta["BLOCK_K"], target)
    if geometry is not None and flat is None:  # (a forced indexing is a pointer-kernel test)
        return _plan_forward_tma(x, wp, b, r, y, geometry, bias is not None, residual is not None, activation,
                                 padding, dilation, meta, launch, target)
    flat = _use_flat(R, S, C_g, meta["BLOCK_K"]) if flat is None else flat
    grid = (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(K_g, meta["BLOCK_N"]), G)
    args = (x, wp, b, r, y,
            M, C_g, K_g, H, W, P, Q,
            *x.stride(), *wp.stride(),
            b.stride(0) if bias is not None else 0,
            *(r.stride() if residual is not None else (0, 0, 0, 0)),
            *y.stride(),
            sh, sw, ph, pw, dh, dw)
    consts = dict(R=R, S=S, HAS_BIAS=bias is not None, HAS_RES=residual is not None, RELU=activation == "relu",
                  FLAT=bool(flat), CHECK_BOUNDS=ph > 0 or pw > 0, IDX=_index_type(x, wp, b, r, y, rows=M),
                  **dot_mode(x.dtype, target.interpreter), **meta)
    return [_launch.launch(_conv_fwd_kernel, grid, args, consts, launch, gemm_m=M)]


def conv_forward(x, w, bias, residual, stride, padding, dilation, groups, activation, *, family="conv2d",
                 flat=None, config=None):
    """act(conv2d(x, w) + bias + residual) on validated arguments. ``family`` names the config
    tables (``<family>_fwd``); ``flat`` forces the reduction indexing, ``config`` a config index
    (tests)."""
    N, C, H, W = x.shape
    K, C_g, R, S = w.shape
    P = _common.conv_out_size(H, R, stride[0], padding[0], dilation[0])
    Q = _common.conv_out_size(W, S, stride[1], padding[1], dilation[1])
    y = _common.new_output((N, K, P, Q), x.dtype, x.device, _common.conv_format(x, w))
    if N * P * Q == 0:
        return y
    _check_grid(groups, family)
    _launch.run(plan_forward(x, w, bias, residual, y, stride, padding, dilation, groups, activation,
                             _launch.target_of(x), family=family, flat=flat, config=config))
    return y


def _index_type(*tensors, rows: int = 0):
    span = max(sum(size * stride for size, stride in zip(t.shape, t.stride())) for t in tensors)
    return tl.int64 if max(span, rows) >= _IDX32_SPAN else tl.int32


def pack_weight(w: torch.Tensor) -> torch.Tensor:
    """The weight with [K, R, S, C] memory (channels_last; no copy when it already is, as every
    1x1 weight is). Then the B tiles of forward and dgrad are contiguous along channels, so their
    loads vectorise and are software-pipelined: for NHWC fp16 128x64x32 tiles ptxas reports 160
    registers and 2 cp.async streams, against 255 registers + 528 B of spills and no pipelining
    with runtime strides (the [K, C, R, S] weight's channel stride is R*S)."""
    return w.contiguous(memory_format=torch.channels_last)


def _mod_inverse(a: int, m: int) -> int:
    return pow(a, -1, m) if m > 1 else 0


def _plan_dgrad(grad, out, w, gi, stride, padding, dilation, groups, relu, family, key, flat, config, target):
    N, C, H, W = gi.shape
    K, C_g, R, S = w.shape
    K_g = K // groups
    P, Q = grad.shape[2], grad.shape[3]
    sh, sw = stride
    dh, dw = dilation
    meta, launch, _ = _config(f"{family}_dgrad", key, C_g, gi.dtype, target, config)
    flat = _use_flat(R, S, K_g, meta["BLOCK_K"]) if flat is None else flat
    gcd_h, gcd_w = math.gcd(sh, dh), math.gcd(sw, dw)
    step_h, step_w = sh // gcd_h, sw // gcd_w
    Hp, Wp = triton.cdiv(H, sh), triton.cdiv(W, sw)  # the largest phase
    Mp = N * Hp * Wp
    if sh * sw > _MAX_GRID_YZ:
        raise ValueError(f"{family}_backward: the triton backend supports strides with at most {_MAX_GRID_YZ} "
                         f"phases, got stride {tuple(stride)}")
    o = out if relu else grad
    wp = pack_weight(w)
    grid = (triton.cdiv(Mp, meta["BLOCK_M"]) * triton.cdiv(C_g, meta["BLOCK_N"]), sh * sw, groups)
    args = (grad, o, wp, gi,
            N, C_g, K_g, H, W, P, Q,
            *grad.stride(), *o.stride(), *wp.stride(), *gi.stride(),
            sh, sw, padding[0], padding[1], dh, dw,
            step_h, step_w, gcd_h, gcd_w, _mod_inverse((dh // gcd_h) % step_h, step_h),
            _mod_inverse((dw // gcd_w) % step_w, step_w))
    consts = dict(R=R, S=S, RELU=relu, FLAT=bool(flat), IDX=_index_type(grad, o, wp, gi, rows=Mp),
                  **dot_mode(gi.dtype, target.interpreter), **meta)
    return [_launch.launch(_conv_dgrad_kernel, grid, args, consts, launch, gemm_m=Mp)]


def _plan_wgrad(grad, out, x, w, gw, gb, ga, stride, padding, dilation, groups, relu, family, key, flat, config,
                target):
    N, C, H, W = x.shape
    K, C_g, R, S = w.shape
    K_g = K // groups
    P, Q = grad.shape[2], grad.shape[3]
    NPQ = N * P * Q
    has_dw, has_db, write_ga = gw is not None, gb is not None, ga is not None
    meta, launch, split_k = _config(f"{family}_wgrad", key, K_g, x.dtype, target, config, "BLOCK_M")
    meta["SWAP"] = bool(meta.get("SWAP", False))
    BM, BN, BK = meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"]
    flat = _use_flat(R, S, C_g, BN) if flat is None else flat
    if has_dw:
        num_n = triton.cdiv(R * S * C_g, BN) if flat else R * S * triton.cdiv(C_g, BN)
    else:
        num_n = 1
    tiles = triton.cdiv(K_g, BM) * num_n * groups
    chunks = triton.cdiv(NPQ, BK)
    if split_k == 0:
        # auto: enough splits for two waves of programs, each split at least 8 chunks long (the
        # interpreter counts as a one-SM device: any split is correct)
        split_k = min(triton.cdiv(2 * target.sm_count, tiles), triton.cdiv(chunks, 8), 64)
    split_k = max(1, min(split_k, chunks, _MAX_GRID_YZ))
    pix_per_split = triton.cdiv(chunks, split_k) * BK
    split_k = max(1, triton.cdiv(NPQ, pix_per_split)) if NPQ else 1  # no empty splits

    acc_dtype = _acc_dtype(x.dtype)
    if split_k > 1:
        # [split, K, R, S, C/groups]: the kernel's stores run along channels (contiguous)
        ws_w = torch.empty((split_k, K, R, S, C_g), dtype=acc_dtype, device=x.device) if has_dw else None
        ws_b = torch.empty((split_k, K), dtype=acc_dtype, device=x.device) if has_db else None
    else:
        ws_w, ws_b = gw, gb
    dw_t = ws_w if has_dw else _dummy(grad)
    db_t = ws_b if has_db else _dummy(grad)
    ga_t = ga if write_ga else _dummy(grad)
    o = out if relu else grad
    if not has_dw:
        dw_strides = (0,) * 5
    elif split_k > 1:  # (split, k, c, r, s) strides of the [split, K, R, S, C/groups] workspace
        dw_strides = (ws_w.stride(0), ws_w.stride(1), ws_w.stride(4), ws_w.stride(2), ws_w.stride(3))
    else:
        dw_strides = (0, *gw.stride())
    db_strides = (ws_b.stride(0) if split_k > 1 else 0, ws_b.stride(-1)) if has_db else (0, 0)
    grid = (triton.cdiv(K_g, BM) * num_n, split_k, groups)
    args = (grad, o, x, dw_t, db_t, ga_t,
            NPQ, C_g, K_g, H, W, P, Q, pix_per_split,
            *grad.stride(), *o.stride(), *x.stride(),
            *dw_strides, *db_strides,
            *(ga.stride() if write_ga else (0, 0, 0, 0)),
            *stride, *padding, *dilation)
    consts = dict(R=R, S=S, RELU=relu, HAS_DW=has_dw, HAS_DB=has_db, WRITE_GA=write_ga,
                  FLAT=bool(flat), CHECK_BOUNDS=padding[0] > 0 or padding[1] > 0,
                  IDX=_index_type(grad, o, x, dw_t, db_t, ga_t, rows=NPQ + split_k * BK),
                  **dot_mode(x.dtype, target.interpreter), **meta)
    gemm_m, tile_m = (R * S * C_g, BN) if meta["SWAP"] else (K_g, BM)  # SWAP: columns x channels
    plan = [_launch.launch(_conv_wgrad_kernel, grid, args, consts, launch, gemm_m=gemm_m, tile_m=tile_m)]
    if split_k > 1:
        fp64 = acc_dtype == torch.float64
        if has_dw:
            numel = ws_w[0].numel()
            gs = gw.stride()
            plan.append(_launch.launch(
                _splitk_reduce_kernel, (triton.cdiv(numel, _REDUCE_BLOCK),),
                (ws_w, gw, numel, split_k, R, S, C_g, gs[0], gs[2], gs[3], gs[1]),
                dict(BLOCK=_REDUCE_BLOCK, FP64=fp64), {}))
        if has_db:
            plan.append(_launch.launch(
                _splitk_reduce_kernel, (triton.cdiv(K, _REDUCE_BLOCK),),
                (ws_b, gb, K, split_k, 1, 1, 1, gb.stride(0), 0, 0, 0), dict(BLOCK=_REDUCE_BLOCK, FP64=fp64), {}))
    return plan


def plan_backward(grad, x, w, out, gi, gw, gb, ga, stride, padding, dilation, groups, activation, target, *,
                  family="conv2d", flat=None, config=None) -> list:
    """The launches computing the gradients asked for (a None or empty gi / ga: not asked for)."""
    relu = activation == "relu"
    key = shape_key(x, w, stride, padding, dilation, groups)
    plan = []
    if gi is not None and gi.numel():
        plan += _plan_dgrad(grad, out, w, gi, stride, padding, dilation, groups, relu, family, key, flat, config,
                            target)
    ga = ga if ga is not None and ga.numel() else None
    if gw is not None or gb is not None or ga is not None:
        plan += _plan_wgrad(grad, out, x, w, gw, gb, ga, stride, padding, dilation, groups, relu, family, key,
                            flat, config, target)
    return plan


def conv_backward(grad, x, w, out, stride, padding, dilation, groups, activation, output_mask, *,
                  family="conv2d", flat=None, config=None):
    """(grad_input, grad_weight, grad_bias, grad_act) on validated arguments; outputs not in
    output_mask are empty tensors."""
    fmt = _common.conv_format(x, w)
    dtype, device = x.dtype, x.device
    K = w.shape[0]

    def empty():
        return torch.empty(0, dtype=dtype, device=device)

    gi = _common.new_output(x.shape, dtype, device, fmt) if output_mask[0] else None
    gw = _common.new_output(w.shape, dtype, device, suggest_memory_format(w)) if output_mask[1] else None
    gb = _common.new_output((K,), dtype, device) if output_mask[2] else None
    ga = _common.new_output(grad.shape, dtype, device, fmt) if output_mask[3] else None
    if any(output_mask):
        _check_grid(groups, f"{family}_backward")
        _launch.run(plan_backward(grad, x, w, out, gi, gw, gb, ga, stride, padding, dilation, groups, activation,
                                  _launch.target_of(x), family=family, flat=flat, config=config))
    return (gi if gi is not None else empty(), gw if gw is not None else empty(),
            gb if gb is not None else empty(), ga if ga is not None else empty())


# ------------------------------------------------------------------------------------------------
# op entry points (fastcnn::_triton_conv2d, fastcnn::_triton_conv2d_backward)
# ------------------------------------------------------------------------------------------------

# Arguments arrive validated (the router runs csrc/checks.h before any backend).
# Defaults as the schema's: the dispatcher drops trailing arguments equal to their default.
def conv2d(input, weight, bias=None, residual=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
           activation="none"):
    with device_guard(input):
        return conv_forward(input, weight, bias, residual, tuple(stride), tuple(padding), tuple(dilation), groups,
                            activation)


def conv2d_backward(grad_output, input, weight, output, stride, padding, dilation, groups, activation,
                    output_mask):
    with device_guard(input):
        return conv_backward(grad_output, input, weight, output, tuple(stride), tuple(padding), tuple(dilation),
                             groups, activation, list(output_mask))


def conv2d_into(input, weight, bias, residual, stride, padding, dilation, groups, activation, out):
    """fastcnn::conv2d's result written into ``out`` (a channel slice of a wider buffer, in the op's
    memory format): the same plan as conv2d with out's pointer and strides for the store, so the
    values are conv2d's bit for bit."""
    if out.numel() == 0:
        return
    _check_grid(groups, "conv2d_into")
    with device_guard(input):
        _launch.run(plan_forward(input, weight, bias, residual, out, tuple(stride), tuple(padding), tuple(dilation),
                                 groups, activation, _launch.target_of(input)))


IMPLS = {"conv2d": conv2d, "conv2d_backward": conv2d_backward, "conv2d_into": conv2d_into}
