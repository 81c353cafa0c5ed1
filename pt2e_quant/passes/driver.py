"""Runs graph passes: each pass mutates a GraphModule and returns whether it changed anything.

After a pass that changed the graph the driver lints it (so a broken rewrite fails at the pass
that broke it), removes nodes the rewrite left dead, and recompiles the module's code. Passes
therefore never recompile themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch.fx import GraphModule, Node

__all__ = ["GraphPass", "run_pass", "run_passes", "remove_dead_nodes"]

GraphPass = Callable[[GraphModule], bool]


def _is_side_effecting(node: Node) -> bool:
    # call_module nodes (observers, loggers, export's _guards_fn) run for their effects even
    # when nothing reads their output; FX's default would drop the ones it cannot prove impure.
    return node.op == "call_module" or node.is_impure()


def remove_dead_nodes(gm: GraphModule) -> bool:
    """Erase pure nodes whose results nobody uses; returns whether any was erased."""
    return gm.graph.eliminate_dead_code(is_impure_node=_is_side_effecting)


def run_pass(gm: GraphModule, graph_pass: GraphPass) -> bool:
    """Run one pass; lint, clean up and recompile if it changed the graph."""
    changed = bool(graph_pass(gm))
    if changed:
        gm.graph.lint()
        remove_dead_nodes(gm)
        gm.recompile()
    return changed


def run_passes(gm: GraphModule, passes: Sequence[GraphPass]) -> bool:
    """Run passes in order; returns whether any of them changed the graph."""
    changed = False
    for graph_pass in passes:
        changed |= run_pass(gm, graph_pass)
    return changed
