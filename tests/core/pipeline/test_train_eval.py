"""Train/eval switching of exported models: flags flipped, hyper-parameters kept, idempotent."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from pt2e_quant import (
    allow_exported_model_train_eval,
    move_exported_model_to_eval,
    move_exported_model_to_train,
    prepare_pt2e,
)
from pt2e_quant.pipeline.train_eval import TrainingModeOpWarning
from tests.core.contract.quantizer_fixtures import FunctionQuantizer

aten = torch.ops.aten


class DropoutBatchNorm(nn.Module):
    """Dropout and batch norm with non-default hyper-parameters, which must survive toggling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4, momentum=0.3, eps=1e-3)
        self.dropout = nn.Dropout(0.25)
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.bn(self.conv(x))).mean((2, 3))
        return self.linear(y)


def _export(training: bool) -> torch.fx.GraphModule:
    model = DropoutBatchNorm().train(training)
    return torch.export.export(model, (torch.randn(2, 3, 4, 4),)).module()


def _calls(gm: torch.fx.GraphModule, target) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is target]


def _dropout_flag(gm: torch.fx.GraphModule) -> bool:
    (dropout,) = _calls(gm, aten.dropout.default)
    return dropout.args[2]


def _flags(gm: torch.fx.GraphModule) -> tuple[bool, bool]:
    (bn,) = _calls(gm, aten.batch_norm.default)
    (dropout,) = _calls(gm, aten.dropout.default)
    return bn.args[5], dropout.args[2]


def test_move_to_eval_flips_flags_and_keeps_hyper_parameters():
    gm = _export(training=True)
    assert _flags(gm) == (True, True)
    assert move_exported_model_to_eval(gm) is gm
    assert _flags(gm) == (False, False)
    (bn,) = _calls(gm, aten.batch_norm.default)
    (dropout,) = _calls(gm, aten.dropout.default)
    assert bn.args[6:8] == (0.3, 1e-3)
    assert dropout.args[1] == 0.25
    assert gm.training is False


def test_move_to_train_flips_flags_back():
    gm = _export(training=False)
    move_exported_model_to_train(gm)
    assert _flags(gm) == (True, True)
    move_exported_model_to_eval(gm)
    assert _flags(gm) == (False, False)


def test_moves_are_idempotent_and_change_behaviour():
    torch.manual_seed(0)
    gm = _export(training=True)
    x = torch.randn(2, 3, 4, 4)
    move_exported_model_to_eval(gm)
    code = gm.code
    move_exported_model_to_eval(gm)
    assert gm.code == code
    # Eval: deterministic, running stats untouched.
    mean_before = gm.bn.running_mean.clone()
    torch.testing.assert_close(gm(x), gm(x), rtol=0, atol=0)
    torch.testing.assert_close(gm.bn.running_mean, mean_before, rtol=0, atol=0)
    # Train: dropout makes two calls differ and batch norm updates its running mean.
    move_exported_model_to_train(gm)
    outputs = [gm(x) for _ in range(4)]
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])
    assert not torch.equal(gm.bn.running_mean, mean_before)


def test_exported_model_train_eval_raise_until_allowed():
    gm = prepare_pt2e(_export(training=False), FunctionQuantizer(lambda m: None))
    with pytest.raises(NotImplementedError, match="move_exported_model_to_eval"):
        gm.eval()
    with pytest.raises(NotImplementedError, match="allow_exported_model_train_eval"):
        gm.train()
    allow_exported_model_train_eval(gm)
    # prepare folded the batch norm; dropout is what is left to switch.
    gm.train()
    assert _dropout_flag(gm) is True
    gm.eval()
    assert _dropout_flag(gm) is False
    gm.train()
    gm.train(False)
    assert _dropout_flag(gm) is False


def test_batch_norm_inside_cond_body_is_switched():
    class CondBn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cond(x.sum() > 0, lambda t: self.bn(t), lambda t: t * 2, (x,))

    gm = torch.export.export(CondBn().eval(), (torch.randn(4, 3),)).module()
    move_exported_model_to_train(gm)
    flags = [
        n.args[5]
        for body in gm.modules()
        if isinstance(body, torch.fx.GraphModule)
        for n in _calls(body, aten.batch_norm.default)
    ]
    assert flags == [True]


def test_not_exported_model_is_rejected():
    with pytest.raises(TypeError, match="torch.export"):
        move_exported_model_to_eval(nn.Linear(2, 2))


class BatchStatisticsOnly(nn.Module):
    """conv ─ BatchNorm2d(track_running_stats=False): batch statistics in eval mode too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_without_running_stats_has_no_mode_to_switch(training):
    """Its flag stays as exported: set to eval, torch refuses to run it ("running_mean must
    be defined"), and eager eval uses batch statistics anyway. No PTQ warning either."""
    model = BatchStatisticsOnly().train(training)
    x = torch.randn(2, 3, 4, 4)
    gm = torch.export.export(model, (x,)).module()
    move_exported_model_to_eval(gm)
    assert torch.allclose(gm(x), model.eval()(x), atol=1e-6)
    move_exported_model_to_train(gm)
    assert torch.allclose(gm(x), model.train()(x), atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingModeOpWarning)
        prepare_pt2e(gm, FunctionQuantizer(lambda gm: None))
