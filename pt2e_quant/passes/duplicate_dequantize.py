"""Give every annotated consumer of a dequantize its own copy.

Backends fuse ``dq -> op -> q`` into one integer kernel; a dq shared by two ops would belong to
two patterns at once, so each annotated user gets a private dq. Before::

    dq = dequantize_per_tensor(q, ...);  a = conv2d(dq, ...);  b = max_pool2d(dq, ...)

After::

    dq = dequantize_per_tensor(q, ...);  dq_1 = dequantize_per_tensor(q, ...)
    a = conv2d(dq, ...);  b = max_pool2d(dq_1, ...)

Dynamic q/dq chains (``choose_qparams``) stay shared, and users without an annotation (e.g. the
graph output) keep the original.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import get_annotation
from pt2e_quant.ops import qdq_ops

__all__ = ["duplicate_dequantize"]


def _real_users(node: Node) -> list[Node]:
    # sym_size users only read the shape; they are not consumers of the value
    return [u for u in node.users if u.target is not torch.ops.aten.sym_size.int]


def _wants_own_dq(user: Node) -> bool:
    annotation = get_annotation(user)
    return annotation is not None and (
        len(annotation.input_qspec_map) > 0 or annotation.output_qspec is not None
    )


def duplicate_dequantize(gm: GraphModule) -> bool:
    """Copy each multi-user static dq once per annotated user; True if any was copied."""
    changed = False
    graph = gm.graph
    for dq in list(graph.nodes):
        if not qdq_ops.is_dequantize(dq) or qdq_ops.is_dynamic_dequantize(dq):
            continue
        users = _real_users(dq)
        if len(users) <= 1:
            continue
        for user in users:
            if not _wants_own_dq(user):
                continue
            with graph.inserting_after(dq):
                copy = graph.node_copy(dq)
            user.replace_input_with(dq, copy)
            changed = True
    return changed
