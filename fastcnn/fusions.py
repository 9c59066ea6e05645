"""Network-level fusions: branches that write into one block output, sibling 1x1 convs as one GEMM,
the max-pool inside its 1x1 projection.

An inception block (GoogLeNet) runs four branches on one input and concatenates them. Here:

* **no concat**: every branch's last conv writes its channel slice of the block output
  (``fastcnn::conv2d_into`` / ``conv1x1_into``), so ``torch.cat`` and its copy of all branch outputs
  are gone; the backward reads each branch's gradient as a slice of the block's (no copy);
* **horizontal 1x1 fusion**: the 1x1 convs that read the block input with the same stride (the 1x1
  branch, the 3x3-reduce, the 5x5-reduce) run as one ``conv1x1_into`` over their concatenated
  weights: the input is read once, and the epilogue writes each segment, with its bias and ReLU,
  to its destination (the block slice or the reduce buffer). Backward: one dgrad summing the
  segments' contributions and one wgrad (``fastcnn::_conv1x1_into_backward``);
* **pool into the projection**: the pool branch's max-pool (3x3/1) is taken while its 1x1
  projection loads its operand; the pooled tensor is never allocated. Backward: the gradient goes
  to each window's argmax, recomputed (ties to the first maximum, NaN as PyTorch). Kernels: the
  CPU engine, the Triton 1x1 kernel (the path that runs it on Hopper: the CUTLASS/TMA im2col path
  has no pointer-based loader to pool in) and the sm_80-style CUDA kernels.

In eval mode (BN folded into the convs) a whole block is one autograd node over these ops. In train
mode the BNs need batch statistics between conv and ReLU: the sibling 1x1 convs still run as one
GEMM (raw segments), each segment's BN + ReLU runs as in PyTorch, and the branches are concatenated
(still open: BN + ReLU writing straight into the block slice).

``concat_branches(x, branches)`` takes the branches as lists of steps (``PoolStep``, ``ConvStep``);
``fastcnn.models.googlenet`` and ``fastcnn.fuse`` build them from modules. ``conv1x1_split`` is the
horizontal fusion on its own (ResNet-50's layer1.0: the downsample and the block's first 1x1).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from . import _checks
from . import _ops  # noqa: F401  (registers the ops' fakes)
from .kernels._common import conv_format, conv_out_size, pool_out_size

__all__ = ["PoolStep", "ConvStep", "concat_branches", "conv1x1_split", "branch_plan", "siblings"]

ops = torch.ops.fastcnn


@dataclass(frozen=True)
class PoolStep:
    """A max-pool (dilation 1, no indices)."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    ceil_mode: bool

    @classmethod
    def from_module(cls, m: nn.MaxPool2d) -> Optional["PoolStep"]:
        if m.return_indices or _checks.pair(m.dilation, "dilation", "MaxPool2d") != (1, 1):
            return None
        k = _checks.pair(m.kernel_size, "kernel_size", "MaxPool2d")
        s = _checks.pair(m.stride if m.stride is not None else m.kernel_size, "stride", "MaxPool2d")
        return cls(k, s, _checks.pair(m.padding, "padding", "MaxPool2d"), bool(m.ceil_mode))


@dataclass(frozen=True, eq=False)
class ConvStep:
    """conv [-> BatchNorm2d] [-> ReLU], as ``fastcnn.nn.conv_bn_act`` computes it."""

    conv: nn.Conv2d
    bn: Optional[nn.Module] = None
    activation: Optional[str] = None

    def geometry(self):
        c = self.conv
        if isinstance(c.padding, str) or c.padding_mode != "zeros":
            return None
        return tuple(c.stride), tuple(c.padding), tuple(c.dilation), c.groups

    def is_1x1(self) -> bool:
        g = self.geometry()
        return (g is not None and tuple(self.conv.kernel_size) == (1, 1) and g[1] == (0, 0) and g[2] == (1, 1)
                and g[3] == 1)

    def act(self) -> str:
        a = self.activation or (getattr(self.conv, "activation", None) if self.bn is None else None)
        return "relu" if a == "relu" else "none"

    def foldable(self) -> bool:
        from .nn import _can_fold

        return self.bn is None or _can_fold(self.bn)

    def weights(self):
        """(weight, bias) with an eval-mode BN folded in (cached without autograd, as conv_bn_act)."""
        from .nn import _folded

        if self.bn is None:
            return self.conv.weight, self.conv.bias
        return _folded(self.conv, self.bn)


