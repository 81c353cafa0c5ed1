"""Our reference forms, for what torchao has no pattern for: exact integer arithmetic.

Fused: conv1d/2d/3d and linear with per-tensor or per-channel weights, each with an optional
relu, and add (+ relu), all on 8-bit operands, and ``max_pool2d`` with shared qparams. Standalone:
the static q/dq torchao leaves (uint8, int16, uint16, int32; a dequantize to float32 spelled
as a kwarg). For a quantized conv::

    x = dequantize_per_tensor(x_i8, xs, xz, -128, 127, int8)
    w = dequantize_per_channel(w_i8, ws, wz, 0, -127, 127, int8)
    y_i8 = quantize_per_tensor(conv2d(x, w, b), ys, yz, -128, 127, int8)

becomes::

    x_c = to(x_i8, int32) - xz;  w_c = to(w_i8, int32) - wz.view(-1, 1, 1, 1)
    b_i32 = to(round(b / (ws * xs)), int32)            # bias on the accumulator's scale
    acc = to(conv2d(to(x_c, float64), to(w_c, float64), to(b_i32, float64)), int32)
    y_i8 = to(clamp(round(acc * (ws * xs / ys).view(-1, 1, 1)) + yz, -128, 127), int8)

Why float64: aten's CPU convolution has no integer kernel for every case (``slow_conv_dilated``
only takes int64) and none on other devices, while a float64 conv or matmul of integer-valued
tensors is exact as long as every partial sum stays below 2**53. With 8-bit operands each
product is at most 255 * 255, so that holds for any realistic size; the int32 accumulator itself
overflows first, above ~33,000 products per output, as it would on integer hardware. Hence the
fused patterns only take 8-bit inputs and weights.

The fused output is within one output step of the q/dq model: the bias is rounded to the
accumulator scale and the float path rounds its sums. Pooling the integers is exact, and the
standalone q/dq are the ``quantized_decomposed`` kernels' own arithmetic, op for op, so they
match them bit for bit. Dynamic q/dq of these dtypes, float8, non-float32 inputs and outputs
stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import Node

from pt2e_quant.graph.node_meta import copy_debug_handle
from pt2e_quant.graph.patterns import ANY, Either, Emitter, Op, op
from pt2e_quant.ops import qdq_ops

__all__ = [
    "ADD",
    "CONV_OR_LINEAR",
    "DEQUANTIZE",
    "MAX_POOL2D",
    "QUANTIZE",
    "QParams",
    "add",
    "add_applies",
    "conv_or_linear",
    "conv_or_linear_applies",
    "dequantize",
    "dequantize_applies",
    "max_pool2d",
    "max_pool2d_applies",
    "quantize",
    "quantize_applies",
    "static_qparams",
]

aten = torch.ops.aten

#: integer dtypes whose static q/dq are rewritten; float8 q/dq stay
_INTEGER_DTYPES = frozenset({torch.int8, torch.uint8, torch.int16, torch.uint16, torch.int32})
#: operand dtypes of the fused patterns, for which the int32 accumulator bound above holds
_NARROW_DTYPES = frozenset({torch.int8, torch.uint8})


@dataclass(frozen=True)
class QParams:
    """The static quantization parameters of one q or dq node.

    Per-tensor ``scale`` / ``zero_point`` are Python numbers; per-channel ones are the get_attr
    nodes of their buffers, ``axis`` is set and ``zero_point`` may be None.
    """

    scale: Any  # float, or the get_attr Node of the per-channel scales
    zero_point: Any  # int, or a get_attr Node / None per channel
    axis: int | None
    quant_min: int
    quant_max: int
    dtype: torch.dtype

    @property
    def per_channel(self) -> bool:
        return self.axis is not None


def static_qparams(node: Node) -> QParams | None:
    """The qparams of a static, integer, float32-valued q/dq; None for anything else."""
    if node.target in (qdq_ops.QUANTIZE_PER_TENSOR, qdq_ops.DEQUANTIZE_PER_TENSOR):
        if len(node.args) != 6:
            return None
        _, scale, zero_point, quant_min, quant_max, dtype = node.args
        axis = None
    elif node.target in (qdq_ops.QUANTIZE_PER_CHANNEL, qdq_ops.DEQUANTIZE_PER_CHANNEL):
        if len(node.args) != 7:
            return None
        _, scale, zero_point, axis, quant_min, quant_max, dtype = node.args
    else:
        return None
    if dtype not in _INTEGER_DTYPES or node.kwargs.get("out_dtype") not in (None, torch.float32):
        return None
    return QParams(scale, zero_point, axis, quant_min, quant_max, dtype)


def _narrow(node: Node, per_channel: bool = True) -> QParams | None:
    """``node``'s qparams if it is an 8-bit static q/dq (per tensor unless ``per_channel``)."""
    qparams = static_qparams(node)
    if qparams is None or qparams.dtype not in _NARROW_DTYPES:
        return None
    return None if qparams.per_channel and not per_channel else qparams


