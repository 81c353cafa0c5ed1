"""The seed test_quantize_pt2e assertions (T1-T12), through our API, with both observer libraries."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.ao.quantization.observer as ao_observer
from torch.fx import GraphModule, Node

import pt2e_quant.observer as our_observer
from pt2e_quant import (
    DerivedQuantizationSpec,
    QuantizationAnnotation,
    SharedQuantizationSpec,
    convert_pt2e,
    prepare_pt2e,
    prepare_qat_pt2e,
)
from pt2e_quant.ops import qdq_ops
from tests.core.contract.quantizer_fixtures import FunctionQuantizer, SeedSpecs, seed_specs
from tests.graph_check import assert_node_occurrence, assert_node_order
from tests.models import (
    Conv2dWithCat,
    Conv2dWithTwoCat,
    ConvMaxPool2d,
    ConvWithBNRelu,
    SigmoidAddModel,
    SigmoidModel,
    ThreeAdd,
)

aten = torch.ops.aten
Q = qdq_ops.QUANTIZE_PER_TENSOR
DQ = qdq_ops.DEQUANTIZE_PER_TENSOR
Q_PC = qdq_ops.QUANTIZE_PER_CHANNEL
DQ_PC = qdq_ops.DEQUANTIZE_PER_CHANNEL


@pytest.fixture(params=["pt2e_quant", "torch.ao"])
def specs(request: pytest.FixtureRequest) -> SeedSpecs:
    return seed_specs(our_observer if request.param == "pt2e_quant" else ao_observer)


def _export(model: torch.nn.Module, inputs: tuple) -> GraphModule:
    return torch.export.export(model.eval(), inputs, strict=True).module()


def _quantize(model, inputs, quantizer, is_qat: bool = False) -> GraphModule:
    """Export, prepare (or prepare_qat), calibrate once, convert, run: the seed's _quantize."""
    m = _export(model, inputs)
    m = (prepare_qat_pt2e if is_qat else prepare_pt2e)(m, quantizer)
    m(*inputs)
    m = convert_pt2e(m)
    m(*inputs)
    return m


def _nodes(m: GraphModule, target) -> list[Node]:
    return [n for n in m.graph.nodes if n.op == "call_function" and n.target == target]


def _observer_of(m: GraphModule, node: Node) -> torch.nn.Module:
    assert node.op == "call_module", f"expected an observer call, got {node.format_node()}"
    return getattr(m, str(node.target))


def _annotate_conv(specs: SeedSpecs, output: bool = True, bias_spec=None):
    def annotate(gm: GraphModule) -> None:
        for node in _nodes(gm, aten.conv2d.default):
            x, w, b = node.args[0], node.args[1], node.args[2]
            assert isinstance(b, Node)
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={x: specs.act, w: specs.weight, b: bias_spec or specs.bias},
                output_qspec=specs.act if output else None,
                _annotated=True,
            )

    return annotate


def test_simple_quantizer(specs: SeedSpecs) -> None:
    inputs = (torch.randn(1, 3, 5, 5),)
    m = _quantize(
        ConvWithBNRelu(relu=False, bn=False), inputs, FunctionQuantizer(_annotate_conv(specs))
    )
    assert_node_occurrence(m, {Q: 2, DQ: 3})
    assert_node_order(m, [DQ, DQ, aten.conv2d.default, Q])


def test_wo_annotate_conv_output_quantizer(specs: SeedSpecs) -> None:
    inputs = (torch.rand(1, 2, 14, 14),)
    m = _quantize(
        torch.nn.Conv2d(2, 2, 1), inputs, FunctionQuantizer(_annotate_conv(specs, output=False))
    )
    assert_node_occurrence(m, {Q: 1, DQ: 2})
    assert_node_order(m, [DQ, DQ, aten.conv2d.default])
    conv = _nodes(m, aten.conv2d.default)[0]
    assert all(u.target not in (Q, DQ) for u in conv.users), "no output observer expected"


def test_max_pool2d_quantizer(specs: SeedSpecs) -> None:
    def annotate(gm: GraphModule) -> None:
        _annotate_conv(specs, output=False)(gm)
        for node in _nodes(gm, aten.max_pool2d.default):
            x = node.args[0]
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={x: specs.act},
                output_qspec=SharedQuantizationSpec((x, node)),
                _annotated=True,
            )

    m = _quantize(ConvMaxPool2d(), (torch.rand(1, 2, 14, 14),), FunctionQuantizer(annotate))
    assert_node_occurrence(m, {Q: 3, DQ: 4})
    assert_node_order(m, [DQ, DQ, aten.conv2d.default, Q, DQ, aten.max_pool2d.default])


def _derive_bias_per_tensor(observers):
    assert len(observers) == 2, f"expected activation and weight observers, got {observers}"
    act_scale, _ = observers[0].calculate_qparams()
    weight_scale, _ = observers[1].calculate_qparams()
    scale = (act_scale * weight_scale).float().reshape(1)
    return scale, torch.tensor([0], dtype=torch.int32)


