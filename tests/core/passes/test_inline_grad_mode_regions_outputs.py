"""inline_grad_mode_regions with more than the one-output, op-only body of the basic test.

A ``@torch.no_grad()`` forward returning several tensors must inline into a graph that
computes exactly what the model did, each output read from its own body result.
"""

from __future__ import annotations

import torch
from torch import nn

from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.inline_grad_mode_regions import inline_grad_mode_regions

SET_GRAD = torch.ops.higher_order.wrap_with_set_grad_enabled


def _calls(gm: torch.fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


class NoGradTwoOutputs(nn.Module):
    """x -> [no_grad: (linear(x), relu(x) * 3)] -> both returned"""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), torch.relu(x) * 3


def test_each_output_of_a_region_keeps_its_own_value() -> None:
    model, inputs = NoGradTwoOutputs().eval(), (torch.randn(2, 4),)
    gm = torch.export.export(model, inputs).module()
    assert SET_GRAD in _calls(gm), "export no longer wraps no_grad forwards"
    assert run_pass(gm, inline_grad_mode_regions) is True
    assert SET_GRAD not in _calls(gm)
    for got, want in zip(gm(*inputs), model(*inputs), strict=True):
        assert torch.equal(got, want)
