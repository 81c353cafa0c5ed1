"""XNNPACKQuantizer: per-pattern q/dq structure, scoping, presets, validation, and a
differential run against ExecuTorch's XNNPACKQuantizer on every zoo model."""

from __future__ import annotations

import collections
import copy
import warnings

import pytest
import torch
from torch import nn
from torch.fx import GraphModule, Node

from pt2e_quant import AnnotationError, convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from pt2e_quant.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
from pt2e_quant.observer import (
    HistogramObserver,
    MinMaxObserver,
    ObserverBase,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)
from pt2e_quant.specs import QuantizationSpec
from quantizers.config import QuantizationConfig
from quantizers.xnnpack import XNNPACKQuantizer, get_symmetric_quantization_config
from quantizers.xnnpack_rules import RULES
from tests.graph_check import assert_node_occurrence, assert_node_order, count_ops, ops_in_order
from tests.models import ZOO, ConvTWithBNRelu

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed
Q, DQ = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
DQ_CH = qd.dequantize_per_channel.default
CHOOSE = qd.choose_qparams.tensor
Q_DYN, DQ_DYN = qd.quantize_per_tensor.tensor, qd.dequantize_per_tensor.tensor

PER_TENSOR = get_symmetric_quantization_config()
PER_CHANNEL = get_symmetric_quantization_config(is_per_channel=True)
DYNAMIC = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
QAT = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)


def _quantize(model: nn.Module, inputs: tuple, quantizer: XNNPACKQuantizer) -> GraphModule:
    exported = torch.export.export(model.eval(), inputs).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        prepared(*inputs)
    return convert_pt2e(prepared)


def _global(config: QuantizationConfig) -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(config)


def _nodes(gm: GraphModule, target) -> list[Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == target]


def _weight_dq(node: Node) -> Node | None:
    """The dequantize feeding ``node``'s weight, or None when the weight stayed float."""
    weight = node.args[1]
    return weight if weight.target in (DQ, DQ_CH) else None


def _input_scale(node: Node, index: int = 0) -> float:
    dq = node.args[0][index] if isinstance(node.args[0], (list, tuple)) else node.args[index]
    assert dq.target is DQ, f"{node.name} input {index} is not dequantized"
    return float(dq.args[1])


def _output_scale(node: Node) -> float:
    (q,) = [u for u in node.users if u.target is Q]
    return float(q.args[1])


# ------------------------------------------------------------------------ small models


class LinearModel(nn.Module):
    def __init__(self, relu: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 6)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x):
        return self.relu(self.linear(x))


class ConvModel(nn.Module):
    def __init__(self, relu: bool = False, dim: int = 2, groups: int = 1, transpose=False):
        super().__init__()
        conv = {(1, False): nn.Conv1d, (2, False): nn.Conv2d, (2, True): nn.ConvTranspose2d}
        self.conv = conv[(dim, transpose)](4, 4, 3, groups=groups)
        self.relu = nn.ReLU() if relu else nn.Identity()
        self.dim = dim

    def forward(self, x):
        return self.relu(self.conv(x))

    def example_inputs(self):
        return (torch.randn(1, 4, *([6] * self.dim)),)


class Binary(nn.Module):
    def __init__(self, op, relu: bool = False) -> None:
        super().__init__()
        self.op, self.relu = op, relu

    def forward(self, x, y):
        out = self.op(x, y)
        return torch.relu(out) if self.relu else out


class CatOfConvs(nn.Module):
    """x ─┬─ conv_a ─┐
    └─ conv_b ─┴─ cat"""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return torch.cat([self.conv_a(x), self.conv_b(x)], dim=1)


class ConvPoolHead(nn.Module):
    """conv ─ max_pool2d ─ adaptive_avg_pool2d ─ flatten ─ unsqueeze ─ linear"""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.linear = nn.Conv2d(2, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.conv(x), 2)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.linear(x.unsqueeze(0))


X4 = (torch.randn(2, 4),)
IMAGE = (torch.randn(1, 2, 8, 8),)


# ------------------------------------------------------------------------------ presets


