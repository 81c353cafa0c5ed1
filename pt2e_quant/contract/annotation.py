"""The annotation contract: what a quantizer writes on a node and how everything else reads it.

A quantizer records its decision for node ``n`` as ``n.meta["quantization_annotation"]``, a
:class:`QuantizationAnnotation`. This module is the only place that spells that key; every pass
and every backend goes through :func:`get_annotation` / :func:`set_annotation`. The key and
the class shape match torchao's, so quantizers written for torchao keep working.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from torch.fx import Node

from pt2e_quant.contract.specs import QuantizationSpecBase

__all__ = [
    "ANNOTATION_KEY",
    "QuantizationAnnotation",
    "get_annotation",
    "set_annotation",
    "has_annotation",
    "is_annotated",
    "mark_annotated",
    "annotate_input",
    "annotate_output",
    "clear_annotations",
    "mark_converted",
    "drop_converted_annotations",
    "mark_kept_float",
    "kept_float_reason",
]

ANNOTATION_KEY = "quantization_annotation"
#: set by convert on the nodes whose annotations it turned into q/dq ops
CONVERTED_KEY = "quantization_annotation_converted"
#: why an algorithm (not the quantizer) decided a node stays float, for explain() to report
KEPT_FLOAT_KEY = "pt2e_quant_kept_float"


@dataclass
class QuantizationAnnotation:
    """How the inputs and the output of one node are quantized.

    ``input_qspec_map`` maps an input *node* of the annotated node to the spec of that edge;
    ``output_qspec`` describes the node's output (None: leave it float). With
    ``allow_implicit_sharing=False`` prepare never merges this node's input edges with the
    producer's output observer, even when their specs are equal. ``_annotated`` tells later
    annotators (and composed quantizers) that the node is taken.
    """

    input_qspec_map: dict[Node, QuantizationSpecBase | None] = field(default_factory=dict)
    output_qspec: QuantizationSpecBase | None = None
    allow_implicit_sharing: bool = True
    _annotated: bool = False


def get_annotation(node: Node) -> QuantizationAnnotation | None:
    """The node's annotation, or None when no quantizer touched it."""
    return node.meta.get(ANNOTATION_KEY)


def has_annotation(node: Node) -> bool:
    """True if an annotation object is present (even an empty one)."""
    return node.meta.get(ANNOTATION_KEY) is not None


def set_annotation(node: Node, annotation: QuantizationAnnotation | None) -> None:
    """Attach (or with None, remove) the node's annotation."""
    if annotation is None:
        node.meta.pop(ANNOTATION_KEY, None)
    else:
        node.meta[ANNOTATION_KEY] = annotation


def is_annotated(node: Node) -> bool:
    """True when an annotator already claimed the node (``_annotated``), so others skip it."""
    annotation = get_annotation(node)
    return annotation is not None and bool(annotation._annotated)


def _annotation_for_update(node: Node) -> QuantizationAnnotation:
    annotation = get_annotation(node)
    if annotation is None:
        annotation = QuantizationAnnotation()
        set_annotation(node, annotation)
    return annotation


def mark_annotated(nodes: Iterable[Node]) -> None:
    """Claim every node of a matched pattern, creating empty annotations where needed."""
    for node in nodes:
        _annotation_for_update(node)._annotated = True


def annotate_input(node: Node, input_node: Node, spec: QuantizationSpecBase | None) -> None:
    """Set the spec of the edge ``input_node -> node``, keeping the node's other entries."""
    _annotation_for_update(node).input_qspec_map[input_node] = spec


def annotate_output(node: Node, spec: QuantizationSpecBase | None) -> None:
    """Set the spec of the node's output, keeping its input entries."""
    _annotation_for_update(node).output_qspec = spec


def clear_annotations(nodes: Iterable[Node]) -> bool:
    """Remove annotations (after prepare consumed them); returns whether any was present."""
    changed = False
    for node in nodes:
        if ANNOTATION_KEY in node.meta:
            del node.meta[ANNOTATION_KEY]
            changed = True
    return changed


def mark_converted(nodes: Iterable[Node]) -> bool:
    """Record that convert turned these nodes' annotations into q/dq ops.

    The annotations stay readable (``explain`` reads them on a converted model), but they
    describe observers that are gone: a later prepare of the converted model must not reuse
    them, nor let their ``_annotated`` claims keep its quantizer off ops still float.
    """
    changed = False
    for node in nodes:
        if ANNOTATION_KEY in node.meta and not node.meta.get(CONVERTED_KEY):
            node.meta[CONVERTED_KEY] = True
            changed = True
    return changed


def drop_converted_annotations(nodes: Iterable[Node]) -> bool:
    """Remove the annotations :func:`mark_converted` marked; returns whether any was present."""
    changed = False
    for node in nodes:
        if node.meta.pop(CONVERTED_KEY, False):
            node.meta.pop(ANNOTATION_KEY, None)
            changed = True
    return changed


def mark_kept_float(node: Node, reason: str) -> None:
    """Record that ``node`` must stay float whatever the quantizer annotates, and why.

    Set by the accuracy algorithms (the fallback's chosen ops, SmoothQuant's scaling muls);
    the annotations of marked nodes are dropped right after annotation, and ``explain()``
    reports ``reason`` for them. The mark travels with the node through prepare and convert.
    """
    node.meta[KEPT_FLOAT_KEY] = reason


def kept_float_reason(node: Node) -> str | None:
    """The reason :func:`mark_kept_float` recorded, or None."""
    return node.meta.get(KEPT_FLOAT_KEY)
