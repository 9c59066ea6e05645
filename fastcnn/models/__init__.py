"""Networks built from fastcnn ops, with torchvision's module and parameter names.

``lenet5``, ``alexnet``, ``googlenet``, ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``,
``resnet152``; each takes ``num_classes=``. A torchvision checkpoint loads into the same-named
model with ``strict=True``.
"""

from .alexnet import AlexNet, alexnet
from .googlenet import GoogLeNet, GoogLeNetOutputs, googlenet
from .lenet import LeNet5, lenet5
from .resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152

__all__ = ["lenet5", "alexnet", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
           "LeNet5", "AlexNet", "GoogLeNet", "GoogLeNetOutputs", "ResNet", "MODELS"]

MODELS = {"lenet5": lenet5, "alexnet": alexnet, "googlenet": googlenet, "resnet18": resnet18, "resnet34": resnet34,
          "resnet50": resnet50, "resnet101": resnet101, "resnet152": resnet152}
