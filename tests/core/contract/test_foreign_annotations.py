"""Annotations written with foreign classes (torchao's, a vendor's) pass one boundary.

The foreign classes here are look-alikes defined in this file: pt2e_quant recognises them by
shape (class names and fields), so the behaviour is tested without torchao installed; the
differential tests in ``tests/vendors`` run the real vendors' quantizers.
"""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn
from torch.fx import GraphModule, Node

import pt2e_quant
from pt2e_quant.contract.annotation import ANNOTATION_KEY
from pt2e_quant.contract.foreign import ForeignSpecWarning, translate_annotations
from pt2e_quant.errors import AnnotationError
from pt2e_quant.observer import MinMaxObserver, PerChannelMinMaxObserver
from pt2e_quant.ops import qdq_ops
from pt2e_quant.pipeline.quantizer_calls import QuantizerError

# ---- look-alikes of torchao's classes ------------------------------------------------------


class QuantizationSpecBase:
    pass


@dataclass(eq=True, frozen=True)
class QuantizationSpec(QuantizationSpecBase):
    dtype: torch.dtype
    observer_or_fake_quant_ctr: Any
    quant_min: int | None = None
    quant_max: int | None = None
    qscheme: torch.qscheme | None = None
    ch_axis: int | None = None
    is_dynamic: bool = False


@dataclass(eq=True, frozen=True)
class SharedQuantizationSpec(QuantizationSpecBase):
    edge_or_node: Any


@dataclass
class QuantizationAnnotation:
    input_qspec_map: dict = field(default_factory=dict)
    output_qspec: Any = None
    allow_implicit_sharing: bool = True
    _annotated: bool = False


class VendorSpec(QuantizationSpec):
    """A vendor's subclass of torchao's QuantizationSpec: still a QuantizationSpec."""


class NotASpec:
    pass


ACT = QuantizationSpec(torch.int8, MinMaxObserver, -128, 127, torch.per_tensor_affine, None, False)


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(x)


X = torch.randn(2, 4)


def _exported() -> GraphModule:
    torch.manual_seed(0)
    return torch.export.export(Linear().eval(), (X,)).module()


def _linear(gm: GraphModule) -> Node:
    return next(n for n in gm.graph.nodes if n.target == torch.ops.aten.linear.default)


class ForeignQuantizer:
    """Shaped like a torchao Quantizer; ``spec_for(node)`` gives the input/output spec."""

    def __init__(self, input_spec: Any = ACT, output_spec: Any = ACT, key=None) -> None:
        self.input_spec, self.output_spec, self.key = input_spec, output_spec, key

    def transform_for_annotation(self, model):
        return model

    def annotate(self, model):
        linear = _linear(model)
        key = self.key(model) if self.key else linear.args[0]
        linear.meta[ANNOTATION_KEY] = QuantizationAnnotation(
            {key: self.input_spec}, self.output_spec, _annotated=True
        )
        return model

    def validate(self, model):
        pass

    def prepare_obs_or_fq_callback(self, model, mapping):
        pass


# ---- the boundary --------------------------------------------------------------------------


def test_foreign_annotation_becomes_ours_and_one_foreign_spec_stays_one_spec():
    gm = _exported()
    ForeignQuantizer().annotate(gm)

    assert translate_annotations(gm, ForeignQuantizer())
    annotation = _linear(gm).meta[ANNOTATION_KEY]
    assert not isinstance(annotation, QuantizationAnnotation)  # the foreign look-alike
    assert isinstance(annotation, pt2e_quant.QuantizationAnnotation)
    (input_spec,) = annotation.input_qspec_map.values()
    assert isinstance(input_spec, pt2e_quant.QuantizationSpec)
    assert input_spec.quant_min == -128 and input_spec.observer_or_fake_quant_ctr is MinMaxObserver
    # the same foreign object on the input and the output: the same spec object of ours
    assert annotation.output_qspec is input_spec
    assert annotation._annotated is True
    # a second pass finds nothing foreign
    assert not translate_annotations(gm, ForeignQuantizer())


def test_a_subclass_of_a_foreign_spec_is_read_by_its_base_name():
    gm = _exported()
    spec = VendorSpec(torch.uint8, MinMaxObserver, 0, 255, torch.per_tensor_affine)
    ForeignQuantizer(spec, None).annotate(gm)
    translate_annotations(gm, ForeignQuantizer())

    (ours,) = _linear(gm).meta[ANNOTATION_KEY].input_qspec_map.values()
    assert type(ours) is pt2e_quant.QuantizationSpec and ours.dtype == torch.uint8


