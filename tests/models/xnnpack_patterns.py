"""The smallest models that exercise one XNNPACK rule each, shared by the XNNPACKQuantizer
tests (patterns, scoping, config, ExecuTorch parity) so they check the same graphs."""

from __future__ import annotations

import torch
from torch import nn

aten = torch.ops.aten

# ------------------------------------------------------------------------ small models


class LinearModel(nn.Module):
    def __init__(self, relu: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 6)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x):
        return self.relu(self.linear(x))


class ConvModel(nn.Module):
    def __init__(self, relu: bool = False, dim: int = 2, groups: int = 1, transpose=False):
        super().__init__()
        conv = {(1, False): nn.Conv1d, (2, False): nn.Conv2d, (2, True): nn.ConvTranspose2d}
        self.conv = conv[(dim, transpose)](4, 4, 3, groups=groups)
        self.relu = nn.ReLU() if relu else nn.Identity()
        self.dim = dim

    def forward(self, x):
        return self.relu(self.conv(x))

    def example_inputs(self):
        return (torch.randn(1, 4, *([6] * self.dim)),)


class Binary(nn.Module):
    def __init__(self, op, relu: bool = False) -> None:
        super().__init__()
        self.op, self.relu = op, relu

    def forward(self, x, y):
        out = self.op(x, y)
        return torch.relu(out) if self.relu else out


class CatOfConvs(nn.Module):
    """x ─┬─ conv_a ─┐
    └─ conv_b ─┴─ cat"""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return torch.cat([self.conv_a(x), self.conv_b(x)], dim=1)


class ConvPoolHead(nn.Module):
    """conv ─ max_pool2d ─ adaptive_avg_pool2d ─ flatten ─ unsqueeze ─ linear"""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.linear = nn.Conv2d(2, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.conv(x), 2)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.linear(x.unsqueeze(0))


X4 = (torch.randn(2, 4),)
IMAGE = (torch.randn(1, 2, 8, 8),)


class SharedQParamOp(nn.Module):
    """producer ─┬─ op ─ consumer ─ out
                 └────────────────── out

    One qparam-sharing op (a view, pool, relu, ...) between a producer (a linear, or a 1x1
    conv for a 4-D input) and a linear. The producer's output is also returned, so a ``relu`` is not fused
    into a ``linear -> relu`` pattern and is quantized as a sharing op instead.
    """

    def __init__(self, op, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.op = op
        image = len(input_shape) == 4
        self.producer = nn.Conv2d(input_shape[1], 4, 1) if image else nn.Linear(input_shape[-1], 8)
        with torch.no_grad():
            features = op(self.producer(torch.zeros(input_shape))).shape[-1]
        self.consumer = nn.Linear(features, 3)
        self.input_shape = input_shape

    def forward(self, x):
        y = self.producer(x)
        return self.consumer(self.op(y)), y

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(self.input_shape),)


#: ``name: (op, input shape, the aten overload export gives the op)``: every op the XNNPACK
#: quantizer lets share its producer's qparams (quantizers.xnnpack.rules.SHARED_QPARAM_OPS).
SHARED_QPARAM_CASES = {
    "relu": (torch.relu, (2, 4), aten.relu.default),
    "hardtanh": (nn.functional.hardtanh, (2, 4), aten.hardtanh.default),
    "max_pool2d": (lambda y: nn.functional.max_pool2d(y, 2), (1, 2, 4, 4), aten.max_pool2d.default),
    "mean": (lambda y: y.mean(1), (2, 3, 4), aten.mean.dim),
    "permute": (lambda y: y.permute(0, 2, 1), (2, 3, 4), aten.permute.default),
    "transpose": (lambda y: y.transpose(1, 2), (2, 3, 4), aten.transpose.int),
    "squeeze": (lambda y: y.squeeze(1), (2, 1, 4), aten.squeeze.dim),
    "unsqueeze": (lambda y: y.unsqueeze(0), (2, 4), aten.unsqueeze.default),
    "view": (lambda y: y.view(2, 2, 4), (2, 4), aten.view.default),
    "reshape": (lambda y: y.reshape(2, 2, 4), (2, 4), aten.reshape.default),
    "slice": (lambda y: y[:, 2:6], (2, 4), aten.slice.Tensor),
    "flatten": (lambda y: y.flatten(1), (2, 3, 4), aten.flatten.using_ints),
    "dropout": (
        lambda y: nn.functional.dropout(y, 0.5, training=False),
        (2, 4),
        aten.dropout.default,
    ),
}


class ComputedWeight(nn.Module):
    """conv2d(x, w * 0.5) or linear(x, w + delta): a weight some op computes from parameters."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        shape = (4, 4, 3, 3) if kind == "conv_scaled" else (4, 4)
        self.w = nn.Parameter(torch.randn(shape))
        self.delta = nn.Parameter(torch.randn(shape) * 0.1)

    def forward(self, x):
        if self.kind == "conv_scaled":
            return nn.functional.conv2d(x, self.w * 0.5)
        return nn.functional.linear(x, self.w + self.delta)

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(1, 4, 6, 6) if self.kind == "conv_scaled" else torch.randn(2, 4),)


class NonFloat32Binary(nn.Module):
    """linear ─ cast to ``dtype`` ─ add / mul with itself: float32 ops around a float16 /
    float64 binary op."""

    def __init__(self, op, dtype: torch.dtype) -> None:
        super().__init__()
        self.op, self.dtype = op, dtype
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        y = self.linear(x).to(self.dtype)
        return self.op(y, y)

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, 4),)
