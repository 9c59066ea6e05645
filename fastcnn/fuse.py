"""``fastcnn.fuse(model)``: an ordinary PyTorch model rewritten to compute the same with fastcnn ops.

>>> fused = fastcnn.fuse(torchvision.models.resnet50())
>>> fused, report = fastcnn.fuse(model, return_report=True); print(report)

What it does, on a deep copy of the model (``inplace=True``: on the model itself):

1. every ``nn.Conv2d`` becomes a ``fastcnn.nn.Conv2d`` and every ``nn.MaxPool2d`` a
   ``fastcnn.nn.MaxPool2d`` (same parameters, same state_dict keys; exact module types only, and
   none with hooks);
2. the ``forward`` of every module with children is traced with ``torch.fx``, its children as leaves
   (each module is rewritten on its own, so calling any submodule directly still computes what it
   did), and these patterns become one ``fastcnn.nn.conv_bn_act`` call:

   * ``conv -> ReLU``, ``conv -> BatchNorm2d [-> ReLU]``, each optionally with a residual
     ``+ other`` (``+``, ``+=``, ``torch.add``, ``.add``/``.add_``) before the ReLU: in eval mode the
     BN is folded into the conv (one fastcnn op with the residual and ReLU in its epilogue), in train
     mode the BN runs with batch statistics and the add + ReLU after it is one ``add_relu``;
   * ``relu(a + b)`` of any other two tensors: ``fastcnn.functional.add_relu``.

   ReLU is ``nn.ReLU``, ``F.relu``/``torch.relu``/``.relu()`` (in-place or not). A rewritten module
   becomes a ``torch.fx.GraphModule`` (named as its class, with its submodules, parameters, buffers
   and public attributes in their original order: state_dict keys are unchanged).

3. network fusions (``network_fusions=False`` leaves them out), in the same traced graphs:

   * ``torch.cat([b1(x), b2(x), ...], 1)`` of branch modules on one input, each a chain of
     conv [-> BN] [-> ReLU] steps, optionally headed by a max-pool before a 1x1 conv (an inception
     block): ``fused_branches`` (``fastcnn.fusions.concat_branches``): each branch writes its slice
     of one output, the branches' leading 1x1 convs with one stride run as one GEMM, a pool -> 1x1
     branch pools inside the GEMM's operand load;
   * 1x1 convs [-> BN] [-> ReLU] with the same stride on the same input (ResNet-50's layer1.0: the
     block's first conv and its downsample): ``fused_siblings``, one GEMM for both.

Modules that cannot be traced (data-dependent control flow, ...) or whose traced forward differs
between train and eval mode (``if self.training: ...``: tracing would freeze one branch) keep their
forward; their children are still converted. The report (``return_report=True``) lists what was
fused, what was replaced and what was left as written, with the reason.
"""

from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from . import functional as FF
from . import nn as fnn
from .kernels._common import conv_out_size

__all__ = ["fuse", "FuseReport"]


