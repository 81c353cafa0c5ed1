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

Each swapped node remembers the op it was (:func:`inplace_origin`): once observers are in
place, ``prepare_pt2e`` writes in place again where that is still safe, so calibration does
not allocate where the user's model did not (``restore_inplace_ops``), and ``convert_pt2e``
swaps back before anything else (``functionalize_restored_ops``).
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.graph.aliasing import alias_classes

__all__ = [
    "replace_inplace_ops",
    "functional_variant",
    "inplace_origin",
    "forget_inplace_origin",
]

#: node.meta key holding the in-place overload a node was before this pass swapped it
_INPLACE_ORIGIN_KEY = "pt2e_quant_inplace_origin"


def inplace_origin(node: Node) -> torch._ops.OpOverload | None:
    """The in-place op ``node`` was before :func:`replace_inplace_ops` made it functional."""
    return node.meta.get(_INPLACE_ORIGIN_KEY)


def forget_inplace_origin(node: Node) -> None:
    """Drop the record of :func:`inplace_origin` (a converted graph does not carry it)."""
    node.meta.pop(_INPLACE_ORIGIN_KEY, None)


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
    classes = alias_classes(gm)
    changed = False
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        functional = functional_variant(node.target)
        if functional is None or not _mutation_is_unobservable(node, order, classes):
            continue
        node.meta[_INPLACE_ORIGIN_KEY] = node.target
        node.target = functional
        changed = True
    return changed
