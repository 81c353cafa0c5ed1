"""QAT conv-bn simulation keeps specs that refer to the rewritten weight edge meaningful.

``prepare_qat_pt2e`` feeds a conv-bn's conv the scaled weight ``w * s`` instead of ``w``, so
the edge ``(w, conv)`` disappears. A spec elsewhere that shares with that edge (a tied weight
read by a second conv) must follow it to ``(w * s, conv)``; otherwise prepare rejects the
user's annotation as pointing at an edge nobody quantizes.
"""

from __future__ import annotations

import torch
from torch import nn

from pt2e_quant import (
    QuantizationAnnotation,
    QuantizationSpec,
    SharedQuantizationSpec,
    prepare_qat_pt2e,
)
from pt2e_quant.fake_quantize import FakeQuantize
from pt2e_quant.observer import MovingAverageMinMaxObserver
from tests.core.contract.quantizer_fixtures import FunctionQuantizer

aten = torch.ops.aten

WEIGHT = QuantizationSpec(
    dtype=torch.int8,
    quant_min=-127,
    quant_max=127,
    qscheme=torch.per_tensor_symmetric,
    observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver),
)


class TiedWeightConvs(nn.Module):
    """One weight read by conv -> bn and by a plain conv."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 1, 1))
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(nn.functional.conv2d(x, self.weight)) + nn.functional.conv2d(x, self.weight)


def _share_second_weight_with_first(gm: torch.fx.GraphModule) -> None:
    first, second = [n for n in gm.graph.nodes if n.target is aten.conv2d.default]
    weight = first.args[1]
    first.meta["quantization_annotation"] = QuantizationAnnotation(
        input_qspec_map={weight: WEIGHT}, _annotated=True
    )
    second.meta["quantization_annotation"] = QuantizationAnnotation(
        input_qspec_map={weight: SharedQuantizationSpec((weight, first))}, _annotated=True
    )


def test_spec_shared_with_a_simulated_weight_edge_follows_it():
    """The second conv's weight gets the very fake-quant module of the first conv's (now
    scaled) weight, as the shared spec asked, and the prepared model runs."""
    x = torch.randn(2, 3, 4, 4)
    gm = torch.export.export(TiedWeightConvs().train(), (x,)).module()
    prepared = prepare_qat_pt2e(gm, FunctionQuantizer(_share_second_weight_with_first))
    convs = [n for n in prepared.graph.nodes if n.target is aten.conv2d.default]
    # the conv-bn was simulated, and (as in torchao) moved next to the add that reads it
    second, first = convs
    assert first.args[1].args[0].target is aten.mul.Tensor
    assert second.args[1].args[0].op == "get_attr"
    modules = [prepared.get_submodule(conv.args[1].target) for conv in (first, second)]
    assert isinstance(modules[0], FakeQuantize) and modules[0] is modules[1]
    assert prepared(x).shape == (2, 4, 4, 4)
