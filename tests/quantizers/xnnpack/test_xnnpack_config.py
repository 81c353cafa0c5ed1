"""XNNPACKQuantizer configs: the presets' numbers, the rule table, and what validate rejects.

The presets must carry ExecuTorch's numbers exactly (int8 activations in -128..127 with a
histogram observer, symmetric -127..127 weights), or the executorch parity tests could not
be bit-exact. XNNPACK's kernels take no uint8 activations, no asymmetric weights and a float
bias that ExecuTorch quantizes itself, so validate refuses such configs at prepare time with
a message naming the node and the fix, and accepts every preset on both the annotated and
the prepared graph. The rule table answers "which ops does XNNPACK quantize, in which
order?" in one place, so its order is pinned too.
"""

from __future__ import annotations

import pytest
import torch

from pt2e_quant import AnnotationError, prepare_pt2e, prepare_qat_pt2e
from pt2e_quant.contract.specs import QuantizationSpec
from pt2e_quant.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
from pt2e_quant.observer import (
    HistogramObserver,
    MinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)
from quantizers.config import QuantizationConfig
from quantizers.xnnpack.quantizer import get_symmetric_quantization_config
from quantizers.xnnpack.rules import RULES
from tests.models.xnnpack_patterns import (
    IMAGE,
    X4,
    ConvPoolHead,
    LinearModel,
)
from tests.quantizers.xnnpack._xnnpack_quantize import (
    DYNAMIC,
    PER_CHANNEL,
    PER_TENSOR,
    QAT,
    global_quantizer,
    prepare,
)

# ------------------------------------------------------------------------------ presets


def test_static_per_tensor_preset_matches_executorch_numbers() -> None:
    act, weight = PER_TENSOR.input_activation, PER_TENSOR.weight
    assert PER_TENSOR.output_activation is act and PER_TENSOR.bias is None
    assert (act.dtype, act.quant_min, act.quant_max, act.qscheme) == (
        torch.int8,
        -128,
        127,
        torch.per_tensor_affine,
    )
    assert act.observer_or_fake_quant_ctr.p.func is HistogramObserver
    assert act.observer_or_fake_quant_ctr.p.keywords["eps"] == 2**-12
    assert (weight.quant_min, weight.quant_max, weight.qscheme) == (
        -127,
        127,
        torch.per_tensor_symmetric,
    )
    assert weight.observer_or_fake_quant_ctr.p.func is MinMaxObserver


def test_per_channel_dynamic_and_qat_presets() -> None:
    assert PER_CHANNEL.weight.qscheme == torch.per_channel_symmetric
    assert PER_CHANNEL.weight.observer_or_fake_quant_ctr.p.func is PerChannelMinMaxObserver
    assert DYNAMIC.is_dynamic and DYNAMIC.output_activation is None
    assert DYNAMIC.input_activation.observer_or_fake_quant_ctr.p.func is PlaceholderObserver
    qat = get_symmetric_quantization_config(is_qat=True)
    assert qat.is_qat
    assert qat.input_activation.observer_or_fake_quant_ctr.p.func is FusedMovingAvgObsFakeQuantize
    assert qat.weight.observer_or_fake_quant_ctr.p.func is FusedMovingAvgObsFakeQuantize
    qat_dynamic = get_symmetric_quantization_config(is_qat=True, is_dynamic=True)
    assert qat_dynamic.input_activation.observer_or_fake_quant_ctr.p.func is FakeQuantize
    # cached: equal arguments give the same object, so prepare can share observers
    assert get_symmetric_quantization_config() is PER_TENSOR


def test_rule_table_is_in_executorch_order() -> None:
    # ExecuTorch's order, plus our QAT linear + batch-norm patterns next to the conv ones and
    # GPT-2's addmm after linear
    assert [rule.name for rule in RULES] == [
        "conv_bn_relu",
        "conv_bn",
        "conv_transpose_bn_relu",
        "conv_transpose_bn",
        "linear_bn_relu",
        "linear_bn",
        "linear_relu",
        "linear",
        "addmm",
        "conv",
        "conv_transpose",
        "conv_relu",
        "conv_transpose_relu",
        "adaptive_avg_pool2d",
        "add_relu",
        "add",
        "mul_relu",
        "mul",
        "cat",
    ]
    assert {rule.name for rule in RULES if rule.dynamic} == {
        "linear",
        "addmm",
        "conv",
        "conv_transpose",
    }


# ----------------------------------------------------------------------------- validate


def _uint8_activation() -> QuantizationSpec:
    return QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=255,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=HistogramObserver,
    )


