"""torchao's affine observers (per-token, per-group, per-block) in a quantizer written with
torchao's classes: ours keeps them and their own ``convert``, which emits torchao's affine ops,
and matches torchao's prepare/convert bit for bit.

The quantizer is the kind an LLM flow writes: the activation of every linear quantized per
token (dynamically or from calibration), its weight per group of input channels or per block.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.vendors.differential import compare

pytestmark = pytest.mark.vendor

ao_quantizer = pytest.importorskip("torchao.quantization.pt2e.quantizer")
affine = pytest.importorskip("torchao.quantization.pt2e._affine_quantization")
granularity = pytest.importorskip("torchao.quantization.granularity")
observer = pytest.importorskip("torchao.quantization.pt2e.observer")


class TwoLinears(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(32, 64)
        self.down = nn.Linear(64, 16)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))

    def example_inputs(self):
        return (torch.randn(2, 5, 32),)


def _spec(observer_class, **kwargs):
    return ao_quantizer.QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=None,
        is_dynamic=kwargs.pop("is_dynamic", False),
        observer_or_fake_quant_ctr=observer_class.with_args(
            target_dtype=torch.int8, quant_min=-128, quant_max=127, **kwargs
        ),
    )


class AffineLinearQuantizer(ao_quantizer.Quantizer):
    """Quantizes every linear's input and weight with torchao's affine observers."""

    def __init__(self, activation, weight) -> None:
        super().__init__()
        self.activation, self.weight = activation, weight

    def annotate(self, model):
        for node in model.graph.nodes:
            if node.target != torch.ops.aten.linear.default:
                continue
            node.meta["quantization_annotation"] = ao_quantizer.QuantizationAnnotation(
                input_qspec_map={node.args[0]: self.activation, node.args[1]: self.weight},
                _annotated=True,
            )
        return model

    def validate(self, model):
        pass


def _per_token(is_dynamic: bool):
    observer_class = (
        affine.AffineQuantizedPlaceholderObserver
        if is_dynamic
        else affine.AffineQuantizedMinMaxObserver
    )
    return _spec(
        observer_class,
        mapping_type=observer.MappingType.ASYMMETRIC,
        granularity=granularity.PerToken(),
        eps=torch.finfo(torch.float32).eps,
        scale_dtype=torch.float32,
        zero_point_dtype=torch.int8,
        is_dynamic=is_dynamic,
    )


def _weight(kind: str):
    grain = granularity.PerGroup(8) if kind == "group" else granularity.PerBlock((4, 8))
    return _spec(
        affine.AffineQuantizedMinMaxObserver,
        mapping_type=observer.MappingType.SYMMETRIC,
        granularity=grain,
        eps=torch.finfo(torch.float32).eps,
        scale_dtype=torch.float32,
        zero_point_dtype=torch.int8,
    )


@pytest.mark.parametrize("weight", ["group", "block"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static-per-token", "dynamic-per-token"])
def test_affine_observers_match_torchao(dynamic, weight):
    result = compare(
        lambda: AffineLinearQuantizer(_per_token(dynamic), _weight(weight)), TwoLinears()
    )

    result.assert_same()
    counts = result.ours.counts
    # the observers' own convert emitted torchao's affine ops; the constant weights' quantize
    # was folded by ours exactly as by torchao's constant folding
    assert counts["torchao.dequantize_affine"] == 4
    assert counts["torchao.quantize_affine"] == 2
    if dynamic:
        assert counts["torchao.choose_qparams_affine"] == 2
