"""Post-training quantization of a zoo model with our pipeline, the prologue of lowering tests.

Tests that check what happens *after* quantization (delegation, Inductor fusion, coverage
predictions) all start the same way: seed, build the model, export it, prepare, calibrate on
its example input, convert. They share this one spelling so their inputs stay identical.
"""

from __future__ import annotations

import warnings

import torch
from torch.fx import GraphModule

from pt2e_quant import Quantizer, convert_pt2e, prepare_pt2e
from pt2e_quant.coverage import CoverageReport, explain
from tests.models import ZOO


def quantize_once(model: torch.nn.Module, example: tuple, quantizer: Quantizer) -> GraphModule:
    """``model`` exported in eval mode, prepared, calibrated once on ``example``, converted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # export / observer chatter is not what these tests check
        prepared = prepare_pt2e(torch.export.export(model.eval(), example).module(), quantizer)
        with torch.no_grad():
            prepared(*example)
        return convert_pt2e(prepared)


def quantize_zoo_model(name: str, quantizer: Quantizer) -> tuple[GraphModule, tuple]:
    """(converted model, example inputs) of ``ZOO[name]`` calibrated once on its example."""
    torch.manual_seed(0)
    model = ZOO[name]()
    example = model.example_inputs()
    return quantize_once(model, example, quantizer), example


def explain_quantized(
    model: torch.nn.Module, example: tuple, quantizer: Quantizer
) -> CoverageReport:
    """The coverage report of ``model`` after :func:`quantize_once` (seeded, warnings off)."""
    torch.manual_seed(0)
    converted = quantize_once(model, example, quantizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return explain(converted, quantizer)
