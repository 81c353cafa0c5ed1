"""Train/eval switching and training-mode detection for the less common op spellings.

``move_exported_model_to_eval`` / ``_to_train`` must reach every dropout and batch-norm
overload an export can record, and prepare's training-mode warning must see a flag however
the node passes it; otherwise a model silently keeps dropping activations at random or
normalizing with the wrong statistics after quantization.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pt2e_quant import move_exported_model_to_eval, move_exported_model_to_train, prepare_pt2e
from pt2e_quant.train_eval import TrainingModeOpWarning
from tests.core.quantizer_fixtures import FunctionQuantizer

aten = torch.ops.aten


class ChannelDropout(nn.Module):
    """nn.Dropout2d, which export records as ``aten.feature_dropout``."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x)


def test_channel_dropout_is_switched_to_eval():
    x = torch.ones(2, 8, 3, 3)
    gm = torch.export.export(ChannelDropout().train(), (x,)).module()
    assert aten.feature_dropout.default in [n.target for n in gm.graph.nodes]
    move_exported_model_to_eval(gm)
    assert torch.equal(gm(x), x)  # no channel dropped, no 1/(1-p) rescaling


class AtenBatchNormNoTraining(nn.Module):
    """Calls ``aten._native_batch_norm_legit_no_training``, an overload without a flag."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        return aten._native_batch_norm_legit_no_training(
            x, bn.weight, bn.bias, bn.running_mean, bn.running_var, 0.1, 1e-5
        )[0]


def test_flagless_batch_norm_overload_is_switched_to_train():
    """Moving to train swaps the no-training overload for the training one (same momentum and
    eps): outputs use batch statistics and the running statistics update."""
    x = torch.randn(4, 3, 2, 2) * 3 + 5
    gm = torch.export.export(AtenBatchNormNoTraining().eval(), (x,)).module()
    move_exported_model_to_train(gm)
    (bn,) = [n for n in gm.graph.nodes if n.target is aten._native_batch_norm_legit.default]
    assert bn.args[5:] == (True, 0.1, 1e-5)
    y = gm(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), rtol=0, atol=1e-5)
    assert not torch.equal(gm.bn.running_mean, torch.zeros(3))


class Dropout(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(x, 0.5, training=True)


def test_training_flag_passed_by_keyword_is_warned_about():
    """A dropout node whose ``train`` flag is a keyword argument (as a graph edited by a tool
    may have it) still counts as training mode, so prepare_pt2e warns about it."""
    x = torch.randn(2, 4)
    gm = torch.export.export(Dropout(), (x,)).module()
    (dropout,) = [n for n in gm.graph.nodes if n.target is aten.dropout.default]
    inp, p, train = dropout.args
    dropout.args, dropout.kwargs = (inp,), {"p": p, "train": train}
    gm.recompile()
    with pytest.warns(TrainingModeOpWarning, match="dropout"):
        prepare_pt2e(gm, FunctionQuantizer(lambda gm: None))


class DropoutInsideCond(nn.Module):
    """cond(sum(x) > 0, dropout(x, training=True), x - 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(
            x.sum() > 0,
            lambda v: nn.functional.dropout(v, 0.5, training=True),
            lambda v: v - 1,
            (x,),
        )


def test_training_mode_op_inside_a_branch_is_warned_about():
    """prepare_pt2e's training-mode warning looks into control-flow branches too."""
    x = torch.rand(2, 4)
    gm = torch.export.export(DropoutInsideCond(), (x,)).module()
    assert aten.dropout.default not in [n.target for n in gm.graph.nodes]  # only in the body
    with pytest.warns(TrainingModeOpWarning, match="dropout"):
        prepare_pt2e(gm, FunctionQuantizer(lambda gm: None))
