"""Environment check for Arm TOSA: ExecuTorch's TOSAQuantizer under torchao's prepare/convert,
lowered by the Arm TOSA partitioner and run by the TOSA reference model from ``tosa-tools``.

This is the baseline later differential tests build on, so it pins what works here:

* ``executorch.backends.arm.quantizer.TOSAQuantizer(TosaSpecification.create_from_string(s))``
  with ``set_global(config)``; int8 is ``get_symmetric_quantization_config()`` on
  ``"TOSA-1.0+INT"``, 16-bit activations with int8 weights (a16w8) are
  ``get_symmetric_a16w8_quantization_config()`` on ``"TOSA-1.0+INT+int16"``;
* lowering: ``to_edge_transform_and_lower(program, partitioner=[TOSAPartitioner(
  TosaCompileSpec(s))])`` delegates the whole quantized body, leaving only the input
  quantize and output dequantize outside;
* running: the delegate's TOSA flatbuffer executes on ``tosa_reference_model`` through
  ExecuTorch's ``TosaReferenceModelDispatch`` (its Arm test helpers ship in the wheel). On
  tiny_resnet it reproduces torchao's converted module within one output step (bit-exactly
  in practice: both rescale the same integers).

::

    TinyResNet ─ prepare_pt2e(TOSAQuantizer) ─ calibrate ─ convert ─┬─ run ─ expected
                                                                    └─ lower ─ refmodel ─ actual
"""

from __future__ import annotations

import pytest
import torch

from tests.models import TinyResNet
from tests.vendors._overlay import require_vendor
from tests.vendors._torchao_baseline import (
    output_step,
    quantize_dtypes,
    torchao_ptq,
    weight_sources,
)

pytestmark = [pytest.mark.vendor, pytest.mark.torchao]

# preset name -> (TOSA specification string, config factory name, activation dtype)
PRESETS = {
    "int8": ("TOSA-1.0+INT", "get_symmetric_quantization_config", torch.int8),
    "a16w8": ("TOSA-1.0+INT+int16", "get_symmetric_a16w8_quantization_config", torch.int16),
}


def tosa_quantizer(preset: str):
    arm = require_vendor("executorch.backends.arm.quantizer")
    specification = require_vendor("executorch.backends.arm.tosa.specification")
    spec_string, config_factory, _ = PRESETS[preset]
    quantizer = arm.TOSAQuantizer(specification.TosaSpecification.create_from_string(spec_string))
    quantizer.set_global(getattr(arm, config_factory)())
    return quantizer


def test_tosa_serializer_imports_with_the_main_environments_numpy() -> None:
    serializer = require_vendor("tosa_serializer")
    import numpy

    assert ".venv-vendors" in serializer.__file__
    assert ".venv-vendors" not in numpy.__file__, "the overlay must not shadow .venv's numpy"


@pytest.mark.parametrize("preset", list(PRESETS))
def test_tosa_quantizer_runs_under_torchao(preset: str) -> None:
    converted, _, _ = torchao_ptq(TinyResNet(), tosa_quantizer(preset))

    assert quantize_dtypes(converted) == {PRESETS[preset][2]}
    dequantize_per_channel = torch.ops.quantized_decomposed.dequantize_per_channel.default
    weights = weight_sources(converted)
    assert len(weights) == 10  # nine convolutions and the classifier
    assert all(node.target == dequantize_per_channel for node in weights)
    assert {node.args[-1] for node in weights} == {torch.int8}


@pytest.mark.executorch
@pytest.mark.parametrize("preset", list(PRESETS))
def test_tosa_reference_model_matches_torchao(preset: str) -> None:
    partitioner = require_vendor("executorch.backends.arm.tosa.partitioner")
    compile_spec = require_vendor("executorch.backends.arm.tosa.compile_spec")
    runner = require_vendor("executorch.backends.arm.test.runner_utils")
    from executorch.exir import to_edge_transform_and_lower

    converted, _, inputs = torchao_ptq(TinyResNet(), tosa_quantizer(preset))
    spec = compile_spec.TosaCompileSpec(PRESETS[preset][0])
    edge = to_edge_transform_and_lower(
        torch.export.export(converted, inputs),
        partitioner=[partitioner.TOSAPartitioner(spec)],
    )
    lowered = edge.exported_program()
    targets = [str(node.target) for node in lowered.graph.nodes if node.op == "call_function"]
    assert targets.count("executorch_call_delegate") == 1
    assert not [t for t in targets if t.startswith("aten.")], targets

    with runner.TosaReferenceModelDispatch() as dispatch:
        actual = lowered.module()(*inputs)
    assert dispatch.ran_tosa_dispatch
    expected = converted(*inputs)
    assert (actual - expected).abs().max().item() <= output_step(converted) * 1.0001
