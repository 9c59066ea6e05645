"""Triton conv1x1: the bottleneck 1x1 convolution as a GEMM over (N*P*Q, C) with the fused epilogue.

The kernels are conv2d's implicit GEMMs (kernels/conv2d.py) specialised to R = S = 1 (compile-time
constants), where they reduce to plain GEMMs:
* forward: y[m, k] = act(sum_c x[n, c, p*sh, q*sw] * w[k, c] + bias[k] + residual[m, k]); the
  stride (ResNet's stride-2 downsampling shortcut) only changes which input rows are read, with no
  gather pass and no padding checks (one tap, always inside the input);
* dgrad: dx[n, c, h, w] = sum_k g[n, k, h/sh, w/sw] * w[k, c] on the stride phase (0, 0); the
  other stride_h*stride_w - 1 phases get no tap and are written as zeros by the same launch;
* wgrad: dw[k, c] = sum_m g[m, k] * x[m, c], split over m when the [K, C] tiles cannot fill the
  GPU, with grad_bias (row sums of g) and grad_act from the same loaded gradient tiles.
* conv1x1_into (horizontal fusion): sibling 1x1 convs on one input as ONE GEMM over their stacked
  weights; each column tile lies in one segment (a sibling), whose epilogue applies that sibling's
  bias and activation and stores into its destination (a channel slice of a concat buffer) with
  its own strides. Optionally the input is max-pooled as the A tile is loaded (GoogLeNet's pool
  projection): the pooled tensor is never written (kernels/_conv_igemm.py _pool_tile).
The ReLU mask is applied as the gradient is loaded. Launch configs: the conv candidate lists, with
this op's own pick tables (kernels/configs/conv1x1_{fwd,dgrad,wgrad}.json): a 1x1 GEMM has no
im2col address math in its loop and is tuned separately from the k > 1 convolutions.
"""

from __future__ import annotations

import triton

from . import _launch
from . import conv2d as _conv
from ._conv_igemm import _conv1x1_into_kernel

_PAD = (0, 0)
_DIL = (1, 1)


# Arguments arrive validated (the router runs csrc/checks.h before any backend).
# Defaults as the schema's: the dispatcher drops trailing arguments equal to their default.
def conv1x1(input, weight, bias=None, residual=None, stride=(1, 1), activation="relu"):
    with _conv.device_guard(input):
        return _conv.conv_forward(input, weight, bias, residual, tuple(stride), _PAD, _DIL, 1, activation,
                                  family="conv1x1")


def conv1x1_backward(grad_output, input, weight, output, stride, activation, output_mask):
    with _conv.device_guard(input):
        return _conv.conv_backward(grad_output, input, weight, output, tuple(stride), _PAD, _DIL, 1, activation,
                                   list(output_mask), family="conv1x1")


MAX_SEGMENTS = 4  # destinations one launch stores to (the kernel's y0..y3); more: one launch per 4
# Triton's pipeliner stages every window tap's A tile of the pooled loader in shared memory:
# (num_stages - 1) x (kh*kw A tiles + the B tile). Pool plans drop stages until that fits this
# budget, sm_80's 163 KB less room for the epilogue (ptxas, tf32 64x64x32 3x3, 3 stages: 168 KB,
# over sm_80's limit; 2 stages: 84 KB).
_POOL_SHARED = 144 * 1024


def _pool_stages(stages, kh, kw, meta, elem):
    bm, bn, bk = meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"]
    staged = (kh * kw * bm * bk + bk * bn) * elem
    while stages > 1 and (stages - 1) * staged > _POOL_SHARED:
        stages -= 1
    return stages


def plan_conv1x1_into(x, w, bias, outs, stride, activations, pool, target, config=None) -> list:
    """The launches of conv1x1_into: one per MAX_SEGMENTS segments (one for every network's)."""
    N, C, H, W = x.shape
    P, Q = outs[0].shape[2], outs[0].shape[3]
    M = N * P * Q
    pool = tuple(pool)
    if pool:  # the rows are the pool's windows; the conv's stride is 1
        kh, kw, step_h, step_w, pad_h, pad_w = pool[:6]
    else:
        (kh, kw), (step_h, step_w), (pad_h, pad_w) = (1, 1), stride, (0, 0)
    segs, off = [], 0
    for y, act in zip(outs, activations):
        if y.shape[1]:  # an empty segment has no tiles
            segs.append((off, y, act))
        off += y.shape[1]
    key = (_conv.shape_key(x, w, stride, _PAD, _DIL, 1) + "-into" + "+".join(str(y.shape[1]) for y in outs)
           + ("-pool" + "x".join(map(str, pool)) if pool else ""))
    meta, options, _ = _conv._config("conv1x1_fwd", key, max(y.shape[1] for _, y, _ in segs), x.dtype, target,
                                     config)
    if pool:
        options = dict(options, num_stages=_pool_stages(options.get("num_stages", 3), kh, kw, meta,
                                                         x.element_size()))
    plan = []
    for i in range(0, len(segs), MAX_SEGMENTS):
        part = segs[i:i + MAX_SEGMENTS]
        lo, hi = part[0][0], part[-1][0] + part[-1][1].shape[1]
        wp, bp = w[lo:hi], bias[lo:hi] if bias is not None else None
        ys = [y for _, y, _ in part]
        pad = MAX_SEGMENTS - len(part)  # unused slots: a valid pointer, no tiles
        ks = [y.shape[1] for y in ys] + [0] * pad
        strides = [s for y in ys for s in y.stride()] + [0] * (4 * pad)
        relus = sum(1 << j for j, (_, _, act) in enumerate(part) if act == "relu")
        n_tiles = sum(triton.cdiv(k, meta["BLOCK_N"]) for k in ks)
        args = (x, wp, bp if bp is not None else _conv._dummy(ys[0]), *ys, *[ys[0]] * pad,
                M, C, H, W, P, Q,
                *x.stride(), wp.stride(0), wp.stride(1), bp.stride(0) if bp is not None else 0,
                *ks, *strides,
                step_h, step_w, pad_h, pad_w)
        # (a one-channel segment's channel stride is never used: any value is dense)
        dense = all(y.stride(1) == 1 or y.shape[1] == 1 for y in ys)
        consts = dict(NSEG=len(part), RELUS=relus, HAS_BIAS=bp is not None, CHANNELS_DENSE=dense, POOL=bool(pool),
                      KH=kh, KW=kw, IDX=_conv._index_type(x, wp, *ys, rows=M),
                      **_conv.dot_mode(x.dtype, target.interpreter), **meta)
        grid = (triton.cdiv(M, meta["BLOCK_M"]) * n_tiles,)
        plan.append(_launch.launch(_conv1x1_into_kernel, grid, args, consts, options, gemm_m=M))
    return plan


def conv1x1_into(input, weight, bias, stride, activations, pool, out):
    """Writes act_s(conv1x1(pool(input), weight[seg s]) + bias[seg s]) into out[s] for every segment
    s, as one launch (arguments validated by the router: csrc/checks.h check_conv1x1_into)."""
    outs = list(out)
    if input.shape[0] == 0 or outs[0].shape[2] * outs[0].shape[3] == 0 or not any(y.shape[1] for y in outs):
        return
    with _conv.device_guard(input):
        _launch.run(plan_conv1x1_into(input, weight, bias, outs, tuple(stride), list(activations), list(pool),
                                      _launch.target_of(input)))


IMPLS = {"conv1x1": conv1x1, "conv1x1_backward": conv1x1_backward, "conv1x1_into": conv1x1_into}
