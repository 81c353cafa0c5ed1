"""XNNPACKQuantizer patterns: the q/dq structure each rule yields, per preset.

XNNPACK runs an op in int8 only when the partitioner sees the exact q/dq shape it expects
around it: inputs and output quantized, a fused relu quantized after the relu and not
between, pools and views sharing their producer's qparams, cat inputs and output sharing one
scale. A q/dq pair out of place is an op left undelegated, so these tests pin counts, order
and shared scales on one tiny model per rule, under static, dynamic, weight-only and QAT
configs. Where we differ from ExecuTorch's quantizer on purpose, the test says why.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx import Node

from pt2e_quant import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from pt2e_quant.fake_quantize import FusedMovingAvgObsFakeQuantize
from pt2e_quant.observer import ObserverBase, PerChannelMinMaxObserver
from quantizers.config import QuantizationConfig
from quantizers.xnnpack.quantizer import get_symmetric_quantization_config
from tests.graph_check import assert_node_occurrence, assert_node_order, count_ops
from tests.models import ConvTWithBNRelu
from tests.models.xnnpack_patterns import (
    IMAGE,
    SHARED_QPARAM_CASES,
    X4,
    Binary,
    CatOfConvs,
    ComputedWeight,
    ConvModel,
    ConvPoolHead,
    LinearModel,
    NonFloat32Binary,
    SharedQParamOp,
)
from tests.quantizers.xnnpack._xnnpack_quantize import (
    CHOOSE,
    DQ,
    DQ_CH,
    DQ_DYN,
    DYNAMIC,
    PER_CHANNEL,
    PER_TENSOR,
    Q_DYN,
    QAT,
    Q,
    aten,
    call_nodes,
    global_quantizer,
    input_scale,
    output_scale,
    prepare,
    quantize,
    weight_dq,
)

# ----------------------------------------------------------------------------- patterns


def test_linear() -> None:
    m = quantize(LinearModel(), X4, global_quantizer(PER_TENSOR))
    assert_node_occurrence(m, {Q: 2, DQ: 3})
    assert_node_order(m, [DQ, DQ, aten.linear.default, Q, DQ])


def test_linear_relu_quantizes_only_the_relu_output() -> None:
    m = quantize(LinearModel(relu=True), X4, global_quantizer(PER_TENSOR))
    assert_node_occurrence(m, {Q: 2, DQ: 3})
    assert_node_order(m, [DQ, DQ, aten.linear.default, aten.relu.default, Q, DQ])


@pytest.mark.parametrize("dim", [1, 2])
def test_conv_relu_per_channel(dim: int) -> None:
    model = ConvModel(relu=True, dim=dim)
    m = quantize(model, model.example_inputs(), global_quantizer(PER_CHANNEL))
    conv = aten.conv1d.default if dim == 1 else aten.conv2d.default
    assert_node_occurrence(m, {Q: 2, DQ: 2, DQ_CH: 1})
    assert_node_order(m, [DQ_CH, Q, DQ, conv, aten.relu.default, Q, DQ])
    assert weight_dq(call_nodes(m, conv)[0]).args[3] == 0  # channel axis


def test_conv_transpose_weights_are_per_channel_along_axis_1() -> None:
    model = ConvModel(transpose=True)
    m = quantize(model, model.example_inputs(), global_quantizer(PER_CHANNEL))
    assert_node_occurrence(m, {Q: 2, DQ: 2, DQ_CH: 1})
    assert weight_dq(call_nodes(m, aten.conv_transpose2d.input)[0]).args[3] == 1


def test_grouped_conv_transpose_stays_float() -> None:
    model = ConvModel(transpose=True, groups=2)
    m = quantize(model, model.example_inputs(), global_quantizer(PER_CHANNEL))
    assert_node_occurrence(m, {Q: 0, DQ: 0, DQ_CH: 0})


@pytest.mark.parametrize("op", [torch.add, torch.mul], ids=["add", "mul"])
@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
def test_binary_ops(op, relu: bool) -> None:
    m = quantize(
        Binary(op, relu), (torch.randn(2, 3), torch.randn(2, 3)), global_quantizer(PER_TENSOR)
    )
    assert_node_occurrence(m, {Q: 3, DQ: 3})
    target = aten.add.Tensor if op is torch.add else aten.mul.Tensor
    # each operand is quantized and dequantized in turn (the order convert and the peer emit)
    expected = [Q, DQ, Q, DQ, target, *([aten.relu.default] if relu else []), Q, DQ]
    assert_node_order(m, expected)
    if relu:  # the add/mul output itself stays float: the relu's output is quantized
        (node,) = call_nodes(m, target)
        assert [u.target for u in node.users] == [aten.relu.default]


def test_scalar_operand_becomes_a_quantized_constant() -> None:
    m = quantize(
        Binary(lambda x, y: x * y + 1.0),
        (torch.randn(2, 3), torch.randn(2, 3)),
        global_quantizer(PER_TENSOR),
    )
    (add,) = call_nodes(m, aten.add.Tensor)
    assert all(isinstance(a, Node) and a.target is DQ for a in add.args)
    assert_node_occurrence(m, {aten.add.Tensor: 1, aten.mul.Tensor: 1})


def test_huge_constant_operand_is_left_float() -> None:
    # torch.histc cannot bin such values, so ExecuTorch leaves the add float as well
    m = quantize(
        Binary(lambda x, y: x + 1e20),
        (torch.randn(2, 3), torch.randn(2, 3)),
        global_quantizer(PER_TENSOR),
    )
    assert_node_occurrence(m, {Q: 0, DQ: 0})


def test_integer_scalar_add_is_not_lifted() -> None:
    """ExecuTorch would turn the ``1`` into a float tensor, silently promoting the result."""

    class Count(nn.Module):
        def forward(self, x, n):
            return x * 2.0, n + 1

    inputs = (torch.randn(3), torch.tensor(3))
    exported = torch.export.export(Count(), inputs).module()
    prepared = prepare_pt2e(exported, global_quantizer(PER_TENSOR))
    (int_add,) = call_nodes(prepared, aten.add.Tensor)
    assert int_add.args[1] == 1
    assert prepared(*inputs)[1].dtype == torch.int64


def test_cat_inputs_and_output_share_qparams() -> None:
    m = quantize(CatOfConvs(), IMAGE, global_quantizer(PER_TENSOR))
    (cat,) = call_nodes(m, aten.cat.default)
    assert input_scale(cat, 0) == input_scale(cat, 1) == output_scale(cat)
    # one q per conv output (shared qparams) plus input and cat output
    assert_node_occurrence(m, {Q: 4})


def test_pools_and_views_share_their_producers_qparams() -> None:
    m = quantize(ConvPoolHead(), IMAGE, global_quantizer(PER_TENSOR))
    conv_scale = output_scale(call_nodes(m, aten.conv2d.default)[0])
    views = (aten.max_pool2d.default, aten.adaptive_avg_pool2d.default, aten.flatten.using_ints)
    for op in (*views, aten.unsqueeze.default):
        (node,) = call_nodes(m, op)
        assert input_scale(node) == output_scale(node) == conv_scale, op
    # Deliberate difference from ExecuTorch, which leaves unsqueeze float so the linear
    # re-quantizes a pure view with its own qparams: ours shares, and the linear reads the
    # conv's qparams unchanged.
    assert input_scale(call_nodes(m, aten.linear.default)[0]) == conv_scale


@pytest.mark.parametrize("name", sorted(SHARED_QPARAM_CASES))
def test_qparam_sharing_op_reuses_its_producers_observer_and_qparams(name: str) -> None:
    """XNNPACK runs a view, pool, relu or dropout on integers only when its input and output
    carry its producer's qparams (no requantize). So prepare must give the op's input and
    output the producer's observer (one module, not an equal copy: for pure views an equal
    copy would even give equal numbers, hiding a lost share), and after convert the op must
    read the producer's own quantize through a dequantize and feed a quantize with the same
    scale and zero point."""
    op, shape, target = SHARED_QPARAM_CASES[name]
    torch.manual_seed(0)
    model = SharedQParamOp(op, shape)
    inputs = model.example_inputs()
    prepared = prepare(model, inputs, global_quantizer(PER_TENSOR))
    (node,) = call_nodes(prepared, target)
    (input_observer, *_), (output_observer,) = node.args, node.users
    producer = input_observer.args[0]
    assert producer.target in (aten.linear.default, aten.conv2d.default)
    observer = prepared.get_submodule(input_observer.target)
    assert prepared.get_submodule(output_observer.target) is observer
    with torch.no_grad():
        prepared(*inputs)
    m = convert_pt2e(prepared)
    (node,) = call_nodes(m, target)
    producer = node.args[0].args[0].args[0]  # op <- dequantize <- quantize <- producer
    (producer_q,) = [u for u in producer.users if u.target is Q]
    qparams = producer_q.args[1:3]
    assert node.args[0].target is DQ and node.args[0].args[1:3] == qparams
    (op_q,) = node.users
    assert op_q.target is Q and op_q.args[1:3] == qparams


# ------------------------------------------------------------------------------ dynamic


def test_dynamic_linear_quantizes_input_at_run_time() -> None:
    m = quantize(LinearModel(relu=True), X4, global_quantizer(DYNAMIC))
    assert_node_occurrence(m, {CHOOSE: 1, Q_DYN: 1, DQ_DYN: 1, DQ_CH: 1, Q: 0})
    # convert puts the (folded) weight's dequantize first, next to the weight constant
    assert_node_order(m, [DQ_CH, CHOOSE, Q_DYN, DQ_DYN, aten.linear.default, aten.relu.default])
    (linear,) = call_nodes(m, aten.linear.default)
    assert linear.args[0].target is DQ_DYN and linear.args[1].target is DQ_CH


@pytest.mark.parametrize(
    ("model", "quantized"),
    [
        (ConvModel(), True),
        (ConvModel(dim=1), False),  # XNNPACK's dynamic conv is 2-D only
        (ConvModel(groups=4), False),  # depthwise
        (ConvModel(relu=True), False),  # conv -> relu has no dynamic rule (as in ExecuTorch)
    ],
    ids=["conv2d", "conv1d", "depthwise", "conv_relu"],
)
def test_dynamic_conv(model: ConvModel, quantized: bool) -> None:
    m = quantize(model, model.example_inputs(), global_quantizer(DYNAMIC))
    assert_node_occurrence(m, {CHOOSE: int(quantized), DQ_CH: int(quantized)})


def test_dynamic_leaves_add_float() -> None:
    m = quantize(
        Binary(torch.add), (torch.randn(2, 3), torch.randn(2, 3)), global_quantizer(DYNAMIC)
    )
    assert sum(count_ops(m)[op] for op in (Q, DQ, CHOOSE)) == 0


# ---------------------------------------------------------------------------- weight-only


def test_weight_only_config_quantizes_only_weights() -> None:
    """ExecuTorch's annotators read the activation spec unconditionally and crash on this."""
    weight_only = QuantizationConfig(None, None, PER_CHANNEL.weight, None)
    model = ConvPoolHead().eval()
    prepared = prepare(model, IMAGE, global_quantizer(weight_only))
    observers = [m for m in prepared.modules() if isinstance(m, ObserverBase)]
    assert [type(o) for o in observers] == [PerChannelMinMaxObserver] * 2  # conv and linear
    prepared(*IMAGE)
    m = convert_pt2e(prepared)
    # no activation is quantized, so nothing propagates to the pools and views either
    assert_node_occurrence(m, {Q: 0, DQ: 0, DQ_CH: 2})
    for op in (aten.conv2d.default, aten.linear.default):
        (node,) = call_nodes(m, op)
        assert node.args[1].target is DQ_CH and node.args[0].target is not DQ
    with torch.no_grad():
        expected, actual = model(*IMAGE), m(*IMAGE)
    assert not torch.equal(actual, expected)  # the weights really were rounded ...
    torch.testing.assert_close(actual, expected, atol=0.02, rtol=0.05)  # ... to 8 bits


