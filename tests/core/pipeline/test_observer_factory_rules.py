"""How prepare turns specs into observer / fake-quant modules, beyond the common presets.

Pins the rules of :mod:`pt2e_quant.pipeline.observer_factory` that the preset quantizers never reach:
a per-channel spec built with the generic ``FakeQuantize`` ctor, float specs in QAT, and the
model-device check that decides where observers live.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pt2e_quant import (
    AnnotationError,
    QuantizationAnnotation,
    QuantizationSpec,
    convert_pt2e,
    observer,
    prepare_pt2e,
    prepare_qat_pt2e,
)
from pt2e_quant.fake_quantize import FakeQuantize, FixedQParamsFakeQuantize
from pt2e_quant.observer import (
    MinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PlaceholderObserver,
)
from tests.core.contract.quantizer_fixtures import (
    UINT8_MINMAX,
    FunctionQuantizer,
    int8_specs,
    seed_specs,
)

aten = torch.ops.aten


def _annotate_layer(target, weight_spec, bias_spec=None):
    """A quantizer putting ``weight_spec`` (and ``bias_spec``) on every ``target`` node."""

    def annotate(gm: torch.fx.GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.target is target:
                specs = {node.args[1]: weight_spec}
                if bias_spec is not None:
                    specs[node.args[2]] = bias_spec
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map=specs, _annotated=True
                )

    return FunctionQuantizer(annotate)


def _weight_module(prepared: torch.fx.GraphModule, target) -> nn.Module:
    layer = next(n for n in prepared.graph.nodes if n.target is target)
    return prepared.get_submodule(layer.args[1].target)


def test_per_channel_spec_with_generic_fake_quantize_keeps_its_axis():
    """A transposed conv's weight is (in, out, k, k): per-output-channel quantization needs
    ch_axis=1. The spec's axis reaches a ``FakeQuantize`` ctor (whose class name does not say
    per-channel), so the trained scales are one per output channel, not per input channel."""
    spec = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
        ch_axis=1,
        observer_or_fake_quant_ctr=FakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver
        ),
    )
    model = nn.ConvTranspose2d(3, 5, 2)
    x = torch.randn(1, 3, 4, 4)
    gm = torch.export.export(model.train(), (x,)).module()
    prepared = prepare_qat_pt2e(gm, _annotate_layer(aten.conv_transpose2d.input, spec))
    prepared(x)
    fake_quant = _weight_module(prepared, aten.conv_transpose2d.input)
    assert fake_quant.ch_axis == 1
    assert fake_quant.activation_post_process.ch_axis == 1
    assert fake_quant.scale.shape == (5,)


def test_float_bias_spec_is_accepted_in_qat():
    """A float32 bias spec (a ``PlaceholderObserver``, as many configs use for biases)
    quantizes nothing, so it is not a PTQ-config-in-QAT mix-up and must not be refused."""
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_tensor_symmetric,
        observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=MinMaxObserver),
    )
    bias = QuantizationSpec(dtype=torch.float32, observer_or_fake_quant_ctr=PlaceholderObserver)
    x = torch.randn(2, 4)
    gm = torch.export.export(nn.Linear(4, 3).train(), (x,)).module()
    prepared = prepare_qat_pt2e(gm, _annotate_layer(aten.linear.default, weight, bias))
    linear = next(n for n in prepared.graph.nodes if n.target is aten.linear.default)
    assert isinstance(prepared.get_submodule(linear.args[2].target), PlaceholderObserver)
    assert prepared(x).shape == (2, 3)


class _ReportsAnotherDevice(torch.Tensor):
    """A CPU tensor claiming to live on cuda:0: stands in for a second device on CPU-only CI."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 0)


_MINMAX_WEIGHT = int8_specs(observer, per_channel=False)[1]


def test_model_spread_over_two_devices_is_refused_naming_them():
    """Observers go to the model's device; with tensors on two devices there is no such
    device, and prepare says so instead of placing observers next to half the model."""
    x = torch.randn(2, 4)
    gm = torch.export.export(nn.Linear(4, 3).eval(), (x,)).module()
    gm.register_buffer(
        "elsewhere", torch.Tensor._make_subclass(_ReportsAnotherDevice, torch.ones(2))
    )
    with pytest.raises(AnnotationError, match=r"several devices \(\['cpu', 'cuda:0'\]\)"):
        prepare_pt2e(gm, _annotate_layer(aten.linear.default, _MINMAX_WEIGHT))


