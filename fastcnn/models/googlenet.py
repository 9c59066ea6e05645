"""GoogLeNet (Inception v1) as torchvision builds it, on fastcnn ops.

Module and parameter names are torchvision's (``conv1.conv``, ``conv1.bn``,
``inception3a.branch2.1.conv``, ``aux1.conv.conv``, ``aux1.fc1``, ``fc`` ...), so a torchvision
checkpoint loads with ``strict=True``. As torchvision, the "5x5" branch (``branch3``) uses a 3x3
conv (pytorch/vision#906); ``paper_5x5=True`` builds the paper's 5x5 instead (not loadable from a
torchvision checkpoint). Every BasicConv2d (conv -> BN(eps=0.001) -> ReLU) runs through
``fastcnn.nn.conv_bn_act`` (eval: one fastcnn op with the BN folded in; train: the conv op, then
PyTorch's batch-statistics BN and ReLU); 1x1 convs run as ``conv1x1``; max-pools are fastcnn's.

Inception blocks run with the network fusions (``fastcnn.fusions``; ``network_fusions=False``
switches them off, per model or per block via ``block.network_fusions``): in eval mode every branch
writes its channel slice of the block output (no ``torch.cat``), the three 1x1 convs on the block
input run as one GEMM, and the pool branch's 3x3/1 max-pool is taken inside its 1x1 projection, so
a block is 4 conv ops; in train mode the three 1x1 convs still run as one GEMM.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import fusions
from ..nn import Conv1x1, Conv2d, MaxPool2d, conv_bn_act

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "BasicConv2d", "Inception", "InceptionAux", "googlenet"]

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm2d(eps=0.001) -> ReLU, fused."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 1,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        if kernel_size in (1, (1, 1)) and padding in (0, (0, 0)):
            self.conv = Conv1x1(in_channels, out_channels, kernel_size=1, stride=stride, bias=False, activation=None)
        else:
            self.conv = Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_bn_act(x, self.conv, self.bn, activation="relu")


class Inception(nn.Module):
    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, paper_5x5: bool = False):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        k5 = 5 if paper_5x5 else 3  # torchvision: 3 (pytorch/vision#906)
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=k5, padding=k5 // 2),
        )
        self.branch4 = nn.Sequential(
            MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )

    network_fusions = True  # a plain attribute: not in the state_dict

    def _steps(self):
        def conv(b):
            return fusions.ConvStep(b.conv, b.bn, "relu")

        pool = fusions.PoolStep.from_module(self.branch4[0])
        return [[conv(self.branch1)], [conv(self.branch2[0]), conv(self.branch2[1])],
                [conv(self.branch3[0]), conv(self.branch3[1])], [pool, conv(self.branch4[1])]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.network_fusions and x.dim() == 4:
            steps = self._steps()
            plan = fusions.branch_plan(x, steps)
            if plan is not None:
                return fusions.concat_branches(x, steps, plan)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7):
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))
        x = self.conv(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x), inplace=True)
        x = self.dropout(x)
        return self.fc2(x)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, transform_input: bool = False,
                 init_weights: bool = True, dropout: float = 0.2, dropout_aux: float = 0.7,
                 paper_5x5: bool = False, network_fusions: bool = True):
        super().__init__()
        self.aux_logits = aux_logits
        self.transform_input = transform_input

        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = MaxPool2d(3, stride=2, ceil_mode=True)

        inc = lambda *a: Inception(*a, paper_5x5=paper_5x5)  # noqa: E731
        self.inception3a = inc(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = inc(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = inc(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = inc(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = inc(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = inc(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = inc(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = inc(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = inc(832, 384, 192, 384, 48, 128, 128)

        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout=dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, dropout=dropout_aux)
        else:
            self.aux1 = None
            self.aux2 = None

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)

        self.set_network_fusions(network_fusions)
        if init_weights:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    def set_network_fusions(self, on: bool) -> "GoogLeNet":
        """Switch the inception blocks' network fusions on or off (both compute the same)."""
        for m in self.modules():
            if isinstance(m, Inception):
                m.network_fusions = bool(on)
        return self

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform_input:
            x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
            x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
            x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
            x = torch.cat((x_ch0, x_ch1, x_ch2), 1)
        return x

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x = self.conv1(x)
        x = self.maxpool1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        x = self.maxpool2(x)

        x = self.inception3a(x)
        x = self.inception3b(x)
        x = self.maxpool3(x)
        x = self.inception4a(x)
        aux1: Optional[torch.Tensor] = None
        if self.aux1 is not None and self.training:
            aux1 = self.aux1(x)

        x = self.inception4b(x)
        x = self.inception4c(x)
        x = self.inception4d(x)
        aux2: Optional[torch.Tensor] = None
        if self.aux2 is not None and self.training:
            aux2 = self.aux2(x)

        x = self.inception4e(x)
        x = self.maxpool4(x)
        x = self.inception5a(x)
        x = self.inception5b(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        x = self.fc(x)
        return x, aux2, aux1

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        """Logits; in train mode with ``aux_logits``, ``GoogLeNetOutputs(logits, aux_logits2,
        aux_logits1)`` as torchvision."""
        x = self._transform_input(x)
        x, aux2, aux1 = self._forward(x)
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


def googlenet(num_classes: int = 1000, aux_logits: bool = True, transform_input: bool = False,
              **kwargs) -> GoogLeNet:
    """GoogLeNet with torchvision's layout and parameter names (``paper_5x5=True``: the paper's
    5x5 convs in the "5x5" branch; ``network_fusions=False``: the inception blocks as four separate
    branches and a torch.cat)."""
    return GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, transform_input=transform_input, **kwargs)
