"""extract_weights on layers whose output channels are not dimension 0, and float models
without debug handles.

A transposed conv stores its weight as (in, out, kH, kW) and is quantized per output channel
along axis 1; one SQNR per *output* channel is what tells a user which filter rounding hurt.
A float program exported again without handles (the user's own export) must still be matched
to the quantized layers by node name rather than silently giving "no float op".
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.debug.comparison import compute_sqnr
from pt2e_quant.debug.handles import generate_numeric_debug_handle
from pt2e_quant.debug.weights import extract_weights
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.models.seed_models import TwoLinearModule


class Deconv(nn.Module):
    """``x (1,4,5,5) ─ ConvTranspose2d(4→3, k2) ─ out``; output channel 2 has 100x weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.deconv = nn.ConvTranspose2d(4, 3, 2)
        with torch.no_grad():
            self.deconv.weight[:, 2] *= 100

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(x)


def _quantize(model: nn.Module, inputs: tuple, per_channel: bool, handles: bool = True):
    ep = torch.export.export(model.eval(), inputs)
    if handles:
        generate_numeric_debug_handle(ep)
    config = get_symmetric_quantization_config(is_per_channel=per_channel)
    prepared = prepare_pt2e(ep.module(), XNNPACKQuantizer().set_global(config))
    prepared(*inputs)
    return ep, convert_pt2e(prepared)


def test_transposed_conv_has_one_sqnr_per_output_channel() -> None:
    model = Deconv()
    ep, quantized = _quantize(model, (torch.randn(1, 4, 5, 5),), per_channel=True)
    (deconv,) = extract_weights(ep, quantized).values()
    assert deconv.axis == 1 and len(deconv.channel_sqnr) == 3

    w = model.deconv.weight.detach()
    dq = next(n for n in quantized.graph.nodes if n.name == "conv_transpose2d").args[1]
    scales = getattr(quantized, dq.args[1].target)
    by_hand = torch.clamp(torch.round(w / scales.view(1, -1, 1, 1)), -127, 127)
    by_hand = by_hand * scales.view(1, -1, 1, 1)
    expected = [float(compute_sqnr(w[:, c], by_hand[:, c])) for c in range(3)]
    assert deconv.channel_sqnr == pytest.approx(expected, rel=1e-5)


def test_float_program_without_handles_is_matched_by_node_name() -> None:
    """Quantized model with handles, float side re-exported without: still compared."""
    model = TwoLinearModule().eval()
    inputs = model.example_inputs()
    _, quantized = _quantize(model, inputs, per_channel=False)
    plain = torch.export.export(model, inputs)  # the user's own export: no handles

    weights = extract_weights(plain, quantized)

    assert len(weights) == 2
    assert all(w.note is None and w.sqnr > 35 for w in weights.values())
