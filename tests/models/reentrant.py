"""Models holding q/dq ops before prepare, for the re-entrant and user-q/dq tests.

Two ways a graph reaches prepare with quantize / dequantize ops in it: a submodule converted
earlier and exported again inside its parent (re-entrant quantization), and a model that
fake-quantizes a value in its own ``forward``. The ours-only file and the differential file
against torchao build them the same way from here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.fx import GraphModule

from pt2e_quant.ops import qdq_ops


class LinearRelu(nn.Module):
    """x ─ linear ─ relu (the part quantized first)"""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.lin(x))


class HeadThenPart(nn.Module):
    """x ─ head (float Linear) ─ part (LinearRelu, or its converted GraphModule)"""

    def __init__(self, part: nn.Module, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.head = head if head is not None else nn.Linear(4, 4)
        self.part = part

    def forward(self, x: Tensor) -> Tensor:
        return self.part(self.head(x))


class PartThenHead(nn.Module):
    """x ─ part (converted LinearRelu) ─ head (float Linear 4 -> 3)"""

    def __init__(self, part: nn.Module) -> None:
        super().__init__()
        self.part = part
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.part(x))


class FakeQuantizedExtraInput(nn.Module):
    """x ─ linear ─┐
    extra ─ q ─ dq ─ add  (the model's own forward fake-quantizes ``extra``, scale 0.05)"""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: Tensor, extra: Tensor) -> Tensor:
        q = qdq_ops.QUANTIZE_PER_TENSOR(extra, 0.05, 0, -128, 127, torch.int8)
        dq = qdq_ops.DEQUANTIZE_PER_TENSOR(q, 0.05, 0, -128, 127, torch.int8)
        return self.lin(x) + dq


def export(model: nn.Module, *example: Tensor) -> GraphModule:
    """``torch.export.export(model, example).module()``; a parent holding a converted
    GraphModule is put in eval mode through its flag (``.eval()`` is refused by it)."""
    model.training = False
    return torch.export.export(model, example).module()


def calibrate_and_convert(prepared: GraphModule, convert, *example: Tensor) -> GraphModule:
    with torch.no_grad():
        prepared(*example)
    return convert(prepared)
