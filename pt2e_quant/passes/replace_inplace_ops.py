"""Replace in-place ops by their functional forms where nothing can tell the difference.

Export keeps ``relu_`` / ``add_`` / ``hardtanh_`` of models written with ``inplace=True`` or
``out += identity``. Quantization puts q/dq between ops, and an in-place op would then mutate
the dequantized copy instead of the tensor later nodes read; annotators would also need two
spellings of every op. So before annotation::

    relu_ = aten.relu_.default(conv2d);  add_ = aten.add_.Tensor(relu_, x)

becomes::

    relu = aten.relu.default(conv2d);  add = aten.add.Tensor(relu, x)

The rewrite only happens when no tensor sharing storage with the mutated one (through views
or earlier in-place ops) is read after the mutation, other than through the op's own result;
mutations of model inputs and buffers are real side effects and stay.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

__all__ = ["replace_inplace_ops", "functional_variant"]


def functional_variant(target: object) -> object | None:
    """``aten.add.Tensor`` for ``aten.add_.Tensor`` and so on; None if there is none."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    schema = target._schema
    if not schema.arguments or schema.arguments[0].alias_info is None:
        return None
    if not schema.arguments[0].alias_info.is_write:
        return None
    namespace, _, name = schema.name.partition("::")
    if not name.endswith("_") or name.endswith("__"):
        return None
    packet = getattr(getattr(torch.ops, namespace), name[:-1], None)
    overload = getattr(packet, target._overloadname, None) if packet is not None else None
    if overload is None or len(overload._schema.arguments) != len(schema.arguments):
        return None
    return overload


_aten = torch.ops.aten

#: Ops whose schema promises a fresh result but whose implementation can hand back their
#: input itself: dropout when not training (or with p = 0), ``type_as`` / ``sum_to_size`` /
#: ``atleast_*d`` when nothing needs converting, ``einsum`` for an identity or permuting
#: equation. An in-place op on such a result mutates the input too.
_MAY_RETURN_INPUT = frozenset(
    {
        _aten.dropout.default,
        _aten.feature_dropout.default,
        _aten.alpha_dropout.default,
        _aten.feature_alpha_dropout.default,
        _aten.type_as.default,
        _aten.sum_to_size.default,
        _aten.atleast_1d.default,
        _aten.atleast_2d.default,
        _aten.atleast_3d.default,
        _aten.einsum.default,
    }
)


def _aliased_arguments(node: Node, schema: torch.FunctionSchema) -> list[object]:
    """The arguments ``node``'s result may share storage with."""
    if node.target in _MAY_RETURN_INPUT:
        first = node.args[0] if node.args else None
        # einsum's operands come as a list after the equation
        return list(node.args[1]) if node.target is _aten.einsum.default else [first]
    if len(schema.returns) != 1 or schema.returns[0].alias_info is None:
        return []
    alias_set = schema.returns[0].alias_info.before_set
    return [
        value
        for argument, value in zip(schema.arguments, node.args, strict=False)
        if argument.alias_info is not None and argument.alias_info.before_set == alias_set
    ]


def _alias_classes(gm: GraphModule) -> dict[Node, Node]:
    """Union-find of nodes whose results share storage (views and in-place results).

    An op's result aliases an argument when the schema gives both the same alias set, e.g.
    ``relu_(Tensor(a!) self) -> Tensor(a!)`` or ``view(Tensor(a) self, ...) -> Tensor(a)``,
    or when the op is one of the few that may return an input without saying so.
    """
    parent: dict[Node, Node] = {}

    def find(node: Node) -> Node:
        parent.setdefault(node, node)
        while parent[node] is not node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for node in gm.graph.nodes:
        schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
        if schema is None:
            continue
        for value in _aliased_arguments(node, schema):
            if isinstance(value, Node):
                parent[find(node)] = find(value)
    return {node: find(node) for node in gm.graph.nodes}


def _mutation_is_unobservable(
    node: Node, order: dict[Node, int], classes: dict[Node, Node]
) -> bool:
    """No tensor sharing storage with the mutated input, created before ``node``, is read after it.

    Then a fresh result is indistinguishable from the in-place one. The storage must also belong
    to an intermediate result, not to a model input or buffer.
    """
    mutated = node.args[0] if node.args else None
    if not isinstance(mutated, Node):
        return False
    position = order[node]
    root = classes[mutated]
    earlier_aliases = [m for m in classes if classes[m] is root and order[m] < position]
    for alias in earlier_aliases:
        if alias.op in ("placeholder", "get_attr"):
            return False
        if any(user is not node and order[user] > position for user in alias.users):
            return False
    return True


def replace_inplace_ops(gm: GraphModule) -> bool:
    """Swap eligible in-place ops for functional ones; True if any was swapped."""
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    # computed once, before any rewrite: rewrites only split classes, so this stays conservative
    classes = _alias_classes(gm)
    changed = False
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        functional = functional_variant(node.target)
        if functional is None or not _mutation_is_unobservable(node, order, classes):
            continue
        node.target = functional
        changed = True
    return changed
