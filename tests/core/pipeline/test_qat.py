"""Quantization-aware training: conv / linear + batch norm simulation at prepare, fold at convert.

The models are exported in training mode, as a QAT flow does. XNNPACK's QAT config is the
quantizer (per-channel int8 weights with fused moving-average fake-quant, int8 activations);
the X86 config covers linear + BatchNorm1d, whose output XNNPACK observes before the norm.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pt2e_quant import (
    convert_pt2e,
    move_exported_model_to_eval,
    move_exported_model_to_train,
    prepare_pt2e,
    prepare_qat_pt2e,
)
from pt2e_quant.fake_quantize import FakeQuantizeBase, disable_observer
from pt2e_quant.ops import qdq_ops
from quantizers import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from tests.core.pipeline._qat_recipe import (
    export_train,
    output_scale,
    qdq_sequence,
    train,
    unfused_xnnpack_qat,
    weight_dequantize_before_its_conv,
    x86_qat,
    xnnpack_qat,
)
from tests.graph_check import count_ops
from tests.models.qat import CONVS, ConvBn, LinearBn, SharedWeightConvs

aten = torch.ops.aten

# --- prepare: the simulation --------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("kind", sorted(CONVS))
def test_prepare_rewrites_conv_bn_into_the_scaled_weight_simulation(kind: str, bias: bool) -> None:
    model = ConvBn(kind, bias=bias)
    prepared = prepare_qat_pt2e(export_train(model), xnnpack_qat())
    nodes = {n.name: n for n in prepared.graph.nodes}
    conv = next(n for n in nodes.values() if n.op == "call_function" and "conv" in str(n.target))
    weight_fq = conv.args[1]
    assert weight_fq.op == "call_module"
    assert isinstance(prepared.get_submodule(weight_fq.target), FakeQuantizeBase)
    scaled = weight_fq.args[0]
    assert scaled.target is aten.mul.Tensor and scaled.args[0].op == "get_attr"
    # conv output goes through "/ s" (and "+ b") into the still-training batch norm
    (divide,) = conv.users
    assert divide.target is aten.div.Tensor
    bn = next(n for n in nodes.values() if n.target is aten.batch_norm.default)
    if bias:
        assert conv.args[2].target is aten.zeros_like.default
        assert bn.args[0].target is aten.add.Tensor and bn.args[0].args[0] is divide
    else:
        assert len(conv.args) < 3 or conv.args[2] is None
        assert bn.args[0] is divide
    # the layer's own batch-norm hyper-parameters survive (torchao resets eps and momentum)
    assert bn.args[5:8] == (True, 0.3, 1e-3)


def test_running_statistics_keep_updating_in_training() -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(export_train(model), xnnpack_qat())
    before = prepared.bn.running_mean.clone()
    train(prepared, model, steps=1)
    assert not torch.equal(before, prepared.bn.running_mean)
    move_exported_model_to_eval(prepared)
    frozen = prepared.bn.running_mean.clone()
    train(prepared, model, steps=1)
    assert torch.equal(frozen, prepared.bn.running_mean)


@pytest.mark.parametrize("model", [ConvBn("conv2d"), LinearBn()], ids=["conv_bn", "linear_bn"])
def test_batch_norm_of_an_eval_mode_export_trains(model: nn.Module) -> None:
    """torchao's quick start exports in eval mode before prepare_qat_pt2e; its rewrite trains
    the fused batch norm anyway, and so does ours (move_exported_model_to_eval freezes it)."""
    exported = torch.export.export(model.eval(), model.example_inputs()).module()
    quantizer = xnnpack_qat() if isinstance(model, ConvBn) else x86_qat()
    prepared = prepare_qat_pt2e(exported, quantizer)
    (bn,) = [n for n in prepared.graph.nodes if n.target is aten.batch_norm.default]
    assert bn.args[5] is True
    before = prepared.bn.running_mean.clone()
    train(prepared, model, steps=1)
    assert not torch.equal(before, prepared.bn.running_mean)


def test_training_the_prepared_model_trains_the_model_passed_in() -> None:
    """Deliberate (README, "Copies, not mutation"): like torchao, whose prepare returns the
    model it was given, QAT trains the caller's parameters and statistics, not copies."""
    model = ConvBn("conv2d")
    exported = export_train(model)
    prepared = prepare_qat_pt2e(exported, xnnpack_qat())
    weight, mean = exported.conv.weight.detach().clone(), exported.bn.running_mean.clone()
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.1)
    prepared(*model.example_inputs()).sum().backward()
    optimizer.step()
    assert not torch.equal(exported.conv.weight, weight)
    assert not torch.equal(exported.bn.running_mean, mean)
    assert exported.conv.weight is prepared.conv.weight


def test_simulation_matches_float_conv_bn_up_to_weight_quantization() -> None:
    torch.manual_seed(0)
    model = ConvBn("conv2d", act=None)
    reference = copy.deepcopy(model).train()
    prepared = prepare_qat_pt2e(export_train(model), xnnpack_qat())
    for module in prepared.modules():
        if isinstance(module, FakeQuantizeBase):
            module.disable_fake_quant()
    x = model.example_inputs()[0]
    torch.testing.assert_close(prepared(x), reference(x), rtol=1e-4, atol=1e-4)


