"""X86InductorQuantizer configs: the default recipe's numbers, its variants, the float16 linear
config, and what validate rejects.

Inductor's int8 kernels (onednn qconv / qlinear) take uint8 activations and per-output-channel
int8 weights with a float bias; a config that asks for anything else would annotate a graph
Inductor cannot lower, so validate refuses it at prepare time with a message naming the node
and the field. The default config must match torchao's numbers exactly (the parity tests in
test_x86_inductor_torchao_parity.py depend on it), and importing the quantizer must leave
Inductor's global config alone (torchao's import installs a pre-grad pass).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

from pt2e_quant import AnnotationError, QuantizationSpec, prepare_pt2e
from pt2e_quant.fake_quantize import FusedMovingAvgObsFakeQuantize
from pt2e_quant.observer import (
    HistogramObserver,
    MinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)
from quantizers.config import QuantizationConfig
from quantizers.x86_inductor.quantizer import (
    X86InductorQuantizer,
    get_x86_inductor_linear_dynamic_fp16_config,
)
from tests.graph_check import qdq_and_compute_ops
from tests.models import export_model
from tests.models.x86_patterns import (
    ConvUnary,
    LinearUnary,
)
from tests.paths import REPO
from tests.quantizers.x86_inductor._x86_inductor_quantize import (
    quantize,
    x86_config,
)


def test_default_config() -> None:
    config = x86_config()
    act, weight = config.input_activation, config.weight
    assert (act.dtype, act.quant_min, act.quant_max, act.qscheme) == (
        torch.uint8,
        0,
        255,
        torch.per_tensor_affine,
    )
    assert act.observer_or_fake_quant_ctr.p.func is HistogramObserver
    assert config.output_activation == act and config.bias is None and not config.is_qat
    assert (weight.dtype, weight.qscheme, weight.ch_axis) == (
        torch.int8,
        torch.per_channel_symmetric,
        0,
    )
    assert weight.observer_or_fake_quant_ctr.p.func is PerChannelMinMaxObserver


def test_config_variants() -> None:
    assert x86_config(reduce_range=True).input_activation.quant_max == 127
    dynamic = x86_config(is_dynamic=True)
    assert dynamic.is_dynamic
    assert dynamic.input_activation.observer_or_fake_quant_ctr.p.func is PlaceholderObserver
    qat = x86_config(is_qat=True)
    assert qat.is_qat
    assert qat.weight.observer_or_fake_quant_ctr.p.func is FusedMovingAvgObsFakeQuantize


def test_importing_changes_no_inductor_config() -> None:
    script = (
        "import torch, torch._inductor.config as c\n"
        "before = c.get_config_copy()\n"
        "import quantizers.x86_inductor.quantizer\n"
        "after = c.get_config_copy()\n"
        "changed = sorted(k for k in before if before[k] != after[k])\n"
        "assert not changed, changed\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------- validate


def _replace(config: QuantizationConfig, **fields) -> QuantizationConfig:
    return dataclasses.replace(config, **fields)


def _prepare_with(config: QuantizationConfig) -> None:
    model = ConvUnary(nn.ReLU())
    prepare_pt2e(export_model(model), X86InductorQuantizer().set_global(config))


def test_validate_rejects_per_tensor_weights() -> None:
    weight = QuantizationSpec(
        dtype=torch.int8,
        qscheme=torch.per_tensor_symmetric,
        observer_or_fake_quant_ctr=MinMaxObserver,
    )
    with pytest.raises(AnnotationError, match=r"'conv2d'.*per output channel.*ch_axis=0"):
        _prepare_with(_replace(x86_config(), weight=weight))


def test_validate_rejects_int8_activations() -> None:
    act = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=HistogramObserver,
    )
    with pytest.raises(AnnotationError, match=r"'conv2d'.*input_activation.*uint8"):
        _prepare_with(_replace(x86_config(), input_activation=act, output_activation=act))


def test_validate_rejects_quantized_bias() -> None:
    bias = QuantizationSpec(dtype=torch.int32, observer_or_fake_quant_ctr=MinMaxObserver)
    with pytest.raises(AnnotationError, match="float bias"):
        _prepare_with(_replace(x86_config(), bias=bias))


_FIX = r"Start from get_default_x86_inductor_quantization_config\(\)"


def _weight(dtype: torch.dtype, ch_axis: int) -> QuantizationSpec:
    info = torch.iinfo(dtype)
    return QuantizationSpec(
        dtype=dtype,
        quant_min=info.min,
        quant_max=info.max,
        qscheme=torch.per_channel_symmetric,
        ch_axis=ch_axis,
        observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(ch_axis=ch_axis),
    )


def test_validate_rejects_weights_per_input_channel() -> None:
    """ch_axis=1 quantizes a conv weight per *input* channel: the kernel's per-output-channel
    scales would be applied to the wrong axis."""
    config = _replace(x86_config(), weight=_weight(torch.int8, ch_axis=1))
    with pytest.raises(AnnotationError, match=r"'conv2d'.*ch_axis=1.*per output channel") as err:
        _prepare_with(config)
    assert "ch_axis=0" in str(err.value) and err.match(_FIX)


def test_validate_rejects_uint8_per_channel_weights() -> None:
    config = _replace(x86_config(), weight=_weight(torch.uint8, ch_axis=0))
    with pytest.raises(AnnotationError, match=r"'conv2d'.*weight spec.*dtype=torch\.uint8") as err:
        _prepare_with(config)
    assert "take int8 weights" in str(err.value) and err.match(_FIX)


def test_validate_rejects_symmetric_uint8_activations() -> None:
    """Right dtype, wrong scheme: the kernels take an affine (zero-point) uint8 activation."""
    act = dataclasses.replace(x86_config().input_activation, qscheme=torch.per_tensor_symmetric)
    config = _replace(x86_config(), input_activation=act, output_activation=act)
    pattern = r"'conv2d'.*input_activation spec.*per_tensor_symmetric.*per_tensor_affine"
    with pytest.raises(AnnotationError, match=pattern) as err:
        _prepare_with(config)
    assert err.match(_FIX)


# ------------------------------------------------------------------- float16 linear weights


def test_fp16_linear_config_casts_weights_only() -> None:
    """torchao's spec: a float16 weight under a PlaceholderObserver (nothing to calibrate), no
    activation or bias spec, post-training; cached, so every call returns one object."""
    config = get_x86_inductor_linear_dynamic_fp16_config()
    assert config is get_x86_inductor_linear_dynamic_fp16_config()
    assert (config.input_activation, config.output_activation, config.bias) == (None, None, None)
    assert not config.is_qat and not config.is_dynamic
    assert config.weight.dtype == torch.float16
    assert config.weight.observer_or_fake_quant_ctr is PlaceholderObserver


def test_fp16_linear_computes_with_fp16_rounded_weights() -> None:
    """Convert casts the weight to float16 and back before the linear; activations and bias
    stay float32, so the model computes ``relu(x @ fp32(fp16(w)).T + b)`` exactly."""
    model = LinearUnary(nn.ReLU())
    quantizer = X86InductorQuantizer().set_global(get_x86_inductor_linear_dynamic_fp16_config())
    converted = quantize(model, quantizer)
    assert qdq_and_compute_ops(converted) == [
        "quantized_decomposed.convert_element_type.no_fuse",
        "quantized_decomposed.convert_element_type.no_fuse",
        "aten.linear.default",
        "aten.relu.default",
    ]
    (x,) = model.example_inputs()
    weight = model.linear.weight.detach().to(torch.float16).to(torch.float32)
    expected = torch.relu(torch.nn.functional.linear(x, weight, model.linear.bias))
    with torch.no_grad():
        assert torch.equal(converted(x), expected)


def test_validate_rejects_fp16_weights_on_a_conv() -> None:
    """Inductor has a float16-weight kernel for linear only: a conv would cast its weight to
    float16 and back on every call, slower than leaving it float."""
    with pytest.raises(AnnotationError, match=r"'conv2d'.*float16.*for linear only") as err:
        _prepare_with(get_x86_inductor_linear_dynamic_fp16_config())
    assert err.match(r"set_module_type_qconfig\(nn\.Linear, \.\.\.\)")
