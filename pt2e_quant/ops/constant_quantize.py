"""Quantizing a constant weight once, at convert, with one float temporary instead of four.

``fold_quantize`` stores weights quantized. Calling the ``quantized_decomposed`` quantize ops
for that runs torch's reference arithmetic out of place: ``x * (1 / scale)``, ``round``,
``+ zero_point`` and ``clamp`` each allocate a weight-sized float tensor. The functions here
run the same operations in the same order on one temporary, in place, so the integer weights
are bit-identical to the op's (the in-place kernels compute exactly what the out-of-place ones
do) while the time and the memory high-water mark of folding a large model drop. Inputs the
in-place form would compute differently (an integer-promoting zero point, a non-float32
input the op would refuse or upcast) return None, and the caller runs the op itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pt2e_quant.ops import qdq_ops
from pt2e_quant.ops.decomposed_kernels import channel_view_shape, check_bounds, swap_with_axis_zero

__all__ = ["quantize_constant"]

Tensor = torch.Tensor


def _round_shift_clamp(scaled: Tensor, zero_point: Any, quant_min: int, quant_max: int) -> Tensor:
    """``clamp(round(scaled) + zero_point)``, in place on ``scaled``."""
    scaled.round_()
    scaled.add_(zero_point)
    return scaled.clamp_(quant_min, quant_max)


def _per_tensor(
    x: Tensor, scale: float, zero_point: int, quant_min: int, quant_max: int, dtype: torch.dtype
) -> Tensor | None:
    if x.dtype != torch.float32 or not isinstance(zero_point, int):
        return None
    check_bounds(quant_min, quant_max, dtype)
    scaled = x * (1.0 / scale)
    return _round_shift_clamp(scaled, zero_point, quant_min, quant_max).to(dtype)


def _per_channel(
    x: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    axis: int,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
) -> Tensor | None:
    if x.dtype != torch.float32 or not -x.dim() <= axis < x.dim():
        return None
    check_bounds(quant_min, quant_max, dtype)
    moved, order = swap_with_axis_zero(x, axis)
    shape = channel_view_shape(moved, scales.shape[0])
    scaled = moved * (1.0 / scales.view(shape))
    zero_points = zero_points.view(shape)
    if torch.result_type(scaled, zero_points) != scaled.dtype:
        return None  # out of place, the sum would take the zero points' wider dtype
    quantized = _round_shift_clamp(scaled, zero_points, quant_min, quant_max)
    return quantized.permute(order).to(dtype)


def _per_channel_group(
    x: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    group_size: int = 128,
) -> Tensor | None:
    """Groups of ``group_size`` input columns, one (scale, zero point) each. torch's op adds
    the zero point *before* rounding (unlike the per-tensor and per-channel ops): so does this."""
    if x.dtype != torch.float32 or x.dim() != 2 or group_size <= 1:
        return None
    check_bounds(quant_min, quant_max, dtype)
    if group_size > x.shape[-1] and scales.shape[-1] == 1:
        group_size = x.shape[-1]
    if x.shape[-1] % group_size != 0:
        return None
    scaled = x.reshape(-1, group_size).mul(1.0 / scales.reshape(-1, 1))
    zero_points = zero_points.reshape(-1, 1)
    if torch.result_type(scaled, zero_points) != scaled.dtype or bool(scaled.isnan().any()):
        return None  # a wider sum out of place; NaN weights, which the op refuses
    scaled.add_(zero_points).round_().clamp_(quant_min, quant_max)
    return scaled.to(dtype).reshape_as(x)


_LEAN: dict[Any, Callable[..., Tensor | None]] = {
    qdq_ops.QUANTIZE_PER_TENSOR: _per_tensor,
    qdq_ops.QUANTIZE_PER_CHANNEL: _per_channel,
    qdq_ops.QUANTIZE_PER_CHANNEL_GROUP: _per_channel_group,
}


def quantize_constant(op: Any, args: tuple, kwargs: dict) -> Tensor | None:
    """``op(*args, **kwargs)`` computed in place for the quantize ops above, or None when the
    caller should call ``op`` (another op, keyword arguments, inputs the lean form declines)."""
    lean = _LEAN.get(op)
    if lean is None or kwargs or not args or not isinstance(args[0], Tensor):
        return None
    try:
        return lean(*args)
    except (AssertionError, TypeError, ValueError, RuntimeError, IndexError):
        return None  # the op raises its own error for arguments it rejects
