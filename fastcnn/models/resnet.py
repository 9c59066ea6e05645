"""ResNet-18/34/50/101/152 as torchvision builds them (v1.5: the stride sits on the 3x3), on
fastcnn ops.

Module and parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.bn1``, ``layer2.0.downsample.0``, ``layer2.0.downsample.1``, ``fc``), so a torchvision
checkpoint loads with ``strict=True``. Every conv -> BN (-> + identity) -> ReLU runs through
``fastcnn.nn.conv_bn_act``: in eval mode one fastcnn op with the BN folded into the conv and the
residual add and ReLU in its epilogue; in train mode the conv op, PyTorch's batch-statistics BN,
then one ``add_relu``. The 1x1 convs of the bottleneck and of the downsampling shortcut run as
``conv1x1`` (a GEMM). Where a bottleneck's first 1x1 and its shortcut's 1x1 read the input with
the same stride (ResNet-50's layer1.0) they run as one GEMM (``fastcnn.fusions.siblings``;
``network_fusions=False`` or ``block.network_fusions = False`` switches it off).
"""

from __future__ import annotations

from typing import Sequence, Type, Union

import torch
import torch.nn as nn

from .. import fusions
from ..nn import Conv1x1, Conv2d, MaxPool2d, conv_bn_act

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> Conv2d:
    return Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups, bias=False,
                  dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> Conv1x1:
    return Conv1x1(in_planes, out_planes, kernel_size=1, stride=stride, bias=False, activation=None)


class Downsample(nn.Sequential):
    """The shortcut's 1x1 conv + BN (``downsample.0``, ``downsample.1``) as one fused op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_bn_act(x, self[0], self[1])


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise ValueError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = conv_bn_act(x, self.conv1, self.bn1, activation="relu")
        identity = x if self.downsample is None else self.downsample(x)
        return conv_bn_act(out, self.conv2, self.bn2, residual=identity, activation="relu")


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample
        self.stride = stride

    network_fusions = True  # a plain attribute: not in the state_dict

    def _siblings(self) -> bool:
        # conv1 and the shortcut's 1x1 read x with the same stride only where the stride sits on
        # conv2 and the shortcut has none (v1.5: layer1.0); the strided blocks' shortcut reads
        # every other pixel, a different GEMM operand.
        d = self.downsample
        return (self.network_fusions and isinstance(d, Downsample) and tuple(d[0].stride) == (1, 1)
                and tuple(self.conv1.stride) == (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._siblings():  # conv1 and the shortcut's conv as one GEMM over x
            out, identity = fusions.siblings(x, [fusions.ConvStep(self.conv1, self.bn1, "relu"),
                                                 fusions.ConvStep(self.downsample[0], self.downsample[1])])
        else:
            out = conv_bn_act(x, self.conv1, self.bn1, activation="relu")
            identity = x if self.downsample is None else self.downsample(x)
        out = conv_bn_act(out, self.conv2, self.bn2, activation="relu")
        return conv_bn_act(out, self.conv3, self.bn3, residual=identity, activation="relu")


class ResNet(nn.Module):
    def __init__(self, block: Type[Union[BasicBlock, Bottleneck]], layers: Sequence[int], num_classes: int = 1000,
                 zero_init_residual: bool = False, groups: int = 1, width_per_group: int = 64,
                 replace_stride_with_dilation: Sequence[bool] | None = None, network_fusions: bool = True):
        super().__init__()
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation should be None or a 3-element tuple, got "
                             f"{replace_stride_with_dilation}")
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.set_network_fusions(network_fusions)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def set_network_fusions(self, on: bool) -> "ResNet":
        """Switch the sibling-1x1 fusion (layer1.0 of the bottleneck ResNets) on or off."""
        for m in self.modules():
            if isinstance(m, Bottleneck):
                m.network_fusions = bool(on)
        return self

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = Downsample(conv1x1(self.inplanes, planes * block.expansion, stride),
                                    nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                                dilation=self.dilation))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = conv_bn_act(x, self.conv1, self.bn1, activation="relu")
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def _resnet(block: type[BasicBlock | Bottleneck], layers: Sequence[int], num_classes: int, **kwargs) -> ResNet:
    return ResNet(block, layers, num_classes=num_classes, **kwargs)


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ResNet:
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, **kwargs)


def resnet101(num_classes: int = 1000, **kwargs) -> ResNet:
    return _resnet(Bottleneck, [3, 4, 23, 3], num_classes, **kwargs)


def resnet152(num_classes: int = 1000, **kwargs) -> ResNet:
    return _resnet(Bottleneck, [3, 8, 36, 3], num_classes, **kwargs)
