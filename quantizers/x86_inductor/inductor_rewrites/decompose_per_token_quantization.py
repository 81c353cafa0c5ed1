"""``decompose_per_token_quantization``: the symmetric per-token q/dq ops, spelled in aten ops.

Inductor has no lowering of ``choose_qparams_per_token``, ``quantize_per_token`` or
``dequantize_per_token``: compiled, each runs as an opaque call of its Python kernel. Spelled
in aten ops, Inductor fuses the amax, division, rounding and clamping into one loop. The
arithmetic is the kernels' own, op for op (``quantized_decomposed`` in
``torch/ao/quantization/fx/_decomposed.py``), so the values are bit-identical in eager::

    s, zp = choose_qparams_per_token(x, int8)
    ->  s = div(clamp_min(amax(abs(x), [-1], keepdim), 1e-5), 127)   # float32 if x is float16
        zp = zeros_like(s)
    q = quantize_per_token(x, s, zp, qmin, qmax, int8)
    ->  q = to(clamp(round(add(mul(x, reciprocal(s)), zp)), qmin, qmax), int8)
    dequantize_per_token(q, s, zp, qmin, qmax, int8, dtype)
    ->  to(mul(sub(q, zp), s), dtype)

The asymmetric chooser (XNNPACK's scheme) is left alone (no Inductor kernel takes it); its
quantize / dequantize are spelled out too, which is as exact.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.graph.patterns import Emitter, Rule, Var, op, rewrite
from pt2e_quant.ops import qdq_ops

__all__ = ["decompose_per_token_quantization"]

_aten = torch.ops.aten
_prims = torch.ops.prims


def _token_scale(emit: Emitter, x: Node) -> Node:
    amax = emit(_aten.amax.default, emit(_aten.abs.default, x), [-1], True)
    value = x.meta.get("val")
    if isinstance(value, torch.Tensor) and value.dtype == torch.float16:
        amax = emit(_prims.convert_element_type.default, amax, torch.float32)
    return emit(_aten.div.Tensor, emit(_aten.clamp_min.default, amax, 1e-5), 127)


def _chosen_symmetrically(chosen: Any, **_: Any) -> bool:
    """``chosen`` is ``choose_qparams_per_token(x, int8)`` (left in the graph until both of
    its getitems are replaced; then dead-code removal takes it)."""
    return (
        isinstance(chosen, Node)
        and chosen.target is qdq_ops.CHOOSE_QPARAMS_PER_TOKEN
        and chosen.args[1] == torch.int8
    )


def _scale(emit: Emitter, chosen: Node, **_: Any) -> Node:
    return _token_scale(emit, chosen.args[0])


def _zero_point(emit: Emitter, chosen: Node, **_: Any) -> Node:
    return emit(_aten.zeros_like.default, _token_scale(emit, chosen.args[0]))


def _quantize(
    emit: Emitter, x: Node, s: Node, zp: Node, qmin: int, qmax: int, dtype: Any, **_: Any
) -> Node:
    scaled = emit(_aten.mul.Tensor, x, emit(_aten.reciprocal.default, s))
    rounded = emit(_aten.round.default, emit(_aten.add.Tensor, scaled, zp))
    clamped = emit(_aten.clamp.default, rounded, qmin, qmax)
    return emit(_prims.convert_element_type.default, clamped, dtype)


def _dequantize(emit: Emitter, q: Node, s: Node, zp: Node, out_dtype: Any, **_: Any) -> Node:
    shifted = emit(_aten.sub.Tensor, q, zp)
    return emit(_prims.convert_element_type.default, emit(_aten.mul.Tensor, shifted, s), out_dtype)


_ROWS = (
    Rule(
        "per-token scale",
        op(operator.getitem, Var("chosen"), 0, name="op"),
        _scale,
        _chosen_symmetrically,
    ),
    Rule(
        "per-token zero point",
        op(operator.getitem, Var("chosen"), 1, name="op"),
        _zero_point,
        _chosen_symmetrically,
    ),
    Rule(
        "quantize per token",
        op(
            qdq_ops.QUANTIZE_PER_TOKEN,
            Var("x"),
            Var("s"),
            Var("zp"),
            Var("qmin"),
            Var("qmax"),
            Var("dtype"),
            name="op",
        ),
        _quantize,
    ),
    Rule(
        "dequantize per token",
        op(
            qdq_ops.DEQUANTIZE_PER_TOKEN,
            Var("q"),
            Var("s"),
            Var("zp"),
            Var("qmin"),
            Var("qmax"),
            Var("dtype"),
            Var("out_dtype"),
            name="op",
        ),
        _dequantize,
    ),
)


def decompose_per_token_quantization(gm: GraphModule) -> bool:
    """Spell every symmetric per-token q/dq op in aten ops; returns whether the graph changed.

    Run after :func:`~.use_int_mm`, which reads the quantize node it leaves in place.
    """
    return rewrite(gm.graph, _ROWS)
