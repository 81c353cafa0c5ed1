"""Rewrite quantized patterns into the integer arithmetic a backend would run, in plain aten ops.

``convert_pt2e(..., use_reference_representation=True)`` runs this last, so the graph shows the
integer computation instead of float ops between q/dq, still runs on CPU and re-exports. Weights
are already int8 constants and every consumer has its own dequantize. For a quantized conv::

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

Rules, each one function: conv1d/2d/3d and linear (per-tensor or per-channel weights), add,
each with an optional relu before the output q; max_pool2d with shared qparams (pooled on the
integer tensor, which is exact). The fused output is within one output step of the float path:
the bias is rounded to the accumulator scale and the float path rounds its sums. What is left
of static q/dq becomes the same arithmetic as the ``quantized_decomposed`` kernels, op for op,
so it matches them bit for bit. Dynamic (``.tensor``) q/dq, float8 dtypes, non-float32 inputs
and ops outside these patterns stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant import qdq_ops
from pt2e_quant.node_meta import copy_debug_handle, port_meta
from pt2e_quant.passes.driver import remove_dead_nodes

__all__ = ["rewrite_to_reference"]

aten = torch.ops.aten

#: integer dtypes whose q/dq are rewritten; float8 q/dq stay
_INTEGER_DTYPES = frozenset({torch.int8, torch.uint8, torch.int16, torch.uint16, torch.int32})
#: operand dtypes of the fused patterns, for which the int32 accumulator bound above holds
_NARROW_DTYPES = frozenset({torch.int8, torch.uint8})


@dataclass(frozen=True)
class _QParams:
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


def _static_qparams(node: Node) -> _QParams | None:
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
    return _QParams(scale, zero_point, axis, quant_min, quant_max, dtype)


class _Emitter:
    """Inserts call_function nodes before ``anchor``, each with ``source``'s lowering metadata."""

    def __init__(self, anchor: Node, source: Node) -> None:
        self.anchor = anchor
        self.source = source

    def __call__(self, target: Callable[..., Any], *args: Any) -> Node:
        with self.anchor.graph.inserting_before(self.anchor):
            node = self.anchor.graph.call_function(target, args)
        port_meta(self.source, node)
        return node


def _rank(gm: GraphModule, node: Any) -> int | None:
    """The tensor rank of ``node`` from its meta value or, for a get_attr, its tensor.

    q/dq nodes carry no meta value, so they are looked through to the tensor they quantize.
    """
    while qdq_ops.is_quantize(node) or qdq_ops.is_dequantize(node):
        node = node.args[0]
    value = node.meta.get("val") if isinstance(node, Node) else None
    if value is None and isinstance(node, Node) and node.op == "get_attr":
        value = gm
        for name in str(node.target).split("."):
            value = getattr(value, name, None)
    return value.dim() if isinstance(value, torch.Tensor) else None


def _along(emit: _Emitter, vector: Node, rank: int, axis: int) -> Node:
    """View a per-channel vector so it broadcasts along ``axis`` of a rank-``rank`` tensor."""
    shape = [1] * rank
    shape[axis % rank] = -1
    return emit(aten.view.default, vector, shape)


def _requantize(
    emit: _Emitter, scaled: Node, out: _QParams, relu: bool = False, zero_point: Any = None
) -> Node:
    """``clamp(round(scaled) + zero_point, low, qmax).to(dtype)``: the quantize kernel's tail.

    ``zero_point`` defaults to ``out``'s. A relu in the quantized domain is the clamp's lower
    bound moving up to the zero point.
    """
    zero_point = out.zero_point if zero_point is None else zero_point
    low = max(out.quant_min, zero_point) if relu else out.quant_min
    shifted = emit(aten.add.Tensor, emit(aten.round.default, scaled), zero_point)
    return emit(aten.to.dtype, emit(aten.clamp.default, shifted, low, out.quant_max), out.dtype)


def _centered(emit: _Emitter, ints: Node, qparams: _QParams, rank: int) -> Node:
    """``ints - zero_point`` as integers (per-channel zero points along axis 0)."""
    widened = emit(aten.to.dtype, ints, torch.int32)
    if not qparams.per_channel:
        return emit(aten.sub.Tensor, widened, qparams.zero_point)
    if qparams.zero_point is None:
        return widened
    return emit(aten.sub.Tensor, widened, _along(emit, qparams.zero_point, rank, 0))


def _replace(old: Node, new: Node) -> bool:
    old.replace_all_uses_with(new)
    copy_debug_handle(old, new)
    return True


