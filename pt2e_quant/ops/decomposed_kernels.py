"""Kernels of the per-tensor and per-channel ``quantized_decomposed`` ops, for our fallback.

:mod:`pt2e_quant.ops.decomposed_fallback` registers these only on a torch that lacks
``torch/ao/quantization/fx/_decomposed.py``. A model converted there must lower and run exactly
as on a torch that has it, so each kernel does torch's arithmetic in torch's order: multiply by
``1.0 / scale`` (never divide: it rounds differently near .5), ``torch.round`` (half-to-even),
add the zero point after rounding, clamp, cast. The checks raise the exception types torch's
kernels raise for the same inputs, and each op has a Meta kernel so it traces under fake mode.
The per-token and group ops, which order their arithmetic differently, are in
:mod:`pt2e_quant.ops.decomposed_token_kernels`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Tensor = torch.Tensor

# Quantized value range per storage dtype; the float8 bounds are truncated to ints like torch's.
_QVALUE_BOUNDS: dict[torch.dtype, tuple[int, int]] = {
    dtype: (torch.iinfo(dtype).min, torch.iinfo(dtype).max)
    for dtype in (torch.uint8, torch.int8, torch.uint16, torch.int16, torch.int32)
}
_QVALUE_BOUNDS.update(
    {
        dtype: (int(torch.finfo(dtype).min), int(torch.finfo(dtype).max))
        for dtype in (torch.float8_e5m2, torch.float8_e4m3fn)
    }
)
#: The values torch's quantize / choose_qparams kernels accept (float64 and integers are refused).
QUANTIZE_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --- checks shared by the real and the Meta kernels (same exception types as torch's) -------


def check_bounds(quant_min: int, quant_max: int, dtype: torch.dtype) -> None:
    """Reject a quantized range that does not fit the storage dtype."""
    if dtype not in _QVALUE_BOUNDS:
        raise ValueError(f"Unsupported dtype: {dtype}")
    low, high = _QVALUE_BOUNDS[dtype]
    if quant_min < low:
        raise AssertionError(f"quant_min {quant_min} is below the {dtype} minimum {low}")
    if quant_max > high:
        raise AssertionError(f"quant_max {quant_max} is above the {dtype} maximum {high}")


def _as_float32(x: Tensor) -> Tensor:
    """Half-precision inputs are quantized in float32; anything else but float32 is refused."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.to(torch.float32)
    if x.dtype != torch.float32:
        raise AssertionError(f"Expecting input of dtype torch.float32, got {x.dtype}")
    return x


def _check_one_element(scale: Tensor, zero_point: Tensor) -> None:
    """The ``.tensor`` overloads carry per-tensor qparams as one-element tensors."""
    if zero_point.numel() != 1:
        raise AssertionError(f"Expecting a one-element zero_point, got {zero_point.numel()}")
    if scale.numel() != 1:
        raise AssertionError(f"Expecting a one-element scale, got {scale.numel()}")


def _check_q_input(x: Tensor, dtype: torch.dtype) -> None:
    """Dequantize is told the storage dtype; a mismatch means a wrongly wired graph."""
    if x.dtype != dtype:
        raise AssertionError(f"Expecting input of dtype {dtype}, got {x.dtype}")


def _check_axis(x: Tensor, axis: int) -> None:
    if axis >= x.dim():
        raise AssertionError(f"Expecting axis to be < {x.dim()}, got {axis}")


def _check_float_input(x: Tensor) -> None:
    if x.dtype not in QUANTIZE_INPUT_DTYPES:
        raise AssertionError(f"Expecting a float32/float16/bfloat16 input, got {x.dtype}")


def swap_with_axis_zero(x: Tensor, axis: int) -> tuple[Tensor, tuple[int, ...]]:
    """Move ``axis`` to the front so per-channel qparams broadcast as ``(C, 1, ..., 1)``.

    The swap is its own inverse, so the same order permutes the result back; doing it this way
    (rather than broadcasting along ``axis``) also reproduces torch's output strides.
    """
    order = list(range(x.dim()))
    order[axis], order[0] = 0, axis
    return x.permute(tuple(order)), tuple(order)


def channel_view_shape(x: Tensor, channels: int) -> list[int]:
    shape = [1] * x.dim()
    shape[0] = channels
    return shape


# --- per-tensor quantize / dequantize -------------------------------------------------------


def quantize_per_tensor(
    input: Tensor,
    scale: float,
    zero_point: int,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
) -> Tensor:
    """``clamp(round(x * (1 / scale)) + zero_point)`` cast to ``dtype``."""
    x = _as_float32(input)
    check_bounds(quant_min, quant_max, dtype)
    inverse = 1.0 / scale
    return torch.clamp(torch.round(x * inverse) + zero_point, quant_min, quant_max).to(dtype)


