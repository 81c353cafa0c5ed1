"""Tiny models that several edge-case files (``test_edge_*.py``) quantize.

Models used by one file only are defined in that file; these two are shared: the conv block
by the train-mode, dtype/layout and degenerate-calibration files, the reused linear by the
signature and pipeline-misuse files.
"""

from __future__ import annotations

from torch import Tensor, nn


class ConvBatchNormDropout(nn.Module):
    """x ─ conv ─ bn ─ relu ─ dropout"""

    def __init__(self, out_channels: int = 4) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, out_channels, 3), nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.bn(self.conv(x)).relu())


class SameModuleTwice(nn.Module):
    """x ─ a ─ relu ─ a (the same Linear called twice)"""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.a(self.a(x).relu())
