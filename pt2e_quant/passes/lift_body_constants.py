"""Move tensors that control-flow bodies read through get_attr into the op's operands.

After convert a body may read per-channel scales (``_scale_0``) or a folded weight through
get_attr. Bodies holding real tensors cannot be traced under autograd, re-exported or saved
with ``torch.export.save``, so each such tensor becomes a buffer of the enclosing graph,
passed as one more operand; every body of the op gets a matching trailing placeholder.
Before::

    true_graph_0:  s = get_attr[_scale_0];  q = quantize_per_channel(w, s, ...)
    outer:         cond(pred, true_graph_0, false_graph_0, (x, w))

After::

    true_graph_0:  placeholder s_lifted (last);  q = quantize_per_channel(w, s_lifted, ...)
    outer:         s = get_attr[true_graph_0__scale_0];  cond(pred, ..., (x, w, s))
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.graph.control_flow import control_flow_op_for
from pt2e_quant.graph.subgraphs import iter_graph_modules

__all__ = ["lift_body_constants"]


def _tensor_constants(body: GraphModule) -> list[Node]:
    found = []
    for node in body.graph.nodes:
        if node.op != "get_attr":
            continue
        value = body
        for part in str(node.target).split("."):
            value = getattr(value, part)
        if isinstance(value, torch.Tensor):
            found.append(node)
    return found


def _get(root: torch.nn.Module, target: str) -> torch.Tensor:
    value = root
    for part in target.split("."):
        value = getattr(value, part)
    return value  # type: ignore[return-value]


def _gather_placeholders_first(body: GraphModule) -> Node | None:
    """Move the placeholders (in their order) before every other node; return the last one.

    prepare inserts observers right after the placeholder they observe, so placeholders can be
    interleaved with other nodes; a new trailing placeholder must precede all of its uses.
    """
    placeholders = [n for n in body.graph.nodes if n.op == "placeholder"]
    cursor: Node | None = None
    for placeholder in placeholders:
        if cursor is None:
            first = next(iter(body.graph.nodes))
            if first is not placeholder:
                first.prepend(placeholder)
        else:
            cursor.append(placeholder)
        cursor = placeholder
    return cursor


def _add_trailing_placeholder(body: GraphModule, name: str) -> Node:
    last = _gather_placeholders_first(body)
    if last is None:
        with body.graph.inserting_before(next(iter(body.graph.nodes))):
            return body.graph.placeholder(name)
    with body.graph.inserting_after(last):
        return body.graph.placeholder(name)


def _fresh_name(root: torch.nn.Module, base: str) -> str:
    base = base.replace(".", "_")
    name, index = base, 0
    while hasattr(root, name):
        index += 1
        name = f"{base}_{index}"
    return name


def _lift_for_node(parent: GraphModule, node: Node) -> bool:
    row = control_flow_op_for(node.target)
    if row is None:
        return False
    body_refs = [node.args[i] for i in row.body_arg_indices]
    bodies = [parent.get_submodule(str(ref.target)) for ref in body_refs]
    found = [(index, c) for index, body in enumerate(bodies) for c in _tensor_constants(body)]
    if not found:
        return False
    new_operands = []
    for index, constant in found:
        tensor = _get(bodies[index], str(constant.target))
        name = _fresh_name(parent, f"{body_refs[index].target}_{constant.target}")
        parent.register_buffer(name, tensor)
        with parent.graph.inserting_before(node):
            new_operands.append(parent.graph.get_attr(name))
    # every body gets one trailing placeholder per lifted tensor, in the same order
    for index, body in enumerate(bodies):
        for position, (owner, constant) in enumerate(found):
            placeholder = _add_trailing_placeholder(body, f"lifted_constant_{position}")
            if owner == index:
                constant.replace_all_uses_with(placeholder)
                body.graph.erase_node(constant)
        body.recompile()
    operands = node.args[row.operands_arg_index]
    args = list(node.args)
    args[row.operands_arg_index] = type(operands)([*operands, *new_operands])
    node.args = tuple(args)
    return True


def lift_body_constants(gm: GraphModule) -> bool:
    """Lift body constants of every control-flow op, innermost bodies first."""
    changed = False
    for graph_module in reversed(list(iter_graph_modules(gm))):
        for node in list(graph_module.graph.nodes):
            if _lift_for_node(graph_module, node):
                graph_module.recompile()
                changed = True
    return changed
