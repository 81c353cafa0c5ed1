"""BatchNorm folding: every layer kind, shared weights, unfoldable cases, peer-identical numbers."""

from __future__ import annotations

import operator
import warnings

import pytest
import torch
from torch import nn

from pt2e_quant import prepare_pt2e
from pt2e_quant.graph.conv_batch_norm import store_constant
from pt2e_quant.graph.copy_module import copy_graph_module
from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.fold_batch_norm import (
    BatchNormInTrainingModeWarning,
    BatchNormNotFoldedWarning,
    fold_batch_norm,
)
from pt2e_quant.pipeline.train_eval import TrainingModeOpWarning
from tests.core.contract.quantizer_fixtures import FunctionQuantizer

aten = torch.ops.aten
BATCH_NORM_OPS = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}


def _randomize_bn(bn: nn.modules.batchnorm._BatchNorm) -> None:
    with torch.no_grad():
        if bn.track_running_stats:
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        if bn.affine:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)


class LayerBn(nn.Module):
    def __init__(self, layer: nn.Module, bn: nn.Module) -> None:
        super().__init__()
        self.layer, self.bn = layer, bn
        _randomize_bn(bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.layer(x)))


CASES = {
    "conv1d": (lambda: LayerBn(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4)), (2, 3, 8)),
    "conv2d_no_bias": (
        lambda: LayerBn(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)),
        (2, 3, 6, 6),
    ),
    "conv2d_depthwise": (
        lambda: LayerBn(nn.Conv2d(4, 4, 3, groups=4), nn.BatchNorm2d(4)),
        (2, 4, 6, 6),
    ),
    "conv3d": (lambda: LayerBn(nn.Conv3d(2, 3, 2), nn.BatchNorm3d(3)), (1, 2, 4, 4, 4)),
    "conv_transpose2d": (
        lambda: LayerBn(nn.ConvTranspose2d(3, 4, 2), nn.BatchNorm2d(4)),
        (2, 3, 5, 5),
    ),
    "conv_transpose2d_groups": (
        lambda: LayerBn(nn.ConvTranspose2d(4, 6, 2, groups=2), nn.BatchNorm2d(6)),
        (2, 4, 5, 5),
    ),
    "conv_transpose1d": (
        lambda: LayerBn(nn.ConvTranspose1d(3, 2, 3), nn.BatchNorm1d(2)),
        (2, 3, 7),
    ),
    "linear": (lambda: LayerBn(nn.Linear(5, 4), nn.BatchNorm1d(4)), (3, 5)),
    "linear_no_bias_no_affine": (
        lambda: LayerBn(nn.Linear(5, 4, bias=False), nn.BatchNorm1d(4, affine=False)),
        (3, 5),
    ),
}


def _export(model: nn.Module, shape: tuple[int, ...]):
    torch.manual_seed(0)
    x = torch.randn(shape)
    return torch.export.export(model.eval(), (x,)).module(), x


def _bn_count(gm: torch.fx.GraphModule) -> int:
    return sum(n.op == "call_function" and n.target in BATCH_NORM_OPS for n in gm.graph.nodes)


@pytest.mark.parametrize("case", sorted(CASES))
def test_batch_norm_folds_and_keeps_outputs(case):
    factory, shape = CASES[case]
    torch.manual_seed(1)
    gm, x = _export(factory(), shape)
    expected = gm(x)
    folded = copy_graph_module(gm)
    assert run_pass(folded, fold_batch_norm)
    assert _bn_count(folded) == 0 and _bn_count(gm) == 1
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
    # The original model, which shares tensors with the copy, is untouched.
    torch.testing.assert_close(gm(x), expected, rtol=0, atol=0)


def test_folded_weights_match_torch_fusion_bit_for_bit():
    torch.manual_seed(2)
    model = LayerBn(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3))
    gm, _ = _export(model, (1, 3, 5, 5))
    folded = copy_graph_module(gm)
    run_pass(folded, fold_batch_norm)
    w, b = torch.nn.utils.fusion.fuse_conv_bn_weights(
        model.layer.weight,
        model.layer.bias,
        model.bn.running_mean,
        model.bn.running_var,
        model.bn.eps,
        model.bn.weight,
        model.bn.bias,
    )
    assert torch.equal(folded.layer.weight, w) and torch.equal(folded.layer.bias, b)


