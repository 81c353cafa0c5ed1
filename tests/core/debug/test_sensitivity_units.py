"""Which annotated nodes sensitivity() measures as units.

A quantizer may claim a node without quantizing anything (an empty annotation that keeps other
quantizers off it). Such a node changes nothing when "quantized alone", so ranking it would
only add a row reading "SQNR inf" that a user could mistake for a perfectly quantized layer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import GraphModule

from pt2e_quant import QuantizationAnnotation, Quantizer
from pt2e_quant.contract.annotation import set_annotation
from pt2e_quant.debug.sensitivity import sensitivity
from quantizers import get_symmetric_quantization_config

aten = torch.ops.aten


class LinearAdd(nn.Module):
    """``x ─ fc ─ add(·, x) ─ out``"""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + x


class _LinearQuantizedAddClaimed(Quantizer):
    """Quantizes linear (input, weight, output); claims add with an empty annotation."""

    def annotate(self, model: GraphModule) -> GraphModule:
        config = get_symmetric_quantization_config()
        for node in model.graph.nodes:
            if node.target == aten.linear.default:
                specs = {node.args[0]: config.input_activation, node.args[1]: config.weight}
                set_annotation(node, QuantizationAnnotation(specs, config.output_activation))
            elif node.target == aten.add.Tensor:
                set_annotation(node, QuantizationAnnotation(_annotated=True))
        return model

    def validate(self, model: GraphModule) -> None:
        return None


def test_a_claimed_but_unquantized_node_is_not_a_unit() -> None:
    inputs = (torch.randn(4, 8),)
    ep = torch.export.export(LinearAdd().eval(), inputs)

    ranking = sensitivity(ep, _LinearQuantizedAddClaimed(), [inputs], progress=False)

    assert [row.node_names for row in ranking] == [("linear",)]
