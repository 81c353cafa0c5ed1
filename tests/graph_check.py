"""Graph assertions for tests: op counts and op order on FX graphs.

torch.testing._internal is not available to us, so this is our own small checker. Every
helper accepts a ``torch.fx.GraphModule`` (e.g. ``ExportedProgram.module()`` or a prepared /
converted model) or an ``ExportedProgram``.

Expected ops ("keys") may be:

* an op overload (``torch.ops.aten.conv2d.default``), a higher-order op
  (``torch.ops.higher_order.cond``) or any other callable: matches call_function nodes with
  exactly that target;
* an op packet (``torch.ops.aten.add``): matches call_function nodes of any of its overloads;
* a class (``torch.nn.Module`` subclass): matches call_module nodes whose module is an instance;
* a string: matches a call_method name (``"add"``), a call_module target (``"obs_0"``) or the
  printed name of a call_function target (``"aten.conv2d.default"``).

Only call_function / call_method / call_module nodes count as ops. The ``_guards_fn``
call_module that ``ExportedProgram.module()`` inserts to check input shapes is bookkeeping,
not part of the model, and is skipped.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.fx import GraphModule, Node

__all__ = [
    "assert_graph",
    "assert_node_occurrence",
    "assert_node_order",
    "count_ops",
    "functional_op_name",
    "ops_in_order",
    "qdq_and_compute_ops",
    "quantized_edges",
]

OP_KINDS = ("call_function", "call_method", "call_module")
GUARDS_FN = "_guards_fn"

GraphLike = GraphModule | torch.export.ExportedProgram


def _graph_module(gm: GraphLike) -> GraphModule:
    if isinstance(gm, torch.export.ExportedProgram):
        return gm.graph_module
    if not isinstance(gm, GraphModule):
        raise TypeError(f"expected a GraphModule or ExportedProgram, got {type(gm).__name__}")
    return gm


def _owned_graph_modules(gm: GraphModule, include_subgraphs: bool) -> Iterator[GraphModule]:
    """``gm`` and, if asked, every nested GraphModule (cond/map/scan/while bodies, ...)."""
    yield gm
    if include_subgraphs:
        for _, module in gm.named_modules(remove_duplicate=True):
            if module is not gm and isinstance(module, GraphModule):
                yield module


def _op_nodes(gm: GraphModule) -> Iterator[Node]:
    for node in gm.graph.nodes:
        if node.op in OP_KINDS and not (node.op == "call_module" and node.target == GUARDS_FN):
            yield node


def _op_key(gm: GraphModule, node: Node, module_types: bool) -> Any:
    if node.op == "call_module" and module_types:
        return type(gm.get_submodule(str(node.target)))
    return node.target


def _matches(gm: GraphModule, node: Node, key: Any) -> bool:
    """Whether ``node`` is an occurrence of the expected op ``key`` (see the module doc)."""
    if isinstance(key, str):
        return node.target == key or (node.op == "call_function" and _display(node.target) == key)
    if isinstance(key, type):
        return node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), key)
    if node.op != "call_function":
        return False
    if isinstance(key, torch._ops.OpOverloadPacket):
        return node.target is key or getattr(node.target, "overloadpacket", None) is key
    return node.target == key


def _display(target: Any) -> str:
    """A short readable name: ``aten.conv2d.default``, ``getitem``, ``MinMaxObserver``."""
    if isinstance(target, type):
        return target.__name__
    if isinstance(target, (str, torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return str(target)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    return getattr(target, "__name__", str(target))


def _node_display(gm: GraphModule, node: Node) -> str:
    return _display(_op_key(gm, node, module_types=True))


def _readable(gm: GraphModule) -> str:
    """The graph (and nested subgraphs) as Python code, minus the stack-trace comments."""
    text = gm.print_readable(print_output=False)
    lines = (line for line in text.splitlines() if line.strip())
    return "\n".join(line for line in lines if not line.lstrip().startswith("# "))


def count_ops(
    gm: GraphLike, include_subgraphs: bool = False, module_types: bool = True
) -> collections.Counter:
    """Count op nodes by target.

    call_function nodes are keyed by their target object, call_method nodes by method name,
    call_module nodes by the module's type (or, with ``module_types=False``, by the target
    string, e.g. to tell two observer instances apart). With ``include_subgraphs`` the ops of
    every nested GraphModule (control-flow bodies) are added in.
    """
    root = _graph_module(gm)
    counts: collections.Counter = collections.Counter()
    for module in _owned_graph_modules(root, include_subgraphs):
        counts.update(_op_key(module, node, module_types) for node in _op_nodes(module))
    return counts


def ops_in_order(gm: GraphLike, module_types: bool = True) -> list[Any]:
    """The top-level graph's op targets in node order (call_module as type, see count_ops)."""
    root = _graph_module(gm)
    return [_op_key(root, node, module_types) for node in _op_nodes(root)]


