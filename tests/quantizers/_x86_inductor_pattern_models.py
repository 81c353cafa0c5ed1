"""Tiny models for the X86InductorQuantizer tests, one per fused pattern the x86 recipe knows.

Shared by the pattern tests (test_x86_inductor_patterns.py: the q/dq each pattern yields),
the config tests (test_x86_inductor_config.py: validate rejects configs on a conv) and the
torchao parity tests (test_x86_inductor_torchao_parity.py: every ``PATTERN_MODELS`` entry
must quantize exactly as torchao's quantizer does). Defined once here so the three files
check the same graphs; ``quantize`` is the export / prepare / calibrate / convert recipe they
all run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import GraphModule

from pt2e_quant import convert_pt2e, prepare_pt2e
from quantizers.config import QuantizationConfig
from quantizers.x86_inductor import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from tests.models import export_model

qd = torch.ops.quantized_decomposed
aten = torch.ops.aten
Q, DQ = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
DQ_CH = qd.dequantize_per_channel.default


def x86_config(**kwargs) -> QuantizationConfig:
    return get_default_x86_inductor_quantization_config(**kwargs)


def quantize(model: nn.Module, quantizer: X86InductorQuantizer | None = None) -> GraphModule:
    """Export, prepare (global default config unless ``quantizer``), calibrate once, convert."""
    torch.manual_seed(0)
    inputs = model.example_inputs()
    quantizer = quantizer or X86InductorQuantizer().set_global(x86_config())
    prepared = prepare_pt2e(export_model(model, inputs), quantizer)
    prepared(*inputs)
    return convert_pt2e(prepared)


def qdq_counts(q: int, dq: int, dq_ch: int) -> dict:
    """Expected (activation q, activation dq, per-channel weight dq) occurrences."""
    return {Q: q, DQ: dq, DQ_CH: dq_ch}


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
