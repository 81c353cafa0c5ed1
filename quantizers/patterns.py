"""Recognising quantizable patterns in the aten graph itself.

Every backend matches patterns such as ``conv -> relu`` or ``add -> relu`` by looking at the
targets and the data flow of the exported graph, never at ``source_fn_stack`` /
``nn_module_stack`` metadata (whose changes across torch versions made the peers silently
quantize nothing). This module holds the operator families and the small graph-walking
predicates the backends share.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.fx import Node

from pt2e_quant.contract.annotation import is_annotated
from pt2e_quant.graph.aten_args import argument  # re-exported: backends read arguments by name

__all__ = [
    "CONV_OPS",
    "CONV_TRANSPOSE_OPS",
    "LINEAR_OPS",
    "ADD_OPS",
    "MUL_OPS",
    "RELU_OPS",
    "HARDTANH_OPS",
    "CAT_OPS",
    "BATCH_NORM_OPS",
    "is_call",
    "argument",
    "sole_user",
    "next_op",
    "is_float_tensor",
    "any_annotated",
]

_aten = torch.ops.aten

CONV_OPS = frozenset(
    {
        _aten.conv1d.default,
        _aten.conv1d.padding,
        _aten.conv2d.default,
        _aten.conv2d.padding,
        _aten.conv3d.default,
        _aten.conv3d.padding,
    }
)
CONV_TRANSPOSE_OPS = frozenset(
    {_aten.conv_transpose1d.default, _aten.conv_transpose2d.input, _aten.conv_transpose3d.input}
)
LINEAR_OPS = frozenset({_aten.linear.default})
ADD_OPS = frozenset({_aten.add.Tensor, _aten.add_.Tensor})
MUL_OPS = frozenset({_aten.mul.Tensor, _aten.mul_.Tensor})
RELU_OPS = frozenset({_aten.relu.default, _aten.relu_.default})
HARDTANH_OPS = frozenset({_aten.hardtanh.default, _aten.hardtanh_.default})
CAT_OPS = frozenset({_aten.cat.default, _aten.concat.default})
BATCH_NORM_OPS = frozenset(
    {
        _aten.batch_norm.default,
        _aten._native_batch_norm_legit.default,
        _aten._native_batch_norm_legit_no_training.default,
    }
)


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
