"""Reading from the graph itself whether a compute op was quantized.

Two kinds of evidence, both left by our pipeline:

* the q/dq structure: in a converted graph a quantized op reads its float inputs from
  ``dequantize`` nodes and/or writes into a ``quantize``; in a prepared graph the same edges
  pass through observer / fake-quant modules;
* the annotation the quantizer wrote (prepare and convert keep it in the node's meta), which
  tells an op the quantizer claimed from a float op that merely sits between a dequantize and
  a quantize (``dq -> hardswish -> q`` around an op XNNPACK has no int8 rule for).

An op *fused* into a pattern (the relu after a conv, the add after an x86 linear) is claimed
but reads its producer directly, with no q/dq between; it is covered by that pattern and
reported as "fused into <anchor>".

When no node of the graph carries an annotation (a graph from another pipeline), only the
q/dq structure is used, which counts a float op squeezed between a dq and a q as quantized.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import get_annotation, is_annotated
from pt2e_quant.coverage.classify import is_compute_op
from pt2e_quant.fake_quantize import FakeQuantizeBase
from pt2e_quant.graph.patterns import is_float_tensor
from pt2e_quant.observer import ObserverBase
from pt2e_quant.ops.qdq_ops import is_dequantize, is_quantize

__all__ = [
    "Status",
    "example_value",
    "graph_has_annotations",
    "is_quantized_edge",
    "is_quantizing_user",
    "status_of",
    "tensor_inputs",
]


@dataclass(frozen=True)
class Status:
    """``quantized`` and, for a fused op, the anchor of the pattern it joined."""

    quantized: bool
    fused_into: Node | None = None


def _is_observer(node: object) -> bool:
    if not isinstance(node, Node) or node.op != "call_module":
        return False
    module = node.graph.owning_module.get_submodule(str(node.target))
    return isinstance(module, (ObserverBase, FakeQuantizeBase))


def example_value(arg: object) -> torch.Tensor | None:
    """The example tensor behind ``arg``: q/dq ops and observers carry no ``val`` of their
    own, so look through them to the op whose value they quantize."""
    while isinstance(arg, Node) and "val" not in arg.meta and arg.args:
        arg = arg.args[0]
    value = arg.meta.get("val") if isinstance(arg, Node) else None
    return value if isinstance(value, torch.Tensor) else None


def is_quantized_edge(producer: object) -> bool:
    """The value read from ``producer`` is quantized: a dequantize or an observer output."""
    return is_dequantize(producer) or _is_observer(producer)


def tensor_inputs(node: Node) -> list[Node]:
    """The float-tensor inputs of ``node`` (activations and weights; not indices or sizes)."""
    return [arg for arg in node.all_input_nodes if _is_float_or_observed(arg)]


def _is_float_or_observed(node: Node) -> bool:
    return is_float_tensor(node) or is_quantized_edge(node)


def is_quantizing_user(user: object) -> bool:
    """``user`` quantizes the value it reads: a quantize node or an observer."""
    return is_quantize(user) or _is_observer(user)


def _qdq_evidence(node: Node) -> bool:
    reads_quantized = any(is_quantized_edge(arg) for arg in tensor_inputs(node))
    writes_quantized = any(is_quantizing_user(u) for u in node.users)
    return reads_quantized or writes_quantized


def _has_specs(node: Node) -> bool:
    annotation = get_annotation(node)
    if annotation is None:
        return False
    specs = [*annotation.input_qspec_map.values(), annotation.output_qspec]
    return any(spec is not None for spec in specs)


def _fused_producer(node: Node) -> Node | None:
    """The claimed compute op ``node`` reads directly (no q/dq between), if ``node`` is claimed."""
    if not is_annotated(node):
        return None
    for arg in node.all_input_nodes:
        if is_compute_op(arg) and is_annotated(arg):
            return arg
    return None


def graph_has_annotations(gm: GraphModule) -> bool:
    """Some node still carries a quantizer's annotation (the graph came from our prepare)."""
    return any(get_annotation(node) is not None for node in gm.graph.nodes)


def status_of(node: Node, annotated_graph: bool) -> Status:
    """Whether ``node`` was quantized (see the module docstring for the evidence used)."""
    if not annotated_graph:
        return Status(_qdq_evidence(node))
    anchor = node
    seen = {node}
    while (producer := _fused_producer(anchor)) is not None and producer not in seen:
        seen.add(producer)
        anchor = producer
    quantized = _has_specs(anchor) and _qdq_evidence(anchor)
    return Status(quantized, anchor if anchor is not node else None)