def quantize_per_tensor_meta(
    input: Tensor,
    scale: object,
    zero_point: object,
    quant_min: object,
    quant_max: object,
    dtype: torch.dtype,
) -> Tensor:
    _as_float32(input)
    return torch.empty_like(input, dtype=dtype)


def quantize_per_tensor_tensor_meta(
    input: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    quant_min: object,
    quant_max: object,
    dtype: torch.dtype,
) -> Tensor:
    _check_one_element(scale, zero_point)
    return quantize_per_tensor_meta(input, scale, zero_point, quant_min, quant_max, dtype)


def dequantize_per_tensor(
    input: Tensor,
    scale: float,
    zero_point: int,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    *,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """``(q.to(out_dtype) - zero_point) * scale``; the range only serves pattern matching."""
    _check_q_input(input, dtype)
    if out_dtype is None:
        out_dtype = torch.float32
    if dtype not in _QVALUE_BOUNDS:
        raise ValueError(f"Unsupported dtype in dequantize_per_tensor: {dtype}")
    # Cast first, then subtract: subtracting in the integer dtype could overflow.
    return (input.to(out_dtype) - zero_point) * scale


def dequantize_per_tensor_meta(
    input: Tensor,
    scale: object,
    zero_point: object,
    quant_min: object,
    quant_max: object,
    dtype: torch.dtype,
    *,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    return torch.empty_like(input, dtype=torch.float32 if out_dtype is None else out_dtype)


def dequantize_per_tensor_tensor_meta(
    input: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    quant_min: object,
    quant_max: object,
    dtype: torch.dtype,
    *,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    _check_one_element(scale, zero_point)
    _check_q_input(input, dtype)
    if dtype not in _QVALUE_BOUNDS:
        raise ValueError(f"Unsupported dtype in dequantize_per_tensor: {dtype}")
    return torch.empty_like(input, dtype=torch.float32 if out_dtype is None else out_dtype)


def from_tensor_qparams(kernel: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """The ``.tensor`` / ``.tensor2`` kernel of a per-tensor op: unpack, then run ``kernel``.

    Those overloads carry the qparams (and for ``.tensor2`` the range) as one-element tensors,
    so graphs can compute them; eagerly they are read back into Python numbers, which keeps
    the arithmetic identical to the scalar overload.
    """

    def unpacked(
        input: Tensor,
        scale: Tensor,
        zero_point: Tensor,
        quant_min: int | Tensor,
        quant_max: int | Tensor,
        dtype: torch.dtype,
        **kwargs: object,
    ) -> Tensor:
        _check_one_element(scale, zero_point)
        low = quant_min.item() if isinstance(quant_min, Tensor) else quant_min
        high = quant_max.item() if isinstance(quant_max, Tensor) else quant_max
        return kernel(input, scale.item(), zero_point.item(), low, high, dtype, **kwargs)

    return unpacked


# --- dynamic qparams ------------------------------------------------------------------------


def _check_choose_qparams_args(input: Tensor, qmin: int, qmax: int, dtype: torch.dtype) -> None:
    _check_float_input(input)
    if dtype not in _QVALUE_BOUNDS:
        raise AssertionError(f"Expecting one of {list(_QVALUE_BOUNDS)} as dtype, got {dtype}")
    if not qmin <= 0 <= qmax:
        raise AssertionError("The quantization range must include 0.")
    if qmin >= qmax:
        raise AssertionError("quant_min must be strictly less than quant_max.")


def _range_qparams(
    input: Tensor,
    quant_min: int,
    quant_max: int,
    eps: float,
    dtype: torch.dtype,
    symmetric: bool,
) -> tuple[Tensor, Tensor]:
    """Scale (float64, shape [1]) and zero point (int64, shape [1]) covering ``input``'s range.

    The range is widened to include 0 so that 0.0 is exactly representable; eps is a
    default-dtype tensor of shape [1], which is what gives both results their shape [1].
    """
    low, high = torch.aminmax(input)
    low_neg = torch.min(low, torch.zeros_like(low))
    high_pos = torch.max(high, torch.zeros_like(high))
    device = low_neg.device
    eps_t = torch.tensor([eps], dtype=torch.get_default_dtype()).to(device)
    if symmetric:
        high_pos = torch.max(-low_neg, high_pos)
        scale = torch.max(high_pos / (float(quant_max - quant_min) / 2), eps_t)
        # uint8 has no negative half, so the symmetric zero point sits in the middle.
        zp_value = 128 if dtype == torch.uint8 else 0
        zero_point = torch.tensor([zp_value], dtype=torch.int64, device=device)
    else:
        scale = torch.max((high_pos - low_neg) / float(quant_max - quant_min), eps_t)
        zero_point = quant_min - torch.round(low_neg / scale).to(torch.int)
        zero_point = torch.clamp(zero_point, quant_min, quant_max)
    if scale.dim() == 0:
        scale = torch.tensor([float(scale)], dtype=scale.dtype, device=device)
    if zero_point.dim() == 0:
        zero_point = torch.tensor([int(zero_point)], dtype=zero_point.dtype, device=device)
    return scale.to(torch.double), zero_point.to(torch.int64)


def choose_qparams_kernel(symmetric: bool) -> Callable[..., tuple[Tensor, Tensor]]:
    """The kernel of ``choose_qparams.tensor`` or ``choose_qparams_symmetric.tensor``."""

    def kernel(
        input: Tensor, quant_min: int, quant_max: int, eps: float, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        _check_choose_qparams_args(input, quant_min, quant_max, dtype)
        return _range_qparams(input, quant_min, quant_max, eps, dtype, symmetric=symmetric)

    return kernel


def qparams_meta(input: Tensor, *_ignored: object) -> tuple[Tensor, Tensor]:
    return (
        torch.empty(1, dtype=torch.double, device=input.device),
        torch.empty(1, dtype=torch.int64, device=input.device),
    )


def choose_qparams_tensor_meta(
    input: Tensor, quant_min: int, quant_max: int, eps: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    _check_float_input(input)
    if quant_min >= quant_max:
        raise AssertionError(f"quant_min {quant_min} must be smaller than quant_max {quant_max}")
    return qparams_meta(input)


# --- per-channel ----------------------------------------------------------------------------


def quantize_per_channel(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    axis: int,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
) -> Tensor:
    """Per-tensor quantization with one (scale, zero point) per slice along ``axis``."""
    x = _as_float32(input)
    _check_axis(x, axis)
    check_bounds(quant_min, quant_max, dtype)
    x, order = swap_with_axis_zero(x, axis)
    shape = channel_view_shape(x, scales.shape[0])
    scales, zero_points = scales.view(shape), zero_points.view(shape)
    q = torch.clamp(torch.round(x * (1.0 / scales)) + zero_points, quant_min, quant_max)
    return q.permute(order).to(dtype)


def quantize_per_channel_meta(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    axis: int,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
) -> Tensor:
    x = _as_float32(input)
    _check_axis(x, axis)
    check_bounds(quant_min, quant_max, dtype)
    return torch.empty_like(input, dtype=dtype)


def dequantize_per_channel(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor | None,
    axis: int,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    *,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """``(q - zero_point) * scale`` per slice along ``axis``; no zero points means symmetric."""
    _check_q_input(input, dtype)
    if out_dtype is None:
        out_dtype = torch.float32
    _check_axis(input, axis)
    check_bounds(quant_min, quant_max, dtype)
    q, order = swap_with_axis_zero(input, axis)
    shape = channel_view_shape(q, scales.shape[0])
    scales = scales.view(shape)
    if zero_points is None:
        x = q * scales
    else:
        x = (q - zero_points.view(shape)) * scales
    return x.to(out_dtype).permute(order)


def dequantize_per_channel_meta(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor | None,
    axis: int,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    *,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    _check_q_input(input, dtype)
    _check_axis(input, axis)
    check_bounds(quant_min, quant_max, dtype)
    return torch.empty_like(input, dtype=torch.float32 if out_dtype is None else out_dtype)


class FakeQuantPerChannelFunction(torch.autograd.Function):
    """Quantize-dequantize with a straight-through gradient masked to the unclamped range."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        input: Tensor,
        scales: Tensor,
        zero_points: Tensor,
        axis: int,
        quant_min: int,
        quant_max: int,
    ) -> Tensor:
        scales = scales.to(torch.float32)
        zero_points = zero_points.to(torch.int32)
        if input.dtype != torch.float32:
            raise AssertionError(f"Expecting input of dtype torch.float32, got {input.dtype}")
        _check_axis(input, axis)
        for dim in sorted(d for d in range(input.dim()) if d != axis):
            scales, zero_points = scales.unsqueeze(dim), zero_points.unsqueeze(dim)
        unclamped = torch.round(input * (1.0 / scales)) + zero_points
        ctx.save_for_backward((unclamped >= quant_min) & (unclamped <= quant_max))
        return (torch.clamp(unclamped, quant_min, quant_max) - zero_points) * scales

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore
        (in_range,) = ctx.saved_tensors
        return grad_output * in_range, None, None, None, None, None


# --- dtype conversion that pattern matchers must not fuse away ------------------------------


def convert_element_type(input: Tensor, dtype: torch.dtype) -> Tensor:
    # Always a fresh tensor (a kernel may not return an alias of its input), strides preserved.
    return torch.empty_like(input, dtype=dtype).copy_(input)
