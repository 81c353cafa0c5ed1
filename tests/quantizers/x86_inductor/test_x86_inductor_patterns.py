"""X86InductorQuantizer patterns: the q/dq each fused pattern yields after convert.

The x86 recipe quantizes a fused pattern's *inputs* and leaves its output float (Inductor
fuses the post-op into the int8 kernel), so e.g. conv -> relu has one activation q/dq pair,
on the conv's input. These tests pin the converted graph's q/dq counts and order on tiny
models: a q/dq pair in the wrong place means Inductor cannot fuse the pattern, and a
missing one means the op silently runs in float. Where we differ from torchao on purpose,
the test says why (test_x86_inductor_torchao_parity.py checks everything else against it).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from pt2e_quant import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from pt2e_quant.contract.annotation import get_annotation, is_annotated
from pt2e_quant.fake_quantize import FakeQuantizeBase
from pt2e_quant.ops import qdq_ops
from quantizers.x86_inductor.quantizer import X86InductorQuantizer
from tests.graph_check import assert_node_occurrence, assert_node_order, ops_in_order
from tests.models import ConvWithBNRelu, export_model
from tests.models.x86_patterns import (
    PATTERN_MODELS,
    ConvAdd,
    ConvAddAlpha,
    ConvBatchNorm,
    ConvPoolConv,
    ConvRelu6Pool,
    ConvUnary,
    LinearAdd,
    LinearUnary,
    Matmul,
)
from tests.quantizers.x86_inductor._x86_inductor_quantize import (
    DQ,
    DQ_CH,
    Q,
    aten,
    qdq_counts,
    quantize,
    x86_config,
)

# (activation q, activation dq, per-channel weight dq) after convert, with the global config.
# One activation q/dq pair per quantized input edge; outputs of fused patterns stay float.
EXPECTED_QDQ = {
    "conv_relu": qdq_counts(1, 1, 1),
    "conv_hardtanh": qdq_counts(1, 1, 1),
    "conv_hardswish": qdq_counts(1, 1, 1),
    "conv_relu6": qdq_counts(1, 1, 1),
    "conv_silu": qdq_counts(1, 1, 1),
    "conv_sigmoid": qdq_counts(1, 1, 1),
    "conv1d_relu": qdq_counts(1, 1, 1),
    "conv_add_relu": qdq_counts(2, 2, 1),  # x and the add's other input y
    "conv_add": qdq_counts(2, 2, 1),
    "conv_add_reused": qdq_counts(1, 1, 1),  # conv output read twice: no fusion, add stays float
    "linear_relu": qdq_counts(1, 1, 1),
    "linear_leaky_relu": qdq_counts(1, 1, 1),
    "linear_tanh": qdq_counts(1, 1, 1),
    "linear_gelu": qdq_counts(1, 1, 1),
    "linear_add_relu": qdq_counts(1, 1, 1),  # the linear's add keeps its other input float
    "linear_add": qdq_counts(1, 1, 1),
    "mul_same_shape": qdq_counts(2, 2, 0),
    "mul_broadcast": qdq_counts(0, 0, 0),
    "mul_scalar": qdq_counts(0, 0, 0),
    "matmul": qdq_counts(0, 0, 0),  # only when scoped explicitly (test_matmul_only_when_scoped)
    # x; relu -> pool; pool -> conv2 (the pool's output observer is the same observer as its
    # input's, so the two pairs carry the same qparams, but each edge has its own q/dq)
    "maxpool": qdq_counts(3, 3, 2),
    "avgpool": qdq_counts(3, 3, 2),
    "adaptive_avgpool": qdq_counts(3, 3, 2),
    "maxpool_first": qdq_counts(1, 1, 1),
    "flatten_linear": qdq_counts(4, 4, 2),  # x; conv -> pool; pool -> flatten; flatten -> linear
    "flatten_sigmoid": qdq_counts(3, 3, 1),  # x; conv -> pool; pool out: the flatten stays float
    # x (one q, a dq for each conv); the two cat inputs; cat -> head
    "cat": qdq_counts(4, 5, 3),
    # x is no quantized op's output, so the cat stays float: x -> conv_a; cat -> head
    "cat_with_input": qdq_counts(2, 2, 2),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_QDQ))
def test_pattern_qdq_counts(name: str) -> None:
    assert_node_occurrence(quantize(PATTERN_MODELS[name]()), EXPECTED_QDQ[name])


def _assert_int8_inputs(converted, conv_target) -> None:
    """The conv reads a dequantized activation and a per-channel dequantized weight.

    (Checked on the conv's arguments rather than by node order: convert folds the weight's
    quantize into a constant, so its dequantize_per_channel sits at the top of the graph.)
    """
    (conv,) = [n for n in converted.graph.nodes if n.target == conv_target]
    assert (conv.args[0].target, conv.args[1].target) == (DQ, DQ_CH)


@pytest.mark.parametrize("act", ["relu", "hardtanh", "hardswish", "silu"])
def test_conv_unary_quantizes_the_input_and_leaves_the_post_op_output_float(act: str) -> None:
    modules = {"relu": nn.ReLU, "hardtanh": nn.Hardtanh, "hardswish": nn.Hardswish, "silu": nn.SiLU}
    model = ConvUnary(modules[act]())
    converted = quantize(model)
    post_op = getattr(aten, act).default
    assert_node_order(converted, [Q, DQ, aten.conv2d.default, post_op])
    _assert_int8_inputs(converted, aten.conv2d.default)
    assert ops_in_order(converted)[-1] == post_op


def test_functional_relu6_fuses_like_the_module() -> None:
    """Deliberate difference: matched on aten ops, F.relu6 (aten.relu6) fuses like nn.ReLU6
    (aten.hardtanh), so the maxpool after it stays int8; torchao leaves that maxpool float."""
    functional = quantize(ConvRelu6Pool(functional=True))
    module = quantize(ConvRelu6Pool(functional=False))
    as_module = [
        aten.hardtanh.default if op == aten.relu6.default else op for op in ops_in_order(functional)
    ]
    assert as_module == ops_in_order(module)
    # x; relu6 -> maxpool; maxpool -> head
    assert_node_occurrence(functional, qdq_counts(3, 3, 2))
    assert_node_order(functional, [aten.relu6.default, Q, DQ, aten.max_pool2d.default, Q, DQ])


def test_lone_conv1d_is_quantized() -> None:
    """Deliberate difference: torchao only quantizes conv1d when a relu follows it."""
    converted = quantize(ConvUnary(dim=1))
    assert_node_occurrence(converted, qdq_counts(1, 1, 1))
    assert_node_order(converted, [Q, DQ, aten.conv1d.default])
    _assert_int8_inputs(converted, aten.conv1d.default)


def test_conv_add_relu_quantizes_both_add_inputs_before_the_conv() -> None:
    converted = quantize(ConvAdd(relu=True))
    assert_node_order(converted, [Q, DQ, aten.conv2d.default, aten.add.Tensor, aten.relu.default])
    add = next(n for n in converted.graph.nodes if n.target == aten.add.Tensor)
    other = add.args[1]
    assert other.target == DQ, "the add's other input must be dequantized int8"


def test_linear_add_keeps_the_other_operand_float() -> None:
    converted = quantize(LinearAdd(relu=False))
    add = next(n for n in converted.graph.nodes if n.target == aten.add.Tensor)
    assert add.args[1].op == "placeholder"


def test_maxpool_output_shares_the_input_qparams() -> None:
    torch.manual_seed(0)
    model = ConvPoolConv(nn.MaxPool2d(2))
    prepared = prepare_pt2e(export_model(model), X86InductorQuantizer().set_global(x86_config()))
    prepared(*model.example_inputs())
    pool = next(n for n in prepared.graph.nodes if n.target == aten.max_pool2d.default)
    before, after = pool.args[0], next(iter(pool.users))
    assert before.op == after.op == "call_module"
    # two observer nodes (one per edge), one observer object: the qparams cannot diverge
    observer = prepared.get_submodule(str(before.target))
    assert prepared.get_submodule(str(after.target)) is observer, "maxpool must share qparams"
    converted = convert_pt2e(prepared)
    pool = next(n for n in converted.graph.nodes if n.target == aten.max_pool2d.default)
    q_in, q_out = pool.args[0].args[0], next(iter(pool.users))
    assert (q_in.target, q_out.target) == (Q, Q)
    assert q_in.args[1:] == q_out.args[1:], "the pool's int8 input and output qparams differ"


def test_matmul_only_when_scoped() -> None:
    scoped = X86InductorQuantizer().set_global(x86_config())
    scoped.set_function_type_qconfig(torch.matmul, x86_config())
    converted = quantize(Matmul(), scoped)
    assert_node_occurrence(converted, qdq_counts(2, 2, 0))
    assert_node_order(converted, [Q, DQ, aten.matmul.default])


def test_dynamic_config_quantizes_activations_at_run_time() -> None:
    converted = quantize(
        LinearUnary(nn.ReLU()), X86InductorQuantizer().set_global(x86_config(is_dynamic=True))
    )
    assert_node_occurrence(
        converted,
        {
            qdq_ops.CHOOSE_QPARAMS: 1,
            qdq_ops.QUANTIZE_PER_TENSOR_DYNAMIC: 1,
            qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC: 1,
            Q: 0,
            DQ_CH: 1,
        },
    )


def test_qat_conv_bn_relu_observes_the_relu_output() -> None:
    """QAT keeps batch norm, so conv -> bn -> relu is one pattern whose output is observed."""
    torch.manual_seed(0)
    model = ConvWithBNRelu(relu=True).train()
    exported = torch.export.export(model, model.example_inputs()).module()
    quantizer = X86InductorQuantizer().set_global(x86_config(is_qat=True))
    prepared = prepare_qat_pt2e(exported, quantizer)
    modules = [
        prepared.get_submodule(str(n.target))
        for n in prepared.graph.nodes
        if n.op == "call_module" and n.target != "_guards_fn"
    ]
    assert len(modules) == 3, modules  # conv input, conv weight, relu output
    assert all(isinstance(m, FakeQuantizeBase) for m in modules)
    relu = next(n for n in prepared.graph.nodes if n.target == aten.relu.default)
    (user,) = relu.users
    assert user.op == "call_module"


def test_conv_add_with_alpha_is_not_fused_and_leaves_the_add_float() -> None:
    """``add(conv(x), y, alpha=2)`` computes conv + 2*y, not the fused kernel's plain sum:
    Inductor's binary post-op fusion refuses an add whose alpha is not 1, so quantizing y
    would only add a float dq -> add. Only the conv's own inputs are quantized.

    Deliberate difference: torchao matches the add by its source partition and quantizes y
    (2 activation q/dq pairs instead of our 1), and its outputs then differ from ours.
    """
    converted = quantize(ConvAddAlpha())
    assert_node_occurrence(converted, qdq_counts(1, 1, 1))
    add = next(n for n in converted.graph.nodes if n.target == aten.add.Tensor)
    assert add.kwargs.get("alpha") == 2
    assert add.args[1].op == "placeholder", "y must stay float"
    relu = next(n for n in converted.graph.nodes if n.target == aten.relu.default)
    assert [user.target for user in relu.users] == ["output"]


def _prepared_observers(model, qat: bool) -> tuple:
    torch.manual_seed(0)
    model = model.train(qat)
    exported = torch.export.export(model, model.example_inputs()).module()
    quantizer = X86InductorQuantizer().set_global(x86_config(is_qat=qat))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the batch norm is not folded / runs in training mode
        prepared = (prepare_qat_pt2e if qat else prepare_pt2e)(exported, quantizer)
    relu = next(n for n in prepared.graph.nodes if n.target == aten.relu.default)
    inputs = [n for n in prepared.graph.nodes if n.op == "call_module" and n.target != "_guards_fn"]
    return prepared, relu, inputs


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
def test_batch_norm_left_after_the_conv_is_fused_only_under_qat(qat: bool) -> None:
    """A batch norm over batch statistics survives both folds. Under QAT the recipe's
    conv -> bn -> relu row claims it and observes the relu's output (as for a foldable bn);
    post-training, that row is QAT-only: the conv is quantized alone, bn and relu stay
    float with no observer after them. (torchao's PTQ prepare crashes on this model: its
    fold reads the missing running statistics.)"""
    prepared, relu, observers = _prepared_observers(ConvBatchNorm("batch_stats"), qat)
    (user,) = relu.users
    assert (user.op == "call_module") is qat
    assert len(observers) == (3 if qat else 2)  # conv input, weight [, relu output]
    prepared(*ConvBatchNorm("batch_stats").example_inputs())
    expected = qdq_counts(2, 2, 1) if qat else qdq_counts(1, 1, 1)
    assert_node_occurrence(convert_pt2e(prepared), expected)


def test_qat_pattern_matches_only_aten_batch_norm() -> None:
    """QAT's conv -> bn rows are for ``aten.batch_norm``, the op the QAT fold simulates and
    convert removes. Another batch norm op after a conv (here a direct
    ``_native_batch_norm_legit_no_training`` call, which returns a tuple) is not part of the
    pattern: the conv is quantized alone and the batch norm is left unclaimed."""
    prepared, relu, observers = _prepared_observers(ConvBatchNorm("aten_legit"), qat=True)
    bn = next(
        n
        for n in prepared.graph.nodes
        if n.target == aten._native_batch_norm_legit_no_training.default
    )
    assert not is_annotated(bn) and get_annotation(bn) is None
    assert len(observers) == 2  # conv input and weight only
    conv = next(n for n in prepared.graph.nodes if n.target == aten.conv2d.default)
    assert is_annotated(conv)
