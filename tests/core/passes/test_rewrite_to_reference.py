"""rewrite_to_reference: quantized patterns become integer aten arithmetic that runs and re-exports.

Each test calibrates a tiny model once and converts it twice, with and without
``use_reference_representation``; it checks the reference graph's structure (op counts), that
its outputs stay within one output quantization step of the q/dq graph (bit-identical where
only q/dq and max_pool2d are rewritten, away from the rounding ties where torchao's int8
quantize parts from the kernel), and the pass's "changed" flag.

They pin our exact forms (conv2d, linear + relu, uint8 add, max_pool2d: torchao has no pattern
for them) and the pass as a whole. int8 q/dq, linear and add and the decomposed patterns take
torchao's forms, checked against torchao in ``test_rewrite_to_reference_torchao.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import io

import pytest
import torch
from torch import nn
from torch.fx import GraphModule, Node

import pt2e_quant.observer as our_observer
from pt2e_quant import (
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
    QuantizationSpecBase,
    SharedQuantizationSpec,
    convert_pt2e,
    prepare_pt2e,
)
from pt2e_quant.annotation import annotate_input, annotate_output, mark_annotated
from pt2e_quant.node_meta import CUSTOM_KEY, NUMERIC_DEBUG_HANDLE_KEY
from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.rewrite_to_reference import rewrite_to_reference
from pt2e_quant.quantizer import Quantizer
from tests.core.quantizer_fixtures import (
    ConvLinearQuantizer,
    FunctionQuantizer,
    int8_specs,
    seed_specs,
)
from tests.graph_check import assert_node_occurrence, count_ops

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed
Q = qd.quantize_per_tensor.default
DQ = qd.dequantize_per_tensor.default
Q_PC = qd.quantize_per_channel.default
DQ_PC = qd.dequantize_per_channel.default
NO_STATIC_QDQ = {Q: 0, DQ: 0, Q_PC: 0, DQ_PC: 0}

WEIGHTED_OPS = (aten.conv1d.default, aten.conv2d.default, aten.linear.default)


# ------------------------------------------------------------------------------------------
# tiny models
# ------------------------------------------------------------------------------------------


class Conv(nn.Module):
    """x -> conv2d(16 -> 32, 3x3, stride 2, padding 1, dilation 2, groups 2) [-> relu]"""

    def __init__(self, relu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, stride=2, padding=1, dilation=2, groups=2)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.relu(y) if self.relu else y


class LinearRelu(nn.Module):
    """x (batch, tokens, 8) -> linear(8 -> 5) -> relu"""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


class Add(nn.Module):
    """(a, b) -> a + b [-> relu]"""

    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.relu = relu

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = a + b
        return torch.relu(y) if self.relu else y


class MaxPool(nn.Module):
    """x -> max_pool2d(3, stride 2, padding 1)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(x, 3, stride=2, padding=1)


class Net(nn.Module):
    r"""Every pattern once:

    x -> conv -> relu -> max_pool2d -> + -> flatten -> linear
     \--> conv(1x1, stride 2) -------/
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.skip = nn.Conv2d(3, 4, 1, stride=2)
        self.linear = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.linear(torch.flatten(y + self.skip(x), 1))


# ------------------------------------------------------------------------------------------
# quantizer and helpers
# ------------------------------------------------------------------------------------------


def _annotate_fused(
    activation: QuantizationSpec,
    weight: QuantizationSpec,
    relu_output: QuantizationSpecBase | None = None,
):
    """conv / linear (weight on arg 1) and add get quantized inputs and their output quantized
    after a following relu if there is one (with ``relu_output`` if given); max_pool2d's output
    shares its input's qparams."""

    def annotate(gm: GraphModule) -> None:
        for node in list(gm.graph.nodes):
            if node.op != "call_function":
                continue
            if node.target is aten.max_pool2d.default:
                annotate_input(node, node.args[0], activation)
                annotate_output(node, SharedQuantizationSpec((node.args[0], node)))
                mark_annotated([node])
                continue
            if node.target in WEIGHTED_OPS:
                annotate_input(node, node.args[0], activation)
                annotate_input(node, node.args[1], weight)
            elif node.target is aten.add.Tensor:
                for arg in node.args[:2]:
                    annotate_input(node, arg, activation)
            else:
                continue
            users = list(node.users)
            relu = users[0] if len(users) == 1 and users[0].target is aten.relu.default else None
            if relu is None:
                annotate_output(node, activation)
            else:
                annotate_output(relu, relu_output or activation)
            mark_annotated([node] if relu is None else [node, relu])

    return annotate


