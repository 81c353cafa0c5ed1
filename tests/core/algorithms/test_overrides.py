"""OverridingQuantizer: the user's quantizer, minus the nodes an algorithm keeps float."""

from __future__ import annotations

import torch
from torch import nn

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.algorithms.overrides import KEPT_FOR_TARGET, OverridingQuantizer
from pt2e_quant.contract.annotation import get_annotation, kept_float_reason
from pt2e_quant.coverage import explain
from pt2e_quant.ops.qdq_ops import is_dequantize, is_quantize
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config


class ConvPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 4, 3)
        self.second = nn.Conv2d(4, 4, 3)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.second(torch.relu(self.first(x))))


def _exported() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    example = (torch.randn(1, 3, 10, 10),)
    return torch.export.export(ConvPool().eval(), example).module(), example


def _quantizer() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config())


def _conv_nodes(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.target == torch.ops.aten.conv2d.default]


def test_a_kept_float_conv_gets_no_observer_and_explain_says_why() -> None:
    gm, example = _exported()
    second = _conv_nodes(gm)[1].name
    wrapped = OverridingQuantizer(_quantizer(), keep_float={second: KEPT_FOR_TARGET})
    prepared = prepare_pt2e(gm, wrapped)
    prepared(*example)
    converted = convert_pt2e(prepared)
    first_conv, second_conv = _conv_nodes(converted)
    assert kept_float_reason(second_conv) == KEPT_FOR_TARGET
    # the kept conv reads its weight float (no dequantize) while the first conv's is quantized
    assert not is_dequantize(second_conv.args[1])
    assert is_dequantize(first_conv.args[1])
    rows = {row.node: row for row in explain(converted, _quantizer()).rows}
    assert rows[second].reason == KEPT_FOR_TARGET and not rows[second].quantized
    assert rows[first_conv.name].quantized


def test_a_pool_sharing_a_kept_float_output_is_still_quantized_on_its_own() -> None:
    gm, example = _exported()
    second = _conv_nodes(gm)[1].name
    wrapped = OverridingQuantizer(_quantizer(), keep_float={second: "kept float for a test"})
    prepared = prepare_pt2e(gm, wrapped)
    prepared(*example)
    converted = convert_pt2e(prepared)
    pool = next(n for n in converted.graph.nodes if "max_pool" in str(n.target))
    # the pool's input is quantized with qparams observed at its own edge, its output shares them
    assert is_dequantize(pool.args[0]) and is_quantize(pool.args[0].args[0])
    assert torch.isfinite(converted(*example)).all()


def test_adjustments_run_after_translation_on_every_graph() -> None:
    gm, example = _exported()
    seen: list[int] = []

    def count_annotated(graph_module: torch.fx.GraphModule) -> None:
        seen.append(sum(get_annotation(n) is not None for n in graph_module.graph.nodes))

    prepare_pt2e(gm, OverridingQuantizer(_quantizer(), adjustments=[count_annotated]))
    assert seen and seen[0] > 0


def test_without_overrides_the_model_is_quantized_as_by_the_quantizer_itself() -> None:
    gm, example = _exported()
    plain = prepare_pt2e(gm, _quantizer())
    wrapped = prepare_pt2e(gm, OverridingQuantizer(_quantizer()))
    for model in (plain, wrapped):
        model(*example)
    torch.testing.assert_close(convert_pt2e(plain)(*example), convert_pt2e(wrapped)(*example))


def test_a_hosted_quantizers_annotations_are_translated_then_overridden() -> None:
    """ExecuTorch's XNNPACKQuantizer writes torchao's classes; the kept-float conv is
    dropped from them all the same."""
    import pytest

    hosted_module = pytest.importorskip("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
    gm, example = _exported()
    second = _conv_nodes(gm)[1].name
    hosted = hosted_module.XNNPACKQuantizer().set_global(
        hosted_module.get_symmetric_quantization_config()
    )
    prepared = prepare_pt2e(gm, OverridingQuantizer(hosted, keep_float={second: KEPT_FOR_TARGET}))
    prepared(*example)
    converted = convert_pt2e(prepared)
    first_conv, second_conv = _conv_nodes(converted)
    assert is_dequantize(first_conv.args[1]) and not is_dequantize(second_conv.args[1])
    assert kept_float_reason(second_conv) == KEPT_FOR_TARGET
