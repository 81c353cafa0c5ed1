"""Inline ``wrap_with_set_grad_enabled`` regions into the enclosing graph.

A model whose ``forward`` is decorated ``@torch.no_grad()`` exports as one
``wrap_with_set_grad_enabled(False, submod, x, w, b)`` call whose body receives the weights as
placeholders. Quantizing inside the body would observe weights as if they were activations and
could never fold them into integer constants, so the region is inlined first. Grad mode does not
change forward numerics, which is all a quantized model computes. Before::

    submod_1 = get_attr[submod_1]
    wrap = higher_order.wrap_with_set_grad_enabled(False, submod_1, x, lin_weight, lin_bias)
    out = getitem(wrap, 0)

After::

    linear = aten.linear.default(x, lin_weight, lin_bias)      # out is now linear

Autocast regions are left alone: they change dtypes, hence numerics.
"""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node

__all__ = ["inline_grad_mode_regions"]

_SET_GRAD = getattr(torch.ops.higher_order, "wrap_with_set_grad_enabled", None)


def _is_grad_mode_region(node: Node) -> bool:
    return _SET_GRAD is not None and node.op == "call_function" and node.target is _SET_GRAD


def _users_are_getitems(node: Node) -> bool:
    return all(u.op == "call_function" and u.target is operator.getitem for u in node.users)


def _adopt_attr(parent: GraphModule, body: GraphModule, target: str) -> str:
    """Move a body attribute (a constant or a nested body) onto the parent under a fresh name."""
    value = body.get_submodule(target) if _is_module(body, target) else _get(body, target)
    base = target.replace(".", "_")
    name, index = base, 0
    while hasattr(parent, name):
        index += 1
        name = f"{base}_{index}"
    if isinstance(value, torch.nn.Module):
        parent.add_module(name, value)
    elif isinstance(value, torch.nn.Parameter):
        parent.register_parameter(name, value)
    elif isinstance(value, torch.Tensor):
        parent.register_buffer(name, value)
    else:
        setattr(parent, name, value)
    return name


def _is_module(root: torch.nn.Module, target: str) -> bool:
    try:
        root.get_submodule(target)
    except AttributeError:
        return False
    return True


def _get(root: object, target: str) -> object:
    for part in target.split("."):
        root = getattr(root, part)
    return root


def _inline(gm: GraphModule, node: Node) -> None:
    body_ref = node.args[1]
    body = gm.get_submodule(str(body_ref.target))
    operands = list(node.args[2:])
    graph = gm.graph
    val_map: dict[Node, object] = {}
    placeholders = [n for n in body.graph.nodes if n.op == "placeholder"]
    for placeholder, operand in zip(placeholders, operands, strict=True):
        val_map[placeholder] = operand
    with graph.inserting_before(node):
        for body_node in body.graph.nodes:
            if body_node.op in ("placeholder", "output"):
                continue
            copied = graph.node_copy(body_node, lambda n: val_map[n])
            if body_node.op in ("get_attr", "call_module"):
                copied.target = _adopt_attr(gm, body, str(body_node.target))
            val_map[body_node] = copied
    output = next(n for n in body.graph.nodes if n.op == "output")
    results = output.args[0]
    results = results if isinstance(results, (list, tuple)) else (results,)
    for user in list(node.users):
        mapped = results[user.args[1]]
        user.replace_all_uses_with(val_map.get(mapped, mapped))
        graph.erase_node(user)
    graph.erase_node(node)
    if not body_ref.users:
        graph.erase_node(body_ref)
        delattr(gm, str(body_ref.target))


def inline_grad_mode_regions(gm: GraphModule) -> bool:
    """Inline every grad-mode region of ``gm`` (outer graph only); True if any was inlined."""
    changed = False
    for node in list(gm.graph.nodes):
        if _is_grad_mode_region(node) and _users_are_getitems(node):
            _inline(gm, node)
            changed = True
    return changed