def _quantizer(per_channel: bool = True) -> Quantizer:
    return FunctionQuantizer(_annotate_fused(*int8_specs(our_observer, per_channel=per_channel)))


def _calibrated(model: nn.Module, inputs: tuple, quantizer: Quantizer) -> GraphModule:
    torch.manual_seed(0)
    prepared = prepare_pt2e(torch.export.export(model.eval(), inputs).module(), quantizer)
    for _ in range(3):
        prepared(*(torch.randn_like(t) * 2 for t in inputs))
    prepared(*inputs)
    return prepared


def _convert_both(
    model: nn.Module, inputs: tuple, quantizer: Quantizer, fold_quantize: bool = True
) -> tuple[GraphModule, GraphModule]:
    """(reference, q/dq) conversions of one calibrated model."""
    prepared = _calibrated(model, inputs, quantizer)
    reference = convert_pt2e(
        copy.deepcopy(prepared), use_reference_representation=True, fold_quantize=fold_quantize
    )
    return reference, convert_pt2e(prepared, fold_quantize=fold_quantize)


def _output_step(plain: GraphModule) -> float:
    """The scale of the dequantize that produces the q/dq graph's output."""
    (output,) = plain.graph.find_nodes(op="output")
    (result,) = output.args[0]
    assert result.target is DQ, f"expected a dequantized output, got {result.format_node()}"
    return result.args[1]


def _assert_within_one_step(
    reference: GraphModule, plain: GraphModule, inputs: tuple, mostly_equal: bool = True
) -> None:
    step = _output_step(plain)
    difference = (reference(*inputs) - plain(*inputs)).abs()
    assert difference.max() <= step * (1 + 1e-5), f"{difference.max()} > one step {step}"
    if mostly_equal:
        # one step is the worst case of a rounding tie broken the other way, not the norm
        assert (difference > 0).float().mean() < 0.1


def _only(gm: GraphModule, target) -> Node:
    (node,) = gm.graph.find_nodes(op="call_function", target=target)
    return node


def _cast_to(node: object, dtype: torch.dtype) -> bool:
    return isinstance(node, Node) and node.target is aten.to.dtype and node.args[1] == dtype


# ------------------------------------------------------------------------------------------
# fused patterns
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_conv2d_accumulates_integers_in_float64(per_channel: bool) -> None:
    inputs = (torch.randn(2, 16, 12, 12),)
    reference, plain = _convert_both(Conv(), inputs, _quantizer(per_channel))

    per_channel_ops = 2 if per_channel else 0  # bias scale and multiplier from the weight scale
    # the conv is ours; the input quantize and the output dequantize are torchao's int8 forms
    # (x / scale, and clamps left as the aten.clamp packet)
    assert_node_occurrence(
        reference,
        {
            **NO_STATIC_QDQ,
            aten.conv2d.default: 1,
            aten.round.default: 3,  # input quantize, int32 bias, requantize
            aten.clamp.default: 1,  # requantize
            aten.clamp: 3,  # any overload or the packet: input quantize, requantize, output dq
            aten.div.Tensor: 2,  # input quantize, bias / (x scale * w scale)
            aten.view.default: 2 if per_channel else 0,  # w zero points, multiplier
            aten.mul.Tensor: 2 + per_channel_ops,  # requantize, output dq
        },
    )
    conv = _only(reference, aten.conv2d.default)
    assert all(_cast_to(arg, torch.float64) for arg in conv.args[:3])
    assert conv.args[3:] == _only(plain, aten.conv2d.default).args[3:]
    assert _cast_to(next(iter(conv.users)), torch.int32)
    _assert_within_one_step(reference, plain, inputs)


def test_conv_with_affine_uint8_activations() -> None:
    specs = seed_specs(our_observer)  # uint8 activations with a zero point, int8 weights
    quantizer = FunctionQuantizer(_annotate_fused(specs.act, specs.weight))
    inputs = (torch.randn(2, 16, 12, 12) + 1.0,)
    reference, plain = _convert_both(Conv(), inputs, quantizer)

    (x_quantize,) = [
        n
        for n in plain.graph.find_nodes(op="call_function", target=Q)
        if n.args[0].op == "placeholder"
    ]
    assert x_quantize.args[2] != 0, "the test needs a non-zero input zero point"
    assert_node_occurrence(reference, {**NO_STATIC_QDQ, aten.conv2d.default: 1})
    _assert_within_one_step(reference, plain, inputs)


