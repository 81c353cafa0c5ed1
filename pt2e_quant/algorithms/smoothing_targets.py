"""Which activations SmoothQuant can smooth, and the weighted ops that read each of them.

SmoothQuant divides an activation's channels by ``s`` and multiplies the matching weight
entries by ``s``. That is exact only where the op contracts the activation's channel axis
against a module constant, so a *consumer* is one of these (the channel axis is the
activation's last dimension in every row)::

    linear(x, W[out, in], b)        W's input axis: 1
    matmul(x, W[in, out] | W[in])   W's input axis: 0
    mm(x, W[in, out])               W's input axis: 0
    addmm(b, x, W[in, out])         W's input axis: 0   (GPT-2's Conv1D)

where ``W`` is a ``get_attr`` of a floating-point module tensor that no node writes. Not
consumers: a matmul of two activations (attention's ``q @ k^T``, ``p @ v``; exact smoothing
would scale both operands along the contraction axis, which needs the producers of both;
left out), ``W @ x`` (the weight on the left), a weight reached through a view or a cast,
and ops inside control-flow bodies (``cond`` / ``scan`` bodies receive their weights as
operands, not as constants).

Consumers reading the same activation node form one :class:`SmoothingGroup` (q/k/v
projections after one layer norm): they share one ``s`` and one inserted multiply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node
from torch.fx.node import map_arg

from pt2e_quant.graph.aliasing import written_attributes
from pt2e_quant.graph.aten_args import argument, module_constant
from pt2e_quant.ops.families import ADDMM_OPS, LINEAR_OPS, MATMUL_OPS, PLAIN_MM_OPS

__all__ = ["SmoothingConsumer", "SmoothingGroup", "find_smoothing_groups"]


@dataclass(frozen=True)
class _ConsumerRow:
    """How one op family reads its activation and weight: schema argument names, the weight
    ranks accepted, and the weight axis indexing the activation's channels."""

    ops: frozenset
    activation: str
    weight: str
    weight_ranks: tuple[int, ...]
    input_axis: int


_CONSUMER_ROWS = (
    _ConsumerRow(LINEAR_OPS, "input", "weight", (2,), 1),
    _ConsumerRow(MATMUL_OPS, "self", "other", (1, 2), 0),
    _ConsumerRow(PLAIN_MM_OPS, "self", "mat2", (2,), 0),
    _ConsumerRow(ADDMM_OPS, "mat1", "mat2", (2,), 0),
)


@dataclass(frozen=True)
class SmoothingConsumer:
    """One weighted op that reads a smoothable activation.

    ``weight_argument`` is the schema name of the weight argument (for rebinding it) and
    ``input_axis`` the weight axis that runs along the activation's channels.
    """

    node: Node
    weight: Node
    weight_argument: str
    input_axis: int


@dataclass(frozen=True)
class SmoothingGroup:
    """An activation node and every consumer reading it (graph order); ``channels`` is the
    size of its last dimension, the axis ``s`` runs along."""

    activation: Node
    consumers: tuple[SmoothingConsumer, ...]
    channels: int


def _row_of(node: Node) -> _ConsumerRow | None:
    if node.op != "call_function":
        return None
    return next((row for row in _CONSUMER_ROWS if node.target in row.ops), None)


def _activation_channels(activation: Node) -> int | None:
    """The activation's last dimension from export's fake value; None when unknown, not a
    floating-point tensor, or symbolic."""
    value = activation.meta.get("val")
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() < 1:
        return None
    size = value.shape[-1]
    return size if isinstance(size, int) else None


def _occurrences(node: Node, value: Node) -> int:
    count = 0

    def visit(arg: Node) -> Node:
        nonlocal count
        count += arg is value
        return arg

    map_arg((node.args, node.kwargs), visit)
    return count


def _consumer(gm: GraphModule, node: Node, written: set[str]) -> SmoothingConsumer | None:
    row = _row_of(node)
    if row is None:
        return None
    activation = argument(node, row.activation)
    weight_node = argument(node, row.weight)
    weight = module_constant(gm, weight_node)
    if not isinstance(activation, Node) or activation.op == "get_attr" or weight is None:
        return None
    if _occurrences(node, activation) != 1:  # addmm(x, x, W): x is also the bias
        return None
    if str(weight_node.target) in written or not weight.is_floating_point():
        return None
    if weight.dim() not in row.weight_ranks:
        return None
    if _activation_channels(activation) != weight.shape[row.input_axis]:
        return None
    return SmoothingConsumer(node, weight_node, row.weight, row.input_axis)


def find_smoothing_groups(gm: GraphModule) -> list[SmoothingGroup]:
    """Every smoothable activation of ``gm``'s top-level graph with its consumers, in graph
    order of the activations."""
    written = written_attributes(gm)
    by_activation: dict[Node, list[SmoothingConsumer]] = {}
    for node in gm.graph.nodes:
        consumer = _consumer(gm, node, written)
        if consumer is not None:
            activation = argument(node, _row_of(node).activation)  # type: ignore[union-attr]
            by_activation.setdefault(activation, []).append(consumer)
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    return [
        SmoothingGroup(activation, tuple(consumers), int(_activation_channels(activation)))
        for activation, consumers in sorted(by_activation.items(), key=lambda kv: order[kv[0]])
    ]
