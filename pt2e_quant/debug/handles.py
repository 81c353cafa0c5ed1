"""Numeric debug handles: stable integer ids that tie a float op to its quantized counterpart.

A handle is written once, on the exported program, at
``node.meta["custom"]["numeric_debug_handle"]`` (the key is owned by :mod:`pt2e_quant.graph.node_meta`).
``torch.export`` keeps ``meta["custom"]`` through copy, deepcopy, re-export and
``run_decompositions`` (a decomposed op's nodes inherit its handle), and our prepare / convert
copy it onto the output observer and then the dequantize that stands for the op's quantized
output. Matching float and quantized values by handle rather than by node name is what lets the
debugger survive renames such as ``conv2d`` -> ``convolution``.

Example: ``Conv2dThenConv1d`` gets ``conv2d -> 1, squeeze -> 2, conv1d -> 3``; placeholders and
the output node get none.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from torch.export import ExportedProgram
from torch.fx import GraphModule, Node

from pt2e_quant.errors import QuantizationError
from pt2e_quant.graph.node_meta import CUSTOM_KEY, NUMERIC_DEBUG_HANDLE_KEY, get_debug_handle
from pt2e_quant.graph.subgraphs import iter_graph_modules, subgraph_args

__all__ = [
    "CUSTOM_KEY",
    "NUMERIC_DEBUG_HANDLE_KEY",
    "MissingDebugHandlesError",
    "generate_numeric_debug_handle",
    "bfs_trace_with_node_process",
    "has_debug_handles",
]

#: how to give a model handles, for the errors raised when it has none
ADD_HANDLES_HINT = (
    "Add them to the exported program before taking its module: "
    "ep = torch.export.export(model, example_inputs); generate_numeric_debug_handle(ep); "
    "then use ep.module() (and prepare_pt2e / convert_pt2e that module for the quantized side)"
)


class MissingDebugHandlesError(QuantizationError, ValueError):
    """A model carries no numeric debug handles, so nothing in it can be matched."""


def has_debug_handles(gm: GraphModule) -> bool:
    """Some node of ``gm`` or of its control-flow bodies carries a numeric debug handle."""
    return any(
        get_debug_handle(node) is not None for g in iter_graph_modules(gm) for node in g.graph.nodes
    )


_SKIPPED_OPS = ("placeholder", "output")


def _graph_module_of(model: ExportedProgram | GraphModule, caller: str) -> GraphModule:
    if isinstance(model, ExportedProgram):
        return model.graph_module
    if isinstance(model, GraphModule):
        return model
    raise ValueError(
        f"{caller} expects a torch.export.ExportedProgram or a torch.fx.GraphModule, "
        f"got {type(model).__name__}"
    )


def bfs_trace_with_node_process(
    model: ExportedProgram | GraphModule, node_op: Callable[[Node], None]
) -> None:
    """Apply ``node_op`` to every node except placeholders and outputs, graph by graph.

    The top-level graph comes first (in node order), then the bodies of its control-flow ops
    (``cond`` branches, ``map`` / ``scan`` / ``while_loop`` bodies) in the order they are
    called, then their own bodies: a breadth-first walk over graphs. Bodies are found through
    :func:`pt2e_quant.graph.subgraphs.subgraph_args`, so every higher-order op is covered. A body
    shared by two calls is visited once.
    """
    root = _graph_module_of(model, "bfs_trace_with_node_process")
    queue: deque[GraphModule] = deque([root])
    seen = {id(root)}
    while queue:
        gm = queue.popleft()
        for node in gm.graph.nodes:
            if node.op in _SKIPPED_OPS:
                continue
            node_op(node)
            for _, body in subgraph_args(gm, node):
                if id(body) not in seen:
                    seen.add(id(body))
                    queue.append(body)


def generate_numeric_debug_handle(ep: ExportedProgram) -> None:
    """Give every node of ``ep`` (and of its control-flow bodies) a unique handle, in place.

    Nodes that already have a handle keep it; the others get ``max + 1, max + 2, ...`` in
    :func:`bfs_trace_with_node_process` order, where ``max`` is the largest handle present (0
    on a fresh program, so ids start at 1). Re-running after adding nodes therefore numbers
    only the new ones and never reuses an id. Call it on the program, before ``ep.module()``:
    the handle must be in place before any transformation so both sides of a comparison
    inherit it.
    """
    if not isinstance(ep, ExportedProgram):
        raise ValueError(
            "generate_numeric_debug_handle expects a torch.export.ExportedProgram, got "
            f"{type(ep).__name__}; pass the result of torch.export.export(...) before calling "
            ".module() on it"
        )
    largest = 0

    def find_largest(node: Node) -> None:
        nonlocal largest
        handle = get_debug_handle(node)
        if handle is not None:
            largest = max(largest, handle)

    def assign(node: Node) -> None:
        nonlocal largest
        if get_debug_handle(node) is not None:
            return
        largest += 1
        custom = node.meta.get(CUSTOM_KEY)
        if not isinstance(custom, dict):
            custom = node.meta[CUSTOM_KEY] = {}
        custom[NUMERIC_DEBUG_HANDLE_KEY] = largest

    bfs_trace_with_node_process(ep, find_largest)
    bfs_trace_with_node_process(ep, assign)