def test_relu_becomes_the_requantize_lower_bound() -> None:
    """With an output range that covers negatives, the relu's clamp at zero must survive."""
    activation, weight = int8_specs(our_observer)
    signed_output = FixedQParamsQuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        scale=0.05,
        zero_point=0,
    )
    quantizer = FunctionQuantizer(_annotate_fused(activation, weight, signed_output))
    inputs = (torch.randn(2, 16, 12, 12),)
    reference, plain = _convert_both(Conv(relu=True), inputs, quantizer)

    assert_node_occurrence(reference, {**NO_STATIC_QDQ, aten.relu.default: 0})
    requantize_clamps = [
        n
        for n in reference.graph.find_nodes(op="call_function", target=aten.clamp.default)
        if n.args[1:] == (0, 127)
    ]
    assert len(requantize_clamps) == 1, "relu is a clamp from the output zero point"
    assert (reference(*inputs) >= 0).all()
    _assert_within_one_step(reference, plain, inputs)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_linear_relu_on_3d_input(per_channel: bool) -> None:
    inputs = (torch.randn(2, 6, 8),)
    reference, plain = _convert_both(LinearRelu(), inputs, _quantizer(per_channel))

    assert_node_occurrence(
        reference, {**NO_STATIC_QDQ, aten.linear.default: 1, aten.relu.default: 0}
    )
    linear = _only(reference, aten.linear.default)
    assert all(_cast_to(arg, torch.float64) for arg in linear.args)
    assert (reference(*inputs) >= 0).all()
    _assert_within_one_step(reference, plain, inputs)


@pytest.mark.parametrize("relu", [False, True], ids=["add", "add_relu"])
def test_add_rescales_each_input_to_the_output_scale(relu: bool) -> None:
    """uint8 operands, which torchao's add patterns (int8 only) leave to ours."""
    specs = seed_specs(our_observer)
    quantizer = FunctionQuantizer(_annotate_fused(specs.act, specs.weight))
    inputs = (torch.randn(2, 3, 4, 4), 3 * torch.randn(2, 3, 4, 4))
    reference, plain = _convert_both(Add(relu), inputs, quantizer)

    assert_node_occurrence(
        reference,
        {
            **NO_STATIC_QDQ,
            aten.relu.default: 0,
            aten.add.Tensor: 4,  # 2 input quantizes, the rescaled sum, the output zero point
            aten.round.default: 3,  # 2 input quantizes, one rounding of the sum
            aten.clamp.default: 3,
        },
    )
    (total,) = [
        n
        for n in reference.graph.find_nodes(op="call_function", target=aten.add.Tensor)
        if all(_is_rescaled_int32(arg) for arg in n.args)
    ]
    assert [u.target for u in total.users] == [aten.round.default], "the sum is rounded once"
    if relu:
        assert (reference(*inputs) >= 0).all()
    _assert_within_one_step(reference, plain, inputs)


def _is_rescaled_int32(node: object) -> bool:
    """``(to(ints, int32) - zero_point) * (input scale / output scale)``"""
    if not (isinstance(node, Node) and node.target is aten.mul.Tensor):
        return False
    centred = node.args[0]
    return centred.target is aten.sub.Tensor and _cast_to(centred.args[0], torch.int32)


def test_max_pool2d_pools_the_integer_tensor_exactly() -> None:
    inputs = (torch.randn(2, 3, 9, 9),)
    reference, plain = _convert_both(MaxPool(), inputs, _quantizer())

    assert count_ops(plain)[Q] == 2, "the q/dq graph quantizes the pool's input and output"
    assert_node_occurrence(reference, {**NO_STATIC_QDQ, aten.max_pool2d.default: 1})
    assert _cast_to(_only(reference, aten.max_pool2d.default).args[0], torch.int8)
    assert torch.equal(reference(*inputs), plain(*inputs))


# ------------------------------------------------------------------------------------------
# standalone q / dq and unmatched patterns
# ------------------------------------------------------------------------------------------