def test_derived_qspec(specs: SeedSpecs) -> None:
    def annotate(gm: GraphModule) -> None:
        for node in _nodes(gm, aten.conv2d.default):
            x, w, b = node.args[:3]
            bias_spec = DerivedQuantizationSpec(
                derived_from=[(x, node), (w, node)],
                derive_qparams_fn=_derive_bias_per_tensor,
                dtype=torch.int32,
                quant_min=-(2**31),
                quant_max=2**31 - 1,
                qscheme=torch.per_tensor_symmetric,
            )
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={x: specs.act, w: specs.weight, b: bias_spec},
                output_qspec=specs.act,
                _annotated=True,
            )

    inputs = (torch.randn(1, 3, 5, 5),)
    model = ConvWithBNRelu(relu=False, bn=False)
    m = _quantize(model, inputs, FunctionQuantizer(annotate))
    assert_node_occurrence(m, {Q: 2, DQ: 4})
    assert_node_order(m, [DQ, DQ, DQ, aten.conv2d.default, Q])
    bias_dq = _nodes(m, aten.conv2d.default)[0].args[2]
    assert bias_dq.target == DQ and bias_dq.args[5] == torch.int32
    input_dq, weight_dq = _nodes(m, aten.conv2d.default)[0].args[:2]
    assert bias_dq.args[1] == pytest.approx(input_dq.args[1] * weight_dq.args[1], rel=1e-6)
    assert bias_dq.args[2] == 0


def test_derived_qspec_per_channel(specs: SeedSpecs) -> None:
    def derive(observers):
        assert len(observers) == 1
        weight_scale, _ = observers[0].calculate_qparams()
        return weight_scale, torch.zeros_like(weight_scale)

    def annotate(gm: GraphModule) -> None:
        for node in _nodes(gm, aten.conv2d.default):
            x, w, b = node.args[:3]
            bias_spec = DerivedQuantizationSpec(
                derived_from=[(w, node)],
                derive_qparams_fn=derive,
                dtype=torch.int32,
                quant_min=-(2**31),
                quant_max=2**31 - 1,
                qscheme=torch.per_channel_symmetric,
                ch_axis=0,
            )
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={x: specs.act, w: specs.weight_per_channel, b: bias_spec},
                output_qspec=specs.act,
                _annotated=True,
            )

    m = _quantize(
        ConvWithBNRelu(relu=False, bn=False),
        (torch.randn(1, 3, 5, 5),),
        FunctionQuantizer(annotate),
    )
    assert_node_occurrence(m, {Q: 2, DQ: 2, Q_PC: 0, DQ_PC: 2})
    assert_node_order(m, [DQ_PC, DQ_PC, aten.conv2d.default, Q])


@pytest.mark.parametrize("is_qat", [False, True], ids=["ptq", "qat"])
def test_fixed_qparams_qspec(specs: SeedSpecs, is_qat: bool) -> None:
    def annotate(gm: GraphModule) -> None:
        for node in _nodes(gm, aten.sigmoid.default):
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={node.args[0]: specs.fixed},
                output_qspec=specs.fixed,
                _annotated=True,
            )

    m = _quantize(
        SigmoidModel(), (torch.randn(1, 3, 5, 5),), FunctionQuantizer(annotate), is_qat=is_qat
    )
    for target in (Q, DQ):
        for node in _nodes(m, target):
            assert node.args[1] == 1.0 / 256.0 and type(node.args[1]) is float
            assert node.args[2] == 0 and type(node.args[2]) is int
    assert_node_occurrence(m, {Q: 2, DQ: 2})
    assert_node_order(m, [DQ, aten.sigmoid.default, Q])


def test_fixed_qparams_qspec_observer_dedup(specs: SeedSpecs) -> None:
    fixed = specs.fixed

    def annotate(gm: GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.target == aten.sigmoid.default:
                inputs = {node.args[0]: fixed}
            elif node.target == aten.add.Tensor:
                inputs = {node.args[0]: fixed, node.args[1]: fixed}
            else:
                continue
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=inputs, output_qspec=fixed, _annotated=True
            )

    inputs = (torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5))
    m = _quantize(SigmoidAddModel(), inputs, FunctionQuantizer(annotate))
    assert_node_occurrence(m, {Q: 4, DQ: 4})
    assert_node_order(m, [DQ, aten.sigmoid.default, Q, DQ, aten.add.Tensor, Q])


def _annotate_cat_sharing(specs: SeedSpecs, anchor_index: int):
    """Each conv fully annotated; every cat shares all inputs and output with one anchor input."""

    def annotate(gm: GraphModule) -> None:
        _annotate_conv(specs)(gm)
        for node in _nodes(gm, aten.cat.default):
            inputs = node.args[0]
            anchor = inputs[anchor_index]
            fresh_act = dataclasses.replace(specs.act)  # equal by value, a distinct object
            assert fresh_act == specs.act and fresh_act is not specs.act
            shared = SharedQuantizationSpec((anchor, node))
            input_map = {x: (fresh_act if x is anchor else shared) for x in inputs}
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=input_map, output_qspec=shared, _annotated=True
            )

    return annotate


