"""The models of the command-line tests (``tests/cli_models.py`` hands them to the CLI).

``TinyNet``::

    x (1, 3, 8, 8) -> conv 3x3 (4 ch) -> relu -> flatten -> linear (5)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TinyNet", "ValueBranch"]


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.linear = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(torch.flatten(torch.relu(self.conv(x)), 1))


class ValueBranch(nn.Module):
    """Branches on a tensor's value in Python: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:
            return self.linear(x)
        return -self.linear(x)
