"""``use_weight_int8pack_mm``: a weight-only int8 linear becomes ``aten._weight_int8pack_mm``.

convert leaves a weight-only int8 linear as a float linear on a dequantized constant. Under
``freezing`` Inductor keeps that dequantize in the graph and recomputes the float weight on
every call; its own weight-only pattern (``mm(x, w_int8.to(bf16)) * scales``) exists for
bfloat16 activations only. The kernel reads the int8 weight directly, for float32, bfloat16
and float16 activations, and Inductor lowers it (aten or its C++ GEMM template, the scale as
an epilogue), so this pass emits it::

    dq_w = dequantize_per_channel(w, s, zp, 0, -128, 127, int8)     # zp all 0
    y = linear(x, dq_w, bias)                                       # x float, (..., K)
becomes
    y = reshape(_weight_int8pack_mm(reshape(x, [-1, K]), w, s'), [..., N]) + bias

``s'`` is ``s`` in ``x``'s dtype (the kernel's requirement), stored as a new buffer. The product
``x @ w.T * s`` equals ``x @ (w * s).T`` up to float rounding.

Not rewritten: a dequantized activation (that is the oneDNN qlinear pattern), non-zero
zero points, dynamic shapes, and bfloat16 activations whose ``K`` is not a multiple of 16: in
torch 2.13 the bfloat16 kernel crashes the process for K = 8, 24, 33 or 40 (measured;
float32 and float16 ran every shape tried).
"""

from __future__ import annotations

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

__all__ = ["use_weight_int8pack_mm"]

_aten = torch.ops.aten
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _applies(x: Any, dq_w: Any, op: Node, **_: Any) -> bool:
    value = x.meta.get("val") if isinstance(x, Node) else None
    if qdq_ops.is_dequantize(x) or not isinstance(value, torch.Tensor):
        return False
    found = dequantized_weight(dq_w, axis=0)
    if found is None or value.dtype not in _KERNEL_DTYPES or static_shape(op) is None:
        return False
    columns = found[0].shape[1]
    return value.dtype != torch.bfloat16 or columns % 16 == 0


def _weight_int8pack_mm(emit: Emitter, x: Node, dq_w: Node, bias: Any, op: Node, **_: Any) -> Node:
    weight, scales = dequantized_weight(dq_w, axis=0)
    w = dq_w.args[0]
    dtype = x.meta["val"].dtype
    scales = new_constant(
        op.graph.owning_module, "_int8_weight_scale_", scales.to(dtype), emit.before
    )
    rows = emit(_aten.reshape.default, x, [-1, weight.shape[1]])
    y = emit(_aten._weight_int8pack_mm.default, rows, w, scales)
    y = emit(_aten.reshape.default, y, static_shape(op))
    return y if bias is None else emit(_aten.add.Tensor, y, bias)


_WEIGHT_ONLY_LINEAR = Rule(
    "weight-only int8 linear",
    op(LINEAR_OPS, Var("x"), Var("dq_w"), Var("bias"), name="op"),
    _weight_int8pack_mm,
    _applies,
)


def use_weight_int8pack_mm(gm: GraphModule) -> bool:
    """Run every weight-only int8 linear on ``_weight_int8pack_mm``; returns whether the graph
    changed."""
    return rewrite(gm.graph, (_WEIGHT_ONLY_LINEAR,))
