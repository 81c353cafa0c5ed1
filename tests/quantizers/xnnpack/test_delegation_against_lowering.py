"""Every XNNPACK prediction of explain() against what real lowering delegated, op by op.

Each model is quantized with our XNNPACKQuantizer, explained, re-exported and lowered with
``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` (all precisions
enabled, as users lower). Each edge node is traced back to the converted model's node through
its ``from_node`` provenance (export and edge lowering record it), so every row of the report
gets the verdicts of the edge ops it became:

* ``"not delegated"``: the edge op stayed in the ExecuTorch program;
* inside a delegate (a ``LoweredBackendModule``'s original graph): ``"xnnpack int8
  (dynamic)"`` for a linear / convolution reading a dequantize whose qparams come from
  ``choose_qparams`` and a dequantized weight; ``"xnnpack int8"`` for an op with a
  STATIC_QUANT config whose every input is a dequantize (a bias excepted), or a relu /
  hardtanh fused after such an op; ``"xnnpack fp32"`` otherwise (an FP32-only op such as
  hardswish between a dq and a q is delegated alone, its dq / q become float conversions).

Shape and copy ops the lowering adds (``permute_copy`` of a decomposed linear, the
``getitem`` of a delegate's outputs) are no compute op and are left out. A row must have
exactly one verdict, equal to its prediction (the ``(fused)`` suffix dropped).

Lowering takes seconds per model, so the models are few and each covers a kind of fact:
dynamic quantization (linears, convs; per-channel and per-tensor weights), integer dtypes,
per-op constraints, weight forms, and two zoo blocks for everything else.
"""

from __future__ import annotations

import operator
import warnings

import pytest
import torch
from torch.fx import GraphModule, Node

from pt2e_quant.coverage import CoverageReport, explain
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from quantizers.xnnpack.delegation import FP32, INT8, INT8_DYNAMIC, NOT_DELEGATED
from tests.models import ZOO
from tests.models.delegation import (
    ConstraintTails,
    DynamicConvs,
    DynamicLinears,
    IndexArithmetic,
    WeightForms,
)
from tests.models.zoo_vit import TinyViT
from tests.ptq import quantize_once

pytestmark = pytest.mark.executorch
pytest.importorskip("executorch")

from executorch.backends.xnnpack.partition.xnnpack_partitioner import (  # noqa: E402
    XnnpackPartitioner,
)
from executorch.exir import to_edge_transform_and_lower  # noqa: E402

#: edge ops that only move or reshape data, or unpack a delegate's outputs
_NOT_COMPUTE = {
    "",
    "permute_copy",
    "view_copy",
    "clone",
    "_clone_dim_order",
    "_to_dim_order_copy",
    "unsqueeze_copy",
    "squeeze_copy",
    "expand_copy",
    "slice_copy",
    "select_copy",
    "alias_copy",
    "_to_copy",
}
_GEMMS = {"convolution", "linear", "addmm", "mm"}
_FUSABLE = {"relu", "hardtanh"}
#: edge ops whose partitioner config supports STATIC_QUANT; any other op reading a dq (a
#: hardswish between a dq and a q) is delegated alone, the dq / q as float conversions
_STATIC_QUANT = _GEMMS | _FUSABLE | {"add", "sub", "mul", "cat", "clamp", "max_pool2d", "mean"}


def _edge_name(node: Node) -> str:
    return getattr(getattr(node.target, "_op", node.target), "_opname", "")


def _origin(node: Node) -> str | None:
    """The name of the converted model's node this edge node came from."""
    sources = node.meta.get("from_node") or []
    name = None
    while sources:
        name, sources = sources[0].name, sources[0].from_node
    return name


def _is_dq(node: object) -> bool:
    return isinstance(node, Node) and "dequantize" in _edge_name(node)


def _is_dynamic_dq(node: object) -> bool:
    if not _is_dq(node) or not _edge_name(node.args[0]).startswith("quantize"):  # type: ignore[union-attr]
        return False
    scale = node.args[0].args[1]  # type: ignore[union-attr]
    return isinstance(scale, Node) and scale.target is operator.getitem


