"""convert_pt2e on observers and fake-quants built from torch.ao's classes, not ours.

Users migrating from torchao keep their torch.ao observer constructors in their specs, so
convert must read those modules correctly: spot the ones that never saw data, map torch.ao's
``quint8`` / ``qint32`` dtypes to the plain integer dtypes the q/dq ops take, and never drop
an observer because its dtype is spelled the torch.ao way.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.ao.quantization.fake_quantize as ao_fake_quantize
import torch.ao.quantization.observer as ao_observer
from torch import Tensor
from torch.fx import GraphModule

from pt2e_quant import (
    QuantizationAnnotation,
    QuantizationSpec,
    convert_pt2e,
    prepare_pt2e,
    prepare_qat_pt2e,
)
from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.replace_observers import UncalibratedObserverWarning
from tests.core.contract.quantizer_fixtures import FunctionQuantizer, int8_specs
from tests.models import SingleLinear

aten = torch.ops.aten


def _prepare(spec: QuantizationSpec, edge: str, qat: bool = False) -> tuple[GraphModule, Tensor]:
    """Export a linear and annotate only its input ``"x"`` or its ``"weight"`` with ``spec``."""
    torch.manual_seed(0)
    x = torch.randn(2, 4)
    gm = torch.export.export(SingleLinear().eval(), (x,)).module()

    def annotate(model: GraphModule) -> None:
        for node in model.graph.nodes:
            if node.target == aten.linear.default:
                target = node.args[0] if edge == "x" else node.args[1]
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={target: spec}, _annotated=True
                )

    prepare = prepare_qat_pt2e if qat else prepare_pt2e
    return prepare(gm, FunctionQuantizer(annotate)), x


def _quantize_args(gm: GraphModule) -> list[tuple]:
    return [n.args for n in gm.graph.nodes if n.target == qdq_ops.QUANTIZE_PER_TENSOR]


def test_uncalibrated_torch_ao_per_channel_observer_warns() -> None:
    """A torch.ao per-channel observer that saw nothing holds *empty* min/max tensors (not
    ±inf); convert must still report it, or the user ships weights with scale 1.0 unwarned."""
    _, spec = int8_specs(ao_observer)  # per-channel symmetric, torch.ao's observer
    prepared, _ = _prepare(spec, "weight")
    with pytest.warns(UncalibratedObserverWarning, match="never saw data.*'linear_weight'"):
        convert_pt2e(prepared)


def test_uncalibrated_torch_ao_fake_quantize_warns() -> None:
    """A torch.ao FakeQuantize keeps its statistics in an inner ``activation_post_process``;
    convert must look there, so a QAT model converted before any training step is reported."""
    spec = QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=255,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=ao_fake_quantize.FakeQuantize.with_args(
            observer=ao_observer.MovingAverageMinMaxObserver
        ),
    )
    prepared, _ = _prepare(spec, "x", qat=True)
    with pytest.warns(UncalibratedObserverWarning, match="never saw data.*'x'"):
        convert_pt2e(prepared)


def test_torch_ao_quint8_observer_gives_uint8_q_ops() -> None:
    """The quantized_decomposed ops take plain ``torch.uint8``; a torch.ao-style spec and
    observer with ``torch.quint8`` must be translated, or backends matching on uint8 q/dq miss the pattern."""
    spec = QuantizationSpec(
        dtype=torch.quint8,
        quant_min=0,
        quant_max=255,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=ao_observer.MinMaxObserver,
    )
    prepared, x = _prepare(spec, "x")
    prepared(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncalibratedObserverWarning)
        converted = convert_pt2e(prepared)
    (args,) = _quantize_args(converted)
    assert args[-1] is torch.uint8
    assert torch.isfinite(converted(x)).all()


def test_torch_ao_qint32_observer_is_not_dropped() -> None:
    """A torch.ao-style ``dtype=torch.qint32`` spec and observer (int32 activations / biases) becomes an
    int32 q/dq pair; treating qint32 as a float dtype would silently drop the quantization."""
    spec = QuantizationSpec(
        dtype=torch.qint32,
        quant_min=-(2**31),
        quant_max=2**31 - 1,
        qscheme=torch.per_tensor_symmetric,
        observer_or_fake_quant_ctr=ao_observer.MinMaxObserver,
    )
    prepared, x = _prepare(spec, "x")
    prepared(x)
    converted = convert_pt2e(prepared)
    (args,) = _quantize_args(converted)
    assert args[-1] is torch.int32
