"""``own_written_buffers``: calibrating a prepared model never writes into the user's tensors.

The prepared model shares its tensors with the model passed in; the ones its graph writes are
cloned first, whichever alias the write goes through.
"""

from __future__ import annotations

import torch
from torch import nn

from pt2e_quant import prepare_pt2e
from tests.core.contract.quantizer_fixtures import FunctionQuantizer


class RowCounter(nn.Module):
    """counts[0] += x[0] through a ``select`` view; returns x * counts."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("counts", torch.zeros(2, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.counts[0].add_(x[0])
        return x * self.counts


def test_buffer_written_through_a_view_is_owned_by_the_prepared_model():
    x = torch.randn(2, 4)
    exported = torch.export.export(RowCounter(), (x,)).module()
    prepared = prepare_pt2e(exported, FunctionQuantizer(lambda gm: None))
    prepared(x)
    assert torch.equal(exported.counts, torch.zeros(2, 4))  # the user's buffer is untouched
    assert torch.equal(prepared.counts[0], x[0])  # the prepared model's own copy counted
