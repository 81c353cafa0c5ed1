"""Pre-compute quantize ops whose input is a constant, storing integer weights in the model.

With ``convert_pt2e(..., fold_quantize=True)`` a weight is stored already quantized and only
its dequantize stays in the graph, which is what backends expect::

    w = get_attr[conv.weight];  t = aten.t(w);  q = quantize_per_tensor(t, ...);  dq = dequantize(q, ...)
    ->  q = get_attr[_frozen_param0]  (an int8 tensor);  dq = dequantize(q, ...)

Only chains ending in a quantize op are folded (pure ops on get_attr constants, such as the
``t`` above); other constant computations in the model stay as they are. The folded node keeps
the quantize node's name and metadata (which :mod:`port_qdq_meta` took from the weight), and a
float parameter that no longer has any reader is removed from the module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node
from torch.fx.node import map_arg

from pt2e_quant import qdq_ops
from pt2e_quant.passes.driver import remove_dead_nodes

__all__ = ["fold_quantized_constants", "FROZEN_PARAM_PREFIX"]

FROZEN_PARAM_PREFIX = "_frozen_param"


class _ConstantEvaluator:
    """Evaluates nodes that depend only on get_attr tensors; None for anything else."""

    def __init__(self, gm: GraphModule) -> None:
        self.gm = gm
        self.values: dict[Node, Any] = {}
        self.not_constant: set[Node] = set()

    def value(self, node: Node) -> Any:
        if node in self.values:
            return self.values[node]
        if node in self.not_constant:
            return None
        result = self._compute(node)
        if result is None:
            self.not_constant.add(node)
        else:
            self.values[node] = result
        return result

    def _compute(self, node: Node) -> Any:
        if node.op == "get_attr":
            attr = _get_attr(self.gm, str(node.target))
            return attr if isinstance(attr, torch.Tensor) else None
        if node.op != "call_function" or node.is_impure():
            return None
        missing = False

        def resolve(arg: Node) -> Any:
            nonlocal missing
            value = self.value(arg)
            missing |= value is None
            return value

        args = map_arg(node.args, resolve)
        kwargs = map_arg(node.kwargs, resolve)
        if missing:
            return None
        with torch.no_grad():
            return node.target(*args, **kwargs)


def _get_attr(gm: GraphModule, target: str) -> Any:
    owner: Any = gm
    for part in target.split("."):
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    return owner


def _delete_attr(gm: GraphModule, target: str) -> None:
    parent_path, _, leaf = target.rpartition(".")
    parent = _get_attr(gm, parent_path) if parent_path else gm
    if parent is not None and hasattr(parent, leaf):
        delattr(parent, leaf)


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


def _delete_unread_constants(gm: GraphModule, candidates: set[str]) -> None:
    """Delete the tensors of folded constants that no get_attr node reads any more."""
    still_read = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    for target in candidates - still_read:
        _delete_attr(gm, target)


def fold_quantized_constants(gm: GraphModule) -> bool:
    """Fold every quantize op whose input is constant; True if any was folded."""
    evaluator = _ConstantEvaluator(gm)
    folded: list[tuple[Node, torch.Tensor]] = []
    for node in gm.graph.nodes:
        if qdq_ops.is_quantize(node):
            value = evaluator.value(node)
            if isinstance(value, torch.Tensor):
                folded.append((node, value))
    if not folded:
        return False
    sources = {str(n.target) for n in evaluator.values if n.op == "get_attr"}
    for node, value in folded:
        _replace_with_constant(gm, node, value)
    # drop the pure nodes that only fed the folded quantize ops, then their constants
    remove_dead_nodes(gm)
    _delete_unread_constants(gm, sources)
    return True