class SharedWeightConvs(nn.Module):
    """One conv weight used twice: with its own batch norm each, and once with none."""

    def __init__(self, second_bn: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn1 = nn.BatchNorm2d(3)
        self.bn2 = nn.BatchNorm2d(3) if second_bn else nn.Identity()
        for bn in (self.bn1, self.bn2):
            if isinstance(bn, nn.BatchNorm2d):
                _randomize_bn(bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv(x)) + self.bn2(self.conv(x))


@pytest.mark.parametrize("second_bn", [True, False])
def test_shared_weight_each_conv_gets_its_own_fold(second_bn):
    torch.manual_seed(3)
    gm, x = _export(SharedWeightConvs(second_bn), (2, 3, 4, 4))
    expected = gm(x)
    folded = copy_graph_module(gm)
    run_pass(folded, fold_batch_norm)
    assert _bn_count(folded) == 0
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
    convs = [n for n in folded.graph.nodes if n.target is aten.conv2d.default]
    weights = {str(conv.args[1].target) for conv in convs}
    assert len(weights) == 2


def test_training_mode_batch_norm_folds_with_running_stats_and_warns():
    torch.manual_seed(4)
    model = LayerBn(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    x = torch.randn(2, 3, 4, 4)
    gm = torch.export.export(model.train(), (x,)).module()
    folded = copy_graph_module(gm)
    with pytest.warns(BatchNormInTrainingModeWarning, match="batch_norm"):
        run_pass(folded, fold_batch_norm)
    assert _bn_count(folded) == 0
    # the folded layer's num_batches_tracked increment goes too (a buffer mutation no
    # backend delegates), and with it the batch norm's state; the user's counter is untouched
    assert aten.add_.Tensor not in {n.target for n in folded.graph.nodes}
    assert not hasattr(folded, "bn")
    before = gm.bn.num_batches_tracked.clone()
    torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(gm.bn.num_batches_tracked, before)


def test_training_mode_batch_norm_warning_is_a_training_mode_op_warning():
    """One filter on TrainingModeOpWarning (what docs/behaviour.md names) silences every
    training-mode warning of a real prepare, the folded batch norm's included."""
    assert issubclass(BatchNormInTrainingModeWarning, TrainingModeOpWarning)
    model = LayerBn(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    gm = torch.export.export(model.train(), (torch.randn(2, 3, 4, 4),)).module()
    quantizer = FunctionQuantizer(lambda gm: None)
    with warnings.catch_warnings(record=True) as unfiltered:
        warnings.simplefilter("always")
        prepare_pt2e(copy_graph_module(gm), quantizer)
    assert BatchNormInTrainingModeWarning in {w.category for w in unfiltered}
    with warnings.catch_warnings(record=True) as filtered:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=TrainingModeOpWarning)
        prepare_pt2e(copy_graph_module(gm), quantizer)
    assert [w for w in filtered if issubclass(w.category, TrainingModeOpWarning)] == []


def test_batch_norm_without_running_stats_is_left_with_a_warning():
    model = LayerBn(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))
    gm, x = _export(model, (2, 3, 4, 4))
    folded = copy_graph_module(gm)
    with pytest.warns(BatchNormNotFoldedWarning, match="track_running_stats=False"):
        assert not run_pass(folded, fold_batch_norm)
    assert _bn_count(folded) == 1


def test_conv_output_read_twice_is_not_folded():
    class ConvBnAndSkip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    gm, x = _export(ConvBnAndSkip(), (1, 3, 4, 4))
    expected = gm(x)
    with pytest.warns(BatchNormNotFoldedWarning, match="also read"):
        assert not run_pass(gm, fold_batch_norm)
    torch.testing.assert_close(gm(x), expected, rtol=0, atol=0)


class ConvAtenBatchNorm(nn.Module):
    """Calls the aten batch norm directly: export keeps its statistic outputs as getitems."""

    def __init__(self, read_mean: bool) -> None:
        super().__init__()
        self.conv, self.bn, self.read_mean = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), read_mean
        _randomize_bn(self.bn)

    def forward(self, x):
        bn = self.bn
        out, mean, _ = aten._native_batch_norm_legit_no_training(
            self.conv(x), bn.weight, bn.bias, bn.running_mean, bn.running_var, 0.1, 1e-5
        )
        return (out, mean) if self.read_mean else out


def test_unread_statistic_outputs_do_not_stop_folding():
    gm, x = _export(ConvAtenBatchNorm(read_mean=False), (2, 3, 6, 6))
    statistics = [n for n in gm.graph.nodes if n.target is operator.getitem and n.args[1] != 0]
    assert statistics and not any(n.users for n in statistics)  # the case under test
    expected = gm(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchNormNotFoldedWarning)
        assert run_pass(gm, fold_batch_norm)
    assert _bn_count(gm) == 0
    torch.testing.assert_close(gm(x), expected, rtol=1e-5, atol=1e-5)