# ------------------------------------------------------------------------------------------------
# sibling 1x1 convs as one GEMM
# ------------------------------------------------------------------------------------------------

class _Split(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, splits, activations, stride, pool):
        N = x.shape[0]
        if pool:
            P = pool_out_size(x.shape[2], pool[0], pool[2], pool[4], 1, bool(pool[6]))
            Q = pool_out_size(x.shape[3], pool[1], pool[3], pool[5], 1, bool(pool[6]))
        else:
            P = conv_out_size(x.shape[2], 1, stride[0], 0, 1)
            Q = conv_out_size(x.shape[3], 1, stride[1], 0, 1)
        fmt = conv_format(x, weight)
        outs = [torch.empty((N, k, P, Q), dtype=x.dtype, device=x.device, memory_format=fmt) for k in splits]
        ops.conv1x1_into(x, weight, bias, list(stride), list(activations), list(pool), outs)
        ctx.save_for_backward(x, weight, *outs)
        ctx.conf = (list(stride), list(activations), list(pool), bias is not None)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        x, weight, *outs = ctx.saved_tensors
        stride, acts, pool, has_bias = ctx.conf
        need = ctx.needs_input_grad
        mask = [need[0], need[1], need[2] and has_bias]
        if not any(mask):
            return (None,) * 7
        grads = [torch.zeros_like(o) if g is None else g for g, o in zip(grads, outs)]
        gx, gw, gb = ops._conv1x1_into_backward(grads, x, weight, outs, stride, acts, pool, mask)
        return (gx if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None) + (None,) * 4


def conv1x1_split(input: Tensor, weight: Tensor, bias: Tensor | None, splits: Sequence[int],
                  activations: Sequence[str | None], stride=1) -> tuple[Tensor, ...]:
    """Sibling 1x1 convs over one input as one GEMM: ``weight`` [sum(splits), C, 1, 1] (the convs'
    weights concatenated), output channels split into ``splits``, each with its activation
    (``None``/"none" or "relu"); returns one dense tensor per split, in the conv's memory format."""
    acts = [_checks.activation(a, "conv1x1_split", allow_none=True) for a in activations]
    stride = _checks.pair(stride, "stride", "conv1x1_split")
    return _Split.apply(input, weight, bias, tuple(int(k) for k in splits), tuple(acts), tuple(stride), ())


def siblings(x: Tensor, steps: Sequence[ConvStep]) -> tuple[Tensor, ...]:
    """The outputs of sibling 1x1 ``ConvStep``s on ``x`` (one stride) as one GEMM: BNs folded in
    eval mode; in train mode raw segments, then each BN (batch statistics) and ReLU as PyTorch."""
    stride = steps[0].geometry()[0]
    splits = [s.conv.out_channels for s in steps]
    if all(s.foldable() for s in steps):
        w, b = _cat_weights(steps, [s.weights() for s in steps])
        return conv1x1_split(x, w, b, splits, [s.act() for s in steps], stride)
    w, b = _stack([s.conv.weight for s in steps], [s.conv.bias for s in steps])
    outs = []
    for s, y in zip(steps, conv1x1_split(x, w, b, splits, ["none"] * len(steps), stride)):
        if s.bn is not None:
            y = s.bn(y)
        outs.append(torch.relu(y) if s.act() == "relu" else y)
    return tuple(outs)


# ------------------------------------------------------------------------------------------------
# the block executor (eval / no BN): one autograd node, every branch into its slice
# ------------------------------------------------------------------------------------------------
# A plan is a tuple of constants (hashable, so torch.compile treats it as one):
#   (C_total, P, Q, heads, tails)
#   heads: (w, b, stride, pool, segs): one conv1x1_into; segs: (K, act, dest) with dest >= 0 a
#          channel offset of the block output, dest < 0 the buffer -1 - dest (a reduce output)
#   tails: (src, steps, offset): conv2d steps from x (src -1) or a buffer; the last writes the
#          block channels [offset, offset + K); steps: (w, b, stride, padding, dilation, groups, act)
# w and b index the tensors passed after x (b -1: no bias).