def test_static_per_tensor_preset_matches_executorch_numbers() -> None:
    act, weight = PER_TENSOR.input_activation, PER_TENSOR.weight
    assert PER_TENSOR.output_activation is act and PER_TENSOR.bias is None
    assert (act.dtype, act.quant_min, act.quant_max, act.qscheme) == (
        torch.int8,
        -128,
        127,
        torch.per_tensor_affine,
    )
    assert act.observer_or_fake_quant_ctr.p.func is HistogramObserver
    assert act.observer_or_fake_quant_ctr.p.keywords["eps"] == 2**-12
    assert (weight.quant_min, weight.quant_max, weight.qscheme) == (
        -127,
        127,
        torch.per_tensor_symmetric,
    )
    assert weight.observer_or_fake_quant_ctr.p.func is MinMaxObserver


def test_per_channel_dynamic_and_qat_presets() -> None:
    assert PER_CHANNEL.weight.qscheme == torch.per_channel_symmetric
    assert PER_CHANNEL.weight.observer_or_fake_quant_ctr.p.func is PerChannelMinMaxObserver
    assert DYNAMIC.is_dynamic and DYNAMIC.output_activation is None
    assert DYNAMIC.input_activation.observer_or_fake_quant_ctr.p.func is PlaceholderObserver
    qat = get_symmetric_quantization_config(is_qat=True)
    assert qat.is_qat
    assert qat.input_activation.observer_or_fake_quant_ctr.p.func is FusedMovingAvgObsFakeQuantize
    assert qat.weight.observer_or_fake_quant_ctr.p.func is FusedMovingAvgObsFakeQuantize
    qat_dynamic = get_symmetric_quantization_config(is_qat=True, is_dynamic=True)
    assert qat_dynamic.input_activation.observer_or_fake_quant_ctr.p.func is FakeQuantize
    # cached: equal arguments give the same object, so prepare can share observers
    assert get_symmetric_quantization_config() is PER_TENSOR


def test_rule_table_is_in_executorch_order() -> None:
    # ExecuTorch's order, plus our QAT linear + batch-norm patterns next to the conv ones
    assert [rule.name for rule in RULES] == [
        "conv_bn_relu",
        "conv_bn",
        "conv_transpose_bn_relu",
        "conv_transpose_bn",
        "linear_bn_relu",
        "linear_bn",
        "linear_relu",
        "linear",
        "conv",
        "conv_transpose",
        "conv_relu",
        "conv_transpose_relu",
        "adaptive_avg_pool2d",
        "add_relu",
        "add",
        "mul_relu",
        "mul",
        "cat",
    ]
    assert {rule.name for rule in RULES if rule.dynamic} == {"linear", "conv", "conv_transpose"}


# ----------------------------------------------------------------------------- patterns


def test_linear() -> None:
    m = _quantize(LinearModel(), X4, _global(PER_TENSOR))
    assert_node_occurrence(m, {Q: 2, DQ: 3})
    assert_node_order(m, [DQ, DQ, aten.linear.default, Q, DQ])


def test_linear_relu_quantizes_only_the_relu_output() -> None:
    m = _quantize(LinearModel(relu=True), X4, _global(PER_TENSOR))
    assert_node_occurrence(m, {Q: 2, DQ: 3})
    assert_node_order(m, [DQ, DQ, aten.linear.default, aten.relu.default, Q, DQ])


@pytest.mark.parametrize("dim", [1, 2])
def test_conv_relu_per_channel(dim: int) -> None:
    model = ConvModel(relu=True, dim=dim)
    m = _quantize(model, model.example_inputs(), _global(PER_CHANNEL))
    conv = aten.conv1d.default if dim == 1 else aten.conv2d.default
    assert_node_occurrence(m, {Q: 2, DQ: 2, DQ_CH: 1})
    assert_node_order(m, [DQ_CH, Q, DQ, conv, aten.relu.default, Q, DQ])
    assert _weight_dq(_nodes(m, conv)[0]).args[3] == 0  # channel axis


def test_conv_transpose_weights_are_per_channel_along_axis_1() -> None:
    model = ConvModel(transpose=True)
    m = _quantize(model, model.example_inputs(), _global(PER_CHANNEL))
    assert_node_occurrence(m, {Q: 2, DQ: 2, DQ_CH: 1})
    assert _weight_dq(_nodes(m, aten.conv_transpose2d.input)[0]).args[3] == 1


