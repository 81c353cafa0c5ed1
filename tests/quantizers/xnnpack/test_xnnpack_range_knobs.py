"""get_symmetric_quantization_config's range knobs reach the specs and the converted graph.

``act_qmin`` / ``act_qmax`` / ``weight_qmin`` / ``weight_qmax`` are how a user asks for a
narrower integer range (a symmetric -127..127 activation, 7-bit weights). A knob that is
dropped on the way does not crash anything: the model still quantizes, only to the default
range, so the loss shows up as silently different numbers. These tests therefore follow
each knob from the config to the spec, the weight observer's scale and the quantize /
dequantize / choose_qparams arguments that convert writes, for every preset where it
applies (a dynamic config has no output spec; its input range goes to choose_qparams).
test_xnnpack_executorch_parity.py checks one non-default range against ExecuTorch's
quantizer.
"""

from __future__ import annotations

import pytest
import torch
from torch.fx import GraphModule, Node

from pt2e_quant import convert_pt2e, prepare_qat_pt2e
from quantizers.xnnpack.quantizer import get_symmetric_quantization_config
from tests.models.xnnpack_patterns import (
    X4,
    LinearModel,
)
from tests.quantizers.xnnpack._xnnpack_quantize import (
    CHOOSE,
    DQ,
    DQ_CH,
    DQ_DYN,
    Q_DYN,
    Q,
    call_nodes,
    global_quantizer,
    quantize,
)

#: Every knob away from its default (-128, 127, -127, 127), and no two equal, so a knob read
#: in place of another is caught too.
KNOBS = {"act_qmin": -100, "act_qmax": 110, "weight_qmin": -63, "weight_qmax": 62}
ACT_RANGE = (KNOBS["act_qmin"], KNOBS["act_qmax"])
WEIGHT_RANGE = (KNOBS["weight_qmin"], KNOBS["weight_qmax"])

PRESETS = {
    "per_tensor": {},
    "per_channel": {"is_per_channel": True},
    "dynamic_per_tensor": {"is_dynamic": True},
    "dynamic": {"is_per_channel": True, "is_dynamic": True},
    "qat": {"is_per_channel": True, "is_qat": True},
    "qat_dynamic": {"is_per_channel": True, "is_qat": True, "is_dynamic": True},
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_range_knobs_reach_the_specs(preset: str) -> None:
    config = get_symmetric_quantization_config(**PRESETS[preset], **KNOBS)
    activation, weight = config.input_activation, config.weight
    assert (activation.quant_min, activation.quant_max) == ACT_RANGE
    assert (weight.quant_min, weight.quant_max) == WEIGHT_RANGE
    if config.is_dynamic:
        assert config.output_activation is None
    else:
        output = config.output_activation
        assert (output.quant_min, output.quant_max) == ACT_RANGE


def _converted(preset: str) -> tuple[LinearModel, GraphModule]:
    """LinearModel quantized with the knobs under ``preset`` (QAT: one training step)."""
    config = get_symmetric_quantization_config(**PRESETS[preset], **KNOBS)
    torch.manual_seed(0)
    model = LinearModel()
    if not config.is_qat:
        return model, quantize(model, X4, global_quantizer(config))
    prepared = prepare_qat_pt2e(torch.export.export(model, X4).module(), global_quantizer(config))
    prepared(*X4)
    return model, convert_pt2e(prepared)


def _weight_dequantize(m: GraphModule) -> Node:
    (linear,) = call_nodes(m, torch.ops.aten.linear.default)
    return linear.args[1]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_range_knobs_reach_the_converted_graph(preset: str) -> None:
    """Each q/dq argument list ends ``quant_min, quant_max, dtype``; choose_qparams reads
    ``(x, quant_min, quant_max, eps, dtype)``."""
    _, m = _converted(preset)
    weight_dq = _weight_dequantize(m)
    per_channel = PRESETS[preset].get("is_per_channel", False)
    assert weight_dq.target is (DQ_CH if per_channel else DQ)
    assert tuple(weight_dq.args[-3:-1]) == WEIGHT_RANGE
    if PRESETS[preset].get("is_dynamic", False):
        # the range goes to choose_qparams, which picks the qparams at every call, and to
        # the run-time quantize / dequantize
        (choose,) = call_nodes(m, CHOOSE)
        assert tuple(choose.args[1:3]) == ACT_RANGE
        activations = call_nodes(m, Q_DYN) + call_nodes(m, DQ_DYN)
        assert call_nodes(m, Q) == []
    else:
        activations = [n for n in m.graph.nodes if n.target in (Q, DQ) and n is not weight_dq]
    assert len(activations) == (2 if "dynamic" in preset else 4)  # input (and output): q, dq
    assert all(tuple(n.args[-3:-1]) == ACT_RANGE for n in activations)


@pytest.mark.parametrize("preset", ["per_tensor", "per_channel"])
def test_weight_observer_scales_for_the_narrow_range(preset: str) -> None:
    """Not only convert's arguments: the observer computed the scale for the narrow range
    too (symmetric: the largest magnitude maps to half the range's width)."""
    model, m = _converted(preset)
    scale = _weight_dequantize(m).args[1]
    scale = getattr(m, scale.target) if preset == "per_channel" else torch.tensor(scale)
    half_width = (WEIGHT_RANGE[1] - WEIGHT_RANGE[0]) / 2
    magnitude = model.linear.weight.detach().abs()
    expected = magnitude.amax(dim=1) if preset == "per_channel" else magnitude.amax()
    torch.testing.assert_close(scale, expected / half_width)