class _Concat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, x, *ts):
        ctot, P, Q, heads, tails = plan
        fmt = conv_format(x, ts[heads[0][0]] if heads else ts[tails[0][1][0][0]])
        N = x.shape[0]
        out = torch.empty((N, ctot, P, Q), dtype=x.dtype, device=x.device, memory_format=fmt)
        bufs: dict[int, Tensor] = {}
        for w, b, stride, pool, segs in heads:
            dests = []
            hp, hq = (P, Q) if pool else (conv_out_size(x.shape[2], 1, stride[0], 0, 1),
                                          conv_out_size(x.shape[3], 1, stride[1], 0, 1))
            for k, _, dest in segs:
                if dest >= 0:
                    dests.append(out.narrow(1, dest, k))
                else:
                    bufs[-1 - dest] = torch.empty((N, k, hp, hq), dtype=x.dtype, device=x.device, memory_format=fmt)
                    dests.append(bufs[-1 - dest])
            ops.conv1x1_into(x, ts[w], ts[b] if b >= 0 else None, list(stride), [a for _, a, _ in segs],
                             list(pool), dests)
        mids = []  # the outputs of tail steps before the last (the next step's input, a ReLU mask)
        for src, steps, offset in tails:
            inp = x if src < 0 else bufs[src]
            for j, (w, b, stride, padding, dilation, groups, act) in enumerate(steps):
                bias = ts[b] if b >= 0 else None
                if j + 1 < len(steps):
                    inp = ops.conv2d(inp, ts[w], bias, None, list(stride), list(padding), list(dilation), groups, act)
                    mids.append(inp)
                else:
                    ops.conv2d_into(inp, ts[w], bias, None, list(stride), list(padding), list(dilation), groups, act,
                                    out.narrow(1, offset, ts[w].shape[0]))
        ctx.plan = plan
        ctx.nbufs = len(bufs)
        ctx.save_for_backward(x, out, *[bufs[i] for i in range(len(bufs))], *mids, *ts)
        return out

    @staticmethod
    def backward(ctx, gout):
        ctot, P, Q, heads, tails = ctx.plan
        x, out, *rest = ctx.saved_tensors
        bufs, rest = rest[:ctx.nbufs], rest[ctx.nbufs:]
        nmids = sum(len(steps) - 1 for _, steps, _ in tails)
        mids, ts = rest[:nmids], rest[nmids:]
        need = ctx.needs_input_grad  # (plan, x, *ts)
        tneed = need[2:]
        tgrads: list[Optional[Tensor]] = [None] * len(ts)
        gx: Optional[Tensor] = None
        gbufs: dict[int, Tensor] = {}

        def add(a, b):
            return b if a is None else a + b

        mi = 0
        for src, steps, offset in tails:
            ins = [x if src < 0 else bufs[src]] + list(mids[mi:mi + len(steps) - 1])
            outs = list(mids[mi:mi + len(steps) - 1])
            mi += len(steps) - 1
            last_w = ts[steps[-1][0]]
            outs.append(out.narrow(1, offset, last_w.shape[0]))
            g = gout.narrow(1, offset, last_w.shape[0])
            for j in range(len(steps) - 1, -1, -1):
                w, b, stride, padding, dilation, groups, act = steps[j]
                gin = j > 0 or (src < 0 and need[1]) or src >= 0
                mask = [gin, tneed[w], b >= 0 and tneed[b], False]
                gi, gw, gb, _ = ops._conv2d_backward(g, ins[j], ts[w], outs[j] if act == "relu" else None,
                                                     list(stride), list(padding), list(dilation), groups, act, mask)
                if mask[1]:
                    tgrads[w] = add(tgrads[w], gw)
                if mask[2]:
                    tgrads[b] = add(tgrads[b], gb)
                g = gi
            if src < 0 and need[1]:
                gx = add(gx, g)
            elif src >= 0:
                gbufs[src] = g
        for w, b, stride, pool, segs in heads:
            grads, outputs = [], []
            for k, _, dest in segs:
                if dest >= 0:
                    grads.append(gout.narrow(1, dest, k))
                    outputs.append(out.narrow(1, dest, k))
                else:
                    o = bufs[-1 - dest]
                    grads.append(gbufs.get(-1 - dest, torch.zeros_like(o)))
                    outputs.append(o)
            mask = [need[1], tneed[w], b >= 0 and tneed[b]]
            if not any(mask):
                continue
            gi, gw, gb = ops._conv1x1_into_backward(grads, x, ts[w], outputs, list(stride), [a for _, a, _ in segs],
                                                    list(pool), mask)
            if mask[0]:
                gx = add(gx, gi)
            if mask[1]:
                tgrads[w] = add(tgrads[w], gw)
            if mask[2]:
                tgrads[b] = add(tgrads[b], gb)
        return (None, gx, *tgrads)


