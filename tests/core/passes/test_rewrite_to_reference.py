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

import io

import pytest
import torch
from torch.fx import Node

import pt2e_quant.observer as our_observer
from pt2e_quant import (
    FixedQParamsQuantizationSpec,
    convert_pt2e,
    prepare_pt2e,
)
from pt2e_quant.graph.node_meta import CUSTOM_KEY, NUMERIC_DEBUG_HANDLE_KEY
from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.rewrite_to_reference import rewrite_to_reference
from tests.core.contract.quantizer_fixtures import (
    FunctionQuantizer,
    int8_specs,
    seed_specs,
)
from tests.core.passes._reference_models import (
    NO_STATIC_QDQ,
    Add,
    Conv,
    LinearRelu,
    MaxPool,
    Net,
    Q,
    annotate_fused,
    assert_within_one_step,
    aten,
    cast_to,
    convert_both,
    only_node,
    reference_quantizer,
)
from tests.graph_check import assert_node_occurrence, count_ops

# ------------------------------------------------------------------------------------------
# fused patterns
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_conv2d_accumulates_integers_in_float64(per_channel: bool) -> None:
    inputs = (torch.randn(2, 16, 12, 12),)
    reference, plain = convert_both(Conv(), inputs, reference_quantizer(per_channel))

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
    conv = only_node(reference, aten.conv2d.default)
    assert all(cast_to(arg, torch.float64) for arg in conv.args[:3])
    assert conv.args[3:] == only_node(plain, aten.conv2d.default).args[3:]
    assert cast_to(next(iter(conv.users)), torch.int32)
    assert_within_one_step(reference, plain, inputs)


def test_conv_with_affine_uint8_activations() -> None:
    specs = seed_specs(our_observer)  # uint8 activations with a zero point, int8 weights
    quantizer = FunctionQuantizer(annotate_fused(specs.act, specs.weight))
    inputs = (torch.randn(2, 16, 12, 12) + 1.0,)
    reference, plain = convert_both(Conv(), inputs, quantizer)

    (x_quantize,) = [
        n
        for n in plain.graph.find_nodes(op="call_function", target=Q)
        if n.args[0].op == "placeholder"
    ]
    assert x_quantize.args[2] != 0, "the test needs a non-zero input zero point"
    assert_node_occurrence(reference, {**NO_STATIC_QDQ, aten.conv2d.default: 1})
    assert_within_one_step(reference, plain, inputs)


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
    quantizer = FunctionQuantizer(annotate_fused(activation, weight, signed_output))
    inputs = (torch.randn(2, 16, 12, 12),)
    reference, plain = convert_both(Conv(relu=True), inputs, quantizer)

    assert_node_occurrence(reference, {**NO_STATIC_QDQ, aten.relu.default: 0})
    requantize_clamps = [
        n
        for n in reference.graph.find_nodes(op="call_function", target=aten.clamp.default)
        if n.args[1:] == (0, 127)
    ]
    assert len(requantize_clamps) == 1, "relu is a clamp from the output zero point"
    assert (reference(*inputs) >= 0).all()
    assert_within_one_step(reference, plain, inputs)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_linear_relu_on_3d_input(per_channel: bool) -> None:
    inputs = (torch.randn(2, 6, 8),)
    reference, plain = convert_both(LinearRelu(), inputs, reference_quantizer(per_channel))

    assert_node_occurrence(
        reference, {**NO_STATIC_QDQ, aten.linear.default: 1, aten.relu.default: 0}
    )
    linear = only_node(reference, aten.linear.default)
    assert all(cast_to(arg, torch.float64) for arg in linear.args)
    assert (reference(*inputs) >= 0).all()
    assert_within_one_step(reference, plain, inputs)


@pytest.mark.parametrize("relu", [False, True], ids=["add", "add_relu"])
def test_add_rescales_each_input_to_the_output_scale(relu: bool) -> None:
    """uint8 operands, which torchao's add patterns (int8 only) leave to ours."""
    specs = seed_specs(our_observer)
    quantizer = FunctionQuantizer(annotate_fused(specs.act, specs.weight))
    inputs = (torch.randn(2, 3, 4, 4), 3 * torch.randn(2, 3, 4, 4))
    reference, plain = convert_both(Add(relu), inputs, quantizer)

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
    assert_within_one_step(reference, plain, inputs)


def _is_rescaled_int32(node: object) -> bool:
    """``(to(ints, int32) - zero_point) * (input scale / output scale)``"""
    if not (isinstance(node, Node) and node.target is aten.mul.Tensor):
        return False
    centred = node.args[0]
    return centred.target is aten.sub.Tensor and cast_to(centred.args[0], torch.int32)


def test_max_pool2d_pools_the_integer_tensor_exactly() -> None:
    inputs = (torch.randn(2, 3, 9, 9),)
    reference, plain = convert_both(MaxPool(), inputs, reference_quantizer())

    assert count_ops(plain)[Q] == 2, "the q/dq graph quantizes the pool's input and output"
    assert_node_occurrence(reference, {**NO_STATIC_QDQ, aten.max_pool2d.default: 1})
    assert cast_to(only_node(reference, aten.max_pool2d.default).args[0], torch.int8)
    assert torch.equal(reference(*inputs), plain(*inputs))


# ------------------------------------------------------------------------------------------
# the whole model: changed flag, re-export, metadata
# ------------------------------------------------------------------------------------------


def test_pass_on_converted_model_matches_reference_convert_and_is_idempotent() -> None:
    inputs = (torch.randn(2, 3, 8, 8),)
    reference, plain = convert_both(Net(), inputs, reference_quantizer())
    assert run_pass(plain, rewrite_to_reference) is True
    assert count_ops(plain) == count_ops(reference)
    assert torch.equal(plain(*inputs), reference(*inputs))
    assert run_pass(plain, rewrite_to_reference) is False


def test_reference_model_reexports_and_round_trips_bit_identical() -> None:
    inputs = (torch.randn(2, 3, 8, 8),)
    reference, plain = convert_both(Net(), inputs, reference_quantizer())
    # Net's int8 add takes torchao's form, which rounds each rescaled input before summing:
    # more of the few outputs land a step off than a single rounding would put there
    assert_within_one_step(reference, plain, inputs, mostly_equal=False)
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
    conv = only_node(gm, aten.conv2d.default)
    conv.meta[CUSTOM_KEY] = {NUMERIC_DEBUG_HANDLE_KEY: 7}
    stack_trace, module_stack = conv.meta["stack_trace"], conv.meta["nn_module_stack"]
    prepared = prepare_pt2e(gm, reference_quantizer())
    prepared(*inputs)
    reference = convert_pt2e(prepared, use_reference_representation=True)

    new_conv = only_node(reference, aten.conv2d.default)
    assert new_conv.meta["stack_trace"] == stack_trace
    assert new_conv.meta["nn_module_stack"] == module_stack
    assert cast_to(next(iter(new_conv.users)), torch.int32)
    assert next(iter(new_conv.users)).meta["stack_trace"] == stack_trace
    handled = [
        n.target
        for n in reference.graph.nodes
        if n.meta.get(CUSTOM_KEY, {}).get(NUMERIC_DEBUG_HANDLE_KEY) == 7
    ]
    # the accumulation stands for the conv, the rewritten output dequantize (torchao's int8
    # form, which ends in a cast to float32) for its value
    assert sorted(map(str, handled)) == ["aten.conv2d.default", "aten.to.dtype"]
