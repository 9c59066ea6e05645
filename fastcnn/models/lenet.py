"""LeNet-5 (LeCun et al. 1998) on 1x28x28 input (MNIST) or the paper's 1x32x32, with the switches of
the ablation study.

conv1 6@5x5 (28x28 input: padding 2, 28x28 stays 28x28; ``input_size=32``: no padding, 32x32 ->
28x28) -> act -> pool 2x2 -> conv2 16@5x5 (10x10) -> act -> pool 2x2 -> 16*5*5 -> fc1 120 -> act ->
fc2 84 -> act -> fc3 ``num_classes``.

* ``activation``: ``"relu"`` (fused into the conv: one fastcnn op), ``"sigmoid"`` or ``"tanh"``
  (after a fastcnn conv, as torch ops);
* ``pooling``: ``"max"`` (fastcnn max_pool2d), ``"avg"`` (the classic subsampling, ``avg_pool2d``)
  or ``None`` (no pooling: conv2 sees 28x28, fc1 takes 16*24*24 inputs);
* ``use_conv=False``: the multilayer-perceptron baseline, 784 -> fc1 120 -> fc2 84 -> fc3 (no
  conv1/conv2; ``pooling`` does not apply).

Parameter names: ``conv1``, ``conv2``, ``fc1``, ``fc2``, ``fc3``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..nn import Conv2d, MaxPool2d

__all__ = ["LeNet5", "lenet5"]

ACTIVATIONS = ("relu", "sigmoid", "tanh")
POOLINGS = ("max", "avg", None)


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, activation: str = "relu", pooling: str | None = "max",
                 use_conv: bool = True, in_channels: int = 1, input_size: int = 28):
        super().__init__()
        if input_size not in (28, 32):
            raise ValueError(f"lenet5: input_size must be 28 (MNIST, conv1 padded) or 32 (the paper's), got "
                             f"{input_size!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"lenet5: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"lenet5: pooling must be one of {POOLINGS}, got {pooling!r}")
        self.activation = activation
        self.pooling = pooling
        self.use_conv = use_conv
        self.input_size = input_size
        self.in_channels = in_channels
        # no parameters: the state_dict holds conv1, conv2, fc1, fc2, fc3 only
        self.pool = {"max": MaxPool2d(2, 2), "avg": nn.AvgPool2d(2, 2), None: nn.Identity()}[pooling]
        if use_conv:
            fused = "relu" if activation == "relu" else None
            self.conv1 = Conv2d(in_channels, 6, 5, padding=2 if input_size == 28 else 0, activation=fused)
            self.conv2 = Conv2d(6, 16, 5, activation=fused)
            features = 16 * 5 * 5 if pooling else 16 * 24 * 24
        else:
            features = in_channels * input_size * input_size
        self.fc1 = nn.Linear(features, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The (C, H, W) of one input image."""
        return (self.in_channels, self.input_size, self.input_size)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return torch.relu(x)
        return torch.sigmoid(x) if self.activation == "sigmoid" else torch.tanh(x)

    def _conv_block(self, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = conv(x)  # the ReLU is fused into the conv
        if self.activation != "relu":
            x = self._act(x)
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.fx.Proxy) and tuple(x.shape[-3:]) != self.image_shape:
            other = 32 if self.input_size == 28 else 28
            hint = f"; lenet5(input_size={other}) takes {other}x{other}" if tuple(x.shape[-2:]) == (other, other) else ""
            raise ValueError(f"lenet5 was built for {'x'.join(map(str, self.image_shape))} inputs "
                             f"(input_size={self.input_size}), got shape {list(x.shape)}{hint}")
        if self.use_conv:
            x = self._conv_block(self.conv1, x)
            x = self._conv_block(self.conv2, x)
        x = torch.flatten(x, 1)
        x = self._act(self.fc1(x))
        x = self._act(self.fc2(x))
        return self.fc3(x)


def lenet5(num_classes: int = 10, activation: str = "relu", pooling: str | None = "max", use_conv: bool = True,
           **kwargs) -> LeNet5:
    """LeNet-5 for 1x28x28 input, or the paper's 1x32x32 with ``input_size=32`` (see the module
    docstring for the ablation switches)."""
    return LeNet5(num_classes=num_classes, activation=activation, pooling=pooling, use_conv=use_conv, **kwargs)