def branch_plan(x: Tensor, branches: Sequence[Sequence[object]]):
    """The executor's plan for ``branches`` (lists of PoolStep / ConvStep) on input ``x``, with the
    list of conv steps whose (weight, bias) it indexes; ``None`` when a branch has a form the
    executor does not run (the caller then runs the branches as written and concatenates)."""
    H, W = x.shape[-2:]
    heads: dict[tuple, list] = {}  # stride -> [(branch, step)]
    pool_heads, tail_list, convs = [], [], []
    spatial, offsets, off = None, [], 0

    def conv_index(step):
        convs.append(step)
        return len(convs) - 1

    shapes = []
    for bi, steps in enumerate(branches):
        if not steps or not all(isinstance(s, (PoolStep, ConvStep)) for s in steps):
            return None
        if isinstance(steps[0], PoolStep):
            if len(steps) != 2 or not isinstance(steps[1], ConvStep) or not steps[1].is_1x1() \
                    or steps[1].geometry()[0] != (1, 1):
                return None
            p = steps[0]
            hw = (pool_out_size(H, p.kernel_size[0], p.stride[0], p.padding[0], 1, p.ceil_mode),
                  pool_out_size(W, p.kernel_size[1], p.stride[1], p.padding[1], 1, p.ceil_mode))
        else:
            if any(not isinstance(s, ConvStep) or s.geometry() is None for s in steps):
                return None
            h, w = H, W
            for s in steps:
                (sh, sw), (ph, pw), (dh, dw), _ = s.geometry()
                kh, kw = s.conv.kernel_size
                h, w = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
            hw = (h, w)
        if spatial is None:
            spatial = hw
        elif hw != spatial:
            return None
        k = steps[-1].conv.out_channels
        offsets.append(off)
        off += k
        shapes.append(k)
    nbuf = 0
    head_plans, tails = [], []
    for bi, steps in enumerate(branches):
        if isinstance(steps[0], PoolStep):
            p, c = steps
            pool_heads.append((bi, c, (*p.kernel_size, *p.stride, *p.padding, int(p.ceil_mode))))
        elif steps[0].is_1x1():
            heads.setdefault(steps[0].geometry()[0], []).append(bi)
        else:
            tail_list.append((bi, -1, list(steps)))
    for stride, members in heads.items():
        segs, parts = [], []
        for bi in members:
            steps = branches[bi]
            parts.append(steps[0])
            if len(steps) == 1:
                segs.append((steps[0].conv.out_channels, steps[0].act(), offsets[bi]))
            else:
                segs.append((steps[0].conv.out_channels, steps[0].act(), -1 - nbuf))
                tail_list.append((bi, nbuf, list(steps[1:])))
                nbuf += 1
        head_plans.append((("cat", tuple(conv_index(s) for s in parts)), stride, (), tuple(segs)))
    for bi, c, pool in pool_heads:
        head_plans.append((("one", conv_index(c)), (1, 1), pool, ((c.conv.out_channels, c.act(), offsets[bi]),)))
    for bi, src, steps in tail_list:
        tails.append((src, tuple((conv_index(s), s.geometry(), s.act()) for s in steps), offsets[bi]))
    return (off, spatial[0], spatial[1]), head_plans, tails, convs


# Concatenated head weights without autograd, keyed on the parts (the folded weights, themselves
# cached) and their versions: an eval forward concatenates nothing after the first call.
_CAT_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _stack(ws, bs):
    """The siblings' weights as one [sum K, C, 1, 1] weight and their biases as one vector (zeros
    for a sibling without bias; None when none has one)."""
    w = torch.cat(ws, 0)
    if all(b is None for b in bs):
        return w, None
    return w, torch.cat([b if b is not None else wi.new_zeros(wi.shape[0]) for b, wi in zip(bs, ws)], 0)


