"""Small predicates on nodes that rules and quantizers match with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.fx import Node

from pt2e_quant.contract.annotation import is_annotated

__all__ = ["any_annotated", "is_call", "is_float_tensor", "next_op", "sole_user"]


def is_call(node: Any, ops: Iterable[Any]) -> bool:
    """``node`` is a call_function Node whose target is in ``ops``."""
    return isinstance(node, Node) and node.op == "call_function" and node.target in ops


def sole_user(node: Node) -> Node | None:
    """The only user of ``node``, or None when it has zero or several."""
    return next(iter(node.users)) if len(node.users) == 1 else None


def next_op(node: Node, ops: Iterable[Any]) -> Node | None:
    """The sole user of ``node`` if it is a call to one of ``ops`` (e.g. the relu after a conv)."""
    user = sole_user(node)
    return user if is_call(user, ops) else None


def is_float_tensor(node: Any) -> bool:
    """``node`` produces a floating-point tensor (per its export metadata)."""
    value = node.meta.get("val") if isinstance(node, Node) else None
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def any_annotated(nodes: Iterable[Node | None]) -> bool:
    """Some node of a candidate pattern was already claimed by an earlier rule or quantizer."""
    return any(node is not None and is_annotated(node) for node in nodes)
