"""Make a prepared model call control-flow bodies eagerly, and put the real ops back at convert.

Before (prepared, observers inside the branches)::

    cond = torch.ops.higher_order.cond(gt, true_graph_0, false_graph_0, (x, w, b))

After::

    cond = pt2e_quant.graph.control_flow.eager_cond(gt, true_graph_0, false_graph_0, (x, w, b))

Why: see :mod:`pt2e_quant.graph.control_flow`. :func:`restore_control_flow` is the exact inverse.
"""

from __future__ import annotations

from torch.fx import GraphModule

from pt2e_quant.graph.control_flow import eager_stand_in_for, real_op_for

__all__ = ["use_eager_control_flow", "restore_control_flow"]


def _retarget(gm: GraphModule, mapping) -> bool:
    changed = False
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        replacement = mapping(node.target)
        if replacement is not None:
            node.target = replacement
            changed = True
    return changed


def use_eager_control_flow(gm: GraphModule) -> bool:
    """Point control-flow op nodes at their eager stand-ins; True if any was retargeted."""
    return _retarget(gm, eager_stand_in_for)


def restore_control_flow(gm: GraphModule) -> bool:
    """Point eager stand-ins back at the real higher-order ops; True if any was restored."""
    return _retarget(gm, real_op_for)
