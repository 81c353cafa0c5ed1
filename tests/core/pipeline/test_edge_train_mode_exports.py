"""Edge case: models exported in train mode, through both real backends.

Exporting a model that is still in ``train()`` keeps dropout stochastic and batch norm
updating its statistics, which is almost never what a user quantizing for inference meant.
These tests pin the defined behaviour: prepare warns (naming the op and ``eval()``), the
exported mode is kept like the peers keep it, and calibrating never writes into the user's
buffers.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from pt2e_quant import prepare_pt2e
from tests.core.pipeline._edge_case_pipeline import (
    QUANTIZERS,
    assert_untouched,
    quiet,
    run_pipeline,
    snapshot,
    xnnpack_quantizer,
)
from tests.models.edge_cases import ConvBatchNormDropout


class BatchNormLinear(nn.Module):
    """x ─ bn (no conv before it, so nothing folds it) ─ linear"""

    def __init__(self) -> None:
        super().__init__()
        self.bn, self.linear = nn.BatchNorm1d(4), nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.bn(x))


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_train_mode_dropout_is_warned_about(backend: str) -> None:
    x = torch.randn(2, 3, 8, 8)
    gm = torch.export.export(ConvBatchNormDropout().train(), (x,)).module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_pt2e(gm, QUANTIZERS[backend]())
    messages = [str(w.message) for w in caught]
    assert any("'dropout'" in m and "eval()" in m for m in messages), messages


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_train_mode_dropout_stays_active(backend: str) -> None:
    """Like the peers, the exported mode is kept: the converted model is stochastic, hence
    the warning above."""
    x = torch.randn(2, 3, 8, 8)
    gm = torch.export.export(ConvBatchNormDropout().train(), (x,)).module()
    with quiet():
        converted = run_pipeline(gm, QUANTIZERS[backend](), [(x,)])
    assert not torch.equal(converted(x), converted(x))


def test_unfolded_train_mode_batch_norm_is_warned_about() -> None:
    gm = torch.export.export(BatchNormLinear().train(), (torch.randn(8, 4),)).module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_pt2e(gm, xnnpack_quantizer())
    messages = [str(w.message) for w in caught]
    assert any("'batch_norm'" in m and "eval()" in m for m in messages), messages


def test_calibrating_a_train_mode_batch_norm_leaves_user_buffers_alone() -> None:
    model = BatchNormLinear().train()
    x = torch.randn(8, 4) + 3
    gm = torch.export.export(model, (x,)).module()
    before = snapshot(gm)
    eager_mean = model.bn.running_mean.clone()
    with quiet():
        run_pipeline(gm, xnnpack_quantizer(), [(x,)])
    assert torch.equal(model.bn.running_mean, eager_mean)
    assert_untouched(gm, before)
