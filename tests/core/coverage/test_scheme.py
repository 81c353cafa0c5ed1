"""explain() names each quantized op's scheme (coverage/scheme.py) from the dequantize nodes
it reads: bit width from the quantized range, granularity from the overload, dynamic from
run-time qparams."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pt2e_quant
from quantizers import (
    XNNPACKQuantizer,
    get_per_token_quantization_config,
    get_symmetric_quantization_config,
)

CONFIGS = {
    "8da4w": (
        get_per_token_quantization_config(weight_bits=4, group_size=32),
        "act int8 per-token (dynamic), weight int4 per-group (32)",
    ),
    "8da8w": (
        get_per_token_quantization_config(weight_bits=8, group_size=None),
        "act int8 per-token (dynamic), weight int8 per-channel",
    ),
    "static": (
        get_symmetric_quantization_config(is_per_channel=True),
        "act int8 per-tensor, weight int8 per-channel",
    ),
    "dynamic": (
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True),
        "act int8 per-tensor (dynamic), weight int8 per-channel",
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_linear_names_its_scheme_and_float_ops_none(name):
    config, expected = CONFIGS[name]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Sigmoid()).eval()
    x = torch.randn(2, 64)
    prepared = pt2e_quant.prepare_pt2e(
        torch.export.export(model, (x,)).module(), XNNPACKQuantizer().set_global(config)
    )
    prepared(x)
    report = pt2e_quant.explain(pt2e_quant.convert_pt2e(prepared), XNNPACKQuantizer())
    schemes = {row.op: row.scheme for row in report.rows}
    assert schemes["linear"] == expected
    assert schemes["sigmoid"] is None  # float: no rule for it
    assert "scheme" in report.to_text().splitlines()[0]