# ------------------------------------------------------------------------------------------
# standalone q / dq: the kernels' own arithmetic, so the result is bit-identical
# ------------------------------------------------------------------------------------------


def _rewrite_quantize(gm: GraphModule, q: Node) -> bool:
    """``clamp(round(x * (1 / scale)) + zp, qmin, qmax).to(dtype)``, as the kernel computes it."""
    qparams = _static_qparams(q)
    x: Any = q.args[0]
    value = x.meta.get("val") if isinstance(x, Node) else None
    if qparams is None or (isinstance(value, torch.Tensor) and value.dtype != torch.float32):
        return False
    emit = _Emitter(q, q)
    if qparams.per_channel:
        rank = _rank(gm, x)
        if rank is None:
            return False
        inverse = _along(emit, emit(aten.reciprocal.default, qparams.scale), rank, qparams.axis)
        zero_point = _along(emit, qparams.zero_point, rank, qparams.axis)
    else:
        inverse, zero_point = 1.0 / qparams.scale, qparams.zero_point
    scaled = emit(aten.mul.Tensor, x, inverse)
    return _replace(q, _requantize(emit, scaled, qparams, zero_point=zero_point))


def _rewrite_dequantize(gm: GraphModule, dq: Node) -> bool:
    """``(x.to(float32) - zp) * scale`` per tensor, ``((x - zp) * scale).to(float32)`` per channel.

    Both are the kernels' formulas; the per-tensor subtraction is done in float32 like the
    kernel, which keeps int32 tensors (quantized biases) bit-identical too.
    """
    qparams = _static_qparams(dq)
    x: Any = dq.args[0]
    if qparams is None:
        return False
    emit = _Emitter(dq, dq)
    if not qparams.per_channel:
        widened = emit(aten.to.dtype, x, torch.float32)
        centered = emit(aten.sub.Tensor, widened, qparams.zero_point)
        return _replace(dq, emit(aten.mul.Tensor, centered, qparams.scale))
    rank = _rank(gm, x)
    if rank is None:
        return False
    if qparams.zero_point is not None:
        x = emit(aten.sub.Tensor, x, _along(emit, qparams.zero_point, rank, qparams.axis))
    scaled = emit(aten.mul.Tensor, x, _along(emit, qparams.scale, rank, qparams.axis))
    return _replace(dq, emit(aten.to.dtype, scaled, torch.float32))


# ------------------------------------------------------------------------------------------
# fused patterns: dq inputs -> op [-> relu] -> q
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Match:
    """A quantized op: its dq inputs (integer tensor and qparams), relu and output q."""

    inputs: list[tuple[Any, _QParams]]
    relu: bool
    q: Node
    out: _QParams


def _match(op: Node, n_inputs: int, allow_relu: bool = True) -> _Match | None:
    """Match ``dq(a), dq(b)... -> op [-> relu] -> q`` with 8-bit inputs, or None."""
    if op.kwargs or len(op.args) < n_inputs:
        return None
    inputs = []
    for dq in op.args[:n_inputs]:
        qparams = (
            _static_qparams(dq) if isinstance(dq, Node) and qdq_ops.is_dequantize(dq) else None
        )
        if qparams is None or qparams.dtype not in _NARROW_DTYPES:
            return None
        inputs.append((dq.args[0], qparams))  # type: ignore[union-attr]
    tail, relu = op, False
    if len(tail.users) == 1 and allow_relu and next(iter(tail.users)).target == aten.relu.default:
        tail, relu = next(iter(tail.users)), True
    if len(tail.users) != 1:
        return None
    q = next(iter(tail.users))
    out = _static_qparams(q) if q.target == qdq_ops.QUANTIZE_PER_TENSOR else None
    return None if out is None else _Match(inputs, relu, q, out)


#: dims after the channel dim of the output: conv (N, C, *spatial), linear (..., C)
_TRAILING_DIMS = {
    aten.conv1d.default: 1,
    aten.conv2d.default: 2,
    aten.conv3d.default: 3,
    aten.linear.default: 0,
}


