"""Dead-code removal between passes keeps calls that run for their effect.

An observer placed on a value nothing reads (here the result of a buffer update) has no users,
yet it must still run during calibration: when its spec is shared with a read edge, the one
observer instance behind both sees both ranges, and the converted model's qparams depend on
it. The driver's cleanup after each pass must not drop such a call as dead.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pt2e_quant import (
    QuantizationAnnotation,
    SharedQuantizationSpec,
    convert_pt2e,
    prepare_pt2e,
)
from pt2e_quant.ops import qdq_ops
from tests.core.contract.quantizer_fixtures import UINT8_MINMAX, FunctionQuantizer

aten = torch.ops.aten


class AccumulateThenRelu(nn.Module):
    """total += 3 * x (a buffer update nobody reads); return relu(x)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.total.add_(x * 3)
        return torch.relu(x)


def _share_update_with_relu_input(gm: torch.fx.GraphModule) -> None:
    relu = next(n for n in gm.graph.nodes if n.target is aten.relu.default)
    x = relu.args[0]
    relu.meta["quantization_annotation"] = QuantizationAnnotation(
        input_qspec_map={x: UINT8_MINMAX}, _annotated=True
    )
    update = next(n for n in gm.graph.nodes if n.target is aten.add_.Tensor)
    update.meta["quantization_annotation"] = QuantizationAnnotation(
        output_qspec=SharedQuantizationSpec((x, relu)), _annotated=True
    )


def test_observer_with_no_reader_still_calibrates_its_sharing_group():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    gm = torch.export.export(AccumulateThenRelu(), (x,)).module()
    prepared = prepare_pt2e(gm, FunctionQuantizer(_share_update_with_relu_input))
    update = next(n for n in prepared.graph.nodes if n.target is aten.add_.Tensor)
    (observer,) = update.users
    assert observer.op == "call_module" and not observer.users  # the case under test
    prepared(x)
    converted = convert_pt2e(prepared)
    (quantize,) = [n for n in converted.graph.nodes if n.target is qdq_ops.QUANTIZE_PER_TENSOR]
    # x spans [-1, 2] but the shared update spans [-3, 6]: one scale covers both
    assert quantize.args[1] == pytest.approx(9.0 / 255)