def functional_op_name(name: str) -> str:
    """``aten.relu_.default`` -> ``aten.relu.default``.

    Differential tests compare op sequences with this spelling because our prepare replaces
    an in-place op whose input nobody else reads by its functional form (so an observer on
    ``relu_`` cannot alias its input) where the peers keep ``relu_``; both compute the same
    values. Private ops (``aten._foo``) are left alone.
    """
    namespace, op, overload = name.split(".")
    if op.endswith("_") and not op.startswith("_"):
        op = op[:-1]
    return f"{namespace}.{op}.{overload}"


def qdq_and_compute_ops(gm: GraphLike) -> list[str]:
    """The top-level graph's q/dq and aten ops in node order, spelled by
    :func:`functional_op_name`; bookkeeping (getitem, submodule calls) is dropped."""
    names = (str(target) for target in ops_in_order(gm))
    return [
        functional_op_name(name)
        for name in names
        if name.startswith(("aten.", "quantized_decomposed."))
    ]


def _edge_op_name(node: Node) -> str:
    name = str(node.target)
    if node.op == "call_function" and name.startswith(("aten.", "quantized_decomposed.")):
        return functional_op_name(name)
    return name if node.op == "call_function" else node.op  # getitem; input, constant, output


def quantized_edges(gm: GraphModule) -> collections.Counter:
    """Each q/dq and compute op with what feeds it and what reads it, as a multiset.

    Finer than op counts (it says which edges are quantized) and blind to node order:
    differential tests pair it with :func:`qdq_and_compute_ops`, which is the order.
    """
    return collections.Counter(
        (
            _edge_op_name(n),
            tuple(map(_edge_op_name, n.all_input_nodes)),
            tuple(sorted(map(_edge_op_name, n.users))),
        )
        for n in gm.graph.nodes
        if n.op == "call_function" and str(n.target).startswith(("aten.", "quantized_decomposed."))
    )


def _occurrences(gm: GraphModule, key: Any, include_subgraphs: bool) -> int:
    return sum(
        _matches(module, node, key)
        for module in _owned_graph_modules(gm, include_subgraphs)
        for node in _op_nodes(module)
    )


def assert_node_occurrence(
    gm: GraphLike, expected: Mapping[Any, int], include_subgraphs: bool = False
) -> None:
    """Each expected op occurs exactly the given number of times (0 means absent).

    On failure every key is listed with expected and actual counts (mismatches marked), then
    the graph, so one run shows the whole picture rather than the first wrong count.
    """
    root = _graph_module(gm)
    actual = {key: _occurrences(root, key, include_subgraphs) for key in expected}
    if all(actual[key] == count for key, count in expected.items()):
        return
    lines = ["node occurrence mismatch (expected vs actual):"]
    for key, count in expected.items():
        mark = "  " if actual[key] == count else "✗ "
        lines.append(f"  {mark}{_display(key)}: expected {count}, got {actual[key]}")
    raise AssertionError("\n".join([*lines, "graph:", _readable(root)]))


def assert_node_order(gm: GraphLike, expected: Sequence[Any]) -> None:
    """The expected ops appear in this order in the top-level graph, not necessarily
    back to back: each is matched greedily at its first occurrence after the previous match.

    On failure the message says which expected op could not be found after which node, and
    shows the graph's whole op sequence.
    """
    root = _graph_module(gm)
    nodes = list(_op_nodes(root))
    position = 0
    matched: list[str] = []
    for index, key in enumerate(expected):
        while position < len(nodes) and not _matches(root, nodes[position], key):
            position += 1
        if position == len(nodes):
            raise AssertionError(_order_failure(root, nodes, expected, index, matched))
        matched.append(nodes[position].name)
        position += 1


def _order_failure(
    gm: GraphModule, nodes: list[Node], expected: Sequence[Any], index: int, matched: list[str]
) -> str:
    after = f"after node {matched[-1]!r}" if matched else "anywhere in the graph"
    sequence = "\n".join(f"  {node.name}: {_node_display(gm, node)}" for node in nodes)
    return "\n".join(
        [
            f"node order mismatch: expected op #{index} {_display(expected[index])} "
            f"not found {after}",
            "expected order: " + ", ".join(_display(key) for key in expected),
            "matched so far: " + (", ".join(matched) or "(nothing)"),
            "graph op sequence:",
            sequence or "  (no ops)",
        ]
    )


def assert_graph(
    gm: GraphLike,
    occurrence: Mapping[Any, int] | None = None,
    order: Iterable[Any] | None = None,
    include_subgraphs: bool = False,
) -> None:
    """Both checks in one call; ``include_subgraphs`` applies to the occurrence check only."""
    if occurrence is not None:
        assert_node_occurrence(gm, occurrence, include_subgraphs=include_subgraphs)
    if order is not None:
        assert_node_order(gm, list(order))
