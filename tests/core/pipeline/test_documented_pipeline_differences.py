"""Our side of the pipeline-level deliberate differences from torchao, as the README lists them.

A differential run against torchao's own tests found these; they are kept on purpose (the README
says why), and these tests pin what ours does so the README stays true.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pt2e_quant import allow_exported_model_train_eval, prepare_pt2e, prepare_qat_pt2e
from pt2e_quant.errors import SpecError
from pt2e_quant.fake_quantize import LearnableFakeQuantize
from pt2e_quant.observer import MinMaxObserver
from pt2e_quant.passes.fold_batch_norm import BatchNormNotFoldedWarning
from pt2e_quant.passes.simulate_batch_norm_folding import BatchNormNotFusedWarning
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config


def test_learnable_fake_quantize_with_an_empty_range_raises_a_value_error() -> None:
    """torchao asserts; ours raises a SpecError, a ValueError naming both bounds."""
    with pytest.raises(SpecError, match="quant_min=255 must be less than quant_max=0"):
        LearnableFakeQuantize(MinMaxObserver, quant_min=255, quant_max=0)
    assert issubclass(SpecError, ValueError)


class DropoutLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(x))


def test_train_on_a_model_already_in_training_mode_regenerates_no_code(monkeypatch) -> None:
    """torchao rewrites and recompiles on every .train() / .eval(); ours recompiles only a
    graph whose flags changed, so a first .train() on a training-mode export does nothing."""
    gm = torch.export.export(DropoutLinear().train(), (torch.randn(2, 4),)).module()
    allow_exported_model_train_eval(gm)
    recompiled: list[torch.fx.GraphModule] = []
    original = torch.fx.GraphModule.recompile
    monkeypatch.setattr(
        torch.fx.GraphModule, "recompile", lambda self: recompiled.append(self) or original(self)
    )
    gm.train()
    assert recompiled == []
    gm.eval()
    assert recompiled == [gm]


class Linear3dBatchNorm(nn.Module):
    """linear over the last dim of (N, C, L) and BatchNorm1d over C: not a foldable pair."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(x))


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
def test_3d_linear_batch_norm_warning_says_why_in_our_words(qat: bool) -> None:
    x = torch.randn(2, 3, 4)
    gm = torch.export.export(Linear3dBatchNorm().train(qat), (x,)).module()
    config = get_symmetric_quantization_config(is_qat=qat)
    prepare = prepare_qat_pt2e if qat else prepare_pt2e
    category = BatchNormNotFusedWarning if qat else BatchNormNotFoldedWarning
    verb = "fused for quantization-aware training" if qat else "folded"
    with pytest.warns(
        category,
        match=rf"'batch_norm' .* after 'linear' .* is not {verb}: its channel dimension is not "
        r"the output features of 'linear'",
    ):
        prepare(gm, XNNPACKQuantizer().set_global(config))
