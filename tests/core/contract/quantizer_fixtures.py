"""Specs and tiny quantizers the seed PT2E tests annotate with, for either observer library.

The seed tests are written against torch.ao's observers; the issue requires the same counts
with ours, so every spec here is built from a library module passed in (``pt2e_quant.observer``
or ``torch.ao.quantization.observer``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
from torch.fx import GraphModule

from pt2e_quant import FixedQParamsQuantizationSpec, QuantizationSpec, Quantizer
from pt2e_quant.observer import MinMaxObserver


@dataclass(frozen=True)
class SeedSpecs:
    """ACT_U8, W_I8, BIAS_F32, W_I8_PC and FIXED_U8 of the seed inventory."""

    act: QuantizationSpec
    weight: QuantizationSpec
    bias: QuantizationSpec
    weight_per_channel: QuantizationSpec
    fixed: FixedQParamsQuantizationSpec


def seed_specs(lib: ModuleType) -> SeedSpecs:
    return SeedSpecs(
        act=QuantizationSpec(
            dtype=torch.uint8,
            quant_min=0,
            quant_max=255,
            qscheme=torch.per_tensor_affine,
            is_dynamic=False,
            observer_or_fake_quant_ctr=lib.default_observer,
        ),
        weight=QuantizationSpec(
            dtype=torch.int8,
            quant_min=-128,
            quant_max=127,
            qscheme=torch.per_tensor_affine,
            is_dynamic=False,
            observer_or_fake_quant_ctr=lib.default_weight_observer,
        ),
        bias=QuantizationSpec(
            dtype=torch.float32,
            is_dynamic=False,
            observer_or_fake_quant_ctr=lib.PlaceholderObserver,
        ),
        weight_per_channel=QuantizationSpec(
            dtype=torch.int8,
            quant_min=-128,
            quant_max=127,
            qscheme=torch.per_channel_affine,
            ch_axis=0,
            is_dynamic=False,
            observer_or_fake_quant_ctr=lib.default_per_channel_weight_observer,
        ),
        fixed=FixedQParamsQuantizationSpec(
            dtype=torch.uint8,
            quant_min=0,
            quant_max=255,
            qscheme=torch.per_tensor_affine,
            scale=1.0 / 256.0,
            zero_point=0,
        ),
    )


#: uint8 per-tensor affine activations observed by min/max: the plainest static spec, for
#: tests about where observers go rather than about which observer
UINT8_MINMAX = QuantizationSpec(
    dtype=torch.uint8,
    quant_min=0,
    quant_max=255,
    qscheme=torch.per_tensor_affine,
    observer_or_fake_quant_ctr=MinMaxObserver,
)


class FunctionQuantizer(Quantizer):
    """A quantizer whose annotate step is a plain function; validate accepts everything."""

    def __init__(self, annotate_fn: Callable[[GraphModule], None]) -> None:
        self.annotate_fn = annotate_fn

    def annotate(self, model: GraphModule) -> GraphModule:
        self.annotate_fn(model)
        return model

    def validate(self, model: GraphModule) -> None:
        return None


def int8_specs(lib: ModuleType, dynamic: bool = False, per_channel: bool = True):
    """(activation, weight) specs like XNNPACK's symmetric config, from one observer library."""
    if dynamic:
        activation = QuantizationSpec(
            dtype=torch.int8,
            quant_min=-128,
            quant_max=127,
            qscheme=torch.per_tensor_affine,
            is_dynamic=True,
            observer_or_fake_quant_ctr=lib.PlaceholderObserver,
        )
    else:
        activation = QuantizationSpec(
            dtype=torch.int8,
            quant_min=-128,
            quant_max=127,
            qscheme=torch.per_tensor_affine,
            observer_or_fake_quant_ctr=lib.HistogramObserver,
        )
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric,
        ch_axis=0 if per_channel else None,
        observer_or_fake_quant_ctr=(
            lib.PerChannelMinMaxObserver if per_channel else lib.MinMaxObserver
        ),
    )
    return activation, weight


class ConvLinearQuantizer(Quantizer):
    """Quantizes every conv / linear: activation in (and out unless dynamic), weight; bias float."""

    TARGETS = (
        torch.ops.aten.conv1d.default,
        torch.ops.aten.conv2d.default,
        torch.ops.aten.linear.default,
    )

    def __init__(self, activation: QuantizationSpec, weight: QuantizationSpec) -> None:
        self.activation = activation
        self.weight = weight

    def annotate(self, model: GraphModule) -> GraphModule:
        from pt2e_quant import QuantizationAnnotation

        for node in model.graph.nodes:
            if node.op != "call_function" or node.target not in self.TARGETS:
                continue
            x, w = node.args[0], node.args[1]
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={x: self.activation, w: self.weight},
                output_qspec=None if self.activation.is_dynamic else self.activation,
                _annotated=True,
            )
        return model

    def validate(self, model: GraphModule) -> None:
        return None
