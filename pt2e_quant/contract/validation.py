"""Generic checks every quantizer's annotations must pass, whatever the backend.

prepare runs these after ``quantizer.validate`` so a backend's own ``validate`` only needs to add
what is specific to it. Each error names the node, what is wrong and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import QuantizationAnnotation, get_annotation
from pt2e_quant.contract.specs import QuantizationSpecBase, is_per_channel
from pt2e_quant.errors import AnnotationError, describe_node, graph_context

__all__ = ["check_annotations"]


def _flat_inputs(node: Node) -> Iterator[Any]:
    def walk(value: Any) -> Iterator[Any]:
        if isinstance(value, (list, tuple)):
            for item in value:
                yield from walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        else:
            yield value

    yield from walk(node.args)
    yield from walk(node.kwargs)


def _check_input_keys(node: Node, annotation: QuantizationAnnotation) -> None:
    inputs = list(_flat_inputs(node))
    input_nodes = {id(a) for a in inputs if isinstance(a, Node)}
    for key in annotation.input_qspec_map:
        if not isinstance(key, Node):
            raise AnnotationError(
                f"The annotation of {describe_node(node)} quantizes the input {key!r}, which is "
                "not a graph node (a Python constant cannot be observed). Leave constants out "
                "of input_qspec_map, or make the value a tensor input of the model.\n"
                + graph_context(node)
            )
        if id(key) not in input_nodes:
            raise AnnotationError(
                f"The annotation of {describe_node(node)} quantizes the input '{key.name}', "
                f"but '{key.name}' is not an input of '{node.name}' (its inputs: "
                f"{[a.name for a in inputs if isinstance(a, Node)]}). Key input_qspec_map by "
                "the node's own input nodes.\n" + graph_context(node)
            )


def _check_ch_axis(node: Node, role: str, value: Node, spec: QuantizationSpecBase | None) -> None:
    ch_axis = getattr(spec, "ch_axis", None)
    if ch_axis is None or not is_per_channel(getattr(spec, "qscheme", None)):
        return
    val = value.meta.get("val")
    ndim = getattr(val, "ndim", None)
    if ndim is not None and ch_axis >= max(ndim, 1):
        raise AnnotationError(
            f"The {role} spec of {describe_node(node)} quantizes per channel along ch_axis="
            f"{ch_axis}, but '{value.name}' has only {ndim} dimension(s). Use an axis below "
            f"{ndim}.\n" + graph_context(node)
        )


def check_annotations(gm: GraphModule) -> None:
    """Raise :class:`AnnotationError` for annotations that cannot be honoured.

    Checked: input_qspec_map keys are Nodes that really are inputs of the annotated node, and
    per-channel axes exist on the tensors they quantize. Shared specs that point at edges
    nobody annotated, and sharing groups that disagree on dtype, are reported when the groups
    are formed (:mod:`pt2e_quant.contract.sharing`).
    """
    for node in gm.graph.nodes:
        annotation = get_annotation(node)
        if annotation is None:
            continue
        if not isinstance(annotation, QuantizationAnnotation) and not hasattr(
            annotation, "input_qspec_map"
        ):
            raise AnnotationError(
                f"{describe_node(node)} carries a quantization annotation of type "
                f"{type(annotation).__name__}; use pt2e_quant.QuantizationAnnotation."
            )
        _check_input_keys(node, annotation)
        for input_node, spec in annotation.input_qspec_map.items():
            _check_ch_axis(node, f"input '{input_node.name}'", input_node, spec)
        _check_ch_axis(node, "output", node, annotation.output_qspec)