# ---------------------------------------------------------------------------------- QAT


def test_qat_config_inserts_fake_quantizers() -> None:
    exported = torch.export.export(LinearModel(relu=True), X4).module()
    quantizer = global_quantizer(get_symmetric_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(exported, quantizer)
    prepared(*X4)
    fake_quants = [m for m in prepared.modules() if isinstance(m, FusedMovingAvgObsFakeQuantize)]
    assert len(fake_quants) == 3  # input, weight, relu output
    assert_node_occurrence(convert_pt2e(prepared), {Q: 2, DQ: 3})


def test_qat_conv_transpose_bn_weight_axis_is_1() -> None:
    """Deliberate difference: under per-channel QAT the peer (ExecuTorch's quantizer through
    torchao's prepare) fake-quantizes every transposed conv's weight along axis 0, the *input*
    channels, with or without a batch norm after it. Its conv-bn annotator asks for axis 0
    outright; its conv-transpose annotator asks for axis 1, but torchao's prepare keeps a
    spec's channel axis only for constructors whose class name says "PerChannel", and the QAT
    weight constructor is the fused fake-quant, whose inner observer then keeps its default
    axis 0 (tests/quantizers/test_random_graph_matches_peers.py shows both cases). We use axis
    1, the output channels that batch-norm folding scales and XNNPACK's per-channel kernels
    expect."""
    model = ConvTWithBNRelu()
    inputs = model.example_inputs()
    exported = torch.export.export(model.train(), inputs).module()
    prepared = prepare_qat_pt2e(exported, global_quantizer(QAT))
    (conv,) = call_nodes(prepared, aten.conv_transpose2d.input)
    weight_fake_quant = prepared.get_submodule(conv.args[1].target)
    assert weight_fake_quant.ch_axis == 1


@pytest.mark.parametrize("kind", ["conv_scaled", "linear_lora"])
def test_computed_weight_is_quantized_once_as_a_weight(kind: str) -> None:
    """``w * 0.5`` / ``w + delta`` feeding a weight is part of the weight, not an activation
    op: no activation observer on it, so the folded int8 weight is the float weight rounded
    once with the weight's own scale."""
    torch.manual_seed(0)
    model = ComputedWeight(kind).eval()
    converted = quantize(model, model.example_inputs(), global_quantizer(PER_TENSOR))
    anchor = aten.conv2d.default if kind == "conv_scaled" else aten.linear.default
    (op,) = call_nodes(converted, anchor)
    dq = weight_dq(op)
    assert dq is not None
    assert len(call_nodes(converted, Q)) == 2  # the activation input and output only
    int8 = getattr(converted, dq.args[0].target)
    scale = float(dq.args[1])
    expected = model.w * 0.5 if kind == "conv_scaled" else model.w + model.delta
    rounded_once = torch.clamp(torch.round(expected.detach() * (1.0 / scale)), -127, 127)
    assert torch.equal(int8.to(torch.float32), rounded_once)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
@pytest.mark.parametrize("op", [torch.add, torch.mul], ids=["add", "mul"])
def test_non_float32_binary_op_stays_float(op, dtype: torch.dtype) -> None:
    """Only float32 add / mul operands are quantized (as in ExecuTorch): no quantize op takes
    float64, and a float16 one would be quantized where XNNPACK has nothing to run it on."""
    torch.manual_seed(0)
    model = NonFloat32Binary(op, dtype).eval()
    inputs = model.example_inputs()
    converted = quantize(model, inputs, global_quantizer(PER_TENSOR))
    (binary,) = [n for n in converted.graph.nodes if n.target in (aten.add.Tensor, aten.mul.Tensor)]
    assert [a.target for a in binary.args] == [aten.to.dtype] * 2  # no dequantize between
    assert converted(*inputs).dtype == dtype


class ConvCalledTwice(nn.Module):
    """One Conv2d applied to x and to -x: two conv nodes reading one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv(x), self.conv(-x)


def test_conv_module_called_twice_is_quantized_at_both_calls() -> None:
    """Deliberate difference: ExecuTorch's conv pattern counts the shared weight as part of
    the first call's pattern, so it skips the second call and leaves that conv float."""
    torch.manual_seed(0)
    converted = quantize(
        ConvCalledTwice(), (torch.randn(1, 4, 4, 4),), global_quantizer(PER_TENSOR)
    )
    convs = call_nodes(converted, aten.conv2d.default)
    assert len(convs) == 2
    assert all(weight_dq(conv) is not None and conv.args[0].target is DQ for conv in convs)
