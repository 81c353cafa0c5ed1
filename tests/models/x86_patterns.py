"""Tiny models for the X86InductorQuantizer tests, one per fused pattern the x86 recipe knows
(``PATTERN_MODELS``), shared by the pattern, config, post-op and torchao parity tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

aten = torch.ops.aten


def image(channels: int = 3) -> tuple[Tensor, ...]:
    return (torch.randn(1, channels, 6, 6),)


class ConvUnary(nn.Module):
    """x ─ conv3x3 ─ act ─ out"""

    def __init__(self, act: nn.Module | None = None, dim: int = 2) -> None:
        super().__init__()
        self.dim = dim
        self.conv = (nn.Conv2d if dim == 2 else nn.Conv1d)(3, 4, 3)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return image() if self.dim == 2 else (torch.randn(1, 3, 8),)


class ConvRelu6Pool(nn.Module):
    """x ─ conv3x3 ─ relu6 ─ maxpool ─ conv1x1 ─ out

    relu6 is ``F.relu6`` (exports as aten.relu6; torchao's metadata matching misses it) or the
    ``nn.ReLU6`` module (exports as aten.hardtanh). The maxpool shows whether the relu6 was
    fused: only the output of a quantized pattern keeps the pool on int8.
    """

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv2d(3, 4, 3), nn.MaxPool2d(2)
        self.relu6 = F.relu6 if functional else nn.ReLU6()
        self.head = nn.Conv2d(4, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.relu6(self.conv(x))))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return image()


class ConvAdd(nn.Module):
    """x ─ conv3x3(p1) ─ add(y) ─ [relu] ─ out; with ``reuse`` the conv output is also returned"""

    def __init__(self, relu: bool = True, reuse: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU() if relu else nn.Identity()
        self.reuse = reuse

    def forward(self, x: Tensor, y: Tensor):
        out = self.conv(x)
        fused = self.relu(out + y)
        return (fused, out) if self.reuse else fused

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (*image(), *image())


class LinearUnary(nn.Module):
    """x (2,8) ─ Linear(8→4) ─ act ─ out"""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 4)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.linear(x))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 8),)


class LinearAdd(nn.Module):
    """x ─ Linear(8→4) ─ add(y) ─ [relu] ─ out"""

    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 4)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.relu(self.linear(x) + y)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 8), torch.randn(2, 4))


class ConvThenLinears(nn.Module):
    """x (1,3,6,6) ─ conv3x3 ─ flatten(2) ─ fc: Linear(16→8) ─ relu ─ head: Linear(8→8) ─ out"""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc, self.relu, self.head = nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.relu(self.fc(torch.flatten(self.conv(x), 2))))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 6, 6),)


class LinearFlattenLinear(nn.Module):
    """x (2,2,8) ─ a: Linear(8→8) ─ flatten(1) ─ b: Linear(16→4) ─ out"""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(torch.flatten(self.a(x), 1))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 2, 8),)


class Mul(nn.Module):
    """x ─ mul(y) ─ out, y of x's shape, broadcast (1,3,1,1), or the scalar 0.5"""

    def __init__(self, other: str) -> None:
        super().__init__()
        self.other = other

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x * (0.5 if self.other == "scalar" else y)

    def example_inputs(self) -> tuple[Tensor, ...]:
        y = torch.randn(1, 3, 1, 1) if self.other == "broadcast" else torch.randn(1, 3, 6, 6)
        return (*image(), y)


class Matmul(nn.Module):
    """a (2,4,8) ─ matmul(b (2,8,4)) ─ out"""

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.matmul(a, b)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 4, 8), torch.randn(2, 8, 4))


class ConvPoolConv(nn.Module):
    """x ─ conv3x3 ─ relu ─ pool ─ conv1x1 ─ out, pool = max / avg / adaptive avg"""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.conv1, self.relu, self.pool = nn.Conv2d(3, 4, 3), nn.ReLU(), pool
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.pool(self.relu(self.conv1(x))))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return image()


class PoolFirst(nn.Module):
    """x ─ maxpool ─ conv1x1 ─ out: the pool's input is no quantized op's output"""

    def __init__(self) -> None:
        super().__init__()
        self.pool, self.conv = nn.MaxPool2d(2), nn.Conv2d(3, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pool(x))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return image()


class ConvFlatten(nn.Module):
    """x ─ conv3x3 ─ adaptive_avg_pool(1) ─ flatten ─ Linear | sigmoid ─ out"""

    def __init__(self, head: str) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 2) if head == "linear" else nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(self.pool(self.conv(x)), 1))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return image()


class ConvCat(nn.Module):
    """x ─┬─ conv_a ─┐
    └─ conv_b ─ cat ─ conv1x1 ─ out   (``with_input``: cat(conv_a, x) instead)
    """

    def __init__(self, with_input: bool = False) -> None:
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
        self.head = nn.Conv2d(6, 2, 1)
        self.with_input = with_input

    def forward(self, x: Tensor) -> Tensor:
        second = x if self.with_input else self.conv_b(x)
        return self.head(torch.cat([self.conv_a(x), second], 1))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return image()


