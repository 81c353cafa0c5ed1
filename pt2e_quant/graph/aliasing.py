"""Which graph values share storage, and which ops write into a value.

Quantization turns a value into a copy (quantize, then dequantize), which is only right when
nothing writes into the original afterwards. Export keeps in-place ops whose effect is seen
through an alias (a view, or an op that returns its input), so passes that rewrite in-place
ops or place observers ask this module which values share storage and where writes happen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.graph.aten_args import argument, attribute
from pt2e_quant.graph.training_mode import updates_running_stats
from pt2e_quant.ops.families import EINSUM_OPS, MAY_RETURN_INPUT_OPS

__all__ = [
    "aliased_arguments",
    "alias_classes",
    "first_writer",
    "written_arguments",
    "written_attributes",
]


def aliased_arguments(node: Node, schema: torch.FunctionSchema) -> list[object]:
    """The arguments ``node``'s result may share storage with."""
    if node.target in MAY_RETURN_INPUT_OPS:
        first = node.args[0] if node.args else None
        # einsum's operands come as a list after the equation
        return list(node.args[1]) if node.target in EINSUM_OPS else [first]
    if len(schema.returns) != 1 or schema.returns[0].alias_info is None:
        return []
    alias_set = schema.returns[0].alias_info.before_set
    return [
        value
        for argument, value in zip(schema.arguments, node.args, strict=False)
        if argument.alias_info is not None and argument.alias_info.before_set == alias_set
    ]


def _aliases_of_result(node: Node, modules_return_input: bool = False) -> list[Node]:
    """The graph values ``node``'s result may share storage with."""
    if node.op == "call_module":
        return [arg for arg in node.args if isinstance(arg, Node)] if modules_return_input else []
    schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
    if schema is None:
        return []
    return [value for value in aliased_arguments(node, schema) if isinstance(value, Node)]


def alias_classes(gm: GraphModule, modules_return_input: bool = False) -> dict[Node, Node]:
    """Union-find of nodes whose results share storage (views and in-place results).

    An op's result aliases an argument when the schema gives both the same alias set, e.g.
    ``relu_(Tensor(a!) self) -> Tensor(a!)`` or ``view(Tensor(a) self, ...) -> Tensor(a)``,
    or when the op is one of the few that may return an input without saying so.

    ``modules_return_input`` is for prepared graphs: an observer returns the very tensor it
    was given, so with it every ``call_module`` result counts as an alias of its arguments.
    """
    parent: dict[Node, Node] = {}

    def find(node: Node) -> Node:
        parent.setdefault(node, node)
        while parent[node] is not node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for node in gm.graph.nodes:
        for value in _aliases_of_result(node, modules_return_input):
            parent[find(node)] = find(value)
    return {node: find(node) for node in gm.graph.nodes}


def written_arguments(node: Node) -> Iterator[object]:
    """The arguments ``node`` writes into: schema-annotated ones, and training batch norm's
    running statistics (``aten.batch_norm`` updates them without saying so in its schema)."""
    schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
    if schema is None:
        return
    for arg in schema.arguments:
        if arg.alias_info is not None and arg.alias_info.is_write:
            yield argument(node, arg.name)
    if updates_running_stats(node):
        yield argument(node, "running_mean")
        yield argument(node, "running_var")


def first_writer(node: Node) -> Node | None:
    """The first op (in graph order) that writes into ``node``'s storage, through any alias.

    A local walk: up to the values ``node`` is a view of, then down through every view of
    those, so a report can ask about one value without building :func:`alias_classes` for
    the whole graph.
    """
    members = {node}
    pending = [node]
    while pending:
        current = pending.pop()
        related = _aliases_of_result(current) + [
            user for user in current.users if current in _aliases_of_result(user)
        ]
        for other in related:
            if other not in members:
                members.add(other)
                pending.append(other)
    writers = {
        user
        for member in members
        for user in member.users
        if any(isinstance(arg, Node) and arg in members for arg in written_arguments(user))
    }
    return next((n for n in node.graph.nodes if n in writers), None) if writers else None


def _storage_key(tensor: torch.Tensor) -> int | None:
    try:
        pointer = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, ...)
        return None
    return pointer or None  # empty storages all sit at 0 and share nothing


def written_attributes(gm: GraphModule) -> set[str]:
    """The get_attr targets of ``gm`` whose storage a node of ``gm`` writes, through any alias.

    A buffer updated through a view (``self.buf[0].add_(x)``), through a ``copy_`` that
    ``run_decompositions`` left, or under another registered name is still written: every name
    that reaches the written storage counts, whichever node reads it.
    """
    classes = alias_classes(gm)
    written_classes = {
        classes[arg]
        for node in gm.graph.nodes
        for arg in written_arguments(node)
        if isinstance(arg, Node)
    }
    if not written_classes:
        return set()
    attributes = {
        str(node.target): attribute(gm, str(node.target))
        for node in gm.graph.nodes
        if node.op == "get_attr"
    }
    tensors = {name: t for name, t in attributes.items() if isinstance(t, torch.Tensor)}
    written_storages = {
        _storage_key(tensors[str(node.target)])
        for node in gm.graph.nodes
        if node.op == "get_attr"
        and classes[node] in written_classes
        and str(node.target) in tensors
    } - {None}
    return {name for name, t in tensors.items() if _storage_key(t) in written_storages}
