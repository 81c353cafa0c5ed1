"""The QAT tests' recipe: the quantizers (XNNPACK's QAT preset, fused or with plain
FakeQuantize, and X86's), export in training mode, a few training steps, and readers of the
converted graph."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from pt2e_quant.fake_quantize import FakeQuantize
from pt2e_quant.observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
from pt2e_quant.ops import qdq_ops
from quantizers import (
    X86InductorQuantizer,
    XNNPACKQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from tests.graph_check import ops_in_order


def xnnpack_qat() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    )


def unfused_xnnpack_qat() -> XNNPACKQuantizer:
    """XNNPACK's QAT preset with plain FakeQuantize modules instead of the fused kernel.

    The fused kernel computes its training-time scale for the restricted weight range
    [-127, 127] as 2·amax/255, while convert (here as in torchao) uses the observer's amax/127;
    plain FakeQuantize trains with the observer's own qparams, so QAT eval and the converted
    model can be compared to one quantization step.
    """
    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)

    def unfused(spec, observer):
        return dataclasses.replace(
            spec, observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=observer)
        )

    activation = unfused(config.input_activation, MovingAverageMinMaxObserver)
    return XNNPACKQuantizer().set_global(
        dataclasses.replace(
            config,
            input_activation=activation,
            output_activation=activation,
            weight=unfused(config.weight, MovingAveragePerChannelMinMaxObserver),
        )
    )


def x86_qat() -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(is_qat=True)
    )


def export_train(model: nn.Module, strict: bool = False) -> torch.fx.GraphModule:
    return torch.export.export(model.train(), model.example_inputs(), strict=strict).module()


def train(prepared: torch.fx.GraphModule, model: nn.Module, steps: int = 3) -> None:
    torch.manual_seed(1)
    for _ in range(steps):
        prepared(*(torch.randn_like(t) for t in model.example_inputs()))


def output_scale(converted: torch.fx.GraphModule) -> float | None:
    """Scale of the last dequantize (the output's quantization step), if the output is quantized."""
    output = next(n for n in converted.graph.nodes if n.op == "output")
    value = output.args[0][0]
    if value.target is qdq_ops.DEQUANTIZE_PER_TENSOR:
        return float(value.args[1])
    return None


def qdq_sequence(gm: torch.fx.GraphModule) -> list[str]:
    return [str(op) for op in ops_in_order(gm) if "quantize" in str(op) or "conv" in str(op)]


def weight_dequantize_before_its_conv(sequence: list[str]) -> list[str]:
    """A post-training sequence (weight dequantize first, next to the weight) in QAT's order:
    the weight's dequantize right before its conv, where torchao's QAT convert leaves it."""
    weight_dq = str(qdq_ops.DEQUANTIZE_PER_CHANNEL)
    rest = [op for op in sequence if op != weight_dq]
    conv = next(i for i, op in enumerate(rest) if "conv" in op)
    return rest[:conv] + [weight_dq] * sequence.count(weight_dq) + rest[conv:]
