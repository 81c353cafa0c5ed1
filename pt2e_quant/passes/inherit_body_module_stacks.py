"""Give the nodes inside control-flow bodies the module stack of the op that runs them.

``torch.export`` records ``nn_module_stack`` (which module each node came from) for the top
graph only; nodes inside ``cond`` / ``map`` / ``scan`` / ``while_loop`` bodies get an empty
one. Module-name and module-type scoping would then either match nothing or, being unable to
tell, refuse. A body runs inside the module that called the higher-order op, so its nodes
inherit that call's stack: scoping by an enclosing module works for them. (Which submodule
*inside* the body a node came from is not recorded, so scoping by such a submodule's name
cannot reach it.)

Only metadata changes, so the pass reports no graph change.
"""

from __future__ import annotations

from torch.fx import GraphModule

from pt2e_quant.graph.subgraphs import subgraph_args

__all__ = ["inherit_body_module_stacks"]

_KEY = "nn_module_stack"


def _inherit(gm: GraphModule) -> None:
    for node in gm.graph.nodes:
        stack = node.meta.get(_KEY)
        if not stack:
            continue
        for _, body in subgraph_args(gm, node):
            for inner in body.graph.nodes:
                if inner.op == "call_function" and not inner.meta.get(_KEY):
                    inner.meta[_KEY] = dict(stack)
            _inherit(body)


def inherit_body_module_stacks(gm: GraphModule) -> bool:
    """Fill the empty module stacks of body nodes, outermost bodies first."""
    if any(isinstance(m, GraphModule) for m in gm.modules() if m is not gm):
        _inherit(gm)
    return False