def _conv_output_observers(m: GraphModule) -> list[torch.nn.Module]:
    found = []
    for conv in _nodes(m, aten.conv2d.default):
        found.append(_observer_of(m, next(iter(conv.users))))
    return found


def test_shared_qspec(specs: SeedSpecs) -> None:
    inputs = (torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5))
    m = prepare_pt2e(
        _export(Conv2dWithCat(), inputs), FunctionQuantizer(_annotate_cat_sharing(specs, 0))
    )
    cat = _nodes(m, aten.cat.default)[0]
    first, second = cat.args[0]
    assert _observer_of(m, first) is _observer_of(m, second)
    conv_observers = _conv_output_observers(m)
    assert len(conv_observers) == 2 and conv_observers[0] is conv_observers[1]
    m(*inputs)
    m = convert_pt2e(m)
    m(*inputs)
    assert_node_occurrence(m, {Q: 5, DQ: 7})
    assert_node_order(m, [DQ, DQ, aten.cat.default, Q])


@pytest.mark.parametrize("anchor_index", [0, 1], ids=["anchor_first_input", "anchor_second"])
def test_shared_qspec_transitivity(specs: SeedSpecs, anchor_index: int) -> None:
    """cat1's output is cat2's input, so both cats and both convs end in one sharing group."""
    model = Conv2dWithTwoCat()
    inputs = model.example_inputs()
    m = prepare_pt2e(
        _export(model, inputs), FunctionQuantizer(_annotate_cat_sharing(specs, anchor_index))
    )
    for cat in _nodes(m, aten.cat.default):
        first, second = cat.args[0]
        assert _observer_of(m, first) is _observer_of(m, second)
        output_observer = _observer_of(m, next(iter(cat.users)))
        assert output_observer is _observer_of(m, first), "input observer does not match output"
    conv_observers = _conv_output_observers(m)
    assert len(conv_observers) == 2 and conv_observers[0] is conv_observers[1]
    m(*inputs)
    m = convert_pt2e(m)
    m(*inputs)
    assert_node_occurrence(m, {Q: 7, DQ: 9})
    assert_node_order(m, [DQ, DQ, aten.cat.default, Q, DQ, aten.cat.default, Q])


def test_allow_implicit_sharing(specs: SeedSpecs) -> None:
    """Three adds sharing within themselves only: add3 does not merge with add1 or add2."""

    def annotate(gm: GraphModule) -> None:
        for node in _nodes(gm, aten.add.Tensor):
            first, second = node.args[0], node.args[1]
            shared = SharedQuantizationSpec((second, node))
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={first: shared, second: specs.act},
                output_qspec=shared,
                allow_implicit_sharing=False,
                _annotated=True,
            )

    model = ThreeAdd()
    inputs = model.example_inputs()
    m = prepare_pt2e(_export(model, inputs), FunctionQuantizer(annotate))
    m(*inputs)
    observers = []
    for add in _nodes(m, aten.add.Tensor):
        first = _observer_of(m, add.args[0])
        assert first is _observer_of(m, add.args[1])
        assert first is _observer_of(m, next(iter(add.users)))
        observers.append(first)
    assert len(observers) == 3
    assert len({id(o) for o in observers}) == 3


def test_shared_spec_anchor_later_in_graph(specs: SeedSpecs) -> None:
    """A shared spec may point at an edge annotated further down the graph."""

    def annotate(gm: GraphModule) -> None:
        conv = _nodes(gm, aten.conv2d.default)[0]
        pool = _nodes(gm, aten.max_pool2d.default)[0]
        x, w, b = conv.args[:3]
        # conv's output shares with the maxpool input edge, which is annotated after it
        conv.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={x: specs.act, w: specs.weight, b: specs.bias},
            output_qspec=SharedQuantizationSpec((conv, pool)),
        )
        pool.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={conv: specs.act}, output_qspec=SharedQuantizationSpec((conv, pool))
        )

    inputs = (torch.rand(1, 2, 14, 14),)
    m = prepare_pt2e(_export(ConvMaxPool2d(), inputs), FunctionQuantizer(annotate))
    conv = _nodes(m, aten.conv2d.default)[0]
    pool = _nodes(m, aten.max_pool2d.default)[0]
    assert _observer_of(m, next(iter(conv.users))) is _observer_of(m, pool.args[0])
    assert _observer_of(m, next(iter(pool.users))) is _observer_of(m, pool.args[0])
    m(*inputs)
    m = convert_pt2e(m)
    assert_node_occurrence(m, {Q: 3, DQ: 4})
