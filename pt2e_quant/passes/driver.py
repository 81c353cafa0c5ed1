"""Runs graph passes: each pass mutates a GraphModule and returns whether it changed anything.

After a pass that changed the graph the driver removes nodes the rewrite left dead, lints the
graph (so a broken rewrite fails at the pass that broke it) and recompiles the module's code.
Passes therefore never recompile themselves.

A pipeline that runs several passes with no user code in between asks for ``deferred=True``
and calls :func:`finalize_graphs` once at the end, which lints and recompiles every graph:
generating and compiling Python for a large graph costs more than most passes, and a lint
walks every node. A broken rewrite then fails at the end of the pipeline instead of at its
pass; tests run passes one by one to pin a failure down.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.passes.unread_state import delete_unread_tensors

__all__ = ["GraphPass", "run_pass", "finalize_graphs", "remove_dead_nodes"]

GraphPass = Callable[[GraphModule], bool]


class _SideEffects:
    """Which nodes must survive dead-code removal, with the per-operator answer cached.

    ``Node.is_impure`` inspects the operator's schema and effect registry on every call, which
    dominated dead-code removal on large graphs; for an OpOverload the answer depends only on
    the operator. call_module nodes (observers, loggers, export's ``_guards_fn``) run for their
    effects even when nothing reads their output, so they are always kept.
    """

    def __init__(self) -> None:
        self._by_overload: dict[torch._ops.OpOverload, bool] = {}

    def __call__(self, node: Node) -> bool:
        if node.op in ("placeholder", "output", "call_module"):
            return True
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            known = self._by_overload.get(node.target)
            if known is None:
                known = self._by_overload[node.target] = node.is_impure()
            return known
        return node.is_impure()


def remove_dead_nodes(gm: GraphModule) -> bool:
    """Erase pure nodes whose results nobody uses; returns whether any was erased.

    A module tensor whose last reader goes with them (a folded batch norm's statistics, a
    weight now stored quantized) is deleted too, so it is not exported with the model.
    """
    keep = _SideEffects()
    erased_reads = []
    changed = False
    for node in reversed(gm.graph.nodes):
        if not node.users and not keep(node):
            if node.op == "get_attr":
                erased_reads.append(str(node.target))
            gm.graph.erase_node(node)
            changed = True
    if erased_reads:
        delete_unread_tensors(gm, erased_reads)
    return changed


def run_pass(gm: GraphModule, graph_pass: GraphPass, *, deferred: bool = False) -> bool:
    """Run one pass; clean up, and unless ``deferred`` lint and recompile, if it changed the graph."""
    changed = bool(graph_pass(gm))
    if changed:
        remove_dead_nodes(gm)
        if not deferred:
            gm.graph.lint()
            gm.recompile()
    return changed


def finalize_graphs(gm: GraphModule) -> GraphModule:
    """Lint and regenerate the code of ``gm`` and of every higher-order-op body it holds."""
    for module in iter_graph_modules(gm):
        module.graph.lint()
        module.recompile()
    return gm
