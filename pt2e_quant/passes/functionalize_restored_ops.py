"""Undo ``restore_inplace_ops`` at the start of convert: converted graphs stay functional.

A prepared model writes in place where the exported one did (``restore_inplace_ops``); every
other pass of convert, and every consumer of a converted model, expects the functional ops
annotation saw, as if the in-place ops had never come back::

    add = aten.add_.Tensor(activation_post_process_7, activation_post_process_3)

becomes::

    add = aten.add.Tensor(activation_post_process_7, activation_post_process_3)

The record of what each node once was is dropped from every node, swapped or not.
"""

from __future__ import annotations

from torch.fx import GraphModule

from pt2e_quant.passes.replace_inplace_ops import (
    forget_inplace_origin,
    functional_variant,
    inplace_origin,
)

__all__ = ["functionalize_restored_ops"]


def functionalize_restored_ops(gm: GraphModule) -> bool:
    """Swap restored in-place nodes back to functional; True if any was swapped."""
    changed = False
    for node in gm.graph.nodes:
        origin = inplace_origin(node)
        if origin is None:
            continue
        if node.op == "call_function" and node.target == origin:
            node.target = functional_variant(origin)
            changed = True
        forget_inplace_origin(node)
    return changed
