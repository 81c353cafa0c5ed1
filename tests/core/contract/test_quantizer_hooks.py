"""The optional Quantizer hooks and extension points: transforms, observer callbacks, dtypes."""

from __future__ import annotations

import pytest
import torch
from torch.fx import GraphModule, Node

import pt2e_quant.observer as our_observer
from pt2e_quant import (
    QuantizationAnnotation,
    QuantizationSpec,
    Quantizer,
    SharedQuantizationSpec,
    convert_pt2e,
    prepare_pt2e,
)
from pt2e_quant.ops import qdq_ops
from tests.core.contract.quantizer_fixtures import FunctionQuantizer
from tests.graph_check import assert_node_occurrence, assert_node_order

aten = torch.ops.aten
Q = qdq_ops.QUANTIZE_PER_TENSOR
DQ = qdq_ops.DEQUANTIZE_PER_TENSOR


def _export(model: torch.nn.Module, inputs: tuple) -> GraphModule:
    return torch.export.export(model.eval(), inputs).module()


def test_transform_for_annotation_result_is_used() -> None:
    class AddModel(torch.nn.Module):
        def forward(self, x, y):
            return x + y

    class AddToMul(Quantizer):
        def transform_for_annotation(self, model: GraphModule) -> GraphModule:
            for node in model.graph.nodes:
                if node.target == aten.add.Tensor:
                    node.target = aten.mul.Tensor
            model.recompile()
            return model

        def annotate(self, model: GraphModule) -> GraphModule:
            return model

        def validate(self, model: GraphModule) -> None:
            return None

    inputs = (torch.randn(2, 2), torch.randn(2, 2))
    gm = _export(AddModel(), inputs)
    prepared = prepare_pt2e(gm, AddToMul())
    assert_node_occurrence(prepared, {aten.add.Tensor: 0, aten.mul.Tensor: 1})
    assert_node_occurrence(gm, {aten.add.Tensor: 1, aten.mul.Tensor: 0})


def test_prepare_obs_or_fq_callback_replaces_a_whole_group() -> None:
    """A quantizer's callback swaps one sharing group's observer for fixed qparams."""

    class PoolShufflePermute(torch.nn.Module):
        def forward(self, x):
            x = torch.nn.functional.max_pool2d(x, 2)
            x = torch.nn.functional.pixel_shuffle(x, 2)
            return x.permute(0, 2, 3, 1)

    act = QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=255,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=our_observer.MinMaxObserver,
    )

    class SharedChain(Quantizer):
        def annotate(self, model: GraphModule) -> GraphModule:
            targets = (aten.max_pool2d.default, aten.pixel_shuffle.default, aten.permute.default)
            for node in model.graph.nodes:
                if node.target in targets:
                    x = node.args[0]
                    first = node.target == aten.max_pool2d.default
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={x: act if first else SharedQuantizationSpec(x)},
                        output_qspec=SharedQuantizationSpec((x, node)),
                    )
            return model

        def validate(self, model: GraphModule) -> None:
            return None

        def prepare_obs_or_fq_callback(self, model, edge_or_node_to_obs_or_fq) -> None:
            fixed = our_observer.FixedQParamsObserver(
                scale=0.125, zero_point=42, dtype=torch.uint8, quant_min=0, quant_max=255
            )
            for key in edge_or_node_to_obs_or_fq:
                edge_or_node_to_obs_or_fq[key] = fixed

    inputs = (torch.rand(1, 32, 16, 16),)
    prepared = prepare_pt2e(_export(PoolShufflePermute(), inputs), SharedChain())
    prepared(*inputs)
    converted = convert_pt2e(prepared)
    qdq = [n for n in converted.graph.nodes if n.target in (Q, DQ)]
    assert len(qdq) >= 4
    assert all(n.args[1] == 0.125 and n.args[2] == 42 for n in qdq)


