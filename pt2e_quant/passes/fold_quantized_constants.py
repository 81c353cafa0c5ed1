"""Pre-compute quantize ops whose input is a constant, storing integer weights in the model.

With ``convert_pt2e(..., fold_quantize=True)`` a weight is stored already quantized and only
its dequantize stays in the graph, which is what backends expect::

    w = get_attr[conv.weight];  t = aten.t(w);  q = quantize_per_tensor(t, ...);  dq = dequantize(q, ...)
    ->  q = get_attr[_frozen_param0]  (an int8 tensor);  dq = dequantize(q, ...)

Only chains ending in a quantize op are folded (pure ops on get_attr constants, such as the
``t`` above); other constant computations in the model stay as they are. The folded node keeps
the quantize node's name and metadata (which :mod:`port_qdq_meta` took from the weight), and a
float parameter that no longer has any reader is removed from the module.

Folding stops at a dequantize, as torchao's does: a dequantize stays in the graph for the
backend to fuse with its consumer, so nothing after it counts as constant. A weight quantized
twice (the Arm quantizer's decomposed layer norm quantizes its weight, then the reshape of it)
keeps its second quantize::

    w -> q1 -> dq1 -> reshape -> q2 -> dq2
    ->  _frozen_param0 -> dq1 -> reshape -> q2 -> dq2   (not _frozen_param0 -> dq2)
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node
from torch.fx.node import map_arg

from pt2e_quant.graph.aten_args import attribute
from pt2e_quant.graph.constants import foldable_constant_nodes
from pt2e_quant.ops import qdq_ops
from pt2e_quant.ops.constant_quantize import BlockScratch, quantize_constant
from pt2e_quant.passes.driver import remove_dead_nodes

__all__ = ["fold_quantized_constants", "FROZEN_PARAM_PREFIX"]

FROZEN_PARAM_PREFIX = "_frozen_param"


class _ConstantEvaluator:
    """Evaluates nodes of a known-constant set, memoized (shared weight chains run once)."""

    def __init__(self, gm: GraphModule, constant: set[Node]) -> None:
        self.gm = gm
        self.constant = constant
        self.values: dict[Node, Any] = {}
        self.scratch = BlockScratch()  # one float block for every weight

    def value(self, node: Node) -> Any:
        if node not in self.values:
            self.values[node] = self._compute(node)
        return self.values[node]

    def _compute(self, node: Node) -> Any:
        if node.op == "get_attr":
            return attribute(self.gm, str(node.target))
        args = map_arg(node.args, self.value)
        kwargs = map_arg(node.kwargs, self.value)
        with torch.no_grad():
            lean = quantize_constant(node.target, args, kwargs, self.scratch)
            return lean if lean is not None else node.target(*args, **kwargs)


def _next_name(gm: GraphModule) -> str:
    index = getattr(gm, "_frozen_param_count", 0)
    while hasattr(gm, f"{FROZEN_PARAM_PREFIX}{index}"):
        index += 1
    gm._frozen_param_count = index + 1  # type: ignore[assignment]
    return f"{FROZEN_PARAM_PREFIX}{index}"


def _replace_with_constant(gm: GraphModule, node: Node, value: torch.Tensor) -> None:
    name = _next_name(gm)
    gm.register_buffer(name, value)
    with gm.graph.inserting_before(node):
        constant = gm.graph.get_attr(name)
    constant.meta.update(node.meta)
    node.replace_all_uses_with(constant)
    old_name = node.name
    gm.graph.erase_node(node)
    constant.name = old_name


def _constants_before_dequantize(gm: GraphModule) -> set[Node]:
    """The foldable constants not computed from the output of a dequantize (ours, torchao's
    ``dequantize_affine``) or of the fp16 round trip's cast."""
    constant = foldable_constant_nodes(gm)
    ends = {qdq_ops.CONVERT_ELEMENT_TYPE, *qdq_ops.affine_dequantize_ops()}
    kept: set[Node] = set()
    for node in gm.graph.nodes:
        if node not in constant or qdq_ops.is_dequantize(node) or node.target in ends:
            continue
        if all(i in kept for i in node.all_input_nodes):
            kept.add(node)
    return kept


def fold_quantized_constants(gm: GraphModule) -> bool:
    """Fold every quantize op whose input is constant (ours, and torchao's ``quantize_affine``
    a foreign observer emitted) and computed before any dequantize; True if any was folded."""
    constant = _constants_before_dequantize(gm)
    evaluator = _ConstantEvaluator(gm, constant)
    folded: list[tuple[Node, torch.Tensor]] = []
    affine = qdq_ops.affine_quantize_ops()
    for node in gm.graph.nodes:
        if node in constant and (qdq_ops.is_quantize(node) or node.target in affine):
            value = evaluator.value(node)
            if isinstance(value, torch.Tensor):
                folded.append((node, value))
    if not folded:
        return False
    for node, value in folded:
        _replace_with_constant(gm, node, value)
    # drop the pure nodes that only fed the folded quantize ops (and with them their constants)
    remove_dead_nodes(gm)
    return True