@dataclass
class FuseReport:
    """What ``fuse`` did: ``fused`` (module path, pattern), ``replaced`` (module path, old -> new
    type), ``skipped`` (module path, why its forward was left as written)."""

    fused: list[tuple[str, str]] = field(default_factory=list)
    replaced: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        """One line per module: a conv that heads a fused pattern is named by that pattern only (its
        replacement by fastcnn.nn.Conv2d is implied), other replaced modules once each, then the
        modules left as written. The first line counts each list."""
        heads = {p for p, _ in self.fused}
        inside = sum(p in heads for p, _ in self.replaced)
        lines = [f"fastcnn.fuse: {len(self.fused)} fused patterns, {len(self.replaced)} modules replaced by fastcnn "
                 f"layers ({inside} of them head a fused pattern), {len(self.skipped)} modules left as written"]
        lines += [f"  fused     {p or '<root>'}: {what}" for p, what in self.fused]
        lines += [f"  replaced  {p or '<root>'}: {what}" for p, what in self.replaced if p not in heads]
        lines += [f"  left      {p or '<root>'}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the functions the rewritten graphs call
# ------------------------------------------------------------------------------------------------

def _conv_out_hw(conv: nn.Conv2d, h: int, w: int):
    if isinstance(conv.padding, str):
        if conv.padding == "same":
            return h, w
        pad = (0, 0)
    else:
        pad = conv.padding
    out = []
    for size, k, s, p, d in zip((h, w), conv.kernel_size, conv.stride, pad, conv.dilation):
        out.append(conv_out_size(size, k, s, p, d))
    return tuple(out)


def _residual_fits(x, conv, residual) -> bool:
    """Whether ``residual`` can go into the conv's epilogue: a tensor of the output's exact shape,
    dtype and device (anything else, e.g. a broadcast addend, takes the unfused path)."""
    if not isinstance(residual, torch.Tensor) or not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        return False
    if residual.dtype != x.dtype or residual.device != x.device:
        return False
    p, q = _conv_out_hw(conv, x.shape[-2], x.shape[-1])
    expected = (conv.out_channels, p, q) if x.dim() == 3 else (x.shape[0], conv.out_channels, p, q)
    return tuple(residual.shape) == expected


@fnn.fx_leaf
def fused_conv(x, conv, bn, residual, activation):
    """``act(bn(conv(x)) + residual)`` (``bn``, ``residual`` optional) as ``fuse`` emits it."""
    if residual is not None and not _residual_fits(x, conv, residual):
        y = fnn.conv_bn_act(x, conv, bn) + residual
        return torch.relu(y) if activation else y
    return fnn.conv_bn_act(x, conv, bn, residual, activation)


@fnn.fx_leaf
def add_relu(a, b):
    """``relu(a + b)``: one ``add_relu`` for two floating tensors of one dtype and device, else torch."""
    if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
            and a.device == b.device and a.is_floating_point()):
        return FF.add_relu(a, b)
    return torch.relu(a + b)


# ------------------------------------------------------------------------------------------------
# pattern matching on a traced forward
# ------------------------------------------------------------------------------------------------

_RELU_FUNCS = {F.relu, torch.relu, torch.relu_, torch.nn.functional.relu}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_INPLACE_ADDS = {operator.iadd}


class _ChildLeafTracer(fx.Tracer):
    """Every submodule call is a leaf: the graph holds only the traced module's own forward."""

    def is_leaf_module(self, m, module_qualified_name):
        return True


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


def _only_user(node: fx.Node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _is_relu_of(node: fx.Node, src: fx.Node, modules) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.ReLU) and node.args == (src,) and not node.kwargs
    if node.op == "call_function" and node.target in _RELU_FUNCS:
        return node.args[:1] == (src,) and len(node.args) <= 2 and set(node.kwargs) <= {"inplace"}
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return node.args == (src,) and not node.kwargs
    return False


def _add_operands(node: fx.Node):
    """(a, b, in_place) of a two-tensor add node, else None."""
    if node.kwargs:
        return None
    if node.op == "call_function" and node.target in _ADD_FUNCS and len(node.args) == 2:
        a, b = node.args
        inplace = node.target in _INPLACE_ADDS
    elif node.op == "call_method" and node.target in ("add", "add_") and len(node.args) == 2:
        a, b = node.args
        inplace = node.target == "add_"
    else:
        return None
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or a is b:
        return None
    return a, b, inplace


def _module_types():
    return {
        "conv": (fnn.Conv2d, fnn.Conv1x1),
        "bn": (nn.BatchNorm2d, nn.SyncBatchNorm),
    }


def _direct_child(node: fx.Node, modules, kinds):
    if node.op != "call_module" or "." in node.target:
        return None
    m = modules.get(node.target)
    if type(m) not in kinds or _has_hooks(m):
        return None
    return m


