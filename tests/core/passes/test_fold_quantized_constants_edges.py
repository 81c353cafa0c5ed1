"""Which quantize ops ``fold_quantized_constants`` leaves alone.

Only quantize ops fed by module tensors are folded into stored integer constants. A tensor the
model creates itself (``torch.ones``, ``torch.arange``) has no module tensor behind it; torchao
skips such constructors too (backends generate them cheaply), so pre-computing them would
store a buffer no peer stores and change the graph a lowering sees.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.fold_quantized_constants import FROZEN_PARAM_PREFIX, fold_quantized_constants

qd = torch.ops.quantized_decomposed


class AddsQuantizedOnes(torch.nn.Module):
    """x + dq(q(torch.ones(4))): a quantized tensor built by a constructor, no module tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = qd.quantize_per_tensor.default(torch.ones(4), 0.05, 0, -128, 127, torch.int8)
        return x + qd.dequantize_per_tensor.default(q, 0.05, 0, -128, 127, torch.int8)


def _quantize_count(gm: GraphModule) -> int:
    return sum(n.target is qd.quantize_per_tensor.default for n in gm.graph.nodes)


def test_quantized_constructor_output_is_not_folded():
    """A quantize of ``torch.ones(...)`` stays in the graph: no frozen buffer, same outputs."""
    x = torch.randn(2, 4)
    gm = torch.export.export(AddsQuantizedOnes(), (x,)).module()
    assert _quantize_count(gm) == 1
    expected = gm(x)
    assert run_pass(gm, fold_quantized_constants) is False
    assert _quantize_count(gm) == 1
    assert not any(name.startswith(FROZEN_PARAM_PREFIX) for name, _ in gm.named_buffers())
    torch.testing.assert_close(gm(x), expected, rtol=0, atol=0)
