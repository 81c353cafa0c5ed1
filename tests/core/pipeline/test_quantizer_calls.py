"""prepare calls a quantizer's phases through call_quantizer: a quantizer written without a
Quantizer base class may leave out the phases the base class implements as no-ops, and an
object without annotate() is refused with a message naming it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pt2e_quant
from pt2e_quant import QuantizationAnnotation, QuantizationSpec
from pt2e_quant.contract.annotation import ANNOTATION_KEY
from pt2e_quant.observer import MinMaxObserver

SPEC = QuantizationSpec(
    dtype=torch.int8,
    quant_min=-128,
    quant_max=127,
    qscheme=torch.per_tensor_affine,
    observer_or_fake_quant_ctr=MinMaxObserver,
)


class AnnotateOnly:
    """Only annotate(): no transform_for_annotation, validate or prepare_obs_or_fq_callback."""

    def annotate(self, model):
        for node in model.graph.nodes:
            if node.target == torch.ops.aten.linear.default:
                node.meta[ANNOTATION_KEY] = QuantizationAnnotation({node.args[0]: SPEC}, SPEC)
        return model


class NotAQuantizer:
    pass


def _exported():
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    return torch.export.export(model, (torch.randn(2, 4),)).module()


def test_a_quantizer_with_only_annotate_runs_like_one_with_the_base_class_no_ops():
    prepared = pt2e_quant.prepare_pt2e(_exported(), AnnotateOnly())
    prepared(torch.randn(2, 4))
    converted = pt2e_quant.convert_pt2e(prepared)
    targets = [n.target for n in converted.graph.nodes]
    assert torch.ops.quantized_decomposed.quantize_per_tensor.default in targets


def test_an_object_without_annotate_is_refused_by_name():
    exported = _exported()
    code = exported.code
    with pytest.raises(TypeError, match=r"NotAQuantizer .* has no annotate\(\) method"):
        pt2e_quant.prepare_pt2e(exported, NotAQuantizer())
    assert exported.code == code