def _rewrite(graph: fx.Graph, modules: dict, prefix: str, report: FuseReport) -> int:
    """Rewrite the patterns in ``graph`` in place; returns how many."""
    kinds = _module_types()
    count = 0
    for node in list(graph.nodes):
        if node.graph is None or node.op != "call_module":  # erased, or not a module call
            continue
        conv = _direct_child(node, modules, kinds["conv"])
        if conv is None or getattr(conv, "activation", None) is not None or len(node.args) != 1 or node.kwargs:
            continue
        chain, cur, bn, residual, act, names = [node], node, None, None, None, [node.target]
        user = _only_user(cur)
        if user is not None and _direct_child(user, modules, kinds["bn"]) is not None and user.args == (cur,) \
                and not user.kwargs:
            bn = user
            chain.append(user)
            names.append(user.target)
            cur = user
            user = _only_user(cur)
        if user is not None:
            ops = _add_operands(user)
            if ops is not None and cur in ops[:2]:
                a, b, inplace = ops
                if not inplace or a is cur:  # an in-place add must write to the chain's tensor
                    residual = b if a is cur else a
                    chain.append(user)
                    names.append("add")
                    cur = user
                    user = _only_user(cur)
        if user is not None and _is_relu_of(user, cur, modules):
            act = "relu"
            chain.append(user)
            names.append("relu")
            cur = user
        if len(chain) == 1:
            continue  # a lone conv: already a fastcnn conv
        last = chain[-1]
        with graph.inserting_before(last):
            conv_attr = graph.get_attr(node.target)
            bn_attr = graph.get_attr(bn.target) if bn is not None else None
            fused = graph.call_function(fused_conv, (node.args[0], conv_attr, bn_attr, residual, act))
        last.replace_all_uses_with(fused)
        for n in reversed(chain):
            graph.erase_node(n)
        report.fused.append((prefix + node.target, " + ".join(names)))
        count += 1

    for node in list(graph.nodes):
        if node.graph is None:
            continue
        ops = _add_operands(node)
        if ops is None:
            continue
        a, b, inplace = ops
        if inplace and len(a.users) != 1:  # the in-place add's target is read elsewhere
            continue
        user = _only_user(node)
        if user is None or not _is_relu_of(user, node, modules):
            continue
        with graph.inserting_before(user):
            fused = graph.call_function(add_relu, (a, b))
        user.replace_all_uses_with(fused)
        graph.erase_node(user)
        graph.erase_node(node)
        report.fused.append((prefix.rstrip("."), f"add({a.name}, {b.name}) + relu"))
        count += 1
    return count


def _steps(branch):
    """fastcnn.fusions steps of a branch spec: ("pool", k, s, p, ceil) or (conv, bn, activation)."""
    from . import fusions

    out = []
    for spec in branch:
        if spec[0] == "pool":
            out.append(fusions.PoolStep(*spec[1:]))
        else:
            out.append(fusions.ConvStep(*spec))
    return out


@fnn.fx_leaf
def fused_branches(x, branches, modules):
    """``torch.cat([m(x) for m in modules], 1)`` with the network fusions (fastcnn.fusions):
    ``branches`` are the modules' steps as ``fuse`` read them; a branch form or input the fusions
    do not cover runs the modules as written."""
    from . import fusions

    if isinstance(x, torch.Tensor) and x.dim() == 4:
        steps = [_steps(b) for b in branches]
        plan = fusions.branch_plan(x, steps)
        if plan is not None:
            return fusions.concat_branches(x, steps, plan)
    return torch.cat([m(x) for m in modules], 1)


@fnn.fx_leaf
def fused_siblings(x, specs):
    """The outputs of sibling 1x1 convs [-> BN] [-> ReLU] on ``x`` (same stride), as one GEMM."""
    from . import fusions

    return fusions.siblings(x, _steps(specs))


# ------------------------------------------------------------------------------------------------
# network fusions: a channel cat of conv branches, sibling 1x1 convs on one input
# ------------------------------------------------------------------------------------------------

