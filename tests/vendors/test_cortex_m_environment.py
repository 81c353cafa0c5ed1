"""Environment check for Cortex-M: ExecuTorch's CortexMQuantizer under torchao's
prepare/convert, lowered by the Cortex-M pass manager and run on the host.

The quantizer lives beside the Arm backend and imports its TOSA serializer, so it needs the
overlay's ``tosa-tools`` too. What works here, for the later differential tests:

* ``executorch.backends.cortex_m.quantizer.quantizer.CortexMQuantizer()`` (int8; pass
  ``per_tensor_config=INT16_PER_TENSOR_CONFIG`` for int16 elementwise ops), on a model
  exported with ``.module(check_guards=False)``;
* the default ("legacy") layout quantizes a convolution only when its input is channels-last:
  on a contiguous model every convolution stays float. Tests export channels-last models;
* lowering: ``to_edge(program, compile_config=cortex_m_edge_compile_config())`` then
  ``CortexMPassManager(edge.exported_program()).transform()`` rewrites q/dq + compute into
  ``cortex_m.quantized_conv2d`` / ``quantized_linear`` / ``quantized_add`` ...; those ops have
  host implementations, so the transformed program runs in Python.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tests.models import TinyResNet
from tests.vendors._overlay import require_vendor
from tests.vendors._torchao_baseline import output_step, torchao_ptq, weight_sources

pytestmark = [pytest.mark.vendor, pytest.mark.torchao]


def cortex_m_quantizer():
    return require_vendor("executorch.backends.cortex_m.quantizer.quantizer").CortexMQuantizer()


def per_channel_weights(converted) -> int:
    dequantize_per_channel = torch.ops.quantized_decomposed.dequantize_per_channel.default
    return sum(node.target == dequantize_per_channel for node in weight_sources(converted))


def test_cortex_m_quantizes_convolutions_only_in_channels_last() -> None:
    contiguous, _, _ = torchao_ptq(TinyResNet(), cortex_m_quantizer())
    channels_last, _, _ = torchao_ptq(TinyResNet(), cortex_m_quantizer(), channels_last=True)

    assert per_channel_weights(contiguous) == 0
    assert per_channel_weights(channels_last) == 9  # the nine convolutions; the classifier
    # takes a per-tensor weight


@pytest.mark.executorch
def test_cortex_m_lowering_runs_on_the_host_like_torchao() -> None:
    config = require_vendor("executorch.backends.cortex_m.edge_compile_config")
    passes = require_vendor("executorch.backends.cortex_m.passes.cortex_m_pass_manager")
    from executorch.exir import to_edge

    converted, _, inputs = torchao_ptq(TinyResNet(), cortex_m_quantizer(), channels_last=True)
    edge = to_edge(
        torch.export.export(converted, inputs),
        compile_config=config.cortex_m_edge_compile_config(),
    )
    program = passes.CortexMPassManager(edge.exported_program()).transform()
    ops = Counter(
        node.target.__name__ for node in program.graph.nodes if node.op == "call_function"
    )
    assert ops["cortex_m.quantized_conv2d.default"] == 9
    assert ops["cortex_m.quantized_linear.default"] == 1
    assert not [op for op in ops if op.startswith("quantized_decomposed.")], ops

    actual = program.module()(*inputs)
    expected = converted(*inputs)
    assert (actual - expected).abs().max().item() <= output_step(converted) * 1.0001