def _rank(node: Any) -> int | None:
    """The tensor rank of ``node`` from its meta value or, for a get_attr, its tensor.

    q/dq nodes carry no meta value, so they are looked through to the tensor they quantize.
    """
    while qdq_ops.is_quantize(node) or qdq_ops.is_dequantize(node):
        node = node.args[0]
    if not isinstance(node, Node):
        return None
    value = node.meta.get("val")
    if value is None and node.op == "get_attr":
        value = node.graph.owning_module
        for name in str(node.target).split("."):
            value = getattr(value, name, None)
    return value.dim() if isinstance(value, torch.Tensor) else None


# ------------------------------------------------------------------------------------------
# patterns: static q/dq of any layout; what each may carry is checked on the bound nodes
# ------------------------------------------------------------------------------------------


def _dequantize(name: str) -> Either:
    """A static dequantize, per tensor or per channel, bound as ``name``."""
    return Either(
        op(qdq_ops.DEQUANTIZE_PER_TENSOR, *[ANY] * 6, out_dtype=ANY, name=name),
        op(qdq_ops.DEQUANTIZE_PER_CHANNEL, *[ANY] * 7, out_dtype=ANY, name=name),
    )


def _quantize(value: Any, name: str = "q") -> Op:
    return op(qdq_ops.QUANTIZE_PER_TENSOR, value, *[ANY] * 5, name=name)


def _then_maybe_relu(value: Any) -> Either:
    return Either(op(aten.relu.default, value, name="relu"), value)


_CONV = op(
    (aten.conv1d.default, aten.conv2d.default, aten.conv3d.default),
    _dequantize("x"),
    _dequantize("w"),
    *[ANY] * 5,  # bias, stride, padding, dilation, groups
    name="op",
)
_LINEAR = op(aten.linear.default, _dequantize("x"), _dequantize("w"), ANY, name="op")
CONV_OR_LINEAR = _quantize(_then_maybe_relu(Either(_CONV, _LINEAR)))
ADD = _quantize(
    _then_maybe_relu(op(aten.add.Tensor, _dequantize("a"), _dequantize("b"), name="op"))
)
MAX_POOL2D = _quantize(op(aten.max_pool2d.default, _dequantize("x"), *[ANY] * 5, name="op"))

DEQUANTIZE = _dequantize("dq")
QUANTIZE = Either(
    op(qdq_ops.QUANTIZE_PER_TENSOR, *[ANY] * 6, name="q"),
    op(qdq_ops.QUANTIZE_PER_CHANNEL, *[ANY] * 7, name="q"),
)


# ------------------------------------------------------------------------------------------
# conditions
# ------------------------------------------------------------------------------------------


def _plain_call(op: Node) -> bool:
    """The op's arguments as export writes them: positional, the quantized ones first."""
    return not op.kwargs


