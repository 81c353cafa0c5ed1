"""Train/eval switching and training-mode detection for the less common op spellings.

``move_exported_model_to_eval`` / ``_to_train`` must reach every dropout and batch-norm
overload an export can record, and prepare's training-mode warning must see a flag however
the node passes it; otherwise a model silently keeps dropping activations at random or
normalizing with the wrong statistics after quantization.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pt2e_quant import move_exported_model_to_eval, move_exported_model_to_train, prepare_pt2e
from pt2e_quant.pipeline.train_eval import TrainingModeOpWarning
from tests.core.contract.quantizer_fixtures import FunctionQuantizer

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


class AtenBatchNormCall(nn.Module):
    """Calls a batch-norm overload that has no training flag (its name says the mode):
    ``op(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5)[0]``."""

    def __init__(self, op, channels: int) -> None:
        super().__init__()
        self.op = op
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        return self.op(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, 0.1, 1e-5)[0]


def test_flagless_batch_norm_overload_is_switched_to_train():
    """Moving to train swaps the no-training overload for the training one (same momentum and
    eps): outputs use batch statistics and the running statistics update."""
    x = torch.randn(4, 3, 2, 2) * 3 + 5
    model = AtenBatchNormCall(aten._native_batch_norm_legit_no_training, 3)
    gm = torch.export.export(model.eval(), (x,)).module()
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


# Every spelling of a moded op an export can record, each with the eager model's own behaviour
# as the oracle: an exported model moved to eval (train) must compute what the eager model
# computes after .eval() (.train()), random draws included under the same seed.
_aten_native_dropout = aten.native_dropout.default


class Spelling(nn.Module):
    """x -> layer(x) + 0, the layer being one spelling of a dropout / RReLU / normalization."""

    def __init__(self, layer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the add makes in-place spellings write into an intermediate, not the model input
        return self.layer(x + 0)


class NativeDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _aten_native_dropout(x, 0.5, self.training)[0]


class InplaceFunctional(nn.Module):
    """``function(x, 0.5, training, inplace=True)``: nn.AlphaDropout / FeatureAlphaDropout
    ignore their ``inplace`` argument, the functional forms do not."""

    def __init__(self, function) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x, 0.5, self.training, inplace=True)


SPELLINGS = {
    "dropout_": (lambda: nn.Dropout(0.5, inplace=True), aten.dropout_.default),
    "F.dropout_": (
        lambda: InplaceFunctional(nn.functional.dropout),
        aten.dropout_.default,
    ),
    "feature_dropout": (lambda: nn.Dropout2d(0.5), aten.feature_dropout.default),
    "feature_dropout_": (lambda: nn.Dropout2d(0.5, inplace=True), aten.feature_dropout_.default),
    "alpha_dropout": (lambda: nn.AlphaDropout(0.5), aten.alpha_dropout.default),
    "alpha_dropout_": (
        lambda: InplaceFunctional(nn.functional.alpha_dropout),
        aten.alpha_dropout_.default,
    ),
    "feature_alpha_dropout": (
        lambda: nn.FeatureAlphaDropout(0.5),
        aten.feature_alpha_dropout.default,
    ),
    "feature_alpha_dropout_": (
        lambda: InplaceFunctional(nn.functional.feature_alpha_dropout),
        aten.feature_alpha_dropout_.default,
    ),
    "native_dropout": (NativeDropout, _aten_native_dropout),
    "rrelu": (lambda: nn.RReLU(), aten.rrelu.default),
    "rrelu_": (lambda: nn.RReLU(inplace=True), aten.rrelu_.default),
    "batch_norm": (lambda: nn.BatchNorm2d(4, momentum=0.3), aten.batch_norm.default),
    "instance_norm": (
        lambda: nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
        aten.instance_norm.default,
    ),
}


def _spelling_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = Spelling(SPELLINGS[name][0]())
    for buffer_name, buffer in model.named_buffers():
        if "running" in buffer_name:  # running statistics far from the batch's own
            buffer.copy_(torch.rand_like(buffer) + 2)
    return model


def _eager(model: nn.Module, training: bool, x: torch.Tensor, seed: int) -> torch.Tensor:
    model = copy.deepcopy(model).train(training)
    torch.manual_seed(seed)
    return model(x)


def _graph(gm: torch.fx.GraphModule, x: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return copy.deepcopy(gm)(x)


@pytest.mark.parametrize("name", sorted(SPELLINGS))
@pytest.mark.parametrize("exported_training", [True, False], ids=["from_train", "from_eval"])
def test_every_spelling_follows_the_switch_both_ways(name: str, exported_training: bool):
    model = _spelling_model(name)
    x = torch.randn(2, 4, 3, 3)
    gm = torch.export.export(copy.deepcopy(model).train(exported_training), (x,)).module()
    assert SPELLINGS[name][1] in [n.target for n in gm.graph.nodes]
    moves = [move_exported_model_to_eval, move_exported_model_to_train]
    if not exported_training:
        moves.reverse()
    for move in moves + moves:  # there and back, twice
        move(gm)
        training = move is move_exported_model_to_train
        torch.testing.assert_close(
            _graph(gm, x, seed=1), _eager(model, training, x, seed=1), rtol=0, atol=0
        )


@pytest.mark.parametrize("name", ["batch_norm", "instance_norm"])
def test_normalization_moved_to_train_updates_running_stats_as_eager(name: str):
    model = _spelling_model(name)
    x = torch.randn(2, 4, 3, 3)
    gm = torch.export.export(copy.deepcopy(model).eval(), (x,)).module()
    move_exported_model_to_train(gm)
    eager = copy.deepcopy(model).train()
    gm(x)
    eager(x)
    torch.testing.assert_close(gm.layer.running_mean, eager.layer.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(gm.layer.running_var, eager.layer.running_var, rtol=0, atol=0)


def test_decomposed_training_batch_norm_follows_the_switch():
    """``run_decompositions`` turns a training batch norm into
    ``_native_batch_norm_legit_functional``, whose flag must follow the switch too."""
    model = _spelling_model("batch_norm")
    x = torch.randn(2, 4, 3, 3)
    ep = torch.export.export(copy.deepcopy(model).train(), (x,)).run_decompositions()
    gm = ep.module()
    targets = [n.target for n in gm.graph.nodes]
    assert aten._native_batch_norm_legit_functional.default in targets
    move_exported_model_to_eval(gm)
    torch.testing.assert_close(gm(x), copy.deepcopy(model).eval()(x), rtol=0, atol=1e-6)
    move_exported_model_to_train(gm)
    torch.testing.assert_close(gm(x), copy.deepcopy(model).train()(x), rtol=0, atol=1e-6)


def test_flagless_update_overloads_swap_both_ways():
    x = torch.randn(4, 4, 2, 2) * 3 + 5
    model = AtenBatchNormCall(aten._batch_norm_with_update, 4)
    gm = torch.export.export(model, (x,)).module()
    assert aten._batch_norm_with_update.default in [n.target for n in gm.graph.nodes]
    move_exported_model_to_eval(gm)
    targets = [n.target for n in gm.graph.nodes]
    assert aten._batch_norm_no_update.default in targets
    assert aten._batch_norm_with_update.default not in targets
    torch.testing.assert_close(gm(x), x / (1 + 1e-5) ** 0.5)  # fresh running stats: 0 and 1
    move_exported_model_to_train(gm)
    assert aten._batch_norm_with_update.default in [n.target for n in gm.graph.nodes]
    torch.testing.assert_close(gm(x).mean((0, 2, 3)), torch.zeros(4), rtol=0, atol=1e-5)


def test_decomposed_dropout_cannot_be_switched_and_says_so():
    """After ``run_decompositions`` a training in-place dropout is a bernoulli mask (the
    functional one stays ``native_dropout``, switched above): moving to eval cannot reach it, and
    warns naming the mask instead of leaving it random silently."""
    model = Spelling(nn.Dropout(0.5, inplace=True))
    x = torch.randn(2, 4, 3, 3)
    gm = torch.export.export(model.train(), (x,)).run_decompositions().module()
    with pytest.warns(TrainingModeOpWarning, match="bernoulli.*run_decompositions"):
        move_exported_model_to_eval(gm)
