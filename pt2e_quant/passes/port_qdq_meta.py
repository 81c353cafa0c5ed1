"""Copy ``stack_trace``, ``nn_module_stack`` and ``quantization_tag`` onto the q/dq nodes.

Rules (the ones lowering tools expect):

* a dq feeding an annotated op's quantized input takes that op's metadata;
* a q right after an annotated op's quantized output takes that op's metadata;
* the q of a constant (a weight read by get_attr, possibly through view-like ops) and those
  view ops take the constant's metadata, which then survives constant folding;
* for dynamic inputs, ``choose_qparams``, q and dq all take the consuming op's metadata.

Example: ``[conv -> avgpool]`` becomes ``[q -> dq -> conv -> q -> dq -> avgpool]`` where the
first dq and the conv's output q carry conv's metadata and the second dq carries avgpool's.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import get_annotation
from pt2e_quant.graph.node_meta import port_meta
from pt2e_quant.ops import qdq_ops
from pt2e_quant.ops.families import (
    FLATTEN_OPS,
    MATRIX_TRANSPOSE_OPS,
    PERMUTE_OPS,
    SLICE_OPS,
    SQUEEZE_OPS,
    TRANSPOSE_OPS,
    VIEW_OPS,
)

__all__ = ["port_qdq_meta"]

#: ops between a weight's get_attr and its quantize that only change the view
_VIEW_OPS = (
    VIEW_OPS
    | FLATTEN_OPS
    | PERMUTE_OPS
    | TRANSPOSE_OPS
    | MATRIX_TRANSPOSE_OPS
    | SQUEEZE_OPS
    | SLICE_OPS
)


def _source_of(node: Node) -> Node:
    """Walk back through q/dq/choose_qparams to the value they quantize."""
    while qdq_ops.is_quant_workflow_node(node) and isinstance(node.args[0], Node):
        node = node.args[0]
    return node


def _input_dq(producer: Node, consumer: Node) -> Node | None:
    for arg in [*consumer.args, *consumer.kwargs.values()]:
        for item in arg if isinstance(arg, (list, tuple)) else (arg,):
            if qdq_ops.is_dequantize(item) and _source_of(item) is producer:
                return item
    return None


def _port_input(producer: Node, consumer: Node) -> bool:
    dq = _input_dq(producer, consumer)
    if dq is None:
        return False
    port_meta(consumer, dq)
    q = dq.args[0]
    if not qdq_ops.is_quantize(q):
        return True
    if qdq_ops.is_qparam_getitem(q.args[1]):  # dynamic: choose_qparams -> q -> dq
        port_meta(consumer, q)
        port_meta(consumer, q.args[1].args[0])
        return True
    chain = [q]
    value = q.args[0]
    while isinstance(value, Node) and value.op == "call_function" and value.target in _VIEW_OPS:
        chain.append(value)
        value = value.args[0]
    if isinstance(value, Node) and value.op == "get_attr":
        for node in chain:
            port_meta(value, node)
    return True


def _port_output(node: Node) -> bool:
    users = [u for u in node.users if u.target is not torch.ops.aten.sym_size.int]
    if len(users) == 1 and qdq_ops.is_quantize(users[0]):
        port_meta(node, users[0])
        return True
    return False


def port_qdq_meta(gm: GraphModule) -> bool:
    """Apply the porting rules to every annotated node; True if any q/dq got metadata."""
    changed = False
    for node in list(gm.graph.nodes):
        annotation = get_annotation(node)
        if annotation is None:
            continue
        for producer, spec in annotation.input_qspec_map.items():
            if spec is not None:
                changed |= _port_input(producer, node)
        if annotation.output_qspec is not None:
            changed |= _port_output(node)
    # metadata only: the driver need not recompile, but reporting the change is still honest
    return changed