def _module_steps(m):
    """The branch spec of an (already rewritten) module, or None: a max-pool, a lone fastcnn conv,
    a graph that is one fused_conv of its input, or a Sequential of those."""
    kinds = _module_types()
    if _has_hooks(m):
        return None
    if isinstance(m, fnn.MaxPool2d) and type(m) is fnn.MaxPool2d:
        if m.return_indices or _pair(m.dilation) != (1, 1):
            return None
        return [("pool", _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size),
                 _pair(m.padding), bool(m.ceil_mode))]
    if type(m) in kinds["conv"]:
        return [(m, None, m.activation)]
    if isinstance(m, nn.Sequential):
        out = []
        for step in _sequential_plan(list(m._modules.items())):
            if isinstance(step, tuple):
                out.append(step[:3])
            else:
                sub = _module_steps(step)
                if sub is None:
                    return None
                out += sub
        return out
    if isinstance(m, fx.GraphModule):
        nodes = [n for n in m.graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
        ph = [n for n in m.graph.nodes if n.op == "placeholder"]
        outs = [n for n in m.graph.nodes if n.op == "output"]
        if len(nodes) != 1 or len(ph) != 1 or nodes[0].target is not fused_conv or outs[0].args[0] is not nodes[0]:
            return None
        x, conv, bn, residual, act = nodes[0].args
        if x is not ph[0] or residual is not None:
            return None
        conv_m = m.get_submodule(conv.target)
        bn_m = m.get_submodule(bn.target) if bn is not None else None
        return [(conv_m, bn_m, act)]
    return None


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _is_1x1_spec(spec):
    c = spec[0]
    return (spec[0] != "pool" and isinstance(c, nn.Conv2d) and tuple(c.kernel_size) == (1, 1)
            and not isinstance(c.padding, str) and tuple(c.padding) == (0, 0) and tuple(c.dilation) == (1, 1)
            and c.groups == 1 and c.padding_mode == "zeros")


def _cat_args(node):
    if node.op != "call_function" or node.target is not torch.cat:
        return None
    args, kwargs = list(node.args), dict(node.kwargs)
    tensors = args[0] if args else kwargs.pop("tensors", None)
    dim = args[1] if len(args) > 1 else kwargs.pop("dim", 0)
    if kwargs or dim not in (1, -3) or not isinstance(tensors, (list, tuple)) or len(tensors) < 2:
        return None
    return list(tensors)


def _rewrite_network(graph: fx.Graph, modules: dict, prefix: str, report: FuseReport) -> int:
    """Channel cats of conv branches on one input -> fused_branches; sibling 1x1 convs with one
    stride on one input -> fused_siblings. Returns how many."""
    count = 0
    names = {id(m): n for n, m in modules.items()}  # module -> its path, for get_attr
    for node in list(graph.nodes):
        parts = _cat_args(node) if node.graph is not None else None
        if not parts or not all(isinstance(p, fx.Node) and p.op == "call_module" and len(p.args) == 1
                                and not p.kwargs and len(p.users) == 1 for p in parts):
            continue
        x = parts[0].args[0]
        if any(p.args[0] is not x for p in parts):
            continue
        specs = [_module_steps(modules.get(p.target)) for p in parts]
        if any(s is None for s in specs):
            continue
        with graph.inserting_before(node):
            attr = {}

            def get(m, path):
                if id(m) not in attr:
                    attr[id(m)] = graph.get_attr(path)
                return attr[id(m)]

            branches = []
            for spec in specs:
                branch = []
                for st in spec:
                    if st[0] == "pool":
                        branch.append(st)
                    else:
                        conv, bn, act = st
                        branch.append((get(conv, names[id(conv)]), get(bn, names[id(bn)]) if bn is not None else None,
                                       act))
                branches.append(tuple(branch))
            mods = tuple(get(modules[p.target], p.target) for p in parts)
            fused = graph.call_function(fused_branches, (x, tuple(branches), mods))
        node.replace_all_uses_with(fused)
        graph.erase_node(node)
        for p in parts:
            graph.erase_node(p)
        report.fused.append((prefix.rstrip(".") or "", "channel cat of " + ", ".join(p.target for p in parts)
                             + " -> branches into one output (1x1 siblings as one GEMM, pool into its 1x1)"))
        count += 1
    # Sibling 1x1 convs: fused_conv(x, conv, bn, None, act) nodes, or modules that are one such conv.
    groups: dict = {}
    for node in graph.nodes:
        spec = None
        if node.op == "call_function" and node.target is fused_conv and node.args[3] is None:
            conv_n, bn_n, act = node.args[1], node.args[2], node.args[4]
            conv = modules.get(conv_n.target) if conv_n.op == "get_attr" else None
            if conv is not None:
                spec = (conv_n.target, bn_n.target if bn_n is not None else None, act, conv)
        elif node.op == "call_module" and len(node.args) == 1 and not node.kwargs:
            st = _module_steps(modules.get(node.target))
            if st is not None and len(st) == 1 and st[0][0] != "pool":
                conv, bn, act = st[0]
                spec = (names[id(conv)], names[id(bn)] if bn is not None else None, act, conv)
        if spec is None or not _is_1x1_spec((spec[3],)) or not isinstance(node.args[0], fx.Node):
            continue
        groups.setdefault((node.args[0], tuple(spec[3].stride)), []).append((node, spec))
    for (x, _), members in groups.items():
        if len(members) < 2:
            continue
        first = min((m[0] for m in members), key=lambda n: list(graph.nodes).index(n))
        with graph.inserting_before(first):
            specs = tuple((graph.get_attr(c), graph.get_attr(b) if b is not None else None, a)
                          for _, (c, b, a, _) in members)
            fused = graph.call_function(fused_siblings, (x, specs))
            outs = [graph.call_function(operator.getitem, (fused, i)) for i in range(len(members))]
        for (node, _), out in zip(members, outs):
            node.replace_all_uses_with(out)
            graph.erase_node(node)
        report.fused.append((prefix.rstrip(".") or "", "sibling 1x1 convs " + ", ".join(s[0] for _, s in members)
                             + " on one input -> one GEMM"))
        count += 1
    for node in list(graph.nodes):  # the replaced calls' module reads
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    return count


# ------------------------------------------------------------------------------------------------
# nn.Sequential: fused in place of tracing (it stays indexable and sliceable)
# ------------------------------------------------------------------------------------------------

def _sequential_plan(children):
    """Steps over ``children``: a module, or (conv, bn, activation, names) for conv [-> bn] [-> relu]."""
    kinds = _module_types()
    plan, i = [], 0
    while i < len(children):
        name, m = children[i]
        if type(m) in kinds["conv"] and getattr(m, "activation", None) is None and not _has_hooks(m):
            j, bn, act, names = i + 1, None, None, [f"conv {name}"]
            if j < len(children) and type(children[j][1]) in kinds["bn"] and not _has_hooks(children[j][1]):
                bn = children[j][1]
                names.append(f"bn {children[j][0]}")
                j += 1
            if j < len(children) and type(children[j][1]) is nn.ReLU and not _has_hooks(children[j][1]):
                act = "relu"
                names.append(f"relu {children[j][0]}")
                j += 1
            if j > i + 1:
                plan.append((m, bn, act, names))
                i = j
                continue
        plan.append(m)
        i += 1
    return plan


class FusedSequential(nn.Sequential):
    """``nn.Sequential`` that runs each conv [-> BatchNorm2d] [-> ReLU] run of children as one
    ``fastcnn.nn.conv_bn_act`` call (the children, their names and state_dict keys are unchanged)."""

    def forward(self, input):
        for step in _sequential_plan(list(self._modules.items())):
            if isinstance(step, tuple):
                conv, bn, act, _ = step
                input = fnn.conv_bn_act(input, conv, bn, None, act)
            else:
                input = step(input)
        return input


def _fuse_sequential(module: nn.Sequential, path: str, report: FuseReport):
    steps = [s for s in _sequential_plan(list(module._modules.items())) if isinstance(s, tuple)]
    if not steps:
        return None
    prefix = f"{path}." if path else ""
    for _, _, _, names in steps:
        report.fused.append((prefix + names[0].split(" ", 1)[1], " + ".join(names)))
    new = FusedSequential(OrderedDict(module._modules))
    new.training = module.training
    for k, v in module.__dict__.items():
        if "hooks" in k:
            new.__dict__[k] = v
    return new


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------

def _trace(module: nn.Module, training: bool) -> fx.Graph:
    was = module.training
    module.training = training
    try:
        return _ChildLeafTracer().trace(module)
    finally:
        module.training = was


def _plain_class_attrs(cls):
    """Public class-level data attributes (``expansion = 4``) a GraphModule would not carry."""
    out = {}
    for klass in reversed(cls.__mro__):
        if klass in (nn.Module, object) or klass.__module__.startswith("torch."):
            continue
        for k, v in vars(klass).items():
            if not k.startswith("_") and isinstance(v, (int, float, str, bool, tuple, type(None))):
                out[k] = v
    return out


def _as_graph_module(module: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    gm = fx.GraphModule(module, graph, class_name=type(module).__name__)
    # The original children, parameters and buffers, in their order (GraphModule copies only what
    # the graph reads): state_dict keys and order are unchanged, and unused modules are kept.
    gm._modules = OrderedDict(module._modules)
    gm._parameters = OrderedDict(module._parameters)
    gm._buffers = OrderedDict(module._buffers)
    gm._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    gm.training = module.training
    for k, v in module.__dict__.items():
        if "hooks" in k:
            gm.__dict__[k] = v
    for k, v in {**_plain_class_attrs(type(module)), **module.__dict__}.items():
        if not k.startswith("_") and k not in gm.__dict__ and not hasattr(type(gm), k):
            gm.__dict__[k] = v
    return gm


def _swap_leaves(model: nn.Module, report: FuseReport) -> nn.Module:
    """nn.Conv2d -> fastcnn.nn.Conv2d, nn.MaxPool2d -> fastcnn.nn.MaxPool2d (exact types, no hooks)."""
    new = {}

    def convert(m):
        if id(m) in new:
            return new[id(m)]
        out = None
        if _has_hooks(m):
            out = None
        elif type(m) is nn.Conv2d:
            out = fnn.Conv2d.from_conv(m)
        elif type(m) is nn.MaxPool2d:
            out = fnn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, m.return_indices, m.ceil_mode)
            out.train(m.training)
        new[id(m)] = out
        return out

    for path, parent in list(model.named_modules(remove_duplicate=False)):
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            rep = convert(child)
            if rep is not None:
                parent._modules[name] = rep
                report.replaced.append((f"{path}.{name}" if path else name,
                                        f"nn.{type(child).__name__} -> fastcnn.nn.{type(rep).__name__}"))
    root = convert(model)
    if root is not None:
        report.replaced.append(("", f"nn.{type(model).__name__} -> fastcnn.nn.{type(root).__name__}"))
        return root
    return model


def _post_order(model: nn.Module):
    """(module, [(parent, name), ...], path) for each distinct module, children before parents."""
    parents, paths, order, seen = {}, {}, [], set()

    def visit(m, path):
        if id(m) in seen:
            return
        seen.add(id(m))
        for name, child in m._modules.items():
            if child is None:
                continue
            parents.setdefault(id(child), []).append((m, name))
            visit(child, f"{path}.{name}" if path else name)
            paths.setdefault(id(child), f"{path}.{name}" if path else name)
        order.append(m)

    visit(model, "")
    for m in order:
        yield m, parents.get(id(m), []), paths.get(id(m), "")


def _rewrite_module(module: nn.Module, path: str, report: FuseReport, network_fusions: bool = True):
    """The rewritten GraphModule for ``module``, or None (nothing to fuse, or not traceable)."""
    if not module._modules or isinstance(module, (nn.ModuleList, nn.ModuleDict)):
        return None
    if type(module).forward is nn.Module.forward:
        return None
    if type(module) is nn.Sequential:
        return _fuse_sequential(module, path, report)
    try:
        graph = _trace(module, module.training)
        other = _trace(module, not module.training)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the module as written
        report.skipped.append((path, f"not traceable with torch.fx ({type(exc).__name__}: {str(exc)[:200]})"))
        return None
    if graph.python_code("self").src != other.python_code("self").src:
        report.skipped.append((path, "forward depends on self.training (tracing would freeze one mode)"))
        return None
    modules = dict(module.named_modules())
    n = _rewrite(graph, modules, f"{path}." if path else "", report)
    if network_fusions:
        n += _rewrite_network(graph, modules, f"{path}." if path else "", report)
    if n == 0:
        return None
    for node in graph.nodes:
        # forward's type annotations: torch.Tensor becomes a string global that GraphModule's
        # pickling cannot import (torch 2.13)
        node.type = None
    graph.lint()
    return _as_graph_module(module, graph)


def fuse(model: nn.Module, *, inplace: bool = False, return_report: bool = False,
         network_fusions: bool = True) -> nn.Module | tuple[nn.Module, FuseReport]:
    """``model`` rewritten with fastcnn layers (see the module docstring); with
    ``return_report=True``, ``(fused_model, FuseReport)``. ``network_fusions=False`` leaves out
    step 3 (channel cats of conv branches, sibling 1x1 convs), so both can be measured."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"fuse: model must be an nn.Module, got {type(model).__name__}")
    report = FuseReport()
    if not inplace:
        model = copy.deepcopy(model)
    model = _swap_leaves(model, report)
    root = model
    for module, parents, path in list(_post_order(model)):
        gm = _rewrite_module(module, path, report, network_fusions)
        if gm is None:
            continue
        for parent, name in parents:
            parent._modules[name] = gm
        if module is model:
            root = gm
    return (root, report) if return_report else root