def _delegated_as(node: Node, int8: set[Node]) -> str:
    name = _edge_name(node)
    inputs = list(node.all_input_nodes)
    if name in ("convolution", "linear") and len(inputs) > 2:
        inputs = inputs[:2]  # the bias stays float in every precision
    if name in _GEMMS and len(inputs) >= 2 and _is_dynamic_dq(inputs[0]) and _is_dq(inputs[1]):
        return INT8_DYNAMIC
    if name not in _STATIC_QUANT:
        return FP32
    if inputs and all(_is_dq(a) and not _is_dynamic_dq(a) for a in inputs):
        return INT8
    if name in _FUSABLE and node.args[0] in int8:
        return INT8
    return FP32


def lowered_verdicts(converted: GraphModule, example: tuple) -> dict[str, set[str]]:
    """Converted node name -> what lowering made of the edge ops it became."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(converted, example)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    lowered = edge.exported_program()
    verdicts: dict[str, set[str]] = {}

    def record(node: Node, verdict: str) -> None:
        origin = _origin(node)
        if node.op == "call_function" and origin and _edge_name(node) not in _NOT_COMPUTE:
            verdicts.setdefault(origin, set()).add(verdict)

    for node in lowered.graph.nodes:
        record(node, NOT_DELEGATED)
    for module in lowered.graph_module.children():
        original = getattr(module, "original_module", None)
        if original is None:
            continue
        int8: set[Node] = set()
        for node in original.graph.nodes:
            if node.op != "call_function" or _edge_name(node) in _NOT_COMPUTE:
                continue
            verdict = _delegated_as(node, int8)
            if verdict == INT8:
                int8.add(node)
            record(node, verdict)
    return verdicts


def _mismatches(report: CoverageReport, verdicts: dict[str, set[str]]) -> list[tuple]:
    rows = []
    for row in report.rows:
        predicted = (row.prediction or "").replace(" (fused)", "")
        actual = verdicts.get(row.node, {NOT_DELEGATED})
        if actual != {predicted}:
            rows.append((row.node, row.op, predicted, sorted(actual)))
    return rows


def _quantizer(**config: bool) -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**config))


CASES = {
    "dynamic_linears": (DynamicLinears, dict(is_dynamic=True, is_per_channel=True)),
    "dynamic_linears_per_tensor": (DynamicLinears, dict(is_dynamic=True)),
    "dynamic_convs": (DynamicConvs, dict(is_dynamic=True, is_per_channel=True)),
    "dynamic_convs_per_tensor": (DynamicConvs, dict(is_dynamic=True)),
    "index_arithmetic": (IndexArithmetic, dict(is_per_channel=True)),
    "constraint_tails": (ConstraintTails, {}),
    "weight_forms": (WeightForms, {}),
    "mobilenet_v3_block": (ZOO["mobilenet_v3_block"], dict(is_per_channel=True)),
    "transformer_encoder_block": (ZOO["transformer_encoder_block"], dict(is_per_channel=True)),
    # class-token cat, position-embedding add, a folded mask; attention written out (SDPA is
    # decomposed by lowering into ops XNNPACK partly takes: no single verdict to predict)
    "vit": (lambda: TinyViT(explicit_attention=True), dict(is_per_channel=True)),
}


@pytest.mark.parametrize("case", CASES)
def test_every_prediction_matches_the_lowered_program(case: str) -> None:
    build, config = CASES[case]
    torch.manual_seed(0)
    model = build()
    example = model.example_inputs()
    quantizer = _quantizer(**config)
    converted = quantize_once(model, example, quantizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = explain(converted, quantizer)
    assert report.rows
    assert _mismatches(report, lowered_verdicts(converted, example)) == []


def test_unquantized_weight_forms_match_the_lowered_program() -> None:
    """The same weight facts hold for a float model (no quantizer config at all)."""
    model = WeightForms()
    example = model.example_inputs()
    converted = quantize_once(model, example, XNNPACKQuantizer())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = explain(converted, XNNPACKQuantizer(), backend="xnnpack")
    assert _mismatches(report, lowered_verdicts(converted, example)) == []