def test_grouped_conv_transpose_stays_float() -> None:
    model = ConvModel(transpose=True, groups=2)
    m = _quantize(model, model.example_inputs(), _global(PER_CHANNEL))
    assert_node_occurrence(m, {Q: 0, DQ: 0, DQ_CH: 0})


@pytest.mark.parametrize("op", [torch.add, torch.mul], ids=["add", "mul"])
@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
def test_binary_ops(op, relu: bool) -> None:
    m = _quantize(Binary(op, relu), (torch.randn(2, 3), torch.randn(2, 3)), _global(PER_TENSOR))
    assert_node_occurrence(m, {Q: 3, DQ: 3})
    target = aten.add.Tensor if op is torch.add else aten.mul.Tensor
    # each operand is quantized and dequantized in turn (the order convert and the peer emit)
    expected = [Q, DQ, Q, DQ, target, *([aten.relu.default] if relu else []), Q, DQ]
    assert_node_order(m, expected)
    if relu:  # the add/mul output itself stays float: the relu's output is quantized
        (node,) = _nodes(m, target)
        assert [u.target for u in node.users] == [aten.relu.default]


def test_scalar_operand_becomes_a_quantized_constant() -> None:
    m = _quantize(
        Binary(lambda x, y: x * y + 1.0),
        (torch.randn(2, 3), torch.randn(2, 3)),
        _global(PER_TENSOR),
    )
    (add,) = _nodes(m, aten.add.Tensor)
    assert all(isinstance(a, Node) and a.target is DQ for a in add.args)
    assert_node_occurrence(m, {aten.add.Tensor: 1, aten.mul.Tensor: 1})


def test_huge_constant_operand_is_left_float() -> None:
    # torch.histc cannot bin such values, so ExecuTorch leaves the add float as well
    m = _quantize(
        Binary(lambda x, y: x + 1e20), (torch.randn(2, 3), torch.randn(2, 3)), _global(PER_TENSOR)
    )
    assert_node_occurrence(m, {Q: 0, DQ: 0})


def test_integer_scalar_add_is_not_lifted() -> None:
    """ExecuTorch would turn the ``1`` into a float tensor, silently promoting the result."""

    class Count(nn.Module):
        def forward(self, x, n):
            return x * 2.0, n + 1

    inputs = (torch.randn(3), torch.tensor(3))
    exported = torch.export.export(Count(), inputs).module()
    prepared = prepare_pt2e(exported, _global(PER_TENSOR))
    (int_add,) = _nodes(prepared, aten.add.Tensor)
    assert int_add.args[1] == 1
    assert prepared(*inputs)[1].dtype == torch.int64


def test_cat_inputs_and_output_share_qparams() -> None:
    m = _quantize(CatOfConvs(), IMAGE, _global(PER_TENSOR))
    (cat,) = _nodes(m, aten.cat.default)
    assert _input_scale(cat, 0) == _input_scale(cat, 1) == _output_scale(cat)
    # one q per conv output (shared qparams) plus input and cat output
    assert_node_occurrence(m, {Q: 4})


def test_pools_and_views_share_their_producers_qparams() -> None:
    m = _quantize(ConvPoolHead(), IMAGE, _global(PER_TENSOR))
    conv_scale = _output_scale(_nodes(m, aten.conv2d.default)[0])
    views = (aten.max_pool2d.default, aten.adaptive_avg_pool2d.default, aten.flatten.using_ints)
    for op in (*views, aten.unsqueeze.default):
        (node,) = _nodes(m, op)
        assert _input_scale(node) == _output_scale(node) == conv_scale, op
    # Deliberate difference from ExecuTorch, which leaves unsqueeze float so the linear
    # re-quantizes a pure view with its own qparams: ours shares, and the linear reads the
    # conv's qparams unchanged.
    assert _input_scale(_nodes(m, aten.linear.default)[0]) == conv_scale


# ------------------------------------------------------------------------------ dynamic


