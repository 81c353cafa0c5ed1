"""The generic annotation checks prepare runs for every quantizer (:mod:`pt2e_quant.contract.validation`).

They turn annotation mistakes into an :class:`AnnotationError` naming the node, before any
observer is built, and they must not refuse annotations that are valid.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pt2e_quant import (
    AnnotationError,
    QuantizationAnnotation,
    QuantizationSpec,
    convert_pt2e,
    prepare_pt2e,
)
from pt2e_quant.observer import PerChannelMinMaxObserver
from pt2e_quant.ops import qdq_ops
from tests.core.contract.quantizer_fixtures import UINT8_MINMAX, FunctionQuantizer
from tests.graph_check import count_ops

aten = torch.ops.aten


def _per_channel(ch_axis: int) -> QuantizationSpec:
    return QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
        ch_axis=ch_axis,
        observer_or_fake_quant_ctr=PerChannelMinMaxObserver,
    )


def _linear_weight(spec: QuantizationSpec) -> FunctionQuantizer:
    def annotate(gm: torch.fx.GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.target is aten.linear.default:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[1]: spec}, _annotated=True
                )

    return FunctionQuantizer(annotate)


def test_per_channel_axis_equal_to_the_rank_is_refused():
    """A linear weight has dims 0 and 1; ch_axis=2 (one past the last) is the usual off-by-one
    and must be reported with the node and the valid range, not crash inside the observer."""
    x = torch.randn(2, 4)
    gm = torch.export.export(nn.Linear(4, 3).eval(), (x,)).module()
    with pytest.raises(AnnotationError, match=r"ch_axis=2, but '\w+' has only 2 dimension"):
        prepare_pt2e(gm, _linear_weight(_per_channel(2)))


def test_last_valid_per_channel_axis_is_accepted():
    """ch_axis=1 (the last dim of a 2-D weight) is valid and gives one scale per column."""
    x = torch.randn(2, 4)
    gm = torch.export.export(nn.Linear(4, 3).eval(), (x,)).module()
    prepared = prepare_pt2e(gm, _linear_weight(_per_channel(1)))
    prepared(x)
    linear = next(n for n in prepared.graph.nodes if n.target is aten.linear.default)
    assert prepared.get_submodule(linear.args[1].target).min_val.shape == (4,)


class Add(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


def _keyword_input_add(gm: torch.fx.GraphModule) -> None:
    """Rewrites ``add(x, y)`` as ``add(x, other=y)`` (as a ``transform_for_annotation`` or a
    custom op with keyword-only tensors may leave it) and quantizes both inputs."""
    for node in gm.graph.nodes:
        if node.target is aten.add.Tensor:
            x, y = node.args
            node.args, node.kwargs = (x,), {"other": y}
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={x: UINT8_MINMAX, y: UINT8_MINMAX}, _annotated=True
            )


def test_annotation_may_key_an_input_passed_by_keyword():
    """An input reached through ``node.kwargs`` is an input of the node: the annotation is
    accepted and that input is quantized like a positional one."""
    x, y = torch.randn(4), torch.randn(4)
    gm = torch.export.export(Add(), (x, y)).module()
    prepared = prepare_pt2e(gm, FunctionQuantizer(_keyword_input_add))
    prepared(x, y)
    converted = convert_pt2e(prepared)
    assert count_ops(converted)[qdq_ops.QUANTIZE_PER_TENSOR] == 2
    add = next(n for n in converted.graph.nodes if n.target is aten.add.Tensor)
    assert add.kwargs["other"].target is qdq_ops.DEQUANTIZE_PER_TENSOR
