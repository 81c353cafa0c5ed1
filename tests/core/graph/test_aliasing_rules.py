"""In-place writes on the result of an op that hands back its input stay in place.

``sum_to_size`` to the input's own size and ``atleast_2d`` of a 2-D tensor return the input
itself although their schemas promise a fresh tensor. Export records later reads of the input
through the in-place result, but a view taken *before* still reads the old node: an in-place
op on the op's result changes what that view sees, so ``replace_inplace_ops`` must not turn it
into a functional op, or the model's outputs silently change.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.replace_inplace_ops import replace_inplace_ops

aten = torch.ops.aten


class ViewThenMutateThroughPassThrough(nn.Module):
    """flat = base.view(6) is taken, then op(base).mul_(3); flat is read afterwards."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x * 2
        flat = base.view(6)
        same = base.sum_to_size(2, 3) if self.op == "sum_to_size" else torch.atleast_2d(base)
        same.mul_(3)
        return flat + 1


@pytest.mark.parametrize("op", ["sum_to_size", "atleast_2d"])
def test_inplace_write_seen_through_an_earlier_view_is_kept(op):
    model, x = ViewThenMutateThroughPassThrough(op), torch.randn(2, 3)
    gm = torch.export.export(model, (x,)).module()
    assert getattr(aten, op).default in [n.target for n in gm.graph.nodes]  # the case under test
    expected = model(x)
    assert torch.equal(gm(x), expected)  # export itself keeps the aliasing semantics
    assert run_pass(gm, replace_inplace_ops) is False
    assert aten.mul_.Tensor in [n.target for n in gm.graph.nodes]
    assert torch.equal(gm(x), expected)
