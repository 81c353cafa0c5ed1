"""torchao's reference representation: its patterns and replacements, op for op.

Transcribed from torchao 0.18's ``reference_representation_rewrite.py`` as torchao exports
them: each pattern is the graph of one of its ``_qdq_*`` functions after torchao replaces
literals by placeholders, each action emits the nodes of the matching ``_reference_*``
graph in their exported order, with the same targets (``out_dtype`` through
``torch.ops.higher_order.out_dtype``, ``aten.clamp`` as the overload packet where torchao's
tensor-valued quant_min/max leave it one) and the same arguments. The result is torchao's graph
node for node, so it computes torchao's numbers bit for bit. Those are not always the q/dq
model's: ``out_dtype`` casts to int32 by truncation, so the bias and the requantize of linear,
convolution and add + relu round toward zero, and quantize divides by the scale where the
kernel multiplies by its reciprocal.

torchao matches only what its pattern graphs spell: ``aten.convolution`` and
``max_pool2d_with_indices`` (a decomposed export; ``conv2d`` and ``max_pool2d`` of the default
export IR are not matched), int8 everywhere, per-tensor weights, add and add + relu with one
quant range for both inputs and the output.

One deliberate difference: where torchao's replacement would not run, or would not compute
the op, the match is left for the exact forms (the rows' ``where``). torchao also matches a
linear or convolution without bias and emits ``div(None, scale)``; and its convolution
replacement is written for 2-D convolutions: a conv1d comes out with the wrong shape, a
conv3d fails, and CPU has no int32 kernel for dilated or transposed convolutions.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.fx import Node

from pt2e_quant.graph.node_meta import copy_debug_handle
from pt2e_quant.graph.patterns import Emitter, Op, Var, op
from pt2e_quant.ops import qdq_ops

aten = torch.ops.aten

OUT_DTYPE = torch.ops.higher_order.out_dtype
#: ``aten.clamp`` as torchao leaves it: its patterns clamp with tensor quant_min / quant_max
#: (``clamp.Tensor``), which torchao's overload stripping turns into the packet
CLAMP_PACKET = aten.clamp
CLAMP = aten.clamp.default
TO = aten.to.dtype

# the q/dq overload packets: torchao strips the overloads off q/dq before matching, so its
# patterns match .default (scalar qparams) and .tensor / .tensor2 (tensor qparams) alike
Q = qdq_ops.QUANTIZE_PER_TENSOR_ANY
DQ = qdq_ops.DEQUANTIZE_PER_TENSOR_ANY
Q_PER_CHANNEL = qdq_ops.QUANTIZE_PER_CHANNEL_ANY
DQ_PER_CHANNEL = qdq_ops.DEQUANTIZE_PER_CHANNEL_ANY

I8 = torch.int8
I16 = torch.int16
I32 = torch.int32
F32 = torch.float32


def _vars(names: str) -> list[Var]:
    return [Var(name) for name in names.split()]


def _dq(prefix: str) -> Op:
    """``dequantize_per_tensor(<prefix>_i8, scale, zero_point, quant_min, quant_max, int8)``"""
    i8, scale, zero_point, quant_min, quant_max = _vars(
        f"{prefix}_i8 {prefix}_scale {prefix}_zero_point {prefix}_quant_min {prefix}_quant_max"
    )
    return op(DQ, i8, scale, zero_point, quant_min, quant_max, I8)


def _q(value: Op, prefix: str = "out") -> Op:
    scale, zero_point, quant_min, quant_max = _vars(
        f"{prefix}_scale {prefix}_zero_point {prefix}_quant_min {prefix}_quant_max"
    )
    return op(Q, value, scale, zero_point, quant_min, quant_max, I8)


def has_bias(bias: object, **_: object) -> bool:
    """torchao's linear replacements divide the bias: without one they fail."""
    return bias is not None


def convolution_runs(
    bias: object, stride: list, dilation: list, transposed: bool, **_: object
) -> bool:
    """torchao's convolution replacement, as written, runs and computes the op only for a
    2-D, non-transposed, non-dilated convolution with a bias: it unsqueezes the bias for
    (N, C, H, W) (a conv1d comes out with the wrong shape, a conv3d fails), and CPU has no
    int32 kernel for a dilated or transposed convolution."""
    return (
        bias is not None and len(stride) == 2 and not transposed and all(d == 1 for d in dilation)
    )


def has_zero_points(zero_points: object, **_: object) -> bool:
    """torchao's per-channel replacements subtract the zero points: None fails."""
    return zero_points is not None


# ------------------------------------------------------------------------------------------
# dynamic linear: choose_qparams -> q -> dq(x), dq(w) -> linear, float output
# ------------------------------------------------------------------------------------------