def test_observer_with_its_own_convert() -> None:
    """An observer with ``convert(model, node)`` lowers itself (here: a custom int4 q/dq)."""

    class Int4Observer(our_observer.MinMaxObserver):
        def convert(self, model: GraphModule, observer_node: Node) -> None:
            scale, zero_point = self.calculate_qparams()
            graph = model.graph
            with graph.inserting_before(observer_node):
                args = (float(scale), int(zero_point), -8, 7, torch.int8)
                q = graph.call_function(Q, (observer_node.args[0], *args))
                dq = graph.call_function(DQ, (q, *args))
            observer_node.replace_all_uses_with(dq)
            graph.erase_node(observer_node)

    int4 = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-8,
        quant_max=7,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=Int4Observer,
    )

    class AddModel(torch.nn.Module):
        def forward(self, x, y):
            return x + y

    def annotate(gm: GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.target == aten.add.Tensor:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[0]: int4, node.args[1]: int4}, output_qspec=int4
                )

    inputs = (torch.randn(1, 3, 3, 3), torch.randn(1, 3, 3, 3))
    prepared = prepare_pt2e(_export(AddModel(), inputs), FunctionQuantizer(annotate))
    prepared(*inputs)
    converted = convert_pt2e(prepared)
    assert_node_occurrence(converted, {Q: 3, DQ: 3})
    assert_node_order(converted, [DQ, DQ, aten.add.Tensor, Q])
    assert all(n.args[3:5] == (-8, 7) for n in converted.graph.nodes if n.target in (Q, DQ))


@pytest.mark.parametrize("dtype", [torch.int16, torch.float8_e5m2, torch.float8_e4m3fn], ids=str)
def test_activation_dtypes(dtype: torch.dtype) -> None:
    """q/dq pairs carry the spec dtype; each q's output dtype feeds the matching dq."""
    if dtype.is_floating_point:
        info = torch.finfo(dtype)
        qmin, qmax = int(info.min), int(info.max)
    else:
        info = torch.iinfo(dtype)
        qmin, qmax = info.min, info.max
    act = QuantizationSpec(
        dtype=dtype,
        quant_min=qmin,
        quant_max=qmax,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=our_observer.MinMaxObserver,
    )
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_tensor_symmetric,
        observer_or_fake_quant_ctr=our_observer.MinMaxObserver,
    )

    def annotate(gm: GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.target == aten.conv2d.default:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[0]: act, node.args[1]: weight}, output_qspec=act
                )

    inputs = (torch.randn(1, 3, 3, 3),)
    prepared = prepare_pt2e(_export(torch.nn.Conv2d(3, 3, 3), inputs), FunctionQuantizer(annotate))
    prepared(*inputs)
    converted = convert_pt2e(prepared)
    assert_node_occurrence(converted, {Q: 2, DQ: 3})
    assert_node_order(converted, [DQ, DQ, aten.conv2d.default, Q])
    for node in converted.graph.nodes:
        if node.target == Q:
            assert node.args[5] == dtype
            assert all(user.args[5] == dtype for user in node.users)
    converted(*inputs)


def test_removing_an_output_observer_by_hand_does_not_break_convert() -> None:
    act = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=our_observer.MinMaxObserver,
    )

    class TwoUsers(torch.nn.Module):
        def forward(self, x):
            y = torch.sigmoid(x)
            return y + 1, y * 2

    def annotate(gm: GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.target == aten.sigmoid.default:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[0]: act}, output_qspec=act
                )

    inputs = (torch.randn(2, 3),)
    prepared = prepare_pt2e(_export(TwoUsers(), inputs), FunctionQuantizer(annotate))
    sigmoid = next(n for n in prepared.graph.nodes if n.target == aten.sigmoid.default)
    (observer_node,) = sigmoid.users
    observer_node.replace_all_uses_with(sigmoid)
    prepared.graph.erase_node(observer_node)
    prepared.recompile()
    prepared(*inputs)
    converted = convert_pt2e(prepared)
    assert_node_occurrence(converted, {Q: 1, DQ: 1})
    expected = TwoUsers()(*inputs)
    assert all(
        torch.allclose(a, b, atol=0.05) for a, b in zip(converted(*inputs), expected, strict=True)
    )
