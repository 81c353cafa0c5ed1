"""The model every vendor backend's tests quantize and lower (``tests/quantizers/vendors/``).

``VendorCNN``: the ops every vendor quantizer covers (conv, batch norm, relu, a residual add,
pooling, linear), small enough to run two pipelines and a lowering in well under a second::

    x (1,3,8,8) ─ conv3x3(8) ─ bn ─ relu ─┬─ conv3x3(8) ─ add ─ relu ─ max_pool 2x2
                                          └──────────────┘
      ─ adaptive_avg_pool(1) ─ flatten ─ linear(10) ─ out (1,10)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["VendorCNN"]


class VendorCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn(self.conv1(x)))
        y = torch.relu(self.conv2(y) + y)
        y = self.avg(self.pool(y))
        return self.fc(torch.flatten(y, 1))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 8, 8),)