def _rewrite_conv_or_linear(gm: GraphModule, op: Node) -> bool:
    """Integer accumulation of centred inputs and weights plus an int32 bias, then requantize."""
    match = _match(op, n_inputs=2)
    if match is None:
        return False
    (x, xq), (w, wq) = match.inputs
    if xq.per_channel or (wq.per_channel and wq.axis != 0):
        return False
    trailing = _TRAILING_DIMS[op.target]
    emit = _Emitter(match.q, op)
    acc_scale: Any  # of the accumulator and the int32 bias: x scale * w scale
    multiplier: Any  # from the accumulator to the output scale
    if wq.per_channel:  # the weight scale runs along the output channels
        acc_scale = emit(aten.mul.Tensor, wq.scale, xq.scale)
        multiplier = emit(aten.mul.Tensor, wq.scale, xq.scale / match.out.scale)
        multiplier = _along(emit, multiplier, trailing + 1, 0)
    else:
        acc_scale = xq.scale * wq.scale
        multiplier = acc_scale / match.out.scale
    as_float64 = [
        emit(aten.to.dtype, _centered(emit, x, xq, 0), torch.float64),
        emit(aten.to.dtype, _centered(emit, w, wq, trailing + 2), torch.float64),
    ]
    bias: Any = op.args[2] if len(op.args) > 2 else None
    if isinstance(bias, Node):
        quantized = emit(aten.round.default, emit(aten.div.Tensor, bias, acc_scale))
        bias = emit(aten.to.dtype, emit(aten.to.dtype, quantized, torch.int32), torch.float64)
    accumulated = emit(op.target, *as_float64, bias, *op.args[3:])  # type: ignore[arg-type]
    copy_debug_handle(op, accumulated)
    acc = emit(aten.to.dtype, accumulated, torch.int32)
    scaled = emit(aten.mul.Tensor, acc, multiplier)
    return _replace(match.q, _requantize(emit, scaled, match.out, match.relu))


def _rewrite_add(gm: GraphModule, add: Node) -> bool:
    """Rescale each centred input to the output scale, sum, round once: what a qadd kernel does."""
    match = _match(add, n_inputs=2)
    if match is None or any(q.per_channel for _, q in match.inputs):
        return False
    emit = _Emitter(match.q, add)
    terms = [
        emit(aten.mul.Tensor, _centered(emit, ints, q, 0), q.scale / match.out.scale)
        for ints, q in match.inputs
    ]
    total = emit(aten.add.Tensor, *terms)
    copy_debug_handle(add, total)
    return _replace(match.q, _requantize(emit, total, match.out, match.relu))


def _rewrite_max_pool2d(gm: GraphModule, pool: Node) -> bool:
    """Pool the integer tensor itself: max commutes with the monotone dequantize."""
    match = _match(pool, n_inputs=1, allow_relu=False)
    if match is None or match.inputs[0][1] != match.out:
        return False
    emit = _Emitter(match.q, pool)
    pooled = emit(aten.max_pool2d.default, match.inputs[0][0], *pool.args[1:])
    copy_debug_handle(pool, pooled)
    return _replace(match.q, pooled)


_Rule = Callable[[GraphModule, Node], bool]

_FUSED_RULES: dict[Any, _Rule] = {
    **dict.fromkeys(_TRAILING_DIMS, _rewrite_conv_or_linear),
    aten.add.Tensor: _rewrite_add,
    aten.max_pool2d.default: _rewrite_max_pool2d,
}

_QDQ_RULES: dict[Any, _Rule] = {
    qdq_ops.QUANTIZE_PER_TENSOR: _rewrite_quantize,
    qdq_ops.QUANTIZE_PER_CHANNEL: _rewrite_quantize,
    qdq_ops.DEQUANTIZE_PER_TENSOR: _rewrite_dequantize,
    qdq_ops.DEQUANTIZE_PER_CHANNEL: _rewrite_dequantize,
}


def _apply(gm: GraphModule, rules: dict[Any, _Rule]) -> bool:
    """Run the rules from the output backwards: a dq is rewritten while the q it reads is
    still a q node, so :func:`_rank` can look through it."""
    changed = False
    for node in reversed(list(gm.graph.nodes)):
        rule = rules.get(node.target) if node.op == "call_function" else None
        if rule is not None and node.users:  # nodes an earlier rewrite left dead are skipped
            changed |= rule(gm, node)
    return changed


def rewrite_to_reference(gm: GraphModule) -> bool:
    """Rewrite quantized ops, then the remaining static q/dq, into integer aten arithmetic.

    Returns True if anything was rewritten. Fused patterns go first; the q/dq they consumed are
    dropped before the standalone rewrite so they are not translated for nothing.
    """
    fused = _apply(gm, _FUSED_RULES)
    if fused:
        remove_dead_nodes(gm)
    standalone = _apply(gm, _QDQ_RULES)
    return fused or standalone
