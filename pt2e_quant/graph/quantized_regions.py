"""Regions a model already holds in quantized form, which prepare leaves as they are.

Quantizing parts of a model separately and then the whole is a supported flow: convert a
submodule, place it in its parent, export the parent and prepare it. The parent's graph then
holds the submodule's quantize / dequantize ops. Observing them again would quantize each
value twice (a second q/dq right after the first, with slightly different qparams),
re-quantize integer weights from their dequantized values and let the quantizer wrap the ops
between dq and q once more; torchao does all three.

Which q/dq ops a convert produced cannot be recorded on the nodes: ``torch.export`` drops the
``node.meta`` of a GraphModule called from a parent module (non-strict export, the default,
re-traces the GraphModule's generated code). What survives is the structure convert gives a
quantized op, so regions are recognised by it. Before (a converted linear-relu inside a
parent that adds a float ``head``)::

    q = quantize(x);  dq = dequantize(q)
    linear = aten.linear(dq, dequantize_per_channel(w_int8), b);  relu = aten.relu(linear)
    q_1 = quantize(relu);  dq_1 = dequantize(q_1)
    head = aten.linear(dq_1, head_w, head_b)

``linear`` and ``relu`` form a region: each reads its float inputs through dequantize ops (or
from the other, or from constants such as a bias) and their result only reaches quantize ops.
An op whose result convert leaves float (X86's linear, a dynamically quantized linear) counts
when it reads a quantized weight or a dynamically quantized value. ``dq`` / ``dq_1``, ``q`` /
``q_1`` and every dequantized weight are borders. The quantizer does not annotate the region,
and no observer is put on a border value: ``head`` reads ``dq_1`` as it is, so the converted
``head`` forms the ``dq_1 -> linear -> q`` pattern backends fuse, with the region's qparams.

q/dq ops that quantize a value without enclosing an op, such as a model fake-quantizing an
extra input in its own forward, stay ordinary ops, as in torchao: their consumer is annotated
and observed like any other op. (q/dq a model writes around an op itself make it a region.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.contract.sharing import SharingPlan
from pt2e_quant.contract.specs import DerivedQuantizationSpec, EdgeOrNode
from pt2e_quant.graph.constants import foldable_constant_nodes
from pt2e_quant.ops import qdq_ops

__all__ = ["QuantizedRegions", "find_quantized_regions", "drop_observers_of_quantized_values"]

_SCALAR_TYPES = (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool)


@dataclass(frozen=True)
class QuantizedRegions:
    """The ops of every already quantized region and the q/dq ops on their borders."""

    ops: frozenset[Node]
    #: dequantize ops feeding a region op, giving a region's result to its readers, or
    #: dequantizing a stored integer weight
    dequantizes: frozenset[Node]
    #: quantize (and dynamic choose_qparams) ops reading a region op or feeding a border dq
    quantizes: frozenset[Node]

    def holds_value(self, member: EdgeOrNode) -> bool:
        """Whether the annotated edge or output is a value the regions already quantize."""
        if isinstance(member, Node):
            return member in self.ops or member in self.dequantizes or _only_quantized(member, self)
        producer, consumer = member
        return consumer in self.ops or consumer in self.quantizes or producer in self.dequantizes


def _only_quantized(node: Node, regions: QuantizedRegions) -> bool:
    """Every reader of ``node``'s value is a border quantize op (the region's input q)."""
    readers = [user for user in node.users if not _carries_no_tensor(user)]
    return bool(readers) and all(user in regions.quantizes for user in readers)


def _carries_no_tensor(node: Node) -> bool:
    """A shape or scalar (``sym_size``, a SymInt): not a value that gets quantized."""
    return isinstance(node.meta.get("val"), _SCALAR_TYPES)


def _never_quantized(node: Node) -> bool:
    """A value no quantize op takes: a scalar, or an integer / bool tensor (indices, masks)."""
    value = node.meta.get("val")
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point()
    return isinstance(value, _SCALAR_TYPES)


class _RegionSearch:
    """Finds the region ops of one graph, see :meth:`ops`."""

    def __init__(self, gm: GraphModule) -> None:
        self.constants = foldable_constant_nodes(gm)
        self.gm = gm

    def is_quantized_weight(self, node: Node) -> bool:
        """A dequantize of a module constant: integer values stored by an earlier convert."""
        return qdq_ops.is_dequantize(node) and node.args[0] in self.constants

    def is_candidate(self, node: Node) -> bool:
        return (
            node.op == "call_function"
            and not qdq_ops.is_quant_workflow_node(node)
            and node not in self.constants
            and bool(node.all_input_nodes)
        )

    def encloses(self, node: Node, ops: set[Node]) -> bool:
        """``node`` reads its float inputs dequantized (or from region ops; constants aside),
        and its result reaches only quantize ops, or it reads a quantized weight or a
        dynamically quantized value (ops whose result convert leaves float)."""
        inputs = node.all_input_nodes
        if not all(
            qdq_ops.is_dequantize(i) or i in ops or i in self.constants or _never_quantized(i)
            for i in inputs
        ):
            return False
        if not any(qdq_ops.is_dequantize(i) or i in ops for i in inputs):
            return False
        if any(self.is_quantized_weight(i) or qdq_ops.is_dynamic_dequantize(i) for i in inputs):
            return True
        return all(
            qdq_ops.is_quantize(user)
            or qdq_ops.is_choose_qparams(user)
            or user in ops
            or _carries_no_tensor(user)
            for user in node.users
        )

    def ops(self) -> set[Node]:
        """The largest set of ops that all satisfy :meth:`encloses` given each other.

        Start from every candidate and drop the ones that fail until none does; a dropped op
        can make its neighbours fail, so they are checked again. An op chain that reaches a
        float reader (the graph output, a float op) is dropped as a whole.
        """
        ops = {node for node in self.gm.graph.nodes if self.is_candidate(node)}
        pending = list(ops)
        while pending:
            node = pending.pop()
            if node not in ops or self.encloses(node, ops):
                continue
            ops.discard(node)
            pending.extend(n for n in (*node.all_input_nodes, *node.users) if n in ops)
        return ops


_NO_REGIONS = QuantizedRegions(frozenset(), frozenset(), frozenset())


def find_quantized_regions(gm: GraphModule) -> QuantizedRegions:
    """The already quantized regions of ``gm`` (none in a float model), see the module doc."""
    if not any(qdq_ops.is_dequantize(node) for node in gm.graph.nodes):
        return _NO_REGIONS
    search = _RegionSearch(gm)
    ops = search.ops()
    inner_dqs = {i for op in ops for i in op.all_input_nodes if qdq_ops.is_dequantize(i)}
    weights = {node for node in gm.graph.nodes if search.is_quantized_weight(node)}
    inner_qs = {dq.args[0] for dq in inner_dqs if qdq_ops.is_quantize(dq.args[0])}
    outer_qs = {
        user
        for op in ops
        for user in op.users
        if qdq_ops.is_quantize(user) or qdq_ops.is_choose_qparams(user)
    }
    outer_dqs = {user for q in outer_qs for user in q.users if qdq_ops.is_dequantize(user)}
    choose = {
        q.args[1].args[0] for q in inner_qs if qdq_ops.is_qparam_getitem(q.args[1])
    }  # dynamic: choose_qparams -> getitem -> q
    return QuantizedRegions(
        ops=frozenset(ops),
        dequantizes=frozenset(inner_dqs | outer_dqs | weights),
        quantizes=frozenset(inner_qs | outer_qs | choose),
    )


def drop_observers_of_quantized_values(
    observers: dict[EdgeOrNode, torch.nn.Module], plan: SharingPlan, regions: QuantizedRegions
) -> dict[EdgeOrNode, torch.nn.Module]:
    """``observers`` without the sharing groups that only observe already quantized values.

    A group that also observes a float value keeps its one observer on every member: the
    quantizer tied those values to one scale (a ``cat`` of a region's output and a float
    tensor), which a border value keeping its own qparams would break. So does a group a
    derived spec (a bias scale) is computed from.
    """
    if regions == _NO_REGIONS:
        return observers
    derived_from = {
        id(plan.group_of[source])
        for group in plan.groups
        if isinstance(group.spec, DerivedQuantizationSpec)
        for source in group.spec.derived_from
        if source in plan.group_of
    }
    skipped = {
        id(group)
        for group in plan.groups
        if id(group) not in derived_from and all(regions.holds_value(m) for m in group.members)
    }
    return {m: o for m, o in observers.items() if id(plan.group_of[m]) not in skipped}