def test_dynamic_linear_quantizes_input_at_run_time() -> None:
    m = _quantize(LinearModel(relu=True), X4, _global(DYNAMIC))
    assert_node_occurrence(m, {CHOOSE: 1, Q_DYN: 1, DQ_DYN: 1, DQ_CH: 1, Q: 0})
    # convert puts the (folded) weight's dequantize first, next to the weight constant
    assert_node_order(m, [DQ_CH, CHOOSE, Q_DYN, DQ_DYN, aten.linear.default, aten.relu.default])
    (linear,) = _nodes(m, aten.linear.default)
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
    m = _quantize(model, model.example_inputs(), _global(DYNAMIC))
    assert_node_occurrence(m, {CHOOSE: int(quantized), DQ_CH: int(quantized)})


def test_dynamic_leaves_add_float() -> None:
    m = _quantize(Binary(torch.add), (torch.randn(2, 3), torch.randn(2, 3)), _global(DYNAMIC))
    assert sum(count_ops(m)[op] for op in (Q, DQ, CHOOSE)) == 0


# ---------------------------------------------------------------------------- weight-only


def test_weight_only_config_quantizes_only_weights() -> None:
    """ExecuTorch's annotators read the activation spec unconditionally and crash on this."""
    weight_only = QuantizationConfig(None, None, PER_CHANNEL.weight, None)
    model = ConvPoolHead().eval()
    prepared = _prepare(model, IMAGE, _global(weight_only))
    observers = [m for m in prepared.modules() if isinstance(m, ObserverBase)]
    assert [type(o) for o in observers] == [PerChannelMinMaxObserver] * 2  # conv and linear
    prepared(*IMAGE)
    m = convert_pt2e(prepared)
    # no activation is quantized, so nothing propagates to the pools and views either
    assert_node_occurrence(m, {Q: 0, DQ: 0, DQ_CH: 2})
    for op in (aten.conv2d.default, aten.linear.default):
        (node,) = _nodes(m, op)
        assert node.args[1].target is DQ_CH and node.args[0].target is not DQ
    with torch.no_grad():
        expected, actual = model(*IMAGE), m(*IMAGE)
    assert not torch.equal(actual, expected)  # the weights really were rounded ...
    torch.testing.assert_close(actual, expected, atol=0.02, rtol=0.05)  # ... to 8 bits


# ------------------------------------------------------------------------------ scoping


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)


class Outer(nn.Module):
    """first (Linear) ─ inner_a (Inner.fc) ─ inner_b (Inner.fc) ─ last (Linear) ─ add"""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.last = nn.Linear(4, 4), nn.Linear(4, 4)
        self.inner_a, self.inner_b = Inner(), Inner()

    def forward(self, x):
        y = self.last(self.inner_b(self.inner_a(self.first(x))))
        return y + x


def _linear_weight_kinds(m: GraphModule) -> list[str | None]:
    """Per linear in graph order: "channel", "tensor" or None (float)."""
    kinds = {DQ_CH: "channel", DQ: "tensor"}
    return [
        kinds[dq.target] if (dq := _weight_dq(n)) else None for n in _nodes(m, aten.linear.default)
    ]


def test_scoping_precedence_name_over_type_over_operator_over_global() -> None:
    quantizer = (
        XNNPACKQuantizer()
        .set_global(PER_TENSOR)
        .set_operator_type(aten.linear, PER_CHANNEL)
        .set_module_type(Inner, PER_TENSOR)
        .set_module_name("inner_b", None)
    )
    m = _quantize(Outer(), X4, quantizer)
    # first, last: operator type; inner_a: module type; inner_b: module name (None = float)
    assert _linear_weight_kinds(m) == ["channel", "tensor", None, "channel"]
    # the add is only covered by the global config
    (add,) = _nodes(m, aten.add.Tensor)
    assert all(a.target is DQ for a in add.args)


def test_module_name_none_excludes_even_under_a_global_config() -> None:
    quantizer = XNNPACKQuantizer().set_global(PER_CHANNEL).set_module_name("first", None)
    m = _quantize(Outer(), X4, quantizer)
    assert _linear_weight_kinds(m) == [None, "channel", "channel", "channel"]


