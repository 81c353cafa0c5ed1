"""Seed helper models: tiny, exact architectures that unit tests assert node counts on.

Changing a layer here changes the q/dq counts that tests in ``tests/core`` expect, so treat
every architecture as part of those tests' contract. Sizes are small so export stays fast.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch._higher_order_ops.map import map as hop_map

__all__ = [
    "ControlFlow",
    "Conv2dThenConv1d",
    "Conv2dWithCat",
    "Conv2dWithSplit",
    "Conv2dWithTwoCat",
    "ConvBnBranchesAdd",
    "ConvLinearWPermute",
    "ConvMaxPool2d",
    "ConvTWithBNRelu",
    "ConvWithBNRelu",
    "EmbeddingConvLinearModule",
    "EmbeddingModule",
    "GroupwiseConv2d",
    "SigmoidAddModel",
    "SigmoidModel",
    "SingleLinear",
    "ThreeAdd",
    "TwoLinearModule",
]

CONV_BY_DIM: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_T_BY_DIM: dict[int, type[nn.Module]] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}
BN_BY_DIM: dict[int, type[nn.Module]] = {
    1: nn.BatchNorm1d,
    2: nn.BatchNorm2d,
    3: nn.BatchNorm3d,
}


def _spatial_input(dim: int, channels: int = 3, size: int = 5) -> Tensor:
    """A (1, channels, size, ...) input with ``dim`` spatial dimensions."""
    return torch.randn(1, channels, *([size] * dim))


class ConvWithBNRelu(nn.Module):
    """The canonical conv -> bn -> relu fusion pattern, with every piece optional.

    ::

        x ─ Conv{dim}d(3→3, k3) ─ BatchNorm{dim}d(3) | Identity ─ ReLU | Identity ─ out
    """

    def __init__(
        self, relu: bool, dim: int = 2, bn: bool = True, bias: bool = True, padding: int = 0
    ) -> None:
        super().__init__()
        self.dim = dim
        self.conv = CONV_BY_DIM[dim](3, 3, 3, bias=bias, padding=padding)
        self.bn = BN_BY_DIM[dim](3) if bn else nn.Identity()
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (_spatial_input(self.dim),)


class ConvTWithBNRelu(nn.Module):
    """Transposed-conv version of :class:`ConvWithBNRelu` (its weight is (in, out, k...)).

    ::

        x ─ ConvTranspose{dim}d(3→3, k3) ─ BatchNorm{dim}d(3) | Identity ─ ReLU | Identity ─ out
    """

    def __init__(self, dim: int = 2, bn: bool = True, relu: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.convt = CONV_T_BY_DIM[dim](3, 3, 3)
        self.bn = BN_BY_DIM[dim](3) if bn else nn.Identity()
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.convt(x)))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (_spatial_input(self.dim),)


class ConvBnBranchesAdd(nn.Module):
    """Two conv -> bn branches of one input meeting at an add, the first conv without bias.

    Both batch norms' first reader is the add, which is where torchao's QAT rewrite re-inserts
    each pair, in its own order (convs with bias first), not in the order export traced them.

    ::

        x ─┬─ Conv2d(3→3, k3, no bias) ─ BatchNorm2d(3) ─┐
           └─ Conv2d(3→3, k3)          ─ BatchNorm2d(3) ─ add ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3)
        self.bn2 = nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn1(self.conv1(x)) + self.bn2(self.conv2(x))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (_spatial_input(2),)


class ConvMaxPool2d(nn.Module):
    """A conv followed by an op whose output shares its input's qparams.

    ::

        x ─ Conv2d(2→2, k1) ─ MaxPool2d(k1, s1) ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.pool = nn.MaxPool2d(1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(x))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.rand(1, 2, 14, 14),)


class Conv2dWithCat(nn.Module):
    """Two producers feeding one cat: the smallest qparam-sharing group.

    ::

        x ─ conv1(3→3, k3) ─┐
                            cat(dim=1) ─ out
        y ─ conv2(3→3, k3) ─┘
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3)
        self.conv2 = nn.Conv2d(3, 3, 3)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.cat([self.conv1(x), self.conv2(y)], dim=1)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5))


class Conv2dWithTwoCat(nn.Module):
    """Chained cats, so sharing must propagate transitively through cat -> cat.

    ::

        x1 ─ conv1 ─┐
                    cat(dim=1) ─ y ─┐
        x2 ─ conv2 ─┘               cat(dim=0) ─ out
        x3 ─┐                       │
            add ─ z ────────────────┘
        x4 ─┘
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3)
        self.conv2 = nn.Conv2d(3, 3, 3)

    def forward(self, x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor) -> Tensor:
        y = torch.cat([self.conv1(x1), self.conv2(x2)], dim=1)
        z = x3 + x4
        return torch.cat([z, y])

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (
            torch.randn(1, 3, 5, 5),
            torch.randn(1, 3, 5, 5),
            torch.randn(1, 6, 3, 3),
            torch.randn(1, 6, 3, 3),
        )


class ThreeAdd(nn.Module):
    """Three adds in a tree: two independent adds feeding a third.

    ::

        x1 ─┐
            add ─ y ─┐
        x2 ─┘        │
                     add ─ out
        x3 ─┐        │
            add ─ z ─┘
        x4 ─┘
    """

    def forward(self, x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor) -> Tensor:
        y = x1 + x2
        z = x3 + x4
        return y + z

    def example_inputs(self) -> tuple[Tensor, ...]:
        return tuple(torch.randn(1, 3, 5, 5) for _ in range(4))


class Conv2dThenConv1d(nn.Module):
    """A 2-d conv and a 1-d conv in one graph, joined by a shape op.

    Exports to exactly ``conv2d.default, squeeze.dim, conv1d.default``.

    ::

        x (1,3,5,5) ─ Conv2d(3→3, k3) ─ squeeze(0) ─ (3,3,3) ─ Conv1d(3→3, k3) ─ out (3,3,1)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(3, 3, 3)
        self.conv2d = nn.Conv2d(3, 3, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1d(self.conv2d(x).squeeze(0))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 5, 5),)


