"""Models whose ops test explain()'s XNNPACK delegation predictions, shared by the fast
prediction tests and the tests that lower them with ExecuTorch
(``tests/quantizers/xnnpack/test_delegation_*.py``). Each exercises one kind of fact the
partitioner decides on: dynamic quantization, dtypes, per-op constraints, weight forms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DynamicLinears", "DynamicConvs", "IndexArithmetic", "ConstraintTails", "WeightForms"]


class DynamicLinears(nn.Module):
    """x ─ fc1 ─ relu ─ fc2 ─ (+1.0) ─ out

    Dynamically quantized, both linears run int8 in XNNPACK; relu and the add stay float."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.fc1(x))) + 1.0

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 8),)


class DynamicConvs(nn.Module):
    """img ─┬─ conv (3x3) ─ depthwise (3x3) ─ out
            └─ conv_transpose (3x3) ─ out

    Dynamic quantization covers conv and conv_transpose; the depthwise conv reads the float
    output of the first and stays a float op."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.depthwise = nn.Conv2d(4, 4, 3, groups=4)
        self.transposed = nn.ConvTranspose2d(3, 4, 3)

    def forward(self, img: Tensor) -> tuple[Tensor, Tensor]:
        return self.depthwise(self.conv(img)), self.transposed(img)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 8, 8),)


class IndexArithmetic(nn.Module):
    """idx ─ (+1) ─ (*2) ─ (//2) ─ embedding ─ fc ─ (+x) ─ out      (int64 until embedding)

    The integer add and mul are compute ops XNNPACK cannot take (float dtypes only); the
    float add after the linear can."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 8)

    def forward(self, idx: Tensor, x: Tensor) -> Tensor:
        shifted = (idx + 1) * 2
        return self.fc(self.embedding(shifted // 2)) + x

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randint(0, 9, (2, 3)), torch.randn(2, 3, 8))


class ConstraintTails(nn.Module):
    """x ─ conv (1x1) ─ y, then one branch per partitioner constraint:

    add(alpha=2), cat of one tensor, max_pool2d(stride > kernel), mean without keepdim, a
    keepdim mean, max_pool2d(ceil_mode) on static shapes, adaptive_avg_pool2d to 2x2,
    softmax over dim 1, avg_pool2d(ceil_mode), elu."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.other = nn.Conv2d(3, 4, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        y = self.conv(x)
        return (
            torch.add(y, self.other(x), alpha=2),
            torch.cat([y], 1),
            F.max_pool2d(y, 2, stride=3),
            y.mean((2, 3)),
            y.mean((2, 3), keepdim=True),
            F.max_pool2d(y, 3, stride=2, ceil_mode=True),
            F.adaptive_avg_pool2d(y, 2),
            F.softmax(y, 1),
            F.avg_pool2d(y, 3, stride=2, ceil_mode=True),
            F.elu(y),
        )

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 4, 4),)


class WeightForms(nn.Module):
    """What a GEMM's weight must be: a linear with a constant weight, a linear whose weight is
    the input ``y``, ``x @ w`` with 3-D ``x`` (becomes ``mm`` on the constant ``w``), ``x @
    w.t()`` (``mm`` on a transposed, no longer constant, weight) and a batched ``bmm``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.w = nn.Parameter(torch.randn(8, 8))

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return (
            self.fc(x),
            F.linear(x, y),
            x.unsqueeze(0) @ self.w,
            x @ self.w.t(),
            torch.bmm(x.unsqueeze(0), y.unsqueeze(0)),
        )

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(4, 8), torch.randn(8, 8))
