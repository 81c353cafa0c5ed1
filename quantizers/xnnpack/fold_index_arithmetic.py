"""Pre-compute integer and boolean values that depend on no model input (index arithmetic).

XNNPACK delegates float ops only, so integer and boolean arithmetic always stays in the
ExecuTorch program, one portable kernel call each, on every run. Much of it depends on no
input at all once the shapes are static: transformers' attention masks start from token
positions, ``arange(seq) + offset``, unsqueezed and compared::

    arange(17) -> add(_, 0) -> unsqueeze(0) -> unsqueeze(1) -> unsqueeze(3) -> ge(_, 0)
        -> expand([2, -1, 17, 17]) -> scaled_dot_product_attention(..., attn_mask=_)

Those values are the same on every call, so the XNNPACK quantizer computes them once, before
annotation, and reads them from a buffer::

    _folded_index_0 = get_attr[_folded_index_0]       # bool (1, 1, 17, 1)
        -> expand([2, -1, 17, 17]) -> scaled_dot_product_attention(..., attn_mask=_)

ExecuTorch's quantizer reaches a similar count another way: it lifts the ``0`` of the integer
add into a float tensor, which turns the positions into float32 (a dtype change; see
``lift_scalar_operands``) that XNNPACK then runs, leaving a cast outside the delegate. Folding
keeps the integer dtypes and leaves neither the arithmetic nor a cast.

What is folded, and why only that:

* integer and boolean results only: they are exact, so pre-computing them changes no value,
  and they are never a weight a rule quantizes (a float ``w * 0.5`` stays for the rules and
  for convert's constant folding, as in ExecuTorch);
* computed by pure aten ops from constants (module tensors the graph never writes) and from
  factories (``arange``, ``full``, ``zeros``), not from uninitialised memory (``empty``);
* never a broadcast: an op whose result has more elements than its largest input (an
  ``expand``, ``q_idx[:, None] >= kv_idx[None, :]``) stays in the graph, so the program never
  stores a materialised mask where the runtime would compute it from two small vectors;
* the fold stops before a reader that is not an aten op (the graph output, a ``while_loop``
  or ``cond`` operand): those keep the value they computed;
* a factory read directly (``embedding_bag``'s ``arange`` offsets, GPT-2's positions) stays:
  it is one op either way, and storing its result would only add bytes to the program.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.fx.node import map_arg

from pt2e_quant.graph.aliasing import written_attributes
from pt2e_quant.graph.aten_args import attribute
from pt2e_quant.graph.constants import add_buffer_constant
from pt2e_quant.ops.families import UNINITIALIZED_OPS

__all__ = ["fold_index_arithmetic"]

_PREFIX = "_folded_index_"


def _is_index_value(value: object) -> bool:
    """An integer or boolean tensor (what XNNPACK can never take)."""
    return (
        isinstance(value, torch.Tensor)
        and not value.dtype.is_floating_point
        and not value.dtype.is_complex
    )


def _constant_attributes(gm: GraphModule) -> dict[Node, torch.Tensor]:
    """get_attr nodes reading a module tensor that no node of ``gm`` writes."""
    written = written_attributes(gm)
    constants = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr" and str(node.target) not in written:
            value = attribute(gm, str(node.target))
            if isinstance(value, torch.Tensor):
                constants[node] = value
    return constants


def _computed_value(node: Node, known: dict[Node, torch.Tensor]) -> torch.Tensor | None:
    """``node``'s value if it is a pure aten op on ``known`` values with an integer or boolean
    result no larger than its largest input; else None."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return None
    if node.target in UNINITIALIZED_OPS or not _is_index_value(node.meta.get("val")):
        return None
    inputs = node.all_input_nodes
    if not all(i in known for i in inputs) or node.is_impure():
        return None
    args, kwargs = map_arg((node.args, node.kwargs), lambda n: known[n])
    value = node.target(*args, **kwargs)
    if inputs and value.numel() > max(known[i].numel() for i in inputs):
        return None  # a broadcast: cheaper to compute than to store
    return value


def _read_by_non_aten(node: Node) -> bool:
    return any(
        user.op != "call_function" or not isinstance(user.target, torch._ops.OpOverload)
        for user in node.users
    )


def fold_index_arithmetic(gm: GraphModule) -> bool:
    """Replace each input-independent integer / boolean value (module docstring) that an
    input-dependent or broadcasting aten op reads by a buffer holding it; the ops that only
    computed it are removed. Returns whether the graph changed."""
    known: dict[Node, torch.Tensor] = dict(_constant_attributes(gm))
    folded: list[Node] = []
    for node in gm.graph.nodes:
        value = _computed_value(node, known)
        if value is not None:
            known[node] = value
            folded.append(node)
    foldable = {n for n in folded if not _read_by_non_aten(n)}
    frontier = [  # in graph order, so buffer names follow it
        n
        for n in folded
        if n in foldable
        and n.all_input_nodes  # not a lone factory
        and any(u not in foldable for u in n.users)
    ]
    if not frontier:
        return False
    for node in frontier:
        value = known[node].clone(memory_format=torch.contiguous_format)
        constant = add_buffer_constant(gm, _PREFIX, value, node)
        constant.meta.update(node.meta)
        node.replace_all_uses_with(constant)
    for node in reversed(folded):
        if not node.users:
            gm.graph.erase_node(node)
    gm.recompile()
    return True