def _cat_weights(steps, parts):
    ws = [p[0] for p in parts]
    bs = [p[1] for p in parts]

    def build():
        return _stack(ws, bs)

    if len(ws) == 1:
        return ws[0], bs[0]
    tensors = [t for t in ws + bs if t is not None]
    if (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) or torch.compiler.is_compiling():
        return build()
    try:
        versions = tuple(t._version for t in tensors)
    except RuntimeError:  # inference tensors: no version counter
        return build()
    owner = steps[0].conv
    hit = _CAT_CACHE.get(owner)
    # The entry holds the parts themselves and is matched by identity: an id or address alone
    # could be a freed part's (a re-fold after load_state_dict allocates new tensors).
    if hit is not None and len(hit[0]) == len(tensors) and all(a is t for a, t in zip(hit[0], tensors)) \
            and hit[1] == versions:
        return hit[2], hit[3]
    w, b = build()
    _CAT_CACHE[owner] = (tuple(tensors), versions, w, b)
    return w, b


def concat_branches(x: Tensor, branches: Sequence[Sequence[object]], plan=None) -> Tensor:
    """``torch.cat([branch(x) for branch in branches], 1)`` computed with the network fusions, each
    branch a list of ``PoolStep`` / ``ConvStep``. ``plan``: ``branch_plan(x, branches)``, when the
    caller caches it. Raises ValueError when a branch has a form the fusions do not cover (check
    ``branch_plan(...) is not None`` first)."""
    if plan is None:
        plan = branch_plan(x, branches)
    if plan is None:
        raise ValueError("concat_branches: a branch is not (pool ->) 1x1 conv or a chain of convs on the input")
    (ctot, P, Q), head_plans, tails, convs = plan
    if all(c.foldable() for c in convs):
        tensors: list[Tensor] = []
        weights = [c.weights() for c in convs]
        # One memory format for the block (each op picks conv_format(input, weight), and the block
        # output must be laid out as every op expects): channels_last when the input or any weight is.
        if x.dim() == 4 and any(conv_format(x, w) == torch.channels_last for w, _ in weights):
            x = x.contiguous(memory_format=torch.channels_last)

        def put(t):
            if t is None:
                return -1
            tensors.append(t)
            return len(tensors) - 1

        heads = []
        for (kind, idx), stride, pool, segs in head_plans:
            members = idx if kind == "cat" else (idx,)
            w, b = _cat_weights([convs[i] for i in members], [weights[i] for i in members])
            heads.append((put(w), put(b), tuple(stride), tuple(pool), segs))
        tail_plans = []
        for src, steps, offset in tails:
            st = []
            for ci, (stride, padding, dilation, groups), act in steps:
                w, b = weights[ci]
                st.append((put(w), put(b), tuple(stride), tuple(padding), tuple(dilation), groups, act))
            tail_plans.append((src, tuple(st), offset))
        return _Concat.apply((ctot, P, Q, tuple(heads), tuple(tail_plans)), x, *tensors)
    return _concat_train(x, branches, head_plans, convs)


def _concat_train(x, branches, head_plans, convs):
    """Batch-statistics BNs: the sibling 1x1 convs as one GEMM (``siblings``: raw segments, then
    their BNs and ReLUs), then each branch as written (BN modules run, so running statistics update as in PyTorch), then torch.cat."""
    from .nn import conv_bn_act

    first: dict[int, Tensor] = {}  # id(ConvStep) -> its output (BN and ReLU applied)
    for (kind, idx), stride, pool, segs in head_plans:
        if kind == "cat" and len(idx) >= 2:
            parts = [convs[i] for i in idx]
            first.update(zip(map(id, parts), siblings(x, parts)))
    outs = []
    for steps in branches:
        y = x
        for s in steps:
            if isinstance(s, PoolStep):
                from .functional import max_pool2d

                y = max_pool2d(y, s.kernel_size, s.stride, s.padding, 1, s.ceil_mode)
            elif id(s) in first:
                y = first[id(s)]
            else:
                y = conv_bn_act(y, s.conv, s.bn, None, "relu" if s.act() == "relu" else None)
        outs.append(y)
    return torch.cat(outs, 1)
