"""A real vendor quantizer gone wrong: the error names the quantizer, the node and the fix.

ExecuTorch's ``XNNPACKQuantizer`` annotates correctly; these tests break it on purpose. Either
one of its annotations is corrupted after its ``annotate`` (pt2e_quant must reject it at the
foreign-annotation boundary with an :class:`~pt2e_quant.errors.AnnotationError`, not crash
in a later pass), or its own annotator code raises (a
:class:`~pt2e_quant.pipeline.quantizer_calls.QuantizerError` naming the quantizer and the
phase). Either way the user's exported model is left exactly as it was. The corruption is
installed on the instance, so the quantizer's class is still ``XNNPACKQuantizer``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from torch.fx import GraphModule, Node

import pt2e_quant
from pt2e_quant.errors import AnnotationError
from pt2e_quant.pipeline.quantizer_calls import QuantizerError
from tests.models import ConvLinearWPermute, export_model

pytestmark = pytest.mark.vendor

XNNPACK = "executorch.backends.xnnpack.quantizer.xnnpack_quantizer"
WHO = f"XNNPACKQuantizer ({XNNPACK})"


def _xnnpack():
    xnnpack = pytest.importorskip(XNNPACK)
    config = xnnpack.get_symmetric_quantization_config(is_per_channel=True)
    return xnnpack.XNNPACKQuantizer().set_global(config)


def _torchao_quantizer_classes():
    return pytest.importorskip("torchao.quantization.pt2e.quantizer")


def _linear(model: GraphModule) -> Node:
    return next(n for n in model.graph.nodes if n.target == torch.ops.aten.linear.default)


def _corrupted(corrupt: Callable[[GraphModule], None]):
    """An XNNPACKQuantizer whose annotate is followed by ``corrupt(model)``."""
    quantizer = _xnnpack()
    annotate = quantizer.annotate

    def annotate_then_corrupt(model: GraphModule) -> GraphModule:
        model = annotate(model)
        corrupt(model)
        return model

    quantizer.annotate = annotate_then_corrupt
    return quantizer


def _snapshot(model: GraphModule) -> tuple:
    """What must not change: the code, the module tree and every tensor."""
    tensors = {name: t.clone() for name, t in model.state_dict().items()}
    return model.code, [(name, type(m)) for name, m in model.named_modules()], tensors


def _assert_untouched(model: GraphModule, before: tuple) -> None:
    code, modules, tensors = _snapshot(model)
    assert code == before[0]
    assert modules == before[1]
    assert tensors.keys() == before[2].keys()
    assert all(torch.equal(tensors[name], before[2][name]) for name in tensors)


# ---- (a) a corrupted annotation -------------------------------------------------------------


def _key_that_is_not_an_input(model: GraphModule) -> None:
    linear = _linear(model)
    stranger = next(n for n in model.graph.nodes if n.op == "placeholder")  # the conv's input
    linear.meta["quantization_annotation"].input_qspec_map[stranger] = next(
        iter(linear.meta["quantization_annotation"].input_qspec_map.values())
    )


def _shared_spec_to_an_unannotated_edge(model: GraphModule) -> None:
    linear = _linear(model)
    annotation = linear.meta["quantization_annotation"]
    weight = linear.args[1]
    annotation.input_qspec_map.pop(weight)  # the weight edge is no longer quantized ...
    bias = linear.args[2]
    shared = _torchao_quantizer_classes().SharedQuantizationSpec((weight, linear))
    annotation.input_qspec_map[bias] = shared  # ... and the bias is told to share with it


class VendorPrivateSpec:
    """Not a quantization spec of any known kind."""


def _spec_of_an_unknown_class(model: GraphModule) -> None:
    annotation = _linear(model).meta["quantization_annotation"]
    annotation.output_qspec = VendorPrivateSpec()


CORRUPTIONS = {
    "input_key_not_an_input": (
        _key_that_is_not_an_input,
        r"quantizes the input 'x', but 'x' is not an input of 'linear'",
        "Key input_qspec_map by the node's own input nodes",
    ),
    "shared_spec_to_unannotated_edge": (
        _shared_spec_to_an_unannotated_edge,
        r"SharedQuantizationSpec on the edge 'linear_bias' -> 'linear' points at the edge "
        r"'linear_weight' -> 'linear', which no annotation quantizes",
        "Annotate that edge/output with a spec, or point the shared spec at",
    ),
    "spec_of_unknown_class": (
        _spec_of_an_unknown_class,
        r"VendorPrivateSpec as the spec of the output of 'linear', which is not a quantization spec",
        "fix the quantizer's annotate, or report it to its authors",
    ),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corrupted_annotation_names_node_quantizer_and_fix(name):
    corrupt, what, fix = CORRUPTIONS[name]
    model = ConvLinearWPermute().eval()
    exported = export_model(model)
    before = _snapshot(exported)
    with pytest.raises(AnnotationError, match=what) as raised:
        pt2e_quant.prepare_pt2e(exported, _corrupted(corrupt))
    message = str(raised.value)
    assert WHO in message
    assert fix in message
    assert "linear" in message.split("\n", 1)[1]  # the graph excerpt around the node
    _assert_untouched(exported, before)


def test_uncorrupted_quantizer_prepares():
    """The corruptions above are what fails: the same quantizer unmodified is accepted."""
    prepared = pt2e_quant.prepare_pt2e(export_model(ConvLinearWPermute().eval()), _xnnpack())
    prepared(*ConvLinearWPermute().example_inputs())


# ---- (b) the quantizer's own code raises ----------------------------------------------------


def test_exception_in_a_vendor_annotator_names_quantizer_and_phase(monkeypatch):
    utils = pytest.importorskip("executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils")

    def broken_linear_annotator(*args, **kwargs):
        raise KeyError("val")

    monkeypatch.setitem(utils.OP_TO_ANNOTATOR, "linear", broken_linear_annotator)
    exported = export_model(ConvLinearWPermute().eval())
    before = _snapshot(exported)
    with pytest.raises(QuantizerError) as raised:
        pt2e_quant.prepare_pt2e(exported, _xnnpack())
    message = str(raised.value)
    assert f"prepare_pt2e: {WHO} raised KeyError in its annotate(): 'val'" in message
    assert "not from pt2e_quant; the model passed to prepare_pt2e is unchanged" in message
    assert isinstance(raised.value.__cause__, KeyError)
    _assert_untouched(exported, before)


def test_a_config_the_quantizer_rejects_names_quantizer_and_phase():
    """XNNPACK's annotate reads ``input_activation.is_dynamic`` unconditionally, so a config
    without an input activation spec makes its own code raise."""
    xnnpack = pytest.importorskip(XNNPACK)
    config = xnnpack.get_symmetric_quantization_config(is_per_channel=True)
    quantizer = xnnpack.XNNPACKQuantizer().set_global(
        dataclasses.replace(config, input_activation=None)
    )
    exported = export_model(ConvLinearWPermute().eval())
    before = _snapshot(exported)
    with pytest.raises(QuantizerError) as raised:
        pt2e_quant.prepare_pt2e(exported, quantizer)
    assert (
        f"{WHO} raised AttributeError in its annotate(): 'NoneType' object has no attribute "
        in (str(raised.value))
    )
    _assert_untouched(exported, before)
