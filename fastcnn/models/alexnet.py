"""AlexNet as torchvision builds it ("One weird trick", 64-192-384-256-256 filters), on fastcnn ops.

Parameter names and shapes are torchvision's (``features.{0,3,6,8,10}``, ``classifier.{1,4,6}``),
so a torchvision checkpoint loads with ``strict=True``. Each conv runs with its ReLU fused (the
ReLU slots of ``features`` hold ``nn.Identity`` to keep torchvision's indices); the max-pools are
fastcnn's. The classifier (dropout, linear, ReLU) is ordinary torch.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..nn import Conv2dReLU, MaxPool2d

__all__ = ["AlexNet", "alexnet"]


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        fused = nn.Identity  # the ReLU that follows each conv, fused into it
        self.features = nn.Sequential(
            Conv2dReLU(3, 64, kernel_size=11, stride=4, padding=2), fused(),
            MaxPool2d(kernel_size=3, stride=2),
            Conv2dReLU(64, 192, kernel_size=5, padding=2), fused(),
            MaxPool2d(kernel_size=3, stride=2),
            Conv2dReLU(192, 384, kernel_size=3, padding=1), fused(),
            Conv2dReLU(384, 256, kernel_size=3, padding=1), fused(),
            Conv2dReLU(256, 256, kernel_size=3, padding=1), fused(),
            MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    # The smallest input whose feature maps survive the three 3x3/2 max-pools (62x62 leaves a 2x2 map
    # for the last one).
    MIN_SIZE = 63

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.fx.Proxy) and x.dim() in (3, 4) and min(x.shape[-2:]) < self.MIN_SIZE:
            raise ValueError(f"alexnet needs inputs of at least {self.MIN_SIZE}x{self.MIN_SIZE} (the last max-pool's "
                             f"window must fit), got shape {list(x.shape)}")
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def alexnet(num_classes: int = 1000, **kwargs) -> AlexNet:
    """AlexNet with torchvision's layout and parameter names."""
    return AlexNet(num_classes=num_classes, **kwargs)