def test_validate_rejects_uint8_activations() -> None:
    spec = _uint8_activation()
    config = QuantizationConfig(spec, spec, PER_TENSOR.weight, None)
    with pytest.raises(
        AnnotationError, match=r"activation 'x' of 'linear'.*uint8.*int8, -128\.\.127"
    ):
        prepare(LinearModel(), X4, global_quantizer(config))


def test_validate_rejects_asymmetric_weights() -> None:
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_channel_affine,
        ch_axis=0,
        observer_or_fake_quant_ctr=PerChannelMinMaxObserver,
    )
    config = QuantizationConfig(PER_TENSOR.input_activation, None, weight, None)
    with pytest.raises(AnnotationError, match=r"weight '.*' of 'linear'.*per_channel_affine"):
        prepare(LinearModel(), X4, global_quantizer(config))


def test_validate_rejects_quantized_bias() -> None:
    bias = QuantizationSpec(dtype=torch.int32, observer_or_fake_quant_ctr=MinMaxObserver)
    config = QuantizationConfig(PER_TENSOR.input_activation, None, PER_TENSOR.weight, bias)
    with pytest.raises(AnnotationError, match=r"bias .* Set QuantizationConfig.bias to None"):
        prepare(LinearModel(), X4, global_quantizer(config))


def _activation(dtype: torch.dtype, qscheme=torch.per_tensor_affine) -> QuantizationSpec:
    """An activation spec XNNPACK cannot run: a dtype other than int8, or per-channel."""
    info = torch.iinfo(dtype) if not dtype.is_floating_point else None
    return QuantizationSpec(
        dtype=dtype,
        quant_min=info.min if info else None,
        quant_max=info.max if info else None,
        qscheme=qscheme,
        ch_axis=1 if qscheme == torch.per_channel_affine else None,
        observer_or_fake_quant_ctr=HistogramObserver,
    )


@pytest.mark.parametrize("dtype", [torch.int16, torch.float16], ids=str)
def test_validate_rejects_other_activation_dtypes(dtype: torch.dtype) -> None:
    """Not just uint8: any activation dtype but int8 is refused, naming the edge and the
    preset that builds a valid config."""
    spec = _activation(dtype)
    config = QuantizationConfig(spec, spec, PER_TENSOR.weight, None)
    with pytest.raises(
        AnnotationError,
        match=rf"activation 'x' of 'linear'.*{dtype}\. Use get_symmetric_quantization_config\(\)",
    ):
        prepare(LinearModel(), X4, global_quantizer(config))


def test_validate_rejects_per_channel_activations() -> None:
    spec = _activation(torch.int8, torch.per_channel_affine)
    config = QuantizationConfig(spec, spec, PER_TENSOR.weight, None)
    with pytest.raises(
        AnnotationError,
        match=r"activation qschemes.*activation 'x' of 'linear'.* uses torch\.per_channel_affine"
        r".*get_symmetric_quantization_config\(is_per_channel=",
    ):
        prepare(LinearModel(), X4, global_quantizer(config))


@pytest.mark.parametrize(
    ("output", "found"),
    [
        (_activation(torch.int16), r"is annotated as torch\.int16"),
        (_activation(torch.int8, torch.per_channel_affine), r"uses torch\.per_channel_affine"),
    ],
    ids=["int16", "per_channel"],
)
def test_validate_checks_the_output_spec(output: QuantizationSpec, found: str) -> None:
    """The input edges are valid here: only the output spec can be refused."""
    config = QuantizationConfig(PER_TENSOR.input_activation, output, PER_TENSOR.weight, None)
    with pytest.raises(AnnotationError, match=rf"the output of 'linear'.* {found}"):
        prepare(LinearModel(), X4, global_quantizer(config))


@pytest.mark.parametrize(
    "config",
    [PER_TENSOR, PER_CHANNEL, DYNAMIC, QAT],
    ids=["per_tensor", "per_channel", "dynamic", "qat"],
)
def test_validate_accepts_the_presets(config: QuantizationConfig) -> None:
    quantizer = global_quantizer(config)
    exported = torch.export.export(ConvPoolHead(), IMAGE).module()
    # prepare validates the annotated graph ...
    prepared = (prepare_qat_pt2e if config.is_qat else prepare_pt2e)(exported, quantizer)
    assert any(
        isinstance(m, (HistogramObserver, PlaceholderObserver, FusedMovingAvgObsFakeQuantize))
        for m in prepared.modules()
    )
    # ... and validate accepts the prepared one too: annotations stay on the nodes and still
    # name the original weights, now read through an observer (a regression: the conv's
    # per-channel weight was once taken for an activation)
    quantizer.validate(prepared)
