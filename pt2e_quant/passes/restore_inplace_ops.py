"""Write in place again, in a prepared model, where the exported model wrote in place.

:func:`~pt2e_quant.passes.replace_inplace_ops.replace_inplace_ops` makes ``relu_`` / ``add_``
functional so annotation sees one spelling of each op. Left that way, every calibration batch
allocates a fresh tensor at each of them (a ResNet-50 has 65), where the user's model (and
torchao's prepared model) writes into a tensor nobody reads again. Once observers are in place,
this pass swaps such a node back to the op it was when the write is still unobservable in the
*prepared* graph::

    activation_post_process_7 = self.activation_post_process_7(conv2d_2)
    add = aten.add.Tensor(activation_post_process_7, activation_post_process_3)

becomes::

    activation_post_process_7 = self.activation_post_process_7(conv2d_2)
    add = aten.add_.Tensor(activation_post_process_7, activation_post_process_3)

An observer returns the tensor it was given, so ``conv2d_2`` and ``activation_post_process_7``
are one storage and the write must be invisible through either. A node is swapped back only
when every value sharing the written storage is
* the op that created it (a fresh result, not a view, a model input or a module tensor),
* an in-place op already on it, or
* an observer of a class known to keep nothing of its input (so it ran before the write and
  will not look again; :mod:`pt2e_quant.observer.input_retention`),
and none of them is read after the node, other than through the node's own result (which its
output observer reads, after the write), and the node's other arguments share no storage with
it. Views are refused outright: writing into a view changes autograd's bookkeeping.

Only ``prepare_pt2e`` runs this: under QAT the graph is differentiated, and an in-place write
into a tensor a backward needs would break training. ``convert_pt2e`` swaps the nodes back to
functional before anything else (``functionalize_restored_ops``), so converted graphs are
exactly those of a prepare without this pass.
"""

from __future__ import annotations

from torch.fx import GraphModule, Node

from pt2e_quant.graph.aliasing import alias_classes, aliased_arguments, written_arguments
from pt2e_quant.observer.input_retention import forgets_its_input
from pt2e_quant.passes.replace_inplace_ops import functional_variant, inplace_origin

__all__ = ["restore_inplace_ops"]


class _StorageClasses:
    """Alias classes of a prepared graph, merged as nodes become in-place again."""

    def __init__(self, gm: GraphModule) -> None:
        roots = alias_classes(gm, modules_return_input=True)
        self.root = dict(roots)
        self.members: dict[Node, list[Node]] = {}
        for node, root in roots.items():
            self.members.setdefault(root, []).append(node)

    def of(self, node: Node) -> list[Node]:
        return self.members[self.root[node]]

    def merge(self, a: Node, b: Node) -> None:
        keep, gone = self.root[a], self.root[b]
        if keep is gone:
            return
        for node in self.members.pop(gone):
            self.root[node] = keep
            self.members[keep].append(node)


def _member_may_share(gm: GraphModule, member: Node) -> bool:
    """Whether ``member`` is a kind of value an in-place write may reach (see module doc)."""
    if member.op == "call_module":
        return forgets_its_input(gm.get_submodule(str(member.target)))
    if member.op != "call_function":
        return False  # placeholder, get_attr: the caller's or the module's tensor
    schema = getattr(member.target, "_schema", None)
    if schema is None:
        return False
    aliased = aliased_arguments(member, schema)
    if not aliased:
        return True  # the op that created the storage
    written = list(written_arguments(member))
    return all(any(value is w for w in written) for value in aliased)  # in-place, not a view


def _write_is_unobservable(
    gm: GraphModule, node: Node, order: dict[Node, int], classes: _StorageClasses
) -> bool:
    mutated = node.args[0] if node.args else None
    if not isinstance(mutated, Node):
        return False
    position = order[node]
    sharing = classes.of(mutated)
    if any(classes.root.get(other) is classes.root[mutated] for other in _other_inputs(node)):
        return False
    for member in sharing:
        if member is node or order[member] > position or not _member_may_share(gm, member):
            return False
        if any(user is not node and order[user] > position for user in member.users):
            return False
    return True


def _other_inputs(node: Node) -> list[Node]:
    values = list(node.args[1:]) + list(node.kwargs.values())
    return [value for value in values if isinstance(value, Node)]


def restore_inplace_ops(gm: GraphModule) -> bool:
    """Swap functionalized nodes back to their in-place op where safe; True if any was."""
    candidates = [
        node
        for node in gm.graph.nodes
        if node.op == "call_function"
        and inplace_origin(node) is not None
        and functional_variant(inplace_origin(node)) == node.target
    ]
    if not candidates:
        return False
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    classes = _StorageClasses(gm)
    changed = False
    for node in candidates:
        if not _write_is_unobservable(gm, node, order, classes):
            continue
        node.target = inplace_origin(node)
        classes.merge(node.args[0], node)
        changed = True
    return changed
