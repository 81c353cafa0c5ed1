"""Each graph pass on its own: exact structure, the "changed" flag, and unchanged numerics."""

from __future__ import annotations

import pytest
import torch
from torch.fx import GraphModule

from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.duplicate_dequantize import duplicate_dequantize
from pt2e_quant.passes.fold_quantized_constants import fold_quantized_constants
from pt2e_quant.passes.inline_grad_mode_regions import inline_grad_mode_regions
from pt2e_quant.passes.lift_body_constants import lift_body_constants
from pt2e_quant.passes.replace_inplace_ops import functional_variant, replace_inplace_ops
from pt2e_quant.passes.use_eager_control_flow import restore_control_flow, use_eager_control_flow

aten = torch.ops.aten


def _export(model: torch.nn.Module, inputs: tuple) -> GraphModule:
    return torch.export.export(model.eval(), inputs).module()


def _targets(gm: GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


# ---------------------------------------------------------------- replace_inplace_ops


class InplaceChain(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.relu = torch.nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.conv(x))
        out += x
        return torch.nn.functional.hardtanh_(out)


def test_replace_inplace_ops_structure_flag_numerics() -> None:
    model, inputs = InplaceChain(), (torch.randn(1, 4, 5, 5),)
    gm = _export(model, inputs)
    assert run_pass(gm, replace_inplace_ops) is True
    assert _targets(gm) == [
        aten.conv2d.default,
        aten.relu.default,
        aten.add.Tensor,
        aten.hardtanh.default,
    ]
    assert torch.equal(gm(*inputs), model(*inputs))
    assert run_pass(gm, replace_inplace_ops) is False


def test_functional_variant_table() -> None:
    assert functional_variant(aten.add_.Tensor) is aten.add.Tensor
    assert functional_variant(aten.relu_.default) is aten.relu.default
    assert functional_variant(aten.relu.default) is None
    assert functional_variant(len) is None


def test_inplace_op_whose_input_is_read_later_stays() -> None:
    inputs = (torch.randn(1, 4, 5, 5),)
    gm = _export(InplaceChain(), inputs)
    relu = next(n for n in gm.graph.nodes if n.target == aten.relu_.default)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    output.args = ((relu,),)  # add_ and hardtanh_ mutate relu_'s tensor, which is returned
    gm.recompile()
    expected = gm(*inputs)
    assert run_pass(gm, replace_inplace_ops) is True  # relu_ and hardtanh_ are still private
    targets = _targets(gm)
    assert aten.add_.Tensor in targets, "add_ mutates a tensor the output reads: must stay"
    assert aten.relu.default in targets and aten.hardtanh_.default in targets
    assert all(torch.equal(a, b) for a, b in zip(gm(*inputs), expected, strict=True))


# ---------------------------------------------------------------- inline_grad_mode_regions


class NoGradTwoLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)

    @torch.no_grad()
    def forward(self, x):
        return self.b(self.a(x).relu())


def test_inline_grad_mode_regions() -> None:
    model, inputs = NoGradTwoLayer(), (torch.randn(2, 4),)
    gm = _export(model, inputs)
    assert torch.ops.higher_order.wrap_with_set_grad_enabled in _targets(gm)
    assert run_pass(gm, inline_grad_mode_regions) is True
    assert _targets(gm) == [aten.linear.default, aten.relu.default, aten.linear.default]
    assert not any(isinstance(m, GraphModule) for m in gm.children())
    assert torch.equal(gm(*inputs), model(*inputs))
    assert run_pass(gm, inline_grad_mode_regions) is False


# ---------------------------------------------------------------- duplicate_dequantize


class SharedDequantize(torch.nn.Module):
    """One dq read by two annotated ops and by the graph output."""

    def forward(self, x):
        q = qdq_ops.QUANTIZE_PER_TENSOR(x, 0.1, 0, -128, 127, torch.int8)
        dq = qdq_ops.DEQUANTIZE_PER_TENSOR(q, 0.1, 0, -128, 127, torch.int8)
        return torch.relu(dq), torch.sigmoid(dq), dq


def _annotate_all(gm: GraphModule, targets) -> None:
    from pt2e_quant import QuantizationAnnotation

    for node in gm.graph.nodes:
        if node.target in targets:
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                output_qspec=None, input_qspec_map={node.args[0]: None}
            )