@pytest.mark.parametrize(
    ("exclude", "kinds"),
    [
        (lambda q: q.set_module_name("inner_a", None), ["channel", None, "channel", "channel"]),
        (lambda q: q.set_module_type(Inner, None), ["channel", None, None, "channel"]),
        (lambda q: q.set_operator_type(aten.linear, None), [None] * 4),
        (lambda q: q.set_operator_type(aten.linear.default, None), [None] * 4),
    ],
    ids=["module_name", "module_type", "operator_packet", "operator_overload"],
)
def test_none_scope_leaves_that_scope_float(exclude, kinds: list) -> None:
    """ExecuTorch asserts on a None config; here it excludes the scope from the global one."""
    m = _quantize(Outer(), X4, exclude(_global(PER_CHANNEL)))
    assert _linear_weight_kinds(m) == kinds
    (add,) = _nodes(m, aten.add.Tensor)  # outside every excluded scope: still quantized
    assert all(a.target is DQ for a in add.args)


def test_global_none_leaves_everything_float() -> None:
    m = _quantize(Outer(), X4, XNNPACKQuantizer().set_global(None))
    assert sum(count_ops(m)[op] for op in (Q, DQ, DQ_CH)) == 0


def test_filter_function_restricts_every_rule() -> None:
    quantizer = _global(PER_CHANNEL).set_filter_function(lambda n: n.name != "linear_2")
    m = _quantize(Outer(), X4, quantizer)
    assert _linear_weight_kinds(m) == ["channel", "channel", None, "channel"]


def test_filter_function_keeps_propagation_out_of_excluded_nodes() -> None:
    quantizer = _global(PER_TENSOR).set_filter_function(lambda n: "pool" not in n.name)
    m = _quantize(ConvPoolHead(), IMAGE, quantizer)
    for op in (aten.max_pool2d.default, aten.adaptive_avg_pool2d.default):
        (node,) = _nodes(m, op)
        assert not any(u.target is Q for u in node.users), op


def test_fused_relu_in_another_scope_is_not_pulled_in() -> None:
    quantizer = _global(PER_TENSOR).set_module_name("relu", None)
    m = _quantize(LinearModel(relu=True), X4, quantizer)
    # the linear is quantized on its own; the excluded relu stays float
    assert_node_order(m, [DQ, DQ, aten.linear.default, Q, DQ, aten.relu.default])
    (relu,) = _nodes(m, aten.relu.default)
    assert not any(u.target is Q for u in relu.users)


def test_setters_reject_foreign_configs() -> None:
    with pytest.raises(TypeError, match="get_symmetric_quantization_config"):
        XNNPACKQuantizer().set_global({"input_activation": None})


# ----------------------------------------------------------------------------- validate


def _uint8_activation() -> QuantizationSpec:
    return QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=255,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=HistogramObserver,
    )


def _prepare(model: nn.Module, inputs: tuple, quantizer: XNNPACKQuantizer) -> GraphModule:
    return prepare_pt2e(torch.export.export(model.eval(), inputs).module(), quantizer)


def test_validate_rejects_uint8_activations() -> None:
    spec = _uint8_activation()
    config = QuantizationConfig(spec, spec, PER_TENSOR.weight, None)
    with pytest.raises(
        AnnotationError, match=r"activation 'x' of 'linear'.*uint8.*int8, -128\.\.127"
    ):
        _prepare(LinearModel(), X4, _global(config))


def test_validate_rejects_asymmetric_weights() -> None:
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_channel_affine,
        ch_axis=0,
        observer_or_fake_quant_ctr=PerChannelMinMaxObserver,
    )
    config = QuantizationConfig(PER_TENSOR.input_activation, None, weight, None)
    with pytest.raises(AnnotationError, match=r"weight '.*' of 'linear'.*per_channel_affine"):
        _prepare(LinearModel(), X4, _global(config))


def test_validate_rejects_quantized_bias() -> None:
    bias = QuantizationSpec(dtype=torch.int32, observer_or_fake_quant_ctr=MinMaxObserver)
    config = QuantizationConfig(PER_TENSOR.input_activation, None, PER_TENSOR.weight, bias)
    with pytest.raises(AnnotationError, match=r"bias .* Set QuantizationConfig.bias to None"):
        _prepare(LinearModel(), X4, _global(config))