def conv_or_linear_applies(x: Node, w: Node, q: Node, op: Node, **_: Any) -> bool:
    """8-bit per-tensor input, 8-bit weights per tensor or along the output channels (axis 0)."""
    wq = _narrow(w)
    return (
        _plain_call(op)
        and _narrow(x, per_channel=False) is not None
        and wq is not None
        and (not wq.per_channel or wq.axis == 0)
        and static_qparams(q) is not None
    )


def add_applies(a: Node, b: Node, q: Node, op: Node, **_: Any) -> bool:
    return (
        _plain_call(op)
        and _narrow(a, per_channel=False) is not None
        and _narrow(b, per_channel=False) is not None
        and static_qparams(q) is not None
    )


def max_pool2d_applies(x: Node, q: Node, op: Node, **_: Any) -> bool:
    """Pooling the integers is exact only when input and output share qparams."""
    xq = _narrow(x, per_channel=False)
    return _plain_call(op) and xq is not None and xq == static_qparams(q)


def dequantize_applies(dq: Node) -> bool:
    qparams = static_qparams(dq)
    return qparams is not None and (not qparams.per_channel or _rank(dq.args[0]) is not None)


def quantize_applies(q: Node) -> bool:
    qparams = static_qparams(q)
    x = q.args[0]
    value = x.meta.get("val") if isinstance(x, Node) else None
    if qparams is None or (isinstance(value, torch.Tensor) and value.dtype != torch.float32):
        return False
    return not qparams.per_channel or _rank(x) is not None


# ------------------------------------------------------------------------------------------
# actions
# ------------------------------------------------------------------------------------------


def _along(e: Emitter, vector: Node, rank: int, axis: int) -> Node:
    """View a per-channel vector so it broadcasts along ``axis`` of a rank-``rank`` tensor."""
    shape = [1] * rank
    shape[axis % rank] = -1
    return e(aten.view.default, vector, shape)


def _requantize(
    e: Emitter, scaled: Node, out: QParams, relu: bool = False, zero_point: Any = None
) -> Node:
    """``clamp(round(scaled) + zero_point, low, qmax).to(dtype)``: the quantize kernel's tail.

    ``zero_point`` defaults to ``out``'s. A relu in the quantized domain is the clamp's lower
    bound moving up to the zero point.
    """
    zero_point = out.zero_point if zero_point is None else zero_point
    low = max(out.quant_min, zero_point) if relu else out.quant_min
    shifted = e(aten.add.Tensor, e(aten.round.default, scaled), zero_point)
    return e(aten.to.dtype, e(aten.clamp.default, shifted, low, out.quant_max), out.dtype)


def _centred(e: Emitter, ints: Node, qparams: QParams, rank: int) -> Node:
    """``ints - zero_point`` as integers (per-channel zero points along axis 0)."""
    widened = e(aten.to.dtype, ints, torch.int32)
    if not qparams.per_channel:
        return e(aten.sub.Tensor, widened, qparams.zero_point)
    if qparams.zero_point is None:
        return widened
    return e(aten.sub.Tensor, widened, _along(e, qparams.zero_point, rank, 0))


#: dims after the channel dim of the output: conv (N, C, *spatial), linear (..., C)
_TRAILING_DIMS = {
    aten.conv1d.default: 1,
    aten.conv2d.default: 2,
    aten.conv3d.default: 3,
    aten.linear.default: 0,
}