class Conv2dWithSplit(nn.Module):
    """A multi-output op (split) whose chunks are re-joined; ``conv2`` is deliberately unused.

    ::

        x ─ conv1(3→3, k3) ─ split(2, dim=1) ─┬─ chunk[0] (2 ch) ─┐
                                              └─ chunk[1] (1 ch) ─ cat(dim=1) ─ out
        (conv2: registered but never called)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3)
        self.conv2 = nn.Conv2d(3, 3, 3)

    def forward(self, x: Tensor) -> Tensor:
        chunks = torch.split(self.conv1(x), 2, dim=1)
        return torch.cat(chunks, dim=1)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 16, 16),)


class TwoLinearModule(nn.Module):
    """Two linears, the first without bias (exercises a missing bias argument).

    ::

        x (2,8) ─ Linear(8→16, bias=False) ─ Linear(16→8) ─ out (2,8)
    """

    def __init__(self) -> None:
        super().__init__()
        self.linear1 = nn.Linear(8, 16, bias=False)
        self.linear2 = nn.Linear(16, 8)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.linear1(x))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 8),)


class SingleLinear(nn.Module):
    """One linear behind a forward argument named ``x`` (a bare ``nn.Linear`` would export
    its placeholder as ``input``): the smallest graph with an activation, weight and bias.

    ::

        x (2,4) ─ Linear(4→4) ─ out (2,4)
    """

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 4),)


def _cond_true(x: Tensor, pred2: Tensor) -> Tensor:
    inner = torch.cond(pred2, lambda v: (v + v) @ (v + v), lambda v: v @ v, [x])
    return x + inner


def _cond_false(x: Tensor, pred2: Tensor) -> Tensor:
    return x.cos()


def _map_body(x: Tensor, y: Tensor, pred1: Tensor, pred2: Tensor) -> Tensor:
    x = x.cos()
    y2 = torch.cond(pred1, _cond_true, _cond_false, [y, pred2])
    return (x + y2).sin()


class ControlFlow(nn.Module):
    """Nested higher-order ops with no parameters: map -> cond -> cond.

    ::

        y ─ y @ y ─ yy
        xs ─ map over rows x (yy, pred1, pred2 passed through):
               c = cond(pred1,
                        true:  yy + cond(pred2, true: (yy+yy) @ (yy+yy), false: yy @ yy),
                        false: cos(yy))
               row = sin(cos(x) + c)
           ─ out (rows stacked)
    """

    def forward(self, xs: Tensor, pred1: Tensor, pred2: Tensor, y: Tensor) -> Tensor:
        y = y @ y
        return hop_map(_map_body, xs, y, pred1, pred2)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.ones(2, 2), torch.tensor([False]), torch.tensor([False]), torch.ones(2, 2))


class SigmoidModel(nn.Module):
    """A single fixed-qparams op.

    ::

        x ─ sigmoid ─ out
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 5, 5),)


class SigmoidAddModel(nn.Module):
    """A fixed-qparams op feeding an add with a second graph input.

    ::

        x ─ sigmoid ─┐
                     add ─ out
        y ───────────┘
    """

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.sigmoid(x) + y

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5))


class EmbeddingModule(nn.Module):
    """A lone embedding lookup (weight-only quantization target).

    ::

        indices (32,) long ─ Embedding(10, 12) ─ out (32, 12)
    """

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 12)

    def forward(self, indices: Tensor) -> Tensor:
        return self.emb(indices)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randint(0, 10, (32,)),)


class EmbeddingConvLinearModule(nn.Module):
    """Embedding output routed through shape ops into a conv and a linear.

    ::

        indices (4,8) ─ Embedding(10,8) ─ unsqueeze(0) ─ permute(0,3,1,2) ─ (1,8,4,8)
          ─ Conv2d(8→16, k(1,3)) ─ permute(0,2,3,1) ─ squeeze(0) ─ Linear(16→8) ─ out (4,6,8)
    """

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.conv = nn.Conv2d(8, 16, (1, 3))
        self.linear = nn.Linear(16, 8)

    def forward(self, indices: Tensor) -> Tensor:
        x = self.emb(indices).unsqueeze(0).permute(0, 3, 1, 2)
        x = self.conv(x).permute(0, 2, 3, 1).squeeze(0)
        return self.linear(x)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randint(0, 10, (4, 8)),)


class ConvLinearWPermute(nn.Module):
    """A conv whose output reaches a linear through a permute (channels-last hand-off).

    ::

        x (2,3,4,4) ─ Conv2d(3→8, k3) ─ permute(0,2,3,1) ─ Linear(8→8) ─ out (2,2,2,8)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.linear = nn.Linear(8, 8)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.conv(x).permute(0, 2, 3, 1))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 3, 4, 4),)


class GroupwiseConv2d(nn.Module):
    """A grouped conv: per-channel weight qparams must follow output channels, not groups.

    ::

        x (2,4,10,10) ─ Conv2d(4→4, k3, groups=2) ─ out (2,4,8,8)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 4, 10, 10),)
