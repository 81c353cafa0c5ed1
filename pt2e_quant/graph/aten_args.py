"""Reading and writing an aten call's arguments by schema name.

Export records an aten call's arguments positionally or as keywords depending on how the
model was written (``F.conv2d(x, w, bias=b)`` vs ``F.conv2d(x, w, b)``), and trailing defaults
may be missing altogether. Passes and quantizers ask for arguments by name so they work either
way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

__all__ = ["argument", "set_argument", "attribute", "attribute_owner", "module_constant"]


def argument(node: Node, name: str, default: Any = None) -> Any:
    """An aten call's argument by schema name, positional or keyword; ``default`` if absent."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return default
    for index, arg in enumerate(schema.arguments):
        if arg.name == name:
            if index < len(node.args):
                return node.args[index]
            return node.kwargs.get(name, default)
    return default


def set_argument(node: Node, name: str, value: Any) -> None:
    """Set an aten call's argument by schema name, keeping positional arguments positional."""
    names = [a.name for a in node.target._schema.arguments]  # type: ignore[union-attr]
    index = names.index(name)
    if index < len(node.args):
        args = list(node.args)
        args[index] = value
        node.args = tuple(args)
    elif index == len(node.args):
        node.args = (*node.args, value)
    else:
        node.kwargs = {**node.kwargs, name: value}


def attribute(gm: GraphModule, dotted: str) -> Any:
    """The object at a get_attr target such as ``"layer1.conv.weight"``; None if absent.

    No exceptions: this runs for every weight of a graph, most of which do exist.
    """
    owner: Any = gm
    for part in dotted.split("."):
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    return owner


def attribute_owner(gm: GraphModule, dotted: str) -> tuple[Any, str]:
    """The object holding a get_attr target's last part, and that part: ``(gm.layer1.conv,
    "weight")`` for ``"layer1.conv.weight"``. The owner is None if its path is absent.

    Passes that rebind or delete a module tensor edit it on its owner, by name.
    """
    owner_path, _, leaf = dotted.rpartition(".")
    return (attribute(gm, owner_path) if owner_path else gm), leaf


def module_constant(gm: GraphModule, node: Any) -> torch.Tensor | None:
    """The tensor behind a get_attr node; None for anything that is not a module constant."""
    if not isinstance(node, Node) or node.op != "get_attr":
        return None
    value = attribute(gm, str(node.target))
    return value if isinstance(value, torch.Tensor) else None