def conv_or_linear(
    e: Emitter, x: Node, w: Node, q: Node, op: Node, relu: Node | None = None
) -> Node:
    """Integer accumulation of centred inputs and weights plus an int32 bias, then requantize."""
    xq, wq, out = static_qparams(x), static_qparams(w), static_qparams(q)
    assert xq is not None and wq is not None and out is not None
    trailing = _TRAILING_DIMS[op.target]
    acc_scale: Any  # of the accumulator and the int32 bias: x scale * w scale
    multiplier: Any  # from the accumulator to the output scale
    if wq.per_channel:  # the weight scale runs along the output channels
        acc_scale = e(aten.mul.Tensor, wq.scale, xq.scale)
        multiplier = e(aten.mul.Tensor, wq.scale, xq.scale / out.scale)
        multiplier = _along(e, multiplier, trailing + 1, 0)
    else:
        acc_scale = xq.scale * wq.scale
        multiplier = acc_scale / out.scale
    as_float64 = [
        e(aten.to.dtype, _centred(e, x.args[0], xq, 0), torch.float64),
        e(aten.to.dtype, _centred(e, w.args[0], wq, trailing + 2), torch.float64),
    ]
    bias: Any = op.args[2] if len(op.args) > 2 else None
    if isinstance(bias, Node):
        quantized = e(aten.round.default, e(aten.div.Tensor, bias, acc_scale))
        bias = e(aten.to.dtype, e(aten.to.dtype, quantized, torch.int32), torch.float64)
    accumulated = e(op.target, *as_float64, bias, *op.args[3:])
    copy_debug_handle(op, accumulated)
    scaled = e(aten.mul.Tensor, e(aten.to.dtype, accumulated, torch.int32), multiplier)
    return _requantize(e, scaled, out, relu is not None)


def add(e: Emitter, a: Node, b: Node, q: Node, op: Node, relu: Node | None = None) -> Node:
    """Rescale each centred input to the output scale, sum, round once: what a qadd kernel does."""
    out = static_qparams(q)
    assert out is not None
    terms = []
    for dq in (a, b):
        qparams = static_qparams(dq)
        assert qparams is not None
        centred = _centred(e, dq.args[0], qparams, 0)
        terms.append(e(aten.mul.Tensor, centred, qparams.scale / out.scale))
    total = e(aten.add.Tensor, *terms)
    copy_debug_handle(op, total)
    return _requantize(e, total, out, relu is not None)


def max_pool2d(e: Emitter, x: Node, q: Node, op: Node) -> Node:
    """Pool the integer tensor itself: max commutes with the monotone dequantize."""
    pooled = e(aten.max_pool2d.default, x.args[0], *op.args[1:])
    copy_debug_handle(op, pooled)
    return pooled


def quantize(e: Emitter, q: Node) -> Node:
    """``clamp(round(x * (1 / scale)) + zp, qmin, qmax).to(dtype)``, as the kernel computes it."""
    qparams = static_qparams(q)
    assert qparams is not None
    x = q.args[0]
    if qparams.per_channel:
        rank = _rank(x)
        assert rank is not None
        inverse = _along(e, e(aten.reciprocal.default, qparams.scale), rank, qparams.axis)
        zero_point = _along(e, qparams.zero_point, rank, qparams.axis)
    else:
        inverse, zero_point = 1.0 / qparams.scale, qparams.zero_point
    scaled = e(aten.mul.Tensor, x, inverse)
    return _requantize(e, scaled, qparams, zero_point=zero_point)


def dequantize(e: Emitter, dq: Node) -> Node:
    """``(x.to(float32) - zp) * scale`` per tensor, ``((x - zp) * scale).to(float32)`` per channel.

    Both are the kernels' formulas; the per-tensor subtraction is done in float32 like the
    kernel, which keeps int32 tensors (quantized biases) bit-identical too.
    """
    qparams = static_qparams(dq)
    assert qparams is not None
    x = dq.args[0]
    if not qparams.per_channel:
        centred = e(aten.sub.Tensor, e(aten.to.dtype, x, torch.float32), qparams.zero_point)
        return e(aten.mul.Tensor, centred, qparams.scale)
    rank = _rank(x)
    assert rank is not None and qparams.axis is not None
    if qparams.zero_point is not None:
        x = e(aten.sub.Tensor, x, _along(e, qparams.zero_point, rank, qparams.axis))
    scaled = e(aten.mul.Tensor, x, _along(e, qparams.scale, rank, qparams.axis))
    return e(aten.to.dtype, scaled, torch.float32)