def test_unmatched_conv_keeps_float_and_qdq_rewrite_is_bit_identical() -> None:
    """A conv with a float output is no quantized pattern: only its q/dq are rewritten, in
    torchao's int8 forms (the per-channel ones move the channel axis last with a transpose).

    torchao's quantize divides by the scale where the kernel multiplies by its reciprocal;
    the two differ only at a rounding tie, which no value here lands on."""
    activation, weight = int8_specs(our_observer, per_channel=True)

    def annotate_inputs_only(gm: GraphModule) -> None:
        for node in gm.graph.find_nodes(op="call_function", target=aten.conv2d.default):
            annotate_input(node, node.args[0], activation)
            annotate_input(node, node.args[1], weight)
            mark_annotated([node])

    inputs = (torch.randn(2, 16, 12, 12),)
    quantizer = FunctionQuantizer(annotate_inputs_only)
    for fold_quantize in (True, False):
        reference, plain = _convert_both(Conv(), inputs, quantizer, fold_quantize)
        assert count_ops(plain)[Q_PC] == (0 if fold_quantize else 1)
        assert_node_occurrence(
            reference,
            {
                **NO_STATIC_QDQ,
                aten.conv2d.default: 1,
                # weight dequantize, and its quantize when not folded: a transpose in and out
                aten.transpose.int: 2 if fold_quantize else 4,
            },
        )
        assert _only(reference, aten.conv2d.default).args[1].target is aten.transpose.int
        assert torch.equal(reference(*inputs), plain(*inputs))


def _near_ties(scale: float) -> torch.Tensor:
    """Values at and next to the rounding ties ``(k + 0.5) * scale`` of an int8 grid."""
    ties = (torch.arange(-128, 127, dtype=torch.float32) + 0.5) * scale
    up, down = torch.full_like(ties, 1e9), torch.full_like(ties, -1e9)
    return torch.cat([ties, torch.nextafter(ties, up), torch.nextafter(ties, down)])