def test_shared_spec_keeps_its_edge():
    gm = _exported()
    linear = _linear(gm)
    edge = (linear.args[0], linear)
    ForeignQuantizer(ACT, SharedQuantizationSpec(edge)).annotate(gm)
    translate_annotations(gm, ForeignQuantizer())

    shared = linear.meta[ANNOTATION_KEY].output_qspec
    assert isinstance(shared, pt2e_quant.SharedQuantizationSpec) and shared.edge_or_node == edge


def test_foreign_prepare_convert_matches_our_own_classes_bit_for_bit():
    ours_spec = pt2e_quant.QuantizationSpec(
        torch.int8, MinMaxObserver, -128, 127, torch.per_tensor_affine
    )

    def run(quantizer):
        prepared = pt2e_quant.prepare_pt2e(_exported(), quantizer)
        prepared(X)
        return pt2e_quant.convert_pt2e(prepared)

    foreign = run(ForeignQuantizer())
    native = run(ForeignQuantizer(ours_spec, ours_spec))
    assert torch.equal(foreign(X), native(X))
    q = [n for n in foreign.graph.nodes if n.target == qdq_ops.QUANTIZE_PER_TENSOR]
    assert len(q) == 2


# ---- leniency, as torchao --------------------------------------------------------------------


def test_int8_spec_with_a_0_255_range_is_used_as_written_with_a_warning():
    gm = _exported()
    openvino_like = QuantizationSpec(torch.int8, MinMaxObserver, 0, 255, torch.per_tensor_affine)
    ForeignQuantizer(openvino_like, None).annotate(gm)

    with pytest.warns(ForeignSpecWarning, match=r"ForeignQuantizer .*quant_max=255 does not fit"):
        translate_annotations(gm, ForeignQuantizer())
    (spec,) = _linear(gm).meta[ANNOTATION_KEY].input_qspec_map.values()
    assert (spec.dtype, spec.quant_min, spec.quant_max) == (torch.int8, 0, 255)
    with pytest.raises(pt2e_quant.SpecError):  # our own spec class still refuses it
        pt2e_quant.QuantizationSpec(torch.int8, MinMaxObserver, 0, 255)


class AxisFreeObserver(MinMaxObserver):
    """A vendor observer whose constructor takes no ch_axis (torchao never passes it one)."""

    def __init__(self, **kwargs):
        if "ch_axis" in kwargs:
            raise TypeError("unexpected keyword argument 'ch_axis'")
        kwargs["qscheme"] = torch.per_tensor_affine
        super().__init__(**kwargs)


def test_ch_axis_goes_only_to_per_channel_classes_for_a_foreign_ctor():
    per_channel = QuantizationSpec(
        torch.int8, AxisFreeObserver, -128, 127, torch.per_channel_symmetric, 0
    )

    def weight(model):
        return _linear(model).args[1]

    prepared = pt2e_quant.prepare_pt2e(_exported(), ForeignQuantizer(per_channel, None, weight))
    assert any(isinstance(m, AxisFreeObserver) for m in prepared.modules())
    # a per-channel class of ours still gets its axis
    ours = QuantizationSpec(
        torch.int8, PerChannelMinMaxObserver, -128, 127, torch.per_channel_symmetric, 0
    )
    prepared = pt2e_quant.prepare_pt2e(_exported(), ForeignQuantizer(ours, None, weight))
    (observer,) = [m for m in prepared.modules() if isinstance(m, PerChannelMinMaxObserver)]
    assert observer.ch_axis == 0


class VendorFakeQuantize(pt2e_quant.FakeQuantize):
    """A vendor's fake-quantize class, which CoreML's post-training specs build."""


def test_foreign_fake_quantize_in_post_training_prepare_warns_once_instead_of_failing():
    spec = QuantizationSpec(torch.int8, VendorFakeQuantize, -128, 127, torch.per_tensor_affine)
    weight = QuantizationSpec(torch.int8, VendorFakeQuantize, -127, 127, torch.per_tensor_symmetric)

    class WithWeight(ForeignQuantizer):
        def annotate(self, model):
            super().annotate(model)
            _linear(model).meta[ANNOTATION_KEY].input_qspec_map[_linear(model).args[1]] = weight
            return model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = pt2e_quant.prepare_pt2e(_exported(), WithWeight(spec, spec))
    (warning,) = [w.message for w in caught if isinstance(w.message, ForeignSpecWarning)]
    message = str(warning)
    assert "WithWeight (" in message and "(VendorFakeQuantize)" in message
    assert "for 3 spec(s)" in message and "'linear'" in message
    assert "post-training configuration" in message
    prepared(X)
    converted = pt2e_quant.convert_pt2e(prepared)
    assert any(n.target == qdq_ops.QUANTIZE_PER_TENSOR for n in converted.graph.nodes)


