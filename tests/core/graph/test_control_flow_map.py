"""Models built on ``map`` (``torch.ops.higher_order.map_impl``) go through prepare → convert.

The map body reads its per-channel weight scales after convert; those constants must be lifted
into the op's trailing ``pos_args`` operand (index 2), not into ``xs``, or the body is called
with the wrong placeholders and the model neither runs nor re-exports.
"""

from __future__ import annotations

import io

import torch
from functorch.experimental.control_flow import map as control_flow_map
from torch import Tensor, nn

import pt2e_quant.observer as our_observer
from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.ops import qdq_ops
from tests.core.contract.quantizer_fixtures import ConvLinearQuantizer, int8_specs


class MapLinear(nn.Module):
    """``map`` running one linear over every slice of dim 0: xs (3,2,4) → ys (3,2,4)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, xs: Tensor) -> Tensor:
        return control_flow_map(self.linear, xs)


def _quantized_map_model() -> tuple[MapLinear, torch.fx.GraphModule, tuple[Tensor]]:
    torch.manual_seed(0)
    model = MapLinear().eval()
    inputs = (torch.randn(3, 2, 4),)
    exported = torch.export.export(model, inputs).module()
    prepared = prepare_pt2e(exported, ConvLinearQuantizer(*int8_specs(our_observer)))
    prepared(*inputs)
    return model, convert_pt2e(prepared), inputs


def test_map_body_linear_is_quantized_and_close_to_float() -> None:
    """The linear inside the map body gets q/dq on input, weight and output, and the converted
    model still computes the float result; users of ``map`` get a quantized model, not a
    silently float one or one that crashes on the lifted weight scales."""
    model, converted, inputs = _quantized_map_model()
    body_targets = [
        node.target
        for graph_module in iter_graph_modules(converted)
        if graph_module is not converted
        for node in graph_module.graph.nodes
        if node.op == "call_function"
    ]
    assert qdq_ops.DEQUANTIZE_PER_CHANNEL in body_targets
    assert body_targets.count(qdq_ops.QUANTIZE_PER_TENSOR) == 2
    float_out, quant_out = model(*inputs), converted(*inputs)
    assert torch.allclose(float_out, quant_out, atol=0.05), (float_out - quant_out).abs().max()


def test_quantized_map_model_reexports_and_saves() -> None:
    """The converted map model re-exports and survives torch.export.save/load bit for bit,
    which needs the body's scale constants passed as map operands rather than held as tensors."""
    _, converted, inputs = _quantized_map_model()
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(converted, inputs), buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    assert torch.equal(loaded(*inputs), converted(*inputs))