_x_fp32, _x_quant_min, _x_quant_max, _x_eps = _vars("x_fp32 x_quant_min x_quant_max x_eps")
_choose = op(qdq_ops.CHOOSE_QPARAMS, _x_fp32, _x_quant_min, _x_quant_max, _x_eps, I8)
_x_scale = op(operator.getitem, _choose, 0)
_x_zero_point = op(operator.getitem, _choose, 1)
_x_quantized = op(Q, _x_fp32, _x_scale, _x_zero_point, _x_quant_min, _x_quant_max, I8)

DYNAMIC_LINEAR = op(
    aten.linear.default,
    op(DQ, _x_quantized, _x_scale, _x_zero_point, _x_quant_min, _x_quant_max, I8),
    _dq("w"),
    Var("bias"),
    name="op",
)


def dynamic_linear(
    e: Emitter,
    x_fp32: Node,
    x_quant_min: int,
    x_quant_max: int,
    x_eps: float,
    w_i8: Node,
    w_scale: object,
    w_zero_point: object,
    w_quant_min: int,
    w_quant_max: int,
    bias: Node,
    op: Node,
) -> Node:
    """``_reference_dynamic_quantized_linear``: quantize x at run time, integer linear, float out."""
    qparams = e(qdq_ops.CHOOSE_QPARAMS, x_fp32, x_quant_min, x_quant_max, x_eps, I8)
    x_scale = e(operator.getitem, qparams, 0)
    x_zero_point = e(operator.getitem, qparams, 1)
    x = e(TO, e(aten.round.default, e(aten.div.Tensor, x_fp32, x_scale)), I32)
    x = e(CLAMP, e(aten.add.Tensor, x, x_zero_point), x_quant_min, x_quant_max)
    x_i8 = e(TO, x, I8)
    w = e(CLAMP_PACKET, w_i8, w_quant_min, w_quant_max)
    x_i16, w_i16 = e(TO, x_i8, I16), e(TO, w, I16)
    x_centred = e(aten.sub.Tensor, x_i16, x_zero_point)
    w_centred = e(aten.sub.Tensor, w_i16, w_zero_point)
    acc = e(OUT_DTYPE, aten.linear.default, I32, x_centred, w_centred, None)
    copy_debug_handle(op, acc)
    bias_scale = e(aten.mul.Tensor, x_scale, w_scale)
    bias_i32 = e(OUT_DTYPE, aten.div.Tensor, I32, bias, bias_scale)
    acc = e(aten.add.Tensor, acc, bias_i32)
    return e(aten.mul.Tensor, acc, e(aten.mul.Tensor, x_scale, w_scale))


# ------------------------------------------------------------------------------------------
# static linear and convolution: dq(x), dq(w) -> op -> q
# ------------------------------------------------------------------------------------------

LINEAR = _q(op(aten.linear.default, _dq("x"), _dq("w"), Var("bias"), name="op"))

_CONV_ARGS = _vars("stride padding dilation transposed output_padding groups")
CONVOLUTION = _q(
    op(aten.convolution.default, _dq("x"), _dq("w"), Var("bias"), *_CONV_ARGS, name="op")
)


def _integer_accumulate(
    e: Emitter,
    target: object,
    op_args: tuple,
    bias_dims: int,
    *,
    x_i8: Node,
    x_scale: object,
    x_zero_point: object,
    x_quant_min: object,
    x_quant_max: object,
    w_i8: Node,
    w_scale: object,
    w_zero_point: object,
    w_quant_min: object,
    w_quant_max: object,
    bias: Node,
    out_scale: object,
    out_zero_point: object,
    out_quant_min: object,
    out_quant_max: object,
    op: Node,
) -> Node:
    """The body of ``_reference_quantized_linear`` / ``_conv2d``: int16 operands accumulate
    to int32 with the bias divided into int32, then requantize to int8, all through out_dtype
    (which truncates)."""
    x = e(CLAMP_PACKET, x_i8, x_quant_min, x_quant_max)
    w = e(CLAMP_PACKET, w_i8, w_quant_min, w_quant_max)
    x_i16, w_i16 = e(TO, x, I16), e(TO, w, I16)
    x_centred = e(aten.sub.Tensor, x_i16, x_zero_point)
    w_centred = e(aten.sub.Tensor, w_i16, w_zero_point)
    acc = e(OUT_DTYPE, target, I32, x_centred, w_centred, None, *op_args)
    copy_debug_handle(op, acc)
    bias_i32 = e(OUT_DTYPE, aten.div.Tensor, I32, bias, e(aten.mul.Tensor, x_scale, w_scale))
    for _ in range(bias_dims):  # conv: the bias runs along dim 1 of (N, C, H, W)
        bias_i32 = e(aten.unsqueeze.default, bias_i32, -1)
    acc = e(aten.add.Tensor, acc, bias_i32)
    multiplier = e(aten.div.Tensor, e(aten.mul.Tensor, x_scale, w_scale), out_scale)
    acc = e(OUT_DTYPE, aten.mul.Tensor, I32, acc, multiplier)
    acc = e(aten.add.Tensor, acc, out_zero_point)
    return e(TO, e(CLAMP_PACKET, acc, out_quant_min, out_quant_max), I8)