def test_a_consumer_annotated_for_its_output_only_gets_its_own_dequantize() -> None:
    """A backend fuses ``dq -> op -> q`` also for an op whose input edge was quantized by the
    producer's output spec, so an op annotated only for its output is a pattern too."""
    from pt2e_quant import QuantizationAnnotation, QuantizationSpec
    from pt2e_quant.observer import MinMaxObserver

    inputs = (torch.randn(3, 3),)
    gm = _export(SharedDequantize(), inputs)
    _annotate_all(gm, (aten.relu.default,))
    (sigmoid,) = gm.graph.find_nodes(op="call_function", target=aten.sigmoid.default)
    sigmoid.meta["quantization_annotation"] = QuantizationAnnotation(
        output_qspec=QuantizationSpec(dtype=torch.int8, observer_or_fake_quant_ctr=MinMaxObserver)
    )
    assert run_pass(gm, duplicate_dequantize) is True
    assert list(sigmoid.args[0].users) == [sigmoid]


def test_duplicate_dequantize() -> None:
    inputs = (torch.randn(3, 3),)
    gm = _export(SharedDequantize(), inputs)
    expected = gm(*inputs)
    # input_qspec_map entries with a None spec still make an annotation "valid"
    _annotate_all(gm, (aten.relu.default, aten.sigmoid.default))
    assert run_pass(gm, duplicate_dequantize) is True
    dqs = [n for n in gm.graph.nodes if n.target == qdq_ops.DEQUANTIZE_PER_TENSOR]
    assert len(dqs) == 3 and all(len(dq.users) == 1 for dq in dqs)
    assert all(torch.equal(a, b) for a, b in zip(gm(*inputs), expected, strict=True))
    assert run_pass(gm, duplicate_dequantize) is False


# ---------------------------------------------------------------- fold_quantized_constants


class WeightThroughTranspose(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(4, 4))
        self.other = torch.nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        w = self.weight.t()
        q = qdq_ops.QUANTIZE_PER_TENSOR(w, 0.05, 0, -127, 127, torch.int8)
        dq = qdq_ops.DEQUANTIZE_PER_TENSOR(q, 0.05, 0, -127, 127, torch.int8)
        return torch.nn.functional.linear(x, dq) + self.other.t().sum()


def test_fold_quantized_constants() -> None:
    model, inputs = WeightThroughTranspose(), (torch.randn(2, 4),)
    gm = _export(model, inputs)
    expected = gm(*inputs)
    q_name = next(n.name for n in gm.graph.nodes if n.target == qdq_ops.QUANTIZE_PER_TENSOR)
    assert run_pass(gm, fold_quantized_constants) is True
    targets = _targets(gm)
    assert qdq_ops.QUANTIZE_PER_TENSOR not in targets
    assert targets.count(aten.t.default) == 1  # the unrelated constant stays unfolded
    frozen = [n for n in gm.graph.nodes if n.op == "get_attr" and n.target.startswith("_frozen")]
    assert len(frozen) == 1 and getattr(gm, frozen[0].target).dtype == torch.int8
    assert frozen[0].name == q_name  # keeps the folded node's name
    assert not hasattr(gm, "weight")  # the float weight has no reader left
    assert torch.equal(gm(*inputs), expected)
    assert run_pass(gm, fold_quantized_constants) is False