def test_quantize_matches_the_kernels_at_rounding_ties() -> None:
    """``x * (1 / scale)`` as the kernels compute it, not ``x / scale`` (which differs there).

    uint8: torchao's int8 form divides, and int8 follows it (``test_rewrite_to_reference_torchao``).
    """

    class QuantizeBoth(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scales", torch.tensor([0.0258, 0.0394, 0.0054]))
            self.register_buffer("zero_points", torch.tensor([128, 131, 123]))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            args = (self.scales, self.zero_points, 1, 0, 255, torch.uint8)
            per_channel = qd.quantize_per_channel(x, *args)
            return (
                qd.quantize_per_tensor(x, 0.0258, 131, 0, 255, torch.uint8),
                per_channel,
                qd.dequantize_per_channel(per_channel, *args),
            )

    x = torch.stack([_near_ties(s) for s in (0.0258, 0.0394, 0.0054)], dim=1)
    gm = torch.export.export(QuantizeBoth(), (x,)).module()
    expected = gm(x)
    assert run_pass(gm, rewrite_to_reference) is True
    assert_node_occurrence(gm, {**NO_STATIC_QDQ, aten.reciprocal.default: 1})
    for got, want in zip(gm(x), expected, strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_int32_dequantize_is_bit_identical_beyond_float32_integers() -> None:
    """Above 2**24 not every int32 is a float32; subtracting the zero point before the cast
    (as integers) would round differently from the kernel, which casts first."""

    class Int32Dequantize(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return qd.dequantize_per_tensor(q, 3e-4, 7, -(2**31), 2**31 - 1, torch.int32)

    q = torch.randint(-(2**30), 2**30, (4096,), dtype=torch.int32)
    gm = torch.export.export(Int32Dequantize(), (q,)).module()
    expected = gm(q)
    assert run_pass(gm, rewrite_to_reference) is True
    assert_node_occurrence(gm, {DQ: 0, aten.sub.Tensor: 1})
    assert torch.equal(gm(q), expected)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8], ids=["int8", "uint8"])
def test_dynamic_quantization(dtype: torch.dtype) -> None:
    """int8 dynamic q/dq take torchao's forms, with the qparams choose_qparams computes at run
    time; uint8 ones, which torchao has no pattern for, stay as they are. Either way the
    per-channel weight dequantize is rewritten and the linear stays float (its input is)."""
    activation, weight = int8_specs(our_observer, dynamic=True)
    if dtype is torch.uint8:
        activation = dataclasses.replace(activation, dtype=dtype, quant_min=0, quant_max=255)
    inputs = (torch.randn(3, 8),)
    reference, plain = _convert_both(
        nn.Linear(8, 5), inputs, ConvLinearQuantizer(activation, weight)
    )

    dynamic = {qd.quantize_per_tensor.tensor: 1, qd.dequantize_per_tensor.tensor: 1}
    assert_node_occurrence(plain, {**dynamic, qd.choose_qparams.tensor: 1, DQ_PC: 1})
    left = 0 if dtype is torch.int8 else 1
    assert_node_occurrence(
        reference,
        {
            qd.choose_qparams.tensor: 1,
            qd.quantize_per_tensor.tensor: left,
            qd.dequantize_per_tensor.tensor: left,
            DQ_PC: 0,
            aten.linear.default: 1,
        },
    )
    # torchao's int8 quantize divides where the kernel multiplies by the reciprocal: they can
    # differ at a rounding tie only, which no value here lands on
    assert torch.equal(reference(*inputs), plain(*inputs))


def test_graph_without_qdq_is_unchanged() -> None:
    gm = torch.export.export(Net().eval(), (torch.randn(1, 3, 8, 8),)).module()
    code, nodes = gm.code, len(gm.graph.nodes)
    assert rewrite_to_reference(gm) is False
    assert gm.code == code and len(gm.graph.nodes) == nodes


# ------------------------------------------------------------------------------------------
# the whole model: changed flag, re-export, metadata
# ------------------------------------------------------------------------------------------


def test_pass_on_converted_model_matches_reference_convert_and_is_idempotent() -> None:
    inputs = (torch.randn(2, 3, 8, 8),)
    reference, plain = _convert_both(Net(), inputs, _quantizer())
    assert run_pass(plain, rewrite_to_reference) is True
    assert count_ops(plain) == count_ops(reference)
    assert torch.equal(plain(*inputs), reference(*inputs))
    assert run_pass(plain, rewrite_to_reference) is False


def test_reference_model_reexports_and_round_trips_bit_identical() -> None:
    inputs = (torch.randn(2, 3, 8, 8),)
    reference, plain = _convert_both(Net(), inputs, _quantizer())
    # Net's int8 add takes torchao's form, which rounds each rescaled input before summing:
    # more of the few outputs land a step off than a single rounding would put there
    _assert_within_one_step(reference, plain, inputs, mostly_equal=False)
    assert_node_occurrence(
        reference,
        {
            **NO_STATIC_QDQ,
            aten.conv2d.default: 2,
            aten.linear.default: 1,
            aten.max_pool2d.default: 1,
            aten.relu.default: 0,
        },
    )
    expected = reference(*inputs)

    exported = torch.export.export(reference, inputs)
    buffer = io.BytesIO()
    torch.export.save(exported, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()

    assert torch.equal(exported.module()(*inputs), expected)
    assert torch.equal(loaded(*inputs), expected)
    assert_node_occurrence(loaded, {**NO_STATIC_QDQ, aten.conv2d.default: 2})


def test_replacement_nodes_keep_metadata_and_debug_handles() -> None:
    inputs = (torch.randn(2, 16, 12, 12),)
    gm = torch.export.export(Conv().eval(), inputs).module()
    conv = _only(gm, aten.conv2d.default)
    conv.meta[CUSTOM_KEY] = {NUMERIC_DEBUG_HANDLE_KEY: 7}
    stack_trace, module_stack = conv.meta["stack_trace"], conv.meta["nn_module_stack"]
    prepared = prepare_pt2e(gm, _quantizer())
    prepared(*inputs)
    reference = convert_pt2e(prepared, use_reference_representation=True)

    new_conv = _only(reference, aten.conv2d.default)
    assert new_conv.meta["stack_trace"] == stack_trace
    assert new_conv.meta["nn_module_stack"] == module_stack
    assert _cast_to(next(iter(new_conv.users)), torch.int32)
    assert next(iter(new_conv.users)).meta["stack_trace"] == stack_trace
    handled = [
        n.target
        for n in reference.graph.nodes
        if n.meta.get(CUSTOM_KEY, {}).get(NUMERIC_DEBUG_HANDLE_KEY) == 7
    ]
    # the accumulation stands for the conv, the rewritten output dequantize (torchao's int8
    # form, which ends in a cast to float32) for its value
    assert sorted(map(str, handled)) == ["aten.conv2d.default", "aten.to.dtype"]
