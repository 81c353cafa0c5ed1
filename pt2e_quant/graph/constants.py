"""Which values of a graph are constants: computed from module tensors alone by pure calls.

convert pre-computes a quantize op on such a value (``fold_quantize``), quantizers may treat
it as a weight (an embedding table read through ``weight.float()``), and prepare recognises a
stored integer weight of an earlier convert by it (``quantized_regions``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.graph.aliasing import written_attributes
from pt2e_quant.graph.aten_args import attribute

__all__ = ["add_buffer_constant", "foldable_constant_nodes", "free_attribute_name"]


def foldable_constant_nodes(gm: GraphModule) -> set[Node]:
    """Nodes computed from module tensors alone by pure calls, found in one forward scan.

    A quantize op on one of these is pre-computed at convert, so quantizers may treat such a
    value as a weight (an embedding table read through ``weight.float()``). Deciding this by a
    boolean scan first means the (costly) evaluation below only ever runs on weight chains,
    never on the activations of the whole graph.

    A module tensor that a node of the graph writes (a buffer updated in place, through any
    alias) is not a constant: folding a quantize of it would freeze its value at convert time.
    """
    constant: set[Node] = set()
    impure: dict[Any, bool] = {}
    written = written_attributes(gm)
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            target = str(node.target)
            if target not in written and isinstance(attribute(gm, target), torch.Tensor):
                constant.add(node)
        elif node.op == "call_function":
            inputs = node.all_input_nodes
            if not inputs or not all(i in constant for i in inputs):
                continue
            if node.target not in impure:
                impure[node.target] = node.is_impure()
            if not impure[node.target]:
                constant.add(node)
    return constant


def free_attribute_name(gm: torch.nn.Module, stem: str) -> str:
    """The first ``<stem>_<n>`` (n = 0, 1, ...) that ``gm`` has no attribute of: where a pass
    registers a tensor or submodule it adds (a folded weight, a smoothed norm weight, a
    rewritten batch norm) without shadowing anything already there."""
    index = 0
    while hasattr(gm, f"{stem}_{index}"):
        index += 1
    return f"{stem}_{index}"


def add_buffer_constant(gm: GraphModule, prefix: str, value: torch.Tensor, before: Node) -> Node:
    """Store ``value`` as a buffer of ``gm`` under the first free name ``<prefix><n>`` and
    return a get_attr of it inserted before ``before``: how a pass adds a constant it computed
    (a lifted scalar, a pre-computed index tensor, a transposed integer weight)."""
    index = 0
    while hasattr(gm, f"{prefix}{index}"):
        index += 1
    name = f"{prefix}{index}"
    gm.register_buffer(name, value)
    with gm.graph.inserting_before(before):
        return gm.graph.get_attr(name)
