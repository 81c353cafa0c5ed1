"""The X86InductorQuantizer tests' recipe: the default config, ``quantize`` (export, prepare,
calibrate once, convert) and the q/dq counts a pattern should yield. The models they quantize
live in :mod:`tests.models.x86_patterns`."""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import GraphModule

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.ops import qdq_ops
from quantizers.config import QuantizationConfig
from quantizers.x86_inductor.quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from tests.models import export_model

aten = torch.ops.aten
Q, DQ = qdq_ops.QUANTIZE_PER_TENSOR, qdq_ops.DEQUANTIZE_PER_TENSOR
DQ_CH = qdq_ops.DEQUANTIZE_PER_CHANNEL


def x86_config(**kwargs) -> QuantizationConfig:
    return get_default_x86_inductor_quantization_config(**kwargs)


def quantize(model: nn.Module, quantizer: X86InductorQuantizer | None = None) -> GraphModule:
    """Export, prepare (global default config unless ``quantizer``), calibrate once, convert."""
    torch.manual_seed(0)
    inputs = model.example_inputs()
    quantizer = quantizer or X86InductorQuantizer().set_global(x86_config())
    prepared = prepare_pt2e(export_model(model, inputs), quantizer)
    prepared(*inputs)
    return convert_pt2e(prepared)


def qdq_counts(q: int, dq: int, dq_ch: int) -> dict:
    """Expected (activation q, activation dq, per-channel weight dq) occurrences."""
    return {Q: q, DQ: dq, DQ_CH: dq_ch}