def test_gradients_flow_and_fake_quant_scales_track_the_data() -> None:
    torch.manual_seed(0)
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(export_train(model), xnnpack_qat())
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05)
    x = torch.randn(2, 3, 8, 8)
    target = torch.rand(2, 4, 6, 6)
    output_fq = prepared.get_submodule(
        next(n for n in prepared.graph.nodes if n.op == "output").args[0][0].target
    )
    losses, scales = [], []
    for _ in range(8):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(prepared(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        scales.append(float(output_fq.scale))
    assert prepared.conv.weight.grad is not None and prepared.bn.weight.grad is not None
    assert losses[-1] < losses[0]
    assert len(set(scales)) > 1  # the moving-average observer follows the changing output


# --- convert: the fold --------------------------------------------------------------------


@pytest.mark.parametrize("act", ["relu", "hardtanh", None])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("kind", sorted(CONVS))
def test_convert_folds_bn_and_matches_ptq_structure_and_qat_eval(
    kind: str, bias: bool, act
) -> None:
    torch.manual_seed(0)
    model = ConvBn(kind, bias=bias, act=act)
    prepared = prepare_qat_pt2e(export_train(model), unfused_xnnpack_qat())
    train(prepared, model)
    prepared.apply(disable_observer)  # freeze qparams, as before evaluating a QAT model
    move_exported_model_to_eval(prepared)
    x = model.example_inputs()[0]
    qat_eval = prepared(x)
    converted = convert_pt2e(prepared)

    ops = count_ops(converted)
    assert aten.batch_norm.default not in ops and aten.add_.Tensor not in ops
    assert aten.mul.Tensor not in ops and aten.div.Tensor not in ops
    assert qdq_ops.QUANTIZE_PER_CHANNEL not in ops  # the folded weight is an int8 constant
    ptq = prepare_pt2e(
        torch.export.export(copy.deepcopy(model).eval(), (x,)).module(),
        XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)),
    )
    ptq(x)
    # the q / dq of post-training quantization, in torchao's QAT order
    ptq_sequence = qdq_sequence(convert_pt2e(ptq))
    assert ptq_sequence[0] == str(qdq_ops.DEQUANTIZE_PER_CHANNEL)
    assert weight_dequantize_before_its_conv(ptq_sequence) == qdq_sequence(converted)

    step = output_scale(converted)
    assert step is not None
    diff = (converted(x) - qat_eval).abs().max().item()
    assert diff <= step * 1.001, f"max diff {diff} exceeds one quantization step {step}"


@pytest.mark.parametrize("backend", ["xnnpack", "x86"])
def test_linear_bn_is_simulated_and_folded(backend: str) -> None:
    torch.manual_seed(0)
    model = LinearBn()
    quantizer = unfused_xnnpack_qat() if backend == "xnnpack" else x86_qat()
    prepared = prepare_qat_pt2e(export_train(model), quantizer)
    linear = next(n for n in prepared.graph.nodes if n.target is aten.linear.default)
    assert linear.args[1].args[0].target is aten.mul.Tensor
    train(prepared, model)
    prepared.apply(disable_observer)
    move_exported_model_to_eval(prepared)
    x = model.example_inputs()[0]
    qat_eval = prepared(x)
    converted = convert_pt2e(prepared)
    assert aten.batch_norm.default not in count_ops(converted)
    # XNNPACK quantizes the relu output (compare to one step); x86 leaves it float, where the
    # only difference is the folded weight's rounding
    step = output_scale(converted) or 0.02
    assert (converted(x) - qat_eval).abs().max().item() <= step * 1.001


def test_convs_sharing_one_weight_fold_into_separate_weights() -> None:
    torch.manual_seed(0)
    model = SharedWeightConvs()
    prepared = prepare_qat_pt2e(export_train(model), unfused_xnnpack_qat())
    train(prepared, model)
    prepared.apply(disable_observer)
    move_exported_model_to_eval(prepared)
    x = model.example_inputs()[0]
    qat_eval = prepared(x)
    original = prepared.weight.detach().clone()
    converted = convert_pt2e(prepared)
    assert torch.equal(prepared.weight, original)  # the prepared model is untouched
    weights = [n for n in converted.graph.nodes if n.target is qdq_ops.DEQUANTIZE_PER_CHANNEL]
    assert len(weights) == 2
    assert weights[0].args[0].target != weights[1].args[0].target
    step = output_scale(converted)
    assert (converted(x) - qat_eval).abs().max().item() <= 2 * step * 1.001


@pytest.mark.parametrize("strict", [False, True], ids=["non_strict", "strict"])
def test_both_export_modes(strict: bool) -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(export_train(model, strict=strict), xnnpack_qat())
    train(prepared, model)
    converted = convert_pt2e(prepared)
    assert aten.batch_norm.default not in count_ops(converted)


def test_convert_leaves_the_prepared_model_usable() -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(export_train(model), xnnpack_qat())
    train(prepared, model)
    graph_before = str(prepared.graph)
    convert_pt2e(prepared)
    assert str(prepared.graph) == graph_before
    train(prepared, model, steps=1)  # training can continue


# --- train / eval -------------------------------------------------------------------------


def test_train_eval_toggles_keep_hyper_parameters_and_are_idempotent() -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(export_train(model), xnnpack_qat())
    bn = next(n for n in prepared.graph.nodes if n.target is aten.batch_norm.default)
    for _ in range(2):
        move_exported_model_to_eval(prepared)
        assert bn.args[5:8] == (False, 0.3, 1e-3)
    for _ in range(2):
        move_exported_model_to_train(prepared)
        assert bn.args[5:8] == (True, 0.3, 1e-3)