class WeightDecayedInPlace(torch.nn.Module):
    """A buffer scaled in place on every call, then quantized: not a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(4, 4))

    def forward(self, x):
        w = self.weight.mul_(0.5)
        q = qdq_ops.QUANTIZE_PER_TENSOR(w, 0.05, 0, -127, 127, torch.int8)
        dq = qdq_ops.DEQUANTIZE_PER_TENSOR(q, 0.05, 0, -127, 127, torch.int8)
        return torch.nn.functional.linear(x, dq)


def test_a_chain_through_an_in_place_write_is_not_folded() -> None:
    """Folding would run ``mul_`` once at convert time and drop it from the graph: the buffer
    would stop changing between calls."""
    inputs = (torch.randn(2, 4),)
    gm = _export(WeightDecayedInPlace(), inputs)
    before = gm.weight.clone()
    assert run_pass(gm, fold_quantized_constants) is False
    assert torch.equal(gm.weight, before)
    assert aten.mul_.Tensor in _targets(gm)
    gm(*inputs)
    gm(*inputs)
    assert torch.equal(gm.weight, before * 0.25)


# ---------------------------------------------------------------- control flow helpers


class CondModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor([2.0]))

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda v: v * self.scale, lambda v: v - 1, (x,))


def test_use_eager_control_flow_round_trip() -> None:
    inputs = (torch.randn(2, 2),)
    gm = _export(CondModel(), inputs)
    expected = gm(*inputs)
    code = gm.code
    assert run_pass(gm, use_eager_control_flow) is True
    assert torch.ops.higher_order.cond not in _targets(gm)
    assert torch.equal(gm(*inputs), expected)
    assert run_pass(gm, restore_control_flow) is True
    assert torch.ops.higher_order.cond in _targets(gm) and gm.code == code
    assert run_pass(gm, restore_control_flow) is False


def test_lift_body_constants() -> None:
    inputs = (torch.randn(2, 2),)
    gm = _export(CondModel(), inputs)
    true_body = gm.true_graph_0
    # give the true branch a constant read through get_attr, as convert's per-channel scales
    true_body.register_buffer("offset", torch.tensor([0.5]))
    output = next(n for n in true_body.graph.nodes if n.op == "output")
    result = output.args[0][0]
    with true_body.graph.inserting_before(output):
        offset = true_body.graph.get_attr("offset")
        shifted = true_body.graph.call_function(aten.add.Tensor, (result, offset))
    output.args = ((shifted,),)
    true_body.recompile()
    gm.recompile()
    positive = (torch.ones(2, 2),)
    with torch.no_grad():  # with autograd on, cond traces bodies and rejects the real tensor
        expected = gm(*positive)
    assert run_pass(gm, lift_body_constants) is True
    for body in (gm.true_graph_0, gm.false_graph_0):
        assert not [n for n in body.graph.nodes if n.op == "get_attr"]
        assert [n.op for n in body.graph.nodes][:2] == ["placeholder", "placeholder"]
    cond = next(n for n in gm.graph.nodes if n.target == torch.ops.higher_order.cond)
    assert len(cond.args[3]) == 3 and cond.args[3][-1].op == "get_attr"
    assert torch.equal(gm(*positive), expected)
    program = torch.export.export(gm, positive)  # a body without tensor get_attrs re-exports
    assert torch.equal(program.module()(*positive), expected)
    assert run_pass(gm, lift_body_constants) is False


def test_mutation_seen_through_a_view_keeps_inplace_op() -> None:
    class ViewThenMutate(torch.nn.Module):
        def forward(self, x):
            y = x * 2
            v = y.view(-1)
            y.add_(1.0)  # v sees this
            return v + 0

    model, inputs = ViewThenMutate(), (torch.randn(2, 3),)
    gm = _export(model, inputs)
    assert aten.add_.Tensor in _targets(gm), "export no longer keeps the in-place op"
    run_pass(gm, replace_inplace_ops)
    assert aten.add_.Tensor in _targets(gm)
    assert torch.equal(gm(*inputs), model(*inputs))


class MutateThroughPassThrough(torch.nn.Module):
    """``b = op(a)`` returns ``a`` itself for these ops, so ``hardtanh_(b)`` also clamps the
    ``a`` read afterwards, although the ops' schemas promise a fresh result."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, x):
        a = x * 2.0
        if self.op == "dropout":
            b = torch.nn.functional.dropout(a, 0.5, training=False)
        elif self.op == "type_as":
            b = a.type_as(x)
        else:
            b = torch.einsum("ij->ij", a)
        torch.nn.functional.hardtanh_(b)
        return b * a


@pytest.mark.parametrize("op", ["dropout", "type_as", "einsum"])
def test_inplace_op_on_an_input_returned_as_is_keeps_its_effect(op: str) -> None:
    """(For ``type_as`` export itself already reads the mutated result in place of ``a``.)"""
    model, inputs = MutateThroughPassThrough(op), (torch.randn(3, 4) * 3,)
    gm = _export(model, inputs)
    run_pass(gm, replace_inplace_ops)
    assert torch.equal(gm(*inputs), model(*inputs))
