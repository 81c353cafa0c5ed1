"""``use_int_mm``: a linear on symmetric per-token int8 activations becomes ``aten._int_mm``.

convert leaves such a linear as float math on dequantized values, and Inductor has no lowering
of the per-token q/dq ops. Its freezing pattern for torchao's dynamic int8 linear,
``_int_mm(x_int8, w_int8) -> to(float) * x_scale * w_scale``, becomes oneDNN's
``qlinear_pointwise`` on a prepacked weight, so this pass emits exactly that::

    s, zp = choose_qparams_per_token(x, int8)            # symmetric: zp is 0
    q = quantize_per_token(x, s, zp, -128, 127, int8)
    y = linear(dequantize_per_token(q, s, zp, ...), dequantize_per_channel(w, ws, 0, 0, ...), b)
becomes
    acc = _int_mm(reshape(q, [-1, K]), w_t)              # w_t = w.T, an int8 (K, N) buffer
    y = reshape(to(acc, dtype) * reshape(s, [-1, 1]) * ws', [..., N]) + b

with ``ws'`` the weight scales in the output dtype. The int32 products are exact, so ``y``
equals the dequantized linear up to float rounding. The choose / quantize ops stay; the next
pass spells them in aten ops Inductor fuses.

Not rewritten: asymmetric tokens (``choose_qparams_per_token_asymmetric``: the pattern has no
zero point), non-zero weight zero points and dynamic shapes.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.graph.patterns import Emitter, Rule, Var, op, rewrite
from pt2e_quant.ops import qdq_ops
from pt2e_quant.ops.families import LINEAR_OPS
from quantizers.x86_inductor.inductor_rewrites._weights import (
    dequantized_weight,
    new_constant,
    static_shape,
)

__all__ = ["use_int_mm"]

_aten = torch.ops.aten
_prims = torch.ops.prims


def _symmetric_token_scale(scale: Any) -> bool:
    """``scale`` is ``getitem(choose_qparams_per_token(x, int8), 0)``."""
    return (
        isinstance(scale, Node)
        and scale.target is operator.getitem
        and scale.args[1] == 0
        and isinstance(scale.args[0], Node)
        and scale.args[0].target is qdq_ops.CHOOSE_QPARAMS_PER_TOKEN
    )


def _applies(dq_x: Any, dq_w: Any, op: Node, **_: Any) -> bool:
    """``dq_x`` is ``dequantize_per_token(quantize_per_token(x, s, zp, -128, 127, int8), s,
    ...)`` with ``s`` from the symmetric chooser; ``dq_w`` a symmetric int8 weight."""
    if not (isinstance(dq_x, Node) and dq_x.target is qdq_ops.DEQUANTIZE_PER_TOKEN):
        return False
    q, x_scale = dq_x.args[0], dq_x.args[1]
    return (
        isinstance(q, Node)
        and q.target is qdq_ops.QUANTIZE_PER_TOKEN
        and q.args[1] is x_scale
        and tuple(dq_x.args[3:6]) == (-128, 127, torch.int8)
        and _symmetric_token_scale(x_scale)
        and dequantized_weight(dq_w, axis=0) is not None
        and static_shape(op) is not None
    )


def _int_mm(emit: Emitter, dq_x: Node, dq_w: Node, bias: Any, op: Node, **_: Any) -> Node:
    q, x_scale, out_dtype = dq_x.args[0], dq_x.args[1], dq_x.args[6]
    weight, scales = dequantized_weight(dq_w, axis=0)
    gm = op.graph.owning_module
    transposed = new_constant(gm, "_int8_weight_t_", weight.t(), emit.before)
    weight_scales = new_constant(gm, "_int8_weight_scale_", scales.to(out_dtype), emit.before)
    rows = emit(_aten.reshape.default, q, [-1, weight.shape[1]])
    y = emit(
        _prims.convert_element_type.default,
        emit(_aten._int_mm.default, rows, transposed),
        out_dtype,
    )
    y = emit(_aten.mul.Tensor, y, emit(_aten.reshape.default, x_scale, [-1, 1]))
    y = emit(_aten.mul.Tensor, y, weight_scales)
    y = emit(_aten.reshape.default, y, static_shape(op))
    return y if bias is None else emit(_aten.add.Tensor, y, bias)


_PER_TOKEN_LINEAR = Rule(
    "per-token int8 linear",
    op(LINEAR_OPS, Var("dq_x"), Var("dq_w"), Var("bias"), name="op"),
    _int_mm,
    _applies,
)


def use_int_mm(gm: GraphModule) -> bool:
    """Run every linear on symmetric per-token int8 activations and int8 weights on
    ``_int_mm``; returns whether the graph changed."""
    return rewrite(gm.graph, (_PER_TOKEN_LINEAR,))
