"""Tiny models for the X86 addmm and LLM-scheme tests, and their quantize-and-convert step.

::

    Conv1D      x (..., in) -> view(-1, in) -> addmm(bias, x, w (in, out)) -> view   (GPT-2)
    LinearPair  x -> linear(32 -> 48) -> relu -> linear(48 -> 16, no bias)
    SwiGLU      x -> [linear gate, linear up] -> silu(gate) * up -> linear down
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule

from pt2e_quant import convert_pt2e, prepare_pt2e
from quantizers.config import QuantizationConfig
from quantizers.x86_inductor import X86InductorQuantizer


class Conv1D(nn.Module):
    """GPT-2's projection: ``addmm(bias, x.view(-1, in), weight)`` with weight (in, out)."""

    def __init__(self, features_in: int = 32, features_out: int = 48) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features_in, features_out) * 0.2)
        self.bias = nn.Parameter(torch.randn(features_out) * 0.1)

    def forward(self, x):
        y = torch.addmm(self.bias, x.view(-1, x.shape[-1]), self.weight)
        return y.view(*x.shape[:-1], -1)


class LinearPair(nn.Module):
    def __init__(self, features_in: int = 32) -> None:
        super().__init__()
        self.up = nn.Linear(features_in, 48)
        self.down = nn.Linear(48, 16, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


class SwiGLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Linear(32, 64, bias=False)
        self.up = nn.Linear(32, 64, bias=False)
        self.down = nn.Linear(64, 32, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def converted(
    model: nn.Module,
    config: QuantizationConfig,
    dtype: torch.dtype = torch.float32,
    features_in: int = 32,
) -> tuple[GraphModule, torch.Tensor]:
    """``model`` in ``dtype``, exported, prepared with ``config`` globally, calibrated once,
    converted; and its input."""
    torch.manual_seed(0)
    model = model.to(dtype).eval()
    x = torch.randn(2, 5, features_in).to(dtype)
    exported = torch.export.export(model, (x,)).module()
    prepared = prepare_pt2e(exported, X86InductorQuantizer().set_global(config))
    prepared(x)
    return convert_pt2e(prepared), x
