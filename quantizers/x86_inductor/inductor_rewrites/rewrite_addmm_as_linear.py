"""``rewrite_addmm_as_linear``: a quantized ``addmm(bias, x, w)`` becomes the linear Inductor fuses.

GPT-2's ``Conv1D`` exports as ``addmm(bias, x, w)`` with ``w`` stored (in, out), quantized per
column (axis 1, :mod:`quantizers.x86_inductor.rules`). Inductor's qlinear pattern only takes
``addmm(bias, dq(x), permute(dequantize_per_channel(w, axis=0)))``, the form a linear
decomposes to; compiled as is, the addmm runs in float after dequantizing its weight on every
call (checked by compiling). Storing the weight transposed makes it a linear, exactly::

    dq_w = dequantize_per_channel(w_kn, s, zp, 1, -128, 127, int8)
    y = addmm(bias, x, dq_w)
becomes
    dq_w = dequantize_per_channel(w_nk, s, zp, 0, -128, 127, int8)   # w_nk = w_kn.T, a buffer
    y = linear(x, dq_w, bias)

The same scales serve both (one per output channel). Only ``beta = alpha = 1`` with a 1-D bias
matches, which is what linear computes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.graph.aten_args import module_constant
from pt2e_quant.graph.node_meta import port_meta
from pt2e_quant.graph.patterns import Emitter, Rule, Var, op, rewrite
from pt2e_quant.ops import qdq_ops
from pt2e_quant.ops.families import ADDMM_OPS
from quantizers.x86_inductor.inductor_rewrites._weights import (
    dequantized_weight,
    new_constant,
    static_shape,
)

__all__ = ["rewrite_addmm_as_linear"]

_aten = torch.ops.aten


def _applies(bias: Any, dq_w: Any, **_: Any) -> bool:
    if dequantized_weight(dq_w, axis=1) is None:
        return False
    shape = static_shape(bias)
    if shape is None and isinstance(bias, Node):
        value = module_constant(bias.graph.owning_module, bias)
        shape = None if value is None else list(value.shape)
    return shape is not None and len(shape) == 1


def _as_linear(emit: Emitter, bias: Node, x: Node, dq_w: Node, op: Node, **_: Any) -> Node:
    gm = op.graph.owning_module
    weight, _scales = dequantized_weight(dq_w, axis=1)
    transposed = new_constant(gm, "_int8_weight_t_", weight.t(), emit.before)
    with op.graph.inserting_before(emit.before):
        dequantized = op.graph.call_function(
            qdq_ops.DEQUANTIZE_PER_CHANNEL,
            (transposed, dq_w.args[1], dq_w.args[2], 0, *dq_w.args[4:]),
            dict(dq_w.kwargs),
        )
    port_meta(dq_w, dequantized)
    linear = emit(_aten.linear.default, x, dequantized, bias)
    if "val" in op.meta:
        linear.meta["val"] = op.meta["val"]
    return linear


_ADDMM = Rule(
    "addmm as linear",
    op(ADDMM_OPS, Var("bias"), Var("x"), Var("dq_w"), name="op"),
    _as_linear,
    _applies,
)


def rewrite_addmm_as_linear(gm: GraphModule) -> bool:
    """Turn every quantized addmm with a constant int8 weight into a linear; returns whether
    the graph changed."""
    return rewrite(gm.graph, (_ADDMM,))
