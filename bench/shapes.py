"""Layer shapes of LeNet-5, AlexNet, GoogLeNet (Inception v1) and ResNet-50, as torchvision builds them.

One ``Layer`` per distinct shape, with how often it occurs in the network (``count``). Shapes are
per image (no batch); benchmarks and tests pick the batch. ``op`` is the fastcnn op that runs it:
``conv2d`` (k > 1, or a 1x1 the network follows with nothing to fuse), ``conv1x1``, ``max_pool2d``,
``add_relu``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastcnn.kernels._common import conv_out_size, pool_out_size


@dataclass(frozen=True)
class Layer:
    net: str
    name: str
    op: str
    C: int
    H: int
    W: int
    K: int = 0  # output channels (convs)
    R: int = 1  # kernel height (convs and pools)
    S: int = 1
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    ceil_mode: bool = False
    relu: bool = True
    residual: bool = False
    bias: bool = True
    count: int = 1

    @property
    def P(self) -> int:
        if self.op == "add_relu":
            return self.H
        return _out(self.H, self.R, self.stride, self.padding, self.dilation, self.ceil_mode)

    @property
    def Q(self) -> int:
        if self.op == "add_relu":
            return self.W
        return _out(self.W, self.S, self.stride, self.padding, self.dilation, self.ceil_mode)

    def flops(self, batch: int) -> int:
        """Multiply-adds x 2 of a conv; comparisons of a pool; adds of add_relu (per element 1)."""
        if self.op in ("conv2d", "conv1x1"):
            return 2 * batch * self.K * self.P * self.Q * (self.C // self.groups) * self.R * self.S
        if self.op == "max_pool2d":
            return batch * self.C * self.P * self.Q * self.R * self.S
        return batch * self.C * self.H * self.W

    def bytes(self, batch: int, elem: int) -> int:
        """Fewest bytes a forward pass moves: each input read once, each output written once."""
        out = batch * (self.K or self.C) * self.P * self.Q
        if self.op in ("conv2d", "conv1x1"):
            inp = batch * self.C * self.H * self.W
            w = self.K * (self.C // self.groups) * self.R * self.S + (self.K if self.bias else 0)
            return elem * (inp + w + out * (2 if self.residual else 1))
        if self.op == "max_pool2d":
            return elem * (batch * self.C * self.H * self.W + out)
        return elem * 3 * out  # add_relu: two inputs, one output

    @property
    def shape(self) -> str:
        if self.op in ("conv2d", "conv1x1"):
            s = f"{self.C}x{self.H}x{self.W}->{self.K} k{self.R}x{self.S} s{self.stride} p{self.padding}"
            if self.dilation != 1:
                s += f" d{self.dilation}"
            if self.groups != 1:
                s += f" g{self.groups}"
            return s + (" +res" if self.residual else "")
        if self.op == "max_pool2d":
            return f"{self.C}x{self.H}x{self.W} k{self.R} s{self.stride} p{self.padding}" + (" ceil" if self.ceil_mode else "")
        return f"{self.C}x{self.H}x{self.W}"


def _out(size, k, s, p, d, ceil_mode):
    return pool_out_size(size, k, s, p, d, ceil_mode) if ceil_mode else conv_out_size(size, k, s, p, d)


def _conv(net, name, C, H, K, k, s=1, p=None, **kw):
    p = (k // 2) if p is None else p
    op = "conv1x1" if k == 1 and p == 0 else "conv2d"
    return Layer(net, name, op, C, H, H, K, k, k, s, p, **kw)


def _pool(net, name, C, H, k, s, p=0, ceil=False, count=1):
    return Layer(net, name, "max_pool2d", C, H, H, 0, k, k, s, p, ceil_mode=ceil, relu=False, bias=False,
                 count=count)


def lenet5() -> list[Layer]:
    n = "lenet5"
    return [
        _conv(n, "conv1", 1, 28, 6, 5, p=2),
        _pool(n, "pool1", 6, 28, 2, 2),
        _conv(n, "conv2", 6, 14, 16, 5, p=0),
        _pool(n, "pool2", 16, 10, 2, 2),
    ]


def alexnet() -> list[Layer]:
    n = "alexnet"
    return [
        _conv(n, "conv1", 3, 224, 64, 11, s=4, p=2),
        _pool(n, "pool1", 64, 55, 3, 2),
        _conv(n, "conv2", 64, 27, 192, 5, p=2),
        _pool(n, "pool2", 192, 27, 3, 2),
        _conv(n, "conv3", 192, 13, 384, 3),
        _conv(n, "conv4", 384, 13, 256, 3),
        _conv(n, "conv5", 256, 13, 256, 3),
        _pool(n, "pool5", 256, 13, 3, 2),
    ]


# torchvision's GoogLeNet: (in, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (a 3x3 in torchvision), pool proj)
INCEPTION = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}
_INCEPTION_SIZE = {"3": 28, "4": 14, "5": 7}


def googlenet() -> list[Layer]:
    n = "googlenet"
    layers = [
        _conv(n, "conv1", 3, 224, 64, 7, s=2, p=3, bias=False),
        _pool(n, "maxpool1", 64, 112, 3, 2, ceil=True),
        _conv(n, "conv2", 64, 56, 64, 1, bias=False),
        _conv(n, "conv3", 64, 56, 192, 3, bias=False),
        _pool(n, "maxpool2", 192, 56, 3, 2, ceil=True),
    ]
    for name, (cin, c1, r3, c3, r5, c5, pp) in INCEPTION.items():
        h = _INCEPTION_SIZE[name[9]]
        layers += [
            _conv(n, f"{name}.branch1", cin, h, c1, 1, bias=False),
            _conv(n, f"{name}.branch2.0", cin, h, r3, 1, bias=False),
            _conv(n, f"{name}.branch2.1", r3, h, c3, 3, bias=False),
            _conv(n, f"{name}.branch3.0", cin, h, r5, 1, bias=False),
            _conv(n, f"{name}.branch3.1", r5, h, c5, 3, bias=False),
            _pool(n, f"{name}.branch4.0", cin, h, 3, 1, p=1, ceil=True),
            _conv(n, f"{name}.branch4.1", cin, h, pp, 1, bias=False),
        ]
        if name == "inception3b":
            layers.append(_pool(n, "maxpool3", 480, 28, 3, 2, ceil=True))
        if name == "inception4e":
            layers.append(_pool(n, "maxpool4", 832, 14, 2, 2, ceil=True))
    return layers


def resnet50() -> list[Layer]:
    n = "resnet50"
    layers = [
        _conv(n, "conv1", 3, 224, 64, 7, s=2, p=3, bias=False),
        _pool(n, "maxpool", 64, 112, 3, 2, p=1),
    ]
    cin, h = 64, 56
    for stage, (width, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
        cout = width * 4
        ho = h // stride
        # first block (with the downsample shortcut; v1.5: the stride sits on the 3x3)
        layers += [
            _conv(n, f"layer{stage}.0.conv1", cin, h, width, 1, bias=False),
            _conv(n, f"layer{stage}.0.conv2", width, h, width, 3, s=stride, bias=False),
            _conv(n, f"layer{stage}.0.downsample", cin, h, cout, 1, s=stride, bias=False, relu=False),
            _conv(n, f"layer{stage}.0.conv3", width, ho, cout, 1, bias=False, residual=True),
        ]
        if blocks > 1:
            layers += [
                _conv(n, f"layer{stage}.x.conv1", cout, ho, width, 1, bias=False, count=blocks - 1),
                _conv(n, f"layer{stage}.x.conv2", width, ho, width, 3, bias=False, count=blocks - 1),
                _conv(n, f"layer{stage}.x.conv3", width, ho, cout, 1, bias=False, residual=True, count=blocks - 1),
            ]
        layers.append(Layer(n, f"layer{stage}.add", "add_relu", cout, ho, ho, relu=True, bias=False, count=blocks))
        cin, h = cout, ho
    return layers


NETWORKS = {"lenet5": lenet5, "alexnet": alexnet, "googlenet": googlenet, "resnet50": resnet50}


def layers(nets=None, ops=None) -> list[Layer]:
    out = []
    for name, fn in NETWORKS.items():
        if nets and name not in nets:
            continue
        out += [l for l in fn() if not ops or l.op in ops]
    return out
