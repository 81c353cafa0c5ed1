"""The rest of the seed test_quantize_pt2e file that belongs to the core (INVENTORY section 2,
"truncated remainder"): weight folding counts, constant folding scope, metadata on folded
weights, save/load, conv_transpose + BN, train/eval guards and ``model_is_exported``.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.fx import GraphModule

import pt2e_quant.observer as our_observer
from pt2e_quant import (
    QuantizationAnnotation,
    allow_exported_model_train_eval,
    convert_pt2e,
    model_is_exported,
    prepare_pt2e,
    prepare_qat_pt2e,
)
from pt2e_quant.ops import qdq_ops
from tests.core.contract.quantizer_fixtures import (
    ConvLinearQuantizer,
    FunctionQuantizer,
    int8_specs,
)
from tests.graph_check import assert_node_occurrence, assert_node_order
from tests.models import ConvTWithBNRelu

aten = torch.ops.aten
Q = qdq_ops.QUANTIZE_PER_TENSOR
DQ = qdq_ops.DEQUANTIZE_PER_TENSOR
Q_PC = qdq_ops.QUANTIZE_PER_CHANNEL
DQ_PC = qdq_ops.DEQUANTIZE_PER_CHANNEL


def _linear_quantizer(per_channel: bool) -> ConvLinearQuantizer:
    return ConvLinearQuantizer(*int8_specs(our_observer, per_channel=per_channel))


def _quantize(model: nn.Module, inputs: tuple, quantizer) -> GraphModule:
    gm = torch.export.export(model.eval(), inputs).module()
    prepared = prepare_pt2e(gm, quantizer)
    prepared(*inputs)
    return convert_pt2e(prepared)


def test_fold_quantize_per_tensor_linear():
    converted = _quantize(nn.Linear(2, 2), (torch.randn(2, 2),), _linear_quantizer(False))
    assert_node_occurrence(converted, {Q: 2, DQ: 3})


def test_fold_quantize_per_channel_linear():
    converted = _quantize(nn.Linear(2, 2), (torch.randn(2, 2),), _linear_quantizer(True))
    assert_node_occurrence(converted, {Q: 2, DQ: 2, Q_PC: 0, DQ_PC: 1})


class LinearAndTransposedParam(nn.Module):
    """A linear plus an unrelated parameter read through ``t()``, which no quantizer touches."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.other = nn.Parameter(torch.randn(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.other.t()


def test_constants_not_feeding_a_quantize_are_not_folded():
    converted = _quantize(
        LinearAndTransposedParam(), (torch.randn(2, 2),), _linear_quantizer(False)
    )
    assert_node_occurrence(converted, {Q: 2, DQ: 3, aten.t.default: 1})


class LinearWithTransposedWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight.t())


def test_every_op_between_weight_and_quantize_is_folded():
    converted = _quantize(
        LinearWithTransposedWeight(), (torch.randn(2, 2),), _linear_quantizer(False)
    )
    assert_node_occurrence(converted, {Q: 2, DQ: 3, aten.t.default: 0})


def test_folded_weight_keeps_the_original_weight_metadata():
    model = nn.Linear(2, 2).eval()
    inputs = (torch.randn(2, 2),)
    gm = torch.export.export(model, inputs).module()
    weight = next(n for n in gm.graph.nodes if n.op == "get_attr" and n.target == "weight")
    weight.meta["stack_trace"] = "the weight's stack trace"
    prepared = prepare_pt2e(gm, _linear_quantizer(False))
    prepared(*inputs)
    converted = convert_pt2e(prepared)
    (linear,) = [n for n in converted.graph.nodes if n.target == aten.linear.default]
    folded = linear.args[1].args[0]
    assert folded.op == "get_attr" and folded.target.startswith("_frozen_param")
    assert folded.meta["stack_trace"] == "the weight's stack trace"


def test_save_load_round_trip_is_bit_identical():
    inputs = (torch.randn(2, 2),)
    converted = _quantize(nn.Linear(2, 2), inputs, _linear_quantizer(True))
    program = torch.export.export(converted, inputs)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    assert torch.equal(loaded.module()(*inputs), converted(*inputs))


def _annotate_conv_transpose_relu(gm: GraphModule) -> None:
    act, weight = int8_specs(our_observer, per_channel=False)
    for relu in [n for n in gm.graph.nodes if n.target == aten.relu.default]:
        conv = relu.args[0]
        if conv.target != aten.conv_transpose2d.input:
            continue
        conv.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={conv.args[0]: act, conv.args[1]: weight}, _annotated=True
        )
        relu.meta["quantization_annotation"] = QuantizationAnnotation(
            output_qspec=act, _annotated=True
        )


def test_conv_transpose_bn_relu_folds_bn_in_ptq():
    model = ConvTWithBNRelu(dim=2, bn=True, relu=True)
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.running_mean.uniform_(-1, 1)
    inputs = model.example_inputs()
    converted = _quantize(model, inputs, FunctionQuantizer(_annotate_conv_transpose_relu))
    assert_node_occurrence(converted, {Q: 2, DQ: 3, aten.batch_norm.default: 0})
    assert_node_order(converted, [DQ, DQ, aten.conv_transpose2d.input, aten.relu.default, Q])
    torch.testing.assert_close(converted(*inputs), model.eval()(*inputs), atol=0.1, rtol=0.1)


def _no_annotation(gm: GraphModule) -> None:
    return None


@pytest.mark.parametrize("stage", ["export", "prepare_qat", "convert"])
def test_train_eval_raise_on_exported_prepared_and_converted(stage):
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    inputs = (torch.randn(2, 2),)
    gm = torch.export.export(model, inputs).module()
    if stage != "export":
        gm = prepare_qat_pt2e(gm, FunctionQuantizer(_no_annotation))
    if stage == "convert":
        gm = convert_pt2e(gm)
    with pytest.raises(NotImplementedError):
        gm.eval()
    with pytest.raises(NotImplementedError):
        gm.train()


def test_allowed_train_eval_recompiles_only_when_the_mode_changes():
    gm = torch.export.export(nn.Dropout(0.5).eval(), (torch.randn(4),)).module()
    allow_exported_model_train_eval(gm)
    gm.eval()
    forward = type(gm).forward
    gm.eval()
    assert type(gm).forward is forward
    gm.train()
    assert type(gm).forward is not forward


def test_model_is_exported():
    model = nn.Linear(2, 2)
    inputs = (torch.randn(1, 2),)
    assert model_is_exported(torch.export.export(model, inputs).module())
    assert not model_is_exported(torch.fx.symbolic_trace(model))
    assert not model_is_exported(model)
