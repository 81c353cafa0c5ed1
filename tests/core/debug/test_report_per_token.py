"""The numeric debugger through the LLM q/dq chains: per-token dynamic activations (whose
qparams are computed at run time, so replaying an input's quantization replays the
choose_qparams op too) and int4 per-group weights."""

from __future__ import annotations

import torch

import pt2e_quant
from quantizers import XNNPACKQuantizer, get_per_token_quantization_config
from tests.models.zoo_decoder import LlamaStyleDecoder


def test_report_gives_input_and_weight_sqnr_for_every_8da4w_linear():
    torch.manual_seed(0)
    model = LlamaStyleDecoder(layers=1).eval()
    quantizer = XNNPACKQuantizer().set_global(get_per_token_quantization_config())
    result = pt2e_quant.quantize(
        model, model.example_inputs(), quantizer=quantizer, calibration=[model.example_inputs()]
    )
    rows = [row for row in result.report().rows if row.op == "linear"]
    assert len(rows) == 8  # q, k, v, o, gate, up, down, lm_head
    for row in rows:
        assert row.input_sqnr is not None and row.input_sqnr > 15, row
        # int4 weights: about 6 dB per bit, so low twenties; int8 would be near 45
        assert row.weight_sqnr is not None and 15 < row.weight_sqnr < 35, row
        assert row.activation_sqnr is not None
