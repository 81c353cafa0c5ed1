"""Quantizing a constant weight once, at convert, a cache-sized block at a time.

``fold_quantize`` stores weights quantized. Calling the ``quantized_decomposed`` quantize ops
for that runs torch's reference arithmetic out of place: ``x * (1 / scale)``, ``round``,
``+ zero_point`` and ``clamp`` each allocate a weight-sized float tensor, and each streams the
whole weight through memory. The functions here run the same operations in the same order,
in place, on one float block of about 1 MiB that is reused for every block of rows, writing
each block's integers straight into the result. The integers are bit-identical to the op's
(the in-place kernels compute exactly what the out-of-place ones do, element by element, in
the dtype the op's product has), the result has the op's strides, the memory convert adds is
the integer weights and one block, and the steps after the first read the block from cache.
Inputs the block form would compute differently (a zero point that widens the sum, a
non-float32 input the op would refuse or upcast, NaN weights the group op refuses) return
None, and the caller runs the op itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pt2e_quant.ops import qdq_ops
from pt2e_quant.ops.decomposed_kernels import channel_view_shape, check_bounds, swap_with_axis_zero

__all__ = ["BlockScratch", "quantize_constant"]

Tensor = torch.Tensor

#: float32 elements per block: 1 MiB, which stays in a core's L2 cache between the steps
BLOCK_ELEMENTS = 1 << 18


class BlockScratch:
    """The float block, allocated once and reused for every weight one fold quantizes.

    A block allocated per weight and freed between the weights' integer results leaves the
    heap fragmented: about 0.6 MB of resident memory per weight that nothing uses (measured on
    a transformers Llama), so a 1B-parameter model's convert would grow by tens of MB more
    than its integer weights.
    """

    def __init__(self) -> None:
        self._blocks: dict[torch.dtype, Tensor] = {}

    def block(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        numel = 1
        for size in shape:
            numel *= size
        held = self._blocks.get(dtype)
        if held is None or held.numel() < numel:
            held = self._blocks[dtype] = torch.empty(max(numel, BLOCK_ELEMENTS), dtype=dtype)
        return held[:numel].view(shape)


class _Declined(Exception):
    """The block form would not reproduce the op's arithmetic for these inputs."""


def _rows(value: Any, start: int, stop: int) -> Any:
    """The qparams of rows ``start:stop``: per-row tensors are sliced, scalars broadcast."""
    if isinstance(value, Tensor) and value.dim() and value.shape[0] != 1:
        return value[start:stop]
    return value


def _quantize_by_blocks(
    source: Tensor,
    destination: Tensor,
    scale: Any,
    zero_point: Any,
    quant_min: int,
    quant_max: int,
    scratch: BlockScratch,
    zero_point_first: bool = False,
) -> None:
    """``destination[rows] = clamp(round(source[rows] * (1 / scale)) + zero_point)`` for
    blocks of rows (``round(... + zero_point)`` when ``zero_point_first``, as the group op
    does), in the dtype the op's product has. Raises :class:`_Declined` for a zero point that
    would widen the op's sum, or NaN when the zero point goes first (the group op refuses
    NaN). The reciprocal is taken per block too: a weight-sized one (an lm_head's group scales)
    would stay resident as a heap hole."""
    rows = source.shape[0]
    per_row = max(1, source[0].numel()) if rows else 1
    step = max(1, BLOCK_ELEMENTS // per_row)
    scaled_dtype = torch.result_type(source, scale)  # float64 scales widen the product
    if torch.result_type(torch.empty((), dtype=scaled_dtype), zero_point) != scaled_dtype:
        raise _Declined  # out of place, the sum would take the zero point's wider dtype
    # adding zero changes no value that survives the integer cast (only the sign of a zero)
    shifted = bool(zero_point.any()) if isinstance(zero_point, Tensor) else zero_point != 0
    buffer = scratch.block((min(step, rows), *source.shape[1:]), scaled_dtype)
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        block = buffer[: stop - start]
        torch.mul(source[start:stop], 1.0 / _rows(scale, start, stop), out=block)
        if zero_point_first and bool(block.isnan().any()):
            raise _Declined
        if shifted and zero_point_first:
            block.add_(_rows(zero_point, start, stop))
        block.round_()
        if shifted and not zero_point_first:
            block.add_(_rows(zero_point, start, stop))
        block.clamp_(quant_min, quant_max)
        destination[start:stop].copy_(block)


def _per_tensor(
    scratch: BlockScratch,
    x: Tensor,
    scale: float,
    zero_point: int,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
) -> Tensor | None:
    if x.dtype != torch.float32 or not isinstance(zero_point, int) or not x.is_contiguous():
        return None
    check_bounds(quant_min, quant_max, dtype)
    out = torch.empty_like(x, dtype=dtype)
    _quantize_by_blocks(x.view(-1), out.view(-1), scale, zero_point, quant_min, quant_max, scratch)
    return out


def _per_channel(
    scratch: BlockScratch,
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
    out = torch.empty_like(x, dtype=dtype)  # the op's result keeps the input's layout too
    moved, _ = swap_with_axis_zero(x, axis)
    moved_out, _ = swap_with_axis_zero(out, axis)
    shape = channel_view_shape(moved, scales.shape[0])
    zero_points = zero_points.view(shape)
    _quantize_by_blocks(
        moved, moved_out, scales.view(shape), zero_points, quant_min, quant_max, scratch
    )
    return out


def _per_channel_group(
    scratch: BlockScratch,
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
    if x.dtype != torch.float32 or x.dim() != 2 or group_size <= 1 or not x.is_contiguous():
        return None
    check_bounds(quant_min, quant_max, dtype)
    if group_size > x.shape[-1] and scales.shape[-1] == 1:
        group_size = x.shape[-1]
    if x.shape[-1] % group_size != 0:
        return None
    out = torch.empty_like(x, dtype=dtype)
    groups = x.view(-1, group_size)
    zero_points = zero_points.reshape(-1, 1)
    _quantize_by_blocks(
        groups,
        out.view(-1, group_size),
        scales.reshape(-1, 1),
        zero_points,
        quant_min,
        quant_max,
        scratch,
        True,
    )
    return out


_LEAN: dict[Any, Callable[..., Tensor | None]] = {
    qdq_ops.QUANTIZE_PER_TENSOR: _per_tensor,
    qdq_ops.QUANTIZE_PER_CHANNEL: _per_channel,
    qdq_ops.QUANTIZE_PER_CHANNEL_GROUP: _per_channel_group,
}


def quantize_constant(
    op: Any, args: tuple, kwargs: dict, scratch: BlockScratch | None = None
) -> Tensor | None:
    """``op(*args, **kwargs)`` computed in place for the quantize ops above, or None when the
    caller should call ``op`` (another op, keyword arguments, inputs the lean form declines).
    A caller quantizing many weights passes one ``scratch`` for all of them."""
    lean = _LEAN.get(op)
    if lean is None or kwargs or not args or not isinstance(args[0], Tensor):
        return None
    try:
        return lean(BlockScratch() if scratch is None else scratch, *args)
    except (_Declined, AssertionError, TypeError, ValueError, RuntimeError, IndexError):
        return None  # the op raises its own error for arguments it rejects
