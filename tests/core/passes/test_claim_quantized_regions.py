"""claim_quantized_regions: region ops are claimed, convert's spent annotations dropped.

The pass changes metadata only (it reports False and the code stays the same). A quantizer
then skips the claimed ops, the way composed quantizers skip what an earlier one took, and
the converted model's own annotations no longer claim ops a second quantizer may quantize.
"""

from __future__ import annotations

import torch

from pt2e_quant.contract.annotation import get_annotation, is_annotated
from pt2e_quant.passes.claim_quantized_regions import claim_quantized_regions
from tests.core.pipeline._edge_case_pipeline import (
    quiet,
    run_pipeline,
    x86_quantizer,
    xnnpack_quantizer,
)
from tests.models.reentrant import HeadThenPart, LinearRelu, PartThenHead, export

aten = torch.ops.aten


def test_region_ops_are_claimed_with_empty_annotations() -> None:
    x = torch.randn(8, 4)
    with quiet():
        part = run_pipeline(export(LinearRelu(), x), xnnpack_quantizer(), [(x,)])
    parent = export(PartThenHead(part), x)
    code = parent.code
    assert claim_quantized_regions(parent) is False
    assert parent.code == code
    claimed = [n for n in parent.graph.nodes if is_annotated(n)]
    part_linear = next(n for n in parent.graph.nodes if n.target is aten.linear.default)
    relu = next(n for n in parent.graph.nodes if n.target is aten.relu.default)
    assert claimed == [part_linear, relu]
    for node in claimed:
        annotation = get_annotation(node)
        assert annotation.input_qspec_map == {} and annotation.output_qspec is None


def test_annotations_a_convert_consumed_are_dropped() -> None:
    """X86 claims a head scoped to None as float; after convert that claim is history."""
    x = torch.randn(8, 4)
    first = x86_quantizer().set_module_name_qconfig("head", None)
    with quiet():
        converted = run_pipeline(export(HeadThenPart(LinearRelu()), x), first, [(x,)])
    head = next(n for n in converted.graph.nodes if n.target is aten.linear.default)
    assert is_annotated(head)
    claim_quantized_regions(converted)
    assert get_annotation(head) is None
    part_linear = [n for n in converted.graph.nodes if n.target is aten.linear.default][1]
    assert is_annotated(part_linear) and get_annotation(part_linear).output_qspec is None
