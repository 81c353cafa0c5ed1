"""Finding the graphs nested inside higher-order ops (cond, map, scan, while_loop, ...).

``torch.export`` stores the body of a higher-order op as a GraphModule attribute that the op
node reads through a ``get_attr`` argument. Every pass that must look inside bodies uses
:func:`iter_graph_modules` instead of knowing each op's argument layout, so a new
higher-order op is covered the day it appears.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.graph.aten_args import attribute

__all__ = ["is_higher_order_call", "subgraph_args", "iter_graph_modules"]


def is_higher_order_call(node: Node) -> bool:
    """True for a call of a higher-order operator such as ``torch.ops.higher_order.cond``."""
    return node.op == "call_function" and isinstance(node.target, torch._ops.HigherOrderOperator)


def _flatten(args: object) -> Iterator[object]:
    if isinstance(args, (list, tuple)):
        for item in args:
            yield from _flatten(item)
    else:
        yield args


def subgraph_args(gm: GraphModule, node: Node) -> list[tuple[str, GraphModule]]:
    """(attribute name, body) for every sub-graph a call node passes along.

    Any call receiving a GraphModule attribute counts, not only HigherOrderOperator calls: a
    prepared model calls control-flow bodies through eager stand-ins (plain functions).
    """
    found: list[tuple[str, GraphModule]] = []
    if node.op != "call_function":
        return found
    for arg in _flatten((node.args, tuple(node.kwargs.values()))):
        if isinstance(arg, Node) and arg.op == "get_attr":
            body = attribute(gm, str(arg.target))
            if isinstance(body, GraphModule):
                found.append((str(arg.target), body))
    return found


def _holds_graph_modules(module: GraphModule) -> bool:
    return any(isinstance(m, GraphModule) for m in module.modules() if m is not module)


def iter_graph_modules(gm: GraphModule) -> Iterator[GraphModule]:
    """``gm`` itself, then every nested higher-order-op body, depth first, each once."""
    seen: set[int] = set()

    def visit(module: GraphModule) -> Iterator[GraphModule]:
        if id(module) in seen:
            return
        seen.add(id(module))
        yield module
        if not _holds_graph_modules(module):
            return  # the common case: no bodies, no need to look at every node
        for node in list(module.graph.nodes):
            for _, body in subgraph_args(module, node):
                yield from visit(body)

    yield from visit(gm)
