"""Running one model through torchao's X86InductorQuantizer + pipeline, or ours.

The zoo and pattern-model parity tests (``test_x86_inductor_torchao_parity``) and the
random-graph differential test (``test_random_graph_matches_peers``) run both sides with
this one recipe (export, prepare, seeded calibration, convert, QAT's move to eval), so a
change to it reaches every comparison.
"""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
from torch import nn

from pt2e_quant import (
    convert_pt2e,
    move_exported_model_to_eval,
    prepare_pt2e,
    prepare_qat_pt2e,
)
from quantizers.x86_inductor.quantizer import X86InductorQuantizer
from tests.quantizers.x86_inductor._x86_inductor_quantize import (
    x86_config,
)


def torchao_x86_module():
    """torchao's X86 quantizer module, without keeping the Inductor pass its import installs."""
    pytest.importorskip("torchao")
    import torch._inductor.config as inductor_config

    before = inductor_config.pre_grad_custom_pass
    module = importlib.import_module("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
    inductor_config.pre_grad_custom_pass = before
    return module


def calibration_batches(model: nn.Module) -> list[tuple]:
    example = model.example_inputs()
    return [example] + [
        tuple(torch.randn_like(t) if t.is_floating_point() else t for t in example)
        for _ in range(2)
    ]


def run_pipeline(ours: bool, model, calibration, mode: str, strict: bool, scope_matmul=False):
    """Export, prepare, calibrate and convert with our pipeline or torchao's.

    QAT runs the model in training mode (as its export recorded it) and moves the converted
    model to eval, the recipe's last step. The seed is reset before calibrating so a dropout
    in the training graph draws the same masks in both pipelines.
    """
    qat = mode == "qat"
    kwargs = {"is_dynamic": mode == "dynamic", "is_qat": qat}
    exported = torch.export.export(copy.deepcopy(model), calibration[0], strict=strict).module()
    if ours:
        config = x86_config(**kwargs)
        quantizer = X86InductorQuantizer().set_global(config)
        prepare = prepare_qat_pt2e if qat else prepare_pt2e
        convert, to_eval = convert_pt2e, move_exported_model_to_eval
    else:
        peer = torchao_x86_module()
        config = peer.get_default_x86_inductor_quantization_config(**kwargs)
        quantizer = peer.X86InductorQuantizer().set_global(config)
        pipeline = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")
        prepare = pipeline.prepare_qat_pt2e if qat else pipeline.prepare_pt2e
        convert = pipeline.convert_pt2e
        to_eval = importlib.import_module("torchao.quantization.pt2e").move_exported_model_to_eval
    if scope_matmul:
        quantizer.set_function_type_qconfig(torch.matmul, config)
    prepared = prepare(exported, quantizer)
    torch.manual_seed(0)
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    converted = convert(prepared)
    if qat:
        to_eval(converted)
    return converted