@pytest.mark.parametrize(
    "config",
    [PER_TENSOR, PER_CHANNEL, DYNAMIC, QAT],
    ids=["per_tensor", "per_channel", "dynamic", "qat"],
)
def test_validate_accepts_the_presets(config: QuantizationConfig) -> None:
    quantizer = _global(config)
    exported = torch.export.export(ConvPoolHead(), IMAGE).module()
    # prepare validates the annotated graph ...
    prepared = (prepare_qat_pt2e if config.is_qat else prepare_pt2e)(exported, quantizer)
    assert any(
        isinstance(m, (HistogramObserver, PlaceholderObserver, FusedMovingAvgObsFakeQuantize))
        for m in prepared.modules()
    )
    # ... and validate accepts the prepared one too: annotations stay on the nodes and still
    # name the original weights, now read through an observer (a regression: the conv's
    # per-channel weight was once taken for an activation)
    quantizer.validate(prepared)


# ---------------------------------------------------------------------------------- QAT


def test_qat_config_inserts_fake_quantizers() -> None:
    exported = torch.export.export(LinearModel(relu=True), X4).module()
    quantizer = _global(get_symmetric_quantization_config(is_qat=True))
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
    axis 0 (tests/quantizers/test_random_graph_differential.py shows both cases). We use axis
    1, the output channels that batch-norm folding scales and XNNPACK's per-channel kernels
    expect."""
    model = ConvTWithBNRelu()
    inputs = model.example_inputs()
    exported = torch.export.export(model.train(), inputs).module()
    prepared = prepare_qat_pt2e(exported, _global(QAT))
    (conv,) = _nodes(prepared, aten.conv_transpose2d.input)
    weight_fake_quant = prepared.get_submodule(conv.args[1].target)
    assert weight_fake_quant.ch_axis == 1


# ------------------------------------------------------------------- differential (peer)


def _functional(name: str) -> str:
    """``aten.relu_.default`` -> ``aten.relu.default``: our prepare functionalizes in-place
    ops that torchao keeps (same values)."""
    namespace, op, overload = name.split(".")
    if op.endswith("_") and not op.startswith("_"):
        op = op[:-1]
    return f"{namespace}.{op}.{overload}"


def _qdq_and_compute(gm: GraphModule) -> list[str]:
    names = (str(t) for t in ops_in_order(gm))
    return [_functional(n) for n in names if n.startswith(("aten.", "quantized_decomposed."))]


def _op_name(node: Node) -> str:
    name = str(node.target)
    if node.op == "call_function" and name.startswith(("aten.", "quantized_decomposed.")):
        return _functional(name)
    return name if node.op == "call_function" else node.op  # getitem; input, constant, output


def _structure(gm: GraphModule) -> collections.Counter:
    """Each q/dq and compute op with what feeds it and what reads it, as a multiset.

    Finer than op counts (it says which edges are quantized), but blind to node order on
    purpose: torchao's QAT conv-bn rewrite re-inserts the subgraphs it replaces, which
    reorders independent branches (a ResNet's downsample conv and its conv1) and moves each
    folded weight's dequantize next to its conv, computing the same thing.
    """
    return collections.Counter(
        (
            _op_name(n),
            tuple(map(_op_name, n.all_input_nodes)),
            tuple(sorted(map(_op_name, n.users))),
        )
        for n in gm.graph.nodes
        if n.op == "call_function" and str(n.target).startswith(("aten.", "quantized_decomposed."))
    )


@pytest.fixture(scope="module")
def peer(peer_pattern_cache):
    """ExecuTorch's quantizer module and torchao's move-to-eval (pattern exports cached)."""
    pytest.importorskip("torchao")
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer
    from torchao.quantization.pt2e import move_exported_model_to_eval

    return xnnpack_quantizer, move_exported_model_to_eval


def _skip_peer_conv_bn_annotators(monkeypatch: pytest.MonkeyPatch) -> None:
    """ExecuTorch's conv-bn annotators only match a batch norm, and no graph has one at
    annotation time except a QAT graph of a model with batch norm (PTQ prepare folds it
    first); yet each call pattern-matches a dozen conv-bn graphs. Stubbed where they cannot
    match, to keep the test fast."""
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer_utils

    for name in ("conv_bn", "conv_bn_relu", "conv_transpose_bn", "conv_transpose_bn_relu"):
        monkeypatch.setitem(xnnpack_quantizer_utils.OP_TO_ANNOTATOR, name, lambda *a: [])


_PRESETS = {
    "per_tensor": {},
    "per_channel": {"is_per_channel": True},
    "dynamic": {"is_per_channel": True, "is_dynamic": True},
    "qat": {"is_per_channel": True, "is_qat": True},
}


def _has_batch_norm(name: str) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ZOO[name]().modules())


#: Zoo models with a transposed conv; under per-channel QAT the peer quantizes its weight
#: along the wrong axis (with or without batch norm), so the outputs cannot be bit-identical.
_PEER_QAT_CONV_TRANSPOSE_BN_BUG = frozenset({"conv_transpose_decoder"})


def _zoo_cases():
    """Every zoo model under every preset."""
    for name in sorted(ZOO):
        for preset in sorted(_PRESETS):
            marks = ()
            if preset == "qat" and name in _PEER_QAT_CONV_TRANSPOSE_BN_BUG:
                reason = (
                    "deliberate difference (peer bug): under QAT it splits a transposed conv's "
                    "weight along axis 0; see "
                    "test_qat_conv_transpose_bn_weight_axis_is_1"
                )
                marks = pytest.mark.skip(reason=reason)
            yield pytest.param(name, preset, marks=marks, id=f"{name}-{preset}")


def _run(lib, quantizer, exported: GraphModule, example: tuple, test_input: tuple, to_eval, qat):
    """Prepare, run ``example`` once (calibration, or a training-mode step for QAT), convert,
    then run ``test_input`` (QAT: after moving the converted model to eval)."""
    prepare = lib.prepare_qat_pt2e if qat else lib.prepare_pt2e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(copy.deepcopy(exported), quantizer)
        torch.manual_seed(1)  # dropout, when a QAT model is run in training mode
        with torch.no_grad():
            prepared(*example)
        converted = lib.convert_pt2e(prepared)
        if qat:
            converted = to_eval(converted)
        with torch.no_grad():
            out = converted(*test_input)
    return converted, torch.utils._pytree.tree_leaves(out)


@pytest.mark.torchao
@pytest.mark.executorch
@pytest.mark.parametrize(("name", "preset"), _zoo_cases())
def test_same_qdq_and_bit_identical_outputs_as_executorch(
    peer, monkeypatch: pytest.MonkeyPatch, name: str, preset: str
) -> None:
    import pt2e_quant
    from tests.peer_annotation import library

    peer_module, peer_to_eval = peer
    qat = _PRESETS[preset].get("is_qat", False)
    if not (qat and _has_batch_norm(name)):
        _skip_peer_conv_bn_annotators(monkeypatch)
    torch.manual_seed(0)
    model = ZOO[name]()
    example = model.example_inputs()
    test_input = tuple(torch.randn_like(t) if t.is_floating_point() else t for t in example)
    # QAT exports the model in training mode (batch norm and dropout stay trainable)
    exported = torch.export.export(model.train(qat), example).module()
    config = peer_module.get_symmetric_quantization_config(**_PRESETS[preset])
    theirs, theirs_out = _run(
        library("torchao"),
        peer_module.XNNPACKQuantizer().set_global(config),
        exported,
        example,
        test_input,
        peer_to_eval,
        qat,
    )
    ours, ours_out = _run(
        library("pt2e_quant"),
        _global(get_symmetric_quantization_config(**_PRESETS[preset])),
        exported,
        example,
        test_input,
        pt2e_quant.move_exported_model_to_eval,
        qat,
    )
    assert _structure(ours) == _structure(theirs)
    assert any(n.startswith("quantized_decomposed.") for n in _qdq_and_compute(ours)) or (
        preset == "dynamic" and name == "conv_bn_relu_chain"  # conv -> relu: no dynamic rule
    )
    assert all(torch.equal(a, b) for a, b in zip(ours_out, theirs_out, strict=True))
