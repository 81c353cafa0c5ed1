"""Conv / linear + batch-norm models the QAT tests train: ``ConvBn`` over every conv kind of
``CONVS``, ``LinearBn`` (linear + BatchNorm1d) and ``SharedWeightConvs`` (two convs, one weight)."""

from __future__ import annotations

import torch
from torch import nn

CONVS = {
    "conv1d": (nn.Conv1d, nn.BatchNorm1d, (2, 3, 10)),
    "conv2d": (nn.Conv2d, nn.BatchNorm2d, (2, 3, 8, 8)),
    "conv_transpose1d": (nn.ConvTranspose1d, nn.BatchNorm1d, (2, 3, 10)),
    "conv_transpose2d": (nn.ConvTranspose2d, nn.BatchNorm2d, (2, 3, 8, 8)),
}


class ConvBn(nn.Module):
    """conv -> bn (-> relu / hardtanh) with non-default bn hyper-parameters."""

    def __init__(self, kind: str, bias: bool = True, act: str | None = "relu") -> None:
        super().__init__()
        conv_cls, bn_cls, self.shape = CONVS[kind]
        self.conv = conv_cls(3, 4, 3, bias=bias)
        self.bn = bn_cls(4, eps=1e-3, momentum=0.3)
        self.act = {"relu": nn.ReLU(), "hardtanh": nn.Hardtanh(), None: nn.Identity()}[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(*self.shape),)


class LinearBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.linear(x)))

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(5, 4),)


class SharedWeightConvs(nn.Module):
    """Two convs reading one weight, each followed by its own batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.bn1 = nn.BatchNorm2d(4)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(nn.functional.conv2d(x, self.weight)))
        b = torch.relu(self.bn2(nn.functional.conv2d(x * 2, self.weight)))
        return a + b

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, 3, 8, 8),)
