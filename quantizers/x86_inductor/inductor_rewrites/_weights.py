"""The int8 weight a rewrite reads: ``dequantize_per_channel(w_int8, scales, zero_points,
axis, ...)`` of module constants, symmetric (zero points all 0), and new constants made from
it (a transposed copy, scales in the activations' dtype)."""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.graph.aten_args import module_constant
from pt2e_quant.graph.constants import add_buffer_constant
from pt2e_quant.ops import qdq_ops

__all__ = ["dequantized_weight", "int8_weight", "new_constant", "static_shape"]


def dequantized_weight(dq_w: Any, axis: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(int8 2-D weight, 1-D float scales) if ``dq_w`` is ``dequantize_per_channel(w, scale,
    zp, axis, qmin, qmax, int8)`` of module constants with zero points all 0 (no kernel takes
    others); None otherwise.

    Matched as a bound value, not as a pattern op: a dequantize may feed several ops (a
    shared activation, a tied weight), and the rewrite driver erases the ops it matched. The
    rewrites leave it for dead-code removal instead.
    """
    if not isinstance(dq_w, Node) or dq_w.target is not qdq_ops.DEQUANTIZE_PER_CHANNEL:
        return None
    if len(dq_w.args) != 7 or dq_w.args[3] != axis or dq_w.args[6] != torch.int8:
        return None
    return int8_weight(*dq_w.args[:3])


def int8_weight(w: Any, scale: Any, zp: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(int8 2-D weight, 1-D float scales) if ``w``/``scale``/``zp`` are module constants of a
    symmetric int8 weight; None otherwise (zero points other than 0 have no kernel)."""
    gm = w.graph.owning_module if isinstance(w, Node) else None
    weight, scales, zeros = (module_constant(gm, n) for n in (w, scale, zp))
    if weight is None or scales is None or weight.dtype != torch.int8 or weight.dim() != 2:
        return None
    if scales.dim() != 1 or not scales.is_floating_point():
        return None
    if zp is not None and (zeros is None or bool(zeros.any())):
        return None
    return weight, scales


def new_constant(gm: GraphModule, prefix: str, value: torch.Tensor, before: Node) -> Node:
    """A get_attr of a new buffer ``<prefix><n>`` holding ``value`` (made contiguous: the
    kernels take dense weights), inserted before ``before``."""
    return add_buffer_constant(gm, prefix, value.contiguous(), before)


def static_shape(node: Any) -> list[int] | None:
    """The shape of ``node``'s value when every size is a plain int (no dynamic dims)."""
    value = node.meta.get("val") if isinstance(node, Node) else None
    if not isinstance(value, torch.Tensor):
        return None
    shape = list(value.shape)
    return shape if all(isinstance(size, int) for size in shape) else None