# ---- bad input ---------------------------------------------------------------------------------


def test_unreadable_spec_class_names_node_quantizer_and_fix():
    with pytest.raises(AnnotationError) as caught:
        pt2e_quant.prepare_pt2e(_exported(), ForeignQuantizer(NotASpec(), None))
    message = str(caught.value)
    assert "ForeignQuantizer (" in message and "NotASpec" in message and "'linear'" in message
    assert "QuantizationSpec, SharedQuantizationSpec" in message
    assert "import it from pt2e_quant" not in message  # a vendor's user cannot


def test_annotation_without_its_fields_is_reported():
    class Broken(ForeignQuantizer):
        def annotate(self, model):
            _linear(model).meta[ANNOTATION_KEY] = {"input": ACT}
            return model

    with pytest.raises(AnnotationError, match=r"Broken .*is not a QuantizationAnnotation"):
        pt2e_quant.prepare_pt2e(_exported(), Broken())


def test_input_that_is_not_an_input_names_the_quantizer():
    def some_other_node(model):
        return next(n for n in model.graph.nodes if n.op == "output")

    exported = _exported()
    code = exported.code
    with pytest.raises(AnnotationError) as caught:
        pt2e_quant.prepare_pt2e(exported, ForeignQuantizer(ACT, None, some_other_node))
    assert "Annotations written by ForeignQuantizer (" in str(caught.value)
    assert "is not an input of 'linear'" in str(caught.value)
    assert exported.code == code


def test_shared_spec_pointing_nowhere_names_the_quantizer():
    def annotate(model):
        linear = _linear(model)
        linear.meta[ANNOTATION_KEY] = QuantizationAnnotation(
            {linear.args[0]: ACT},
            SharedQuantizationSpec((linear.args[1], linear)),  # the weight edge: not annotated
            _annotated=True,
        )
        return model

    quantizer = ForeignQuantizer()
    quantizer.annotate = annotate
    with pytest.raises(AnnotationError, match=r"Annotations written by ForeignQuantizer"):
        pt2e_quant.prepare_pt2e(_exported(), quantizer)


@pytest.mark.parametrize(
    "phase", ["transform_for_annotation", "annotate", "validate", "prepare_obs_or_fq_callback"]
)
def test_exception_in_the_quantizers_code_names_quantizer_and_phase(phase):
    quantizer = ForeignQuantizer()

    def fail(*args):
        raise KeyError("val")

    setattr(quantizer, phase, fail)
    exported = _exported()
    code = exported.code
    with pytest.raises(QuantizerError) as caught:
        pt2e_quant.prepare_pt2e(exported, quantizer)
    message = str(caught.value)
    assert f"ForeignQuantizer ({__name__}) raised KeyError in its {phase}()" in message
    assert "unchanged" in message
    assert isinstance(caught.value.__cause__, KeyError)
    assert exported.code == code
    assert not any(isinstance(m, MinMaxObserver) for m in exported.modules())


def test_the_quantizers_code_runs_with_the_collector_on_and_our_passes_without():
    seen = {}

    class Probe(ForeignQuantizer):
        def transform_for_annotation(self, model):
            seen["transform"] = gc.isenabled()
            return model

        def annotate(self, model):
            seen["annotate"] = gc.isenabled()
            return super().annotate(model)

        def prepare_obs_or_fq_callback(self, model, mapping):
            seen["callback"] = gc.isenabled()

    class CountingObserver(MinMaxObserver):
        def __init__(self, **kwargs):
            seen["our pass"] = gc.isenabled()
            super().__init__(**kwargs)

    spec = QuantizationSpec(torch.int8, CountingObserver, -128, 127, torch.per_tensor_affine)
    assert gc.isenabled()
    pt2e_quant.prepare_pt2e(_exported(), Probe(spec, None))

    assert seen == {"transform": True, "annotate": True, "our pass": False, "callback": True}
    assert gc.isenabled()