#: Every pattern model by name, built fresh per call (tests mutate and calibrate them).
PATTERN_MODELS = {
    "conv_relu": lambda: ConvUnary(nn.ReLU()),
    "conv_hardtanh": lambda: ConvUnary(nn.Hardtanh()),
    "conv_hardswish": lambda: ConvUnary(nn.Hardswish()),
    "conv_relu6": lambda: ConvUnary(nn.ReLU6()),
    "conv_silu": lambda: ConvUnary(nn.SiLU()),
    "conv_sigmoid": lambda: ConvUnary(nn.Sigmoid()),
    "conv1d_relu": lambda: ConvUnary(nn.ReLU(), dim=1),
    "conv_add_relu": lambda: ConvAdd(relu=True),
    "conv_add": lambda: ConvAdd(relu=False),
    "conv_add_reused": lambda: ConvAdd(relu=False, reuse=True),
    "linear_relu": lambda: LinearUnary(nn.ReLU()),
    "linear_leaky_relu": lambda: LinearUnary(nn.LeakyReLU()),
    "linear_tanh": lambda: LinearUnary(nn.Tanh()),
    "linear_gelu": lambda: LinearUnary(nn.GELU()),
    "linear_add_relu": lambda: LinearAdd(relu=True),
    "linear_add": lambda: LinearAdd(relu=False),
    "mul_same_shape": lambda: Mul("same"),
    "mul_broadcast": lambda: Mul("broadcast"),
    "mul_scalar": lambda: Mul("scalar"),
    "matmul": Matmul,
    "maxpool": lambda: ConvPoolConv(nn.MaxPool2d(2)),
    "avgpool": lambda: ConvPoolConv(nn.AvgPool2d(2)),
    "adaptive_avgpool": lambda: ConvPoolConv(nn.AdaptiveAvgPool2d(2)),
    "maxpool_first": PoolFirst,
    "flatten_linear": lambda: ConvFlatten("linear"),
    "flatten_sigmoid": lambda: ConvFlatten("sigmoid"),
    "cat": ConvCat,
    "cat_with_input": lambda: ConvCat(with_input=True),
}


# ---------------------------------------------- near-misses and post-op forms (not in PATTERN_MODELS)


class ConvAddAlpha(nn.Module):
    """x ─ conv3x3(p1) ─ add(y, alpha=2) ─ relu ─ out: not the fused kernel's plain sum"""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.relu(torch.add(self.conv(x), y, alpha=2))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (*image(), *image())


class ConvBatchNorm(nn.Module):
    """x ─ conv3x3 ─ batch norm ─ relu ─ out, with a batch norm no post-training fold removes:

    ``"batch_stats"``: ``nn.BatchNorm2d(track_running_stats=False)`` (normalizes with the
    batch's statistics, so there is nothing constant to fold); ``"aten_legit"``: a direct call
    of ``aten._native_batch_norm_legit_no_training`` (an op other than ``aten.batch_norm``).
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4, track_running_stats=kind != "batch_stats")

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        if self.kind == "batch_stats":
            return torch.relu(self.bn(out))
        bn = self.bn
        legit = aten._native_batch_norm_legit_no_training
        return torch.relu(
            legit(out, bn.weight, bn.bias, bn.running_mean, bn.running_var, 0.1, 1e-5)[0]
        )

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 3, 6, 6),)


#: Post-ops after a linear: name -> (factory of the activation or None, whether ``+ y`` comes
#: first). Functional forms leave no module in the export metadata; module forms do.
LINEAR_POST_OPS = {
    "F.gelu": (lambda: F.gelu, False),
    "torch.tanh": (lambda: torch.tanh, False),
    "F.leaky_relu": (lambda: F.leaky_relu, False),
    "add_torch.relu": (lambda: torch.relu, True),
    "add": (lambda: None, True),
    "nn.GELU": (nn.GELU, False),
    "nn.Tanh": (nn.Tanh, False),
    "nn.LeakyReLU": (nn.LeakyReLU, False),
    "add_nn.ReLU": (nn.ReLU, True),
}


class LinearPostOpThen(nn.Module):
    """A linear's post-op read by an int8-in/int8-out op::

        "cat":     x ─ Linear ─ [+y] ─ post ─┬─ cat ─ Linear(16→4) ─ out
                   x ─ Linear ─ [+y] ─ post ─┘
        "maxpool": x (1,2,4,8) ─ Linear ─ [+y] ─ post ─ max_pool2d ─ conv1x1 ─ out
        "flatten": x (2,3,8) ─ Linear ─ [+y] ─ post ─ flatten ─ Linear(24→4) ─ out

    Each branch gets its own post-op module (torchao does not fuse one module called twice).
    """

    def __init__(self, post: str, follower: str) -> None:
        super().__init__()
        make, self.add_first = LINEAR_POST_OPS[post]
        self.act_a, self.act_b = (make() or nn.Identity() for _ in range(2))
        self.follower = follower
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
        heads = {
            "cat": nn.Linear(16, 4),
            "maxpool": nn.Conv2d(2, 2, 1),
            "flatten": nn.Linear(24, 4),
        }
        self.head = heads[follower]

    def _branch(self, linear: nn.Module, act, x: Tensor, y: Tensor) -> Tensor:
        out = linear(x)
        return act(out + y if self.add_first else out)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        out = self._branch(self.a, self.act_a, x, y)
        if self.follower == "cat":
            return self.head(torch.cat([out, self._branch(self.b, self.act_b, x, y)], 1))
        if self.follower == "maxpool":
            return self.head(F.max_pool2d(out, 2))
        return self.head(torch.flatten(out, 1))

    def example_inputs(self) -> tuple[Tensor, ...]:
        shape = {"cat": (4, 8), "maxpool": (1, 2, 4, 8), "flatten": (2, 3, 8)}[self.follower]
        return (torch.randn(shape), torch.randn(shape))