def linear(e: Emitter, **bindings: Any) -> Node:
    """``_reference_quantized_linear``"""
    return _integer_accumulate(e, aten.linear.default, (), 0, **bindings)


def convolution(
    e: Emitter,
    stride: object,
    padding: object,
    dilation: object,
    transposed: object,
    output_padding: object,
    groups: object,
    **bindings: Any,
) -> Node:
    """``_reference_quantized_conv2d``, which matches any ``aten.convolution``."""
    conv_args = (stride, padding, dilation, transposed, output_padding, groups)
    return _integer_accumulate(e, aten.convolution.default, conv_args, 2, **bindings)


# ------------------------------------------------------------------------------------------
# add and add + relu: dq(x), dq(y) -> add [-> relu] -> q, one quant range for all three
# ------------------------------------------------------------------------------------------


def _add_pattern(relu: bool) -> Op:
    x_i8, x_scale, x_zero_point, y_i8, y_scale, y_zero_point = _vars(
        "x_i8 x_scale x_zero_point y_i8 y_scale y_zero_point"
    )
    out_scale, out_zero_point, quant_min, quant_max = _vars(
        "out_scale out_zero_point quant_min quant_max"
    )
    x = op(DQ, x_i8, x_scale, x_zero_point, quant_min, quant_max, I8)
    y = op(DQ, y_i8, y_scale, y_zero_point, quant_min, quant_max, I8)
    total = op(aten.add.Tensor, x, y, name="op")
    if relu:
        total = op(aten.relu.default, total)
    return op(Q, total, out_scale, out_zero_point, quant_min, quant_max, I8)


ADD_RELU = _add_pattern(relu=True)
ADD = _add_pattern(relu=False)


def add_relu(
    e: Emitter,
    x_i8: Node,
    x_scale: object,
    x_zero_point: object,
    y_i8: Node,
    y_scale: object,
    y_zero_point: object,
    out_scale: object,
    out_zero_point: object,
    quant_max: object,
    op: Node,
    **_: object,
) -> Node:
    """``_reference_quantized_add_relu``: each input rescaled with out_dtype (truncating);
    the relu is the clamp's lower bound at the output zero point."""
    x_i32, y_i32 = e(TO, x_i8, I32), e(TO, y_i8, I32)
    x_i32 = e(
        OUT_DTYPE,
        aten.mul.Tensor,
        I32,
        e(aten.sub.Tensor, x_i32, x_zero_point),
        e(aten.div.Tensor, x_scale, out_scale),
    )
    y_i32 = e(
        OUT_DTYPE,
        aten.mul.Tensor,
        I32,
        e(aten.sub.Tensor, y_i32, y_zero_point),
        e(aten.div.Tensor, y_scale, out_scale),
    )
    total = e(aten.add.Tensor, x_i32, y_i32)
    copy_debug_handle(op, total)
    out_i32 = e(aten.add.Tensor, total, out_zero_point)
    return e(TO, e(CLAMP_PACKET, out_i32, out_zero_point, quant_max), I8)


def add(
    e: Emitter,
    x_i8: Node,
    x_scale: object,
    x_zero_point: object,
    y_i8: Node,
    y_scale: object,
    y_zero_point: object,
    out_scale: object,
    out_zero_point: object,
    op: Node,
    **_: object,
) -> Node:
    """``_reference_quantized_add``: each input rescaled and rounded, clamped to [-128, 127]
    whatever the matched quant range (torchao hard-codes it)."""
    x_i32, y_i32 = e(TO, x_i8, I32), e(TO, y_i8, I32)
    x_ratio = e(aten.div.Tensor, x_scale, out_scale)
    x_i32 = e(aten.mul.Tensor, x_ratio, e(aten.sub.Tensor, x_i32, x_zero_point))
    x_i32 = e(TO, e(aten.round.default, x_i32), I32)
    y_ratio = e(aten.div.Tensor, y_scale, out_scale)
    y_i32 = e(aten.mul.Tensor, y_ratio, e(aten.sub.Tensor, y_i32, y_zero_point))
    y_i32 = e(TO, e(aten.round.default, y_i32), I32)
    total = e(aten.add.Tensor, x_i32, y_i32)
    copy_debug_handle(op, total)
    out_i32 = e(aten.add.Tensor, total, out_zero_point)
    return e(TO, e(CLAMP, out_i32, -128, 127), I8)