def test_read_statistic_output_keeps_the_batch_norm_with_a_warning():
    gm, x = _export(ConvAtenBatchNorm(read_mean=True), (2, 3, 6, 6))
    expected = gm(x)
    with pytest.warns(BatchNormNotFoldedWarning, match="saved mean / inverse std"):
        assert not run_pass(gm, fold_batch_norm)
    assert _bn_count(gm) == 1
    for got, want in zip(gm(x), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_weight_passed_as_input_is_not_folded():
    class FunctionalConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x, w):
            return self.bn(torch.nn.functional.conv2d(x, w))

    x, w = torch.randn(1, 3, 4, 4), torch.randn(2, 3, 1, 1)
    gm = torch.export.export(FunctionalConv().eval(), (x, w)).module()
    with pytest.warns(BatchNormNotFoldedWarning, match="weight"):
        assert not run_pass(gm, fold_batch_norm)


def test_no_batch_norm_is_a_no_op_without_warnings():
    gm, _ = _export(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()), (1, 3, 4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not run_pass(gm, fold_batch_norm)


def test_batch_norm_after_non_layer_is_ignored():
    gm, _ = _export(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)), (1, 3, 4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not run_pass(gm, fold_batch_norm)
    assert _bn_count(gm) == 1


def test_linear_on_3d_input_keeps_batch_norm():
    class Linear3d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x):
            return self.bn(self.linear(x))  # normalizes dim 1 (sequence), not the features

    gm, _ = _export(Linear3d(), (2, 4, 4))
    with pytest.warns(BatchNormNotFoldedWarning, match="channel dimension"):
        assert not run_pass(gm, fold_batch_norm)


def test_folded_layer_takes_the_batch_norm_debug_handle():
    """The folded conv computes the batch norm's output, so the numeric debugger must compare it
    with the float batch norm: the layer inherits that node's handle."""
    from pt2e_quant.debug import generate_numeric_debug_handle
    from pt2e_quant.graph.node_meta import get_debug_handle

    torch.manual_seed(3)
    model = LayerBn(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    ep = torch.export.export(model, (torch.randn(1, 3, 5, 5),))
    generate_numeric_debug_handle(ep)
    gm = ep.module()
    (bn,) = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in BATCH_NORM_OPS]
    (conv,) = [n for n in gm.graph.nodes if n.target is aten.conv2d.default]
    assert get_debug_handle(conv) != get_debug_handle(bn)
    bn_handle = get_debug_handle(bn)
    run_pass(gm, fold_batch_norm)
    (folded,) = [n for n in gm.graph.nodes if n.target is aten.conv2d.default]
    assert get_debug_handle(folded) == bn_handle


def _describes(node: torch.fx.Node, value: torch.Tensor) -> bool:
    fake = node.meta.get("val")
    return (
        isinstance(fake, torch.Tensor)
        and hasattr(fake, "fake_mode")
        and (fake.shape, fake.dtype, fake.stride()) == (value.shape, value.dtype, value.stride())
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_folded_constants_carry_fake_values_that_describe_them(case):
    """Later passes and lowering read shapes and dtypes from ``meta["val"]``; a new bias (the
    layer had none) gets one too, reused from the batch norm's statistics when it fits."""
    factory, shape = CASES[case]
    gm, _ = _export(factory(), shape)
    folded = copy_graph_module(gm)
    run_pass(folded, fold_batch_norm)
    layer = next(n for n in folded.graph.nodes if n.op == "call_function" and len(n.args) > 2)
    for constant in layer.args[1:3]:
        assert constant.op == "get_attr", case
        assert _describes(constant, folded.get_parameter(str(constant.target))), constant


def test_new_constant_without_a_reusable_fake_gets_one_from_its_value():
    gm, _ = _export(CASES["conv2d_no_bias"][0](), CASES["conv2d_no_bias"][1])
    conv = next(n for n in gm.graph.nodes if n.target == aten.conv2d.default)
    value = torch.randn(4, dtype=torch.float64)
    stored = store_constant(
        gm, value, template=None, owners={conv}, readers={}, before=conv, fake_like=None
    )
    assert _describes(stored, value)
    # A fake of the wrong dtype is not reused.
    mean = next(n for n in gm.graph.nodes if "running_mean" in str(n.target))
    other = store_constant(
        gm, value, template=None, owners={conv}, readers={}, before=conv, fake_like=mean
    )
    assert _describes(other, value) and other.meta["val"] is not mean.meta["val"]
