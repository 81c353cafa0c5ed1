"""The X86 Inductor presets, and the rule that keeps the configs of one model in one mode.

Two presets, with torchao's names and specs, so migrating is an import change:

* :func:`get_default_x86_inductor_quantization_config`: uint8 activations and int8
  per-channel weights, for Inductor's oneDNN int8 conv / linear kernels (static, dynamic or QAT).
* :func:`get_x86_inductor_linear_dynamic_fp16_config`: float16 weights and float32
  activations, for Inductor's ``onednn.linear_dynamic_fp16`` kernel.

Inductor lowers a model as one: its activations are either observed (static) or measured at
run time (dynamic), and it is either trained (QAT) or calibrated. So every config set on one
quantizer must agree in both modes. When a setter is given a config whose mode disagrees
with one already set, :func:`mode_conflict` says why, and the quantizer keeps the config set
first and warns with :class:`MixedConfigWarning` (torchao keeps the first one too, with two
terse warnings). The float16 config has no activation spec, so it joins static and dynamic
configs alike; it is post-training, so it does not join QAT ones.
"""

from __future__ import annotations

import functools

import torch

from pt2e_quant.contract.specs import QuantizationSpec
from pt2e_quant.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
from pt2e_quant.observer import (
    HistogramObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)
from quantizers.config import QuantizationConfig

__all__ = [
    "MixedConfigWarning",
    "config_name",
    "get_default_x86_inductor_quantization_config",
    "get_x86_inductor_linear_dynamic_fp16_config",
    "is_fp16_weight_only",
    "mode_conflict",
]

_EPS = 2**-12


@functools.lru_cache
def get_default_x86_inductor_quantization_config(
    is_qat: bool = False, is_dynamic: bool = False, reduce_range: bool = False
) -> QuantizationConfig:
    """uint8 per-tensor activations, int8 per-channel symmetric weights, float bias.

    Activations are observed with a histogram (PTQ), with nothing at all when dynamic (qparams
    come from each input at run time), or with fused moving-average fake-quant (QAT).
    ``reduce_range`` limits activations to 0..127, for CPUs without VNNI whose int8 dot
    product can overflow 16-bit intermediates.
    """
    if is_qat and is_dynamic:
        act_ctr = FakeQuantize.with_args(
            eps=_EPS, observer=MovingAverageMinMaxObserver.with_args(averaging_constant=1)
        )
    elif is_qat:
        act_ctr = FusedMovingAvgObsFakeQuantize.with_args(eps=_EPS)
    elif is_dynamic:
        act_ctr = PlaceholderObserver.with_args(eps=_EPS)
    else:
        act_ctr = HistogramObserver.with_args(eps=_EPS)
    activation = QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=127 if reduce_range else 255,
        qscheme=torch.per_tensor_affine,
        is_dynamic=is_dynamic,
        observer_or_fake_quant_ctr=act_ctr,
    )
    if is_qat:
        weight_ctr = FusedMovingAvgObsFakeQuantize.with_args(
            eps=_EPS, observer=MovingAveragePerChannelMinMaxObserver
        )
    else:
        weight_ctr = PerChannelMinMaxObserver.with_args(eps=_EPS)
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,  # output channels of conv (O, I, kH, kW) and linear (O, I) weights
        observer_or_fake_quant_ctr=weight_ctr,
    )
    return QuantizationConfig(activation, activation, weight, None, is_qat)


@functools.lru_cache
def get_x86_inductor_linear_dynamic_fp16_config() -> QuantizationConfig:
    """float16 weights, activations and bias left float32: ``y = x @ fp32(fp16(w)).T + b``.

    Convert turns the weight into ``to_fp16 -> to_fp32`` casts (no scale, nothing to
    calibrate); Inductor with ``freezing=True`` replaces ``casts -> linear [-> relu]`` by
    ``onednn.linear_dynamic_fp16`` (``linear_relu_dynamic_fp16``) on a prepacked fp16 weight.
    torchao calls it "dynamic" after that kernel's name; no activation is quantized. Meant for
    linears (``set_module_type_qconfig(nn.Linear, ...)``): Inductor has no fp16-weight conv
    kernel, so ``validate`` refuses it on a conv.
    """
    weight = QuantizationSpec(dtype=torch.float16, observer_or_fake_quant_ctr=PlaceholderObserver)
    return QuantizationConfig(None, None, weight, None)


def is_fp16_weight_only(config: QuantizationConfig) -> bool:
    """True for a config that casts weights to float16 and leaves activations float."""
    weight = config.weight
    return (
        weight is not None
        and weight.dtype == torch.float16
        and config.input_activation is None
        and config.output_activation is None
    )


# ------------------------------------------------------------------------ config modes


class MixedConfigWarning(UserWarning):
    """A setter ignored a config whose mode (static / dynamic, QAT / post-training) differs
    from a config already set on the same X86InductorQuantizer; the one set first stays."""


def mode_conflict(config: QuantizationConfig, other: QuantizationConfig) -> str | None:
    """Which modes ``config`` and ``other`` mix (``"QAT and post-training"``), or None.

    A config without an activation spec (weight-only, like the float16 one) has no
    static / dynamic mode and mixes with both.
    """
    if config.is_qat != other.is_qat:
        return "QAT and post-training"
    both_activations = config.input_activation is not None and other.input_activation is not None
    if both_activations and config.is_dynamic != other.is_dynamic:
        return "static and dynamic"
    return None


def config_name(config: QuantizationConfig) -> str:
    """How a message names ``config``: its mode and dtypes, e.g. ``a dynamic post-training
    config (uint8 activations, int8 weights)``."""
    activation, weight = config.input_activation, config.weight
    if activation is None:
        mode = "weight-only"
    else:
        mode = "dynamic" if config.is_dynamic else "static"
    dtypes = [
        f"{str(spec.dtype).removeprefix('torch.')} {role}"
        for spec, role in ((activation, "activations"), (weight, "weights"))
        if spec is not None
    ]
    training = "QAT" if config.is_qat else "post-training"
    return f"a {mode} {training} config ({', '.join(dtypes) or 'nothing quantized'})"