class WithMetaBuffer(nn.Module):
    """A linear plus a never-read buffer on the meta device (e.g. a lazily materialized one)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.register_buffer("lazy", torch.empty(3, device="meta"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_meta_tensors_do_not_count_as_a_second_device():
    """Meta tensors hold no data and run nothing, so a CPU model with one still prepares, with
    its observers on the CPU."""
    x = torch.randn(2, 4)
    gm = torch.export.export(WithMetaBuffer().eval(), (x,)).module()
    prepared = prepare_pt2e(gm, _annotate_layer(aten.linear.default, _MINMAX_WEIGHT))
    prepared(x)
    observer = _weight_module(prepared, aten.linear.default)
    assert isinstance(observer, MinMaxObserver)
    assert observer.min_val.device.type == "cpu"


class Sigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


def _fixed_output(gm: torch.fx.GraphModule) -> None:
    spec = seed_specs(observer).fixed  # sigmoid's 1/256 grid
    for node in gm.graph.nodes:
        if node.target is aten.sigmoid.default:
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                output_qspec=spec, _annotated=True
            )


def test_fixed_qparams_spec_fake_quantizes_in_qat():
    """In QAT a fixed-qparams output (sigmoid's 1/256 grid) must be fake-quantized, so training
    sees the rounding the deployed model will do; an observer would pass values through."""
    x = torch.linspace(-4, 4, 50)
    gm = torch.export.export(Sigmoid().train(), (x,)).module()
    prepared = prepare_qat_pt2e(gm, FunctionQuantizer(_fixed_output))
    (module,) = [m for m in prepared.modules() if isinstance(m, FixedQParamsFakeQuantize)]
    assert float(module.scale) == 1.0 / 256.0
    out = prepared(x)
    torch.testing.assert_close(out * 256, torch.round(out * 256), rtol=0, atol=1e-4)
    assert not torch.equal(out, torch.sigmoid(x))


class CastThenLinear(nn.Module):
    """x ─ to(dtype) ─ linear (a float64 layer for float64; a float32 one otherwise)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        self.linear = nn.Linear(4, 3).to(dtype if dtype.is_floating_point else torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.to(self.dtype)
        return self.linear(y if self.dtype.is_floating_point else y.float())


def _annotate_cast_output(spec: QuantizationSpec) -> FunctionQuantizer:
    """Puts ``spec`` on the output of the cast, whatever dtype it produces."""

    def annotate(gm: torch.fx.GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.target in (aten.to.dtype, aten._to_copy.default):
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    output_qspec=spec, _annotated=True
                )

    return FunctionQuantizer(annotate)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32], ids=["float64", "int32"])
def test_value_no_quantize_op_takes_is_refused_at_prepare(dtype: torch.dtype) -> None:
    """No quantize op takes float64 or integer values: prepare says so, naming the value,
    instead of calibrating and then failing inside convert with a kernel assertion."""
    x = torch.randn(2, 4)
    gm = torch.export.export(CastThenLinear(dtype).eval(), (x,)).module()
    before = gm.code
    with pytest.raises(AnnotationError, match=rf"output of 'to' quantizes a {dtype} value"):
        prepare_pt2e(gm, _annotate_cast_output(UINT8_MINMAX))
    assert gm.code == before


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_values_are_quantized(dtype: torch.dtype) -> None:
    """float16 / bfloat16 values quantize (the quantize op widens them to float32) and the
    dequantize gives back the value's own dtype."""
    x = torch.randn(2, 4)
    model = CastThenLinear(dtype).eval()
    gm = torch.export.export(model, (x,)).module()
    prepared = prepare_pt2e(gm, _annotate_cast_output(UINT8_MINMAX))
    prepared(x)
    converted = convert_pt2e(prepared)
    dq = next(n for n in converted.graph.nodes if "dequantize" in str(n.target))
    assert dq.kwargs == {"out_dtype": dtype}
    assert converted(x).dtype == dtype


def test_float_spec_on_a_float64_value_is_exempt() -> None:
    """A float16 spec inserts casts, not quantize ops, so a float64 value may carry one."""
    spec = QuantizationSpec(dtype=torch.float16, observer_or_fake_quant_ctr=PlaceholderObserver)
    x = torch.randn(2, 4)
    gm = torch.export.export(CastThenLinear(torch.float64).eval(), (x,)).module()
    prepared = prepare_pt2e(gm, _annotate_cast_output(spec))
    prepared(x)
    assert convert_pt2e(prepared)(x).dtype == torch.float64