# ------------------------------------------------------------------------------------------
# max_pool2d_with_indices (decomposed export): dq -> pool -> getitem -> q
# ------------------------------------------------------------------------------------------

MAX_POOL2D_WITH_INDICES = _q(
    op(
        operator.getitem,
        op(aten.max_pool2d_with_indices.default, _dq("x"), *_vars("kernel_size stride"), name="op"),
        Var("index"),
    )
)


def max_pool2d_with_indices(
    e: Emitter,
    x_i8: Node,
    x_scale: object,
    x_zero_point: object,
    x_quant_min: object,
    x_quant_max: object,
    kernel_size: object,
    stride: object,
    index: object,
    out_scale: object,
    out_zero_point: object,
    out_quant_min: object,
    out_quant_max: object,
    op: Node,
) -> Node:
    """``_reference_quantized_max_pool2d``: pool the centred integers, rescale to the output."""
    x_i32 = e(TO, e(CLAMP_PACKET, x_i8, x_quant_min, x_quant_max), I32)
    pooled = e(
        aten.max_pool2d_with_indices.default,
        e(aten.sub.Tensor, x_i32, x_zero_point),
        kernel_size,
        stride,
    )
    copy_debug_handle(op, pooled)
    out_i32 = e(operator.getitem, pooled, index)
    out = e(aten.mul.Tensor, out_i32, e(aten.div.Tensor, x_scale, out_scale))
    out = e(aten.add.Tensor, out, out_zero_point)
    return e(TO, e(CLAMP_PACKET, out, out_quant_min, out_quant_max), I8)


# ------------------------------------------------------------------------------------------
# standalone int8 q / dq, per tensor (scalar or tensor qparams) and per channel
# ------------------------------------------------------------------------------------------

_QPARAMS = _vars("x scale zero_point quant_min quant_max")
QUANTIZE_PER_TENSOR = op(Q, *_QPARAMS, I8)
DEQUANTIZE_PER_TENSOR = op(DQ, *_QPARAMS, I8)

_CHANNEL_QPARAMS = _vars("x scales zero_points axis quant_min quant_max")
QUANTIZE_PER_CHANNEL = op(Q_PER_CHANNEL, *_CHANNEL_QPARAMS, I8)
DEQUANTIZE_PER_CHANNEL = op(DQ_PER_CHANNEL, *_CHANNEL_QPARAMS, I8)


def quantize_per_tensor(
    e: Emitter, x: Node, scale: object, zero_point: object, quant_min: int, quant_max: int
) -> Node:
    """``_reference_quantize_per_tensor_int8``: ``x / scale``, round, shift, clamp."""
    x_i32 = e(TO, e(aten.round.default, e(aten.div.Tensor, x, scale)), I32)
    x_i32 = e(aten.add.Tensor, x_i32, zero_point)
    return e(TO, e(CLAMP_PACKET, x_i32, quant_min, quant_max), I8)


def dequantize_per_tensor(
    e: Emitter, x: Node, scale: object, zero_point: object, quant_min: int, quant_max: int
) -> Node:
    """``_reference_dequantize_per_tensor_int8``: ``(x.to(float32) - zp) * scale``."""
    x_f32 = e(TO, e(CLAMP_PACKET, x, quant_min, quant_max), F32)
    return e(TO, e(aten.mul.Tensor, e(aten.sub.Tensor, x_f32, zero_point), scale), F32)


def quantize_per_channel(
    e: Emitter,
    x: Node,
    scales: Node,
    zero_points: Node,
    axis: int,
    quant_min: int,
    quant_max: int,
) -> Node:
    """``_reference_quantize_per_channel_int8``: the channel axis moved last to broadcast."""
    x_last = e(aten.transpose.int, x, axis, -1)
    out = e(TO, e(aten.round.default, e(aten.div.Tensor, x_last, scales)), I32)
    out = e(CLAMP, e(aten.add.Tensor, out, zero_points), quant_min, quant_max)
    return e(TO, e(aten.transpose.int, out, axis, -1), I8)


def dequantize_per_channel(
    e: Emitter,
    x: Node,
    scales: Node,
    zero_points: Node,
    axis: int,
    quant_min: int,
    quant_max: int,
) -> Node:
    """``_reference_dequantize_per_channel_int8``"""
    x_last = e(aten.transpose.int, e(CLAMP, x, quant_min, quant_max), axis, -1)
    centred = e(aten.sub.Tensor, e(TO, x_last, I32), zero_points)
    out = e(aten.mul.Tensor, e(TO, centred, F32), scales)
    return e(aten.transpose.int, out, axis, -1)
