"""Our own registration of the ``quantized_decomposed`` operators, for a torch that lacks them.

Convert emits ``torch.ops.quantized_decomposed.*`` calls and Inductor / ExecuTorch recognise
quantized regions by those exact overloads, so the schemas here must be character-for-character
the ones torch 2.13 defines in ``torch/ao/quantization/fx/_decomposed.py``, and the kernels must
give bit-identical results: a model converted on a torch without that module must lower and
run exactly as on one with it. So every kernel does the same arithmetic in the same order:
multiply by ``1.0 / scale`` (never divide: it rounds differently near .5), ``torch.round``
(half-to-even), add the zero point (before rounding for per-token and group ops, after it
otherwise), clamp, cast; and the checks raise the same exception types for the same inputs.

Nothing here runs on import: :func:`register_missing` is called by
:func:`pt2e_quant._compat.ensure_quantized_decomposed_ops` only when torch's module cannot be
imported, and it defines just the overloads nobody has defined yet, because defining an
existing schema a second time is an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.library import Library

__all__ = ["NAMESPACE", "OP_SPECS", "OpSpec", "expected_schemas", "register_missing"]

NAMESPACE = "quantized_decomposed"

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
_FLOAT_INPUTS = (torch.float32, torch.float16, torch.bfloat16)


# --- checks shared by the real and the Meta kernels (same exception types as torch's) -------


def _check_bounds(quant_min: int, quant_max: int, dtype: torch.dtype) -> None:
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
    if x.dtype not in _FLOAT_INPUTS:
        raise AssertionError(f"Expecting a float32/float16/bfloat16 input, got {x.dtype}")


def _swap_with_axis_zero(x: Tensor, axis: int) -> tuple[Tensor, tuple[int, ...]]:
    """Move ``axis`` to the front so per-channel qparams broadcast as ``(C, 1, ..., 1)``.

    The swap is its own inverse, so the same order permutes the result back; doing it this way
    (rather than broadcasting along ``axis``) also reproduces torch's output strides.
    """
    order = list(range(x.dim()))
    order[axis], order[0] = 0, axis
    return x.permute(tuple(order)), tuple(order)


def _channel_view_shape(x: Tensor, channels: int) -> list[int]:
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
    _check_bounds(quant_min, quant_max, dtype)
    inverse = 1.0 / scale
    return torch.clamp(torch.round(x * inverse) + zero_point, quant_min, quant_max).to(dtype)


def _quantize_per_tensor_meta(
    input: Tensor,
    scale: object,
    zero_point: object,
    quant_min: object,
    quant_max: object,
    dtype: torch.dtype,
) -> Tensor:
    _as_float32(input)
    return torch.empty_like(input, dtype=dtype)


def _quantize_per_tensor_tensor_meta(
    input: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    quant_min: object,
    quant_max: object,
    dtype: torch.dtype,
) -> Tensor:
    _check_one_element(scale, zero_point)
    return _quantize_per_tensor_meta(input, scale, zero_point, quant_min, quant_max, dtype)


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


def _dequantize_per_tensor_meta(
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


def _dequantize_per_tensor_tensor_meta(
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


def _from_tensor_qparams(kernel: Callable[..., Tensor]) -> Callable[..., Tensor]:
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


def _choose_qparams(symmetric: bool) -> Callable[..., tuple[Tensor, Tensor]]:
    """The kernel of ``choose_qparams.tensor`` or ``choose_qparams_symmetric.tensor``."""

    def kernel(
        input: Tensor, quant_min: int, quant_max: int, eps: float, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        _check_choose_qparams_args(input, quant_min, quant_max, dtype)
        return _range_qparams(input, quant_min, quant_max, eps, dtype, symmetric=symmetric)

    return kernel


def _qparams_meta(input: Tensor, *_ignored: object) -> tuple[Tensor, Tensor]:
    return (
        torch.empty(1, dtype=torch.double, device=input.device),
        torch.empty(1, dtype=torch.int64, device=input.device),
    )


def _choose_qparams_tensor_meta(
    input: Tensor, quant_min: int, quant_max: int, eps: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    _check_float_input(input)
    if quant_min >= quant_max:
        raise AssertionError(f"quant_min {quant_min} must be smaller than quant_max {quant_max}")
    return _qparams_meta(input)


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
    _check_bounds(quant_min, quant_max, dtype)
    x, order = _swap_with_axis_zero(x, axis)
    shape = _channel_view_shape(x, scales.shape[0])
    scales, zero_points = scales.view(shape), zero_points.view(shape)
    q = torch.clamp(torch.round(x * (1.0 / scales)) + zero_points, quant_min, quant_max)
    return q.permute(order).to(dtype)


def _quantize_per_channel_meta(
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
    _check_bounds(quant_min, quant_max, dtype)
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
    _check_bounds(quant_min, quant_max, dtype)
    q, order = _swap_with_axis_zero(input, axis)
    shape = _channel_view_shape(q, scales.shape[0])
    scales = scales.view(shape)
    if zero_points is None:
        x = q * scales
    else:
        x = (q - zero_points.view(shape)) * scales
    return x.to(out_dtype).permute(order)


def _dequantize_per_channel_meta(
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
    _check_bounds(quant_min, quant_max, dtype)
    return torch.empty_like(input, dtype=torch.float32 if out_dtype is None else out_dtype)


class _FakeQuantPerChannelFunction(torch.autograd.Function):
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


# --- per-token (one qparam pair per row of the last dimension) ------------------------------


def _choose_qparams_per_token(input: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    scales = input.abs().amax(dim=-1, keepdim=True)
    if scales.dtype == torch.float16:
        scales = scales.float()  # float16 scales overflow too easily
    if dtype != torch.int8:
        raise Exception(f"unsupported dtype in choose_qparams_per_token: {dtype}")  # noqa: TRY002
    scales = scales.clamp(min=1e-5).div(127)
    return scales, torch.zeros_like(scales)


def _per_token_qparams_meta(input: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    shape = [*input.shape[:-1], 1]
    return (
        torch.empty(shape, dtype=torch.double, device=input.device),
        torch.empty(shape, dtype=torch.int64, device=input.device),
    )


def _choose_qparams_per_token_asymmetric_impl(
    input: Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Int8 asymmetric per-token qparams, with the zero point chosen as XNNPACK does."""
    qmin, qmax = -128, 127
    low = torch.amin(input, dim=-1, keepdim=True)
    high = torch.amax(input, dim=-1, keepdim=True)
    low_neg = torch.min(low, torch.zeros_like(low))
    high_pos = torch.max(high, torch.zeros_like(high))
    scale = ((high_pos - low_neg) / float(qmax - qmin)).clamp(min=torch.finfo(torch.float32).eps)
    scaled_low, scaled_high = low_neg / scale, high_pos / scale
    # Take the zero point from whichever end of the range loses less to rounding.
    use_low = (qmin + scaled_low) + (qmax + scaled_high) > 0
    zero_point = torch.where(use_low, qmin - scaled_low, qmax - scaled_high)
    zero_point = torch.clamp(zero_point, qmin, qmax).round()
    return scale.to(torch.float64), zero_point.to(torch.int64)


def _check_per_token_qparams(input: Tensor, scales: Tensor, zero_points: Tensor) -> None:
    tokens = math.prod(list(input.size())[:-1])
    if tokens != scales.numel():
        raise AssertionError(f"num_tokens: {tokens} scales: {scales.size()}")
    if tokens != zero_points.numel():
        raise AssertionError(f"num_tokens: {tokens} zero_points: {zero_points.size()}")


def _quantize_per_token(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
) -> Tensor:
    # Unlike per-tensor, the zero point is added before rounding.
    _check_bounds(quant_min, quant_max, dtype)
    _check_per_token_qparams(input, scales, zero_points)
    shifted = input.mul(1.0 / scales).add(zero_points)
    return shifted.round().clamp(quant_min, quant_max).to(dtype)


def _quantize_per_token_meta(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
) -> Tensor:
    _check_bounds(quant_min, quant_max, dtype)
    return torch.empty_like(input, dtype=dtype)


def _dequantize_per_token(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    output_dtype: torch.dtype,
) -> Tensor:
    # scales are usually float64, so the product is cast down at the very end.
    return ((input - zero_points) * scales).to(output_dtype)


def _dequantize_per_token_meta(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    output_dtype: torch.dtype,
) -> Tensor:
    _check_bounds(quant_min, quant_max, dtype)
    return torch.empty_like(input, dtype=output_dtype)


# --- per-channel groups (2-d weights, one qparam pair per `group_size` columns of a row) ----


def _effective_group_size(x: Tensor, scales: Tensor, group_size: int) -> int:
    if group_size <= 1:
        raise AssertionError("group_size must be > 1")
    if group_size > x.shape[-1] and scales.shape[-1] == 1:
        group_size = x.shape[-1]  # a single column group, as GPTQ uses
    if x.shape[-1] % group_size != 0:
        raise AssertionError("input.shape[-1] must be divisible by group_size")
    if x.dim() != 2:
        raise AssertionError("input must be 2-dimensional")
    return group_size


def _quantize_per_channel_group(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    group_size: int,
) -> Tensor:
    group_size = _effective_group_size(input, scales, group_size)
    groups = input.reshape(-1, group_size)
    if torch.isnan(groups).sum() != 0:
        raise AssertionError("input must not contain NaNs")
    shifted = groups.mul(1.0 / scales.reshape(-1, 1)).add(zero_points.reshape(-1, 1))
    return shifted.round().clamp_(quant_min, quant_max).to(dtype).reshape_as(input)


def _quantize_per_channel_group_meta(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    group_size: int,
) -> Tensor:
    _effective_group_size(input, scales, group_size)
    return torch.empty_like(input, dtype=dtype)


def _dequantize_per_channel_group(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor | None,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    group_size: int,
    output_dtype: torch.dtype,
) -> Tensor:
    group_size = _effective_group_size(input, scales, group_size)
    groups = input.reshape(-1, group_size)
    scales = scales.reshape(-1, 1)
    if zero_points is None:
        zp = torch.zeros([], dtype=torch.int32, device=scales.device)
    else:
        zp = zero_points.reshape(-1, 1)
    return groups.sub(zp).mul(scales).reshape_as(input).to(output_dtype)


# --- dtype conversion that pattern matchers must not fuse away ------------------------------


def _convert_element_type(input: Tensor, dtype: torch.dtype) -> Tensor:
    # Always a fresh tensor (a kernel may not return an alias of its input), strides preserved.
    return torch.empty_like(input, dtype=dtype).copy_(input)


# --- the table, and registration ------------------------------------------------------------

_CEA = "CompositeExplicitAutograd"


@dataclass(frozen=True)
class OpSpec:
    """One overload: its definition (without namespace) and its kernel per dispatch key."""

    name: str
    overload: str
    schema: str
    kernels: tuple[tuple[str, Callable[..., object]], ...]

    @property
    def qualified_schema(self) -> str:
        """What ``str(torch.ops.quantized_decomposed.<name>.<overload>._schema)`` prints."""
        return f"{NAMESPACE}::{self.schema}"


def _spec(
    schema: str, real: Callable[..., object], meta: Callable[..., object] | None, key: str = _CEA
) -> OpSpec:
    qualified = schema.split("(", 1)[0]
    name, _, overload = qualified.partition(".")
    kernels = ((key, real),) if meta is None else ((key, real), ("Meta", meta))
    return OpSpec(name, overload or "default", schema, kernels)


_PER_TENSOR_ARGS = "int quant_min, int quant_max, ScalarType dtype"
_TENSOR2_ARGS = "Tensor quant_min, Tensor quant_max, ScalarType dtype"
_OUT_DTYPE = "*, ScalarType? out_dtype=None"
_QPARAMS = "(Tensor, Tensor)"

#: Every overload torch 2.13 defines in the namespace, in its order.
OP_SPECS: tuple[OpSpec, ...] = (
    _spec(
        "quantize_per_tensor(Tensor input, float scale, int zero_point, "
        f"{_PER_TENSOR_ARGS}) -> Tensor",
        quantize_per_tensor,
        _quantize_per_tensor_meta,
    ),
    _spec(
        "quantize_per_tensor.tensor(Tensor input, Tensor scale, Tensor zero_point, "
        f"{_PER_TENSOR_ARGS}) -> Tensor",
        _from_tensor_qparams(quantize_per_tensor),
        _quantize_per_tensor_tensor_meta,
    ),
    _spec(
        "quantize_per_tensor.tensor2(Tensor input, Tensor scale, Tensor zero_point, "
        f"{_TENSOR2_ARGS}) -> Tensor",
        _from_tensor_qparams(quantize_per_tensor),
        _quantize_per_tensor_tensor_meta,
    ),
    _spec(
        "dequantize_per_tensor(Tensor input, float scale, int zero_point, "
        f"{_PER_TENSOR_ARGS}, {_OUT_DTYPE}) -> Tensor",
        dequantize_per_tensor,
        _dequantize_per_tensor_meta,
    ),
    _spec(
        "dequantize_per_tensor.tensor(Tensor input, Tensor scale, Tensor zero_point, "
        f"{_PER_TENSOR_ARGS}, {_OUT_DTYPE}) -> Tensor",
        _from_tensor_qparams(dequantize_per_tensor),
        _dequantize_per_tensor_tensor_meta,
    ),
    _spec(
        "dequantize_per_tensor.tensor2(Tensor input, Tensor scale, Tensor zero_point, "
        f"{_TENSOR2_ARGS}, {_OUT_DTYPE}) -> Tensor",
        _from_tensor_qparams(dequantize_per_tensor),
        _dequantize_per_tensor_tensor_meta,
    ),
    _spec(
        "choose_qparams.tensor(Tensor input, int quant_min, int quant_max, float eps, "
        f"ScalarType dtype) -> {_QPARAMS}",
        _choose_qparams(False),
        _choose_qparams_tensor_meta,
    ),
    _spec(
        "choose_qparams_symmetric.tensor(Tensor input, int quant_min, int quant_max, "
        f"float eps, ScalarType dtype) -> {_QPARAMS}",
        _choose_qparams(True),
        _qparams_meta,
    ),
    _spec(
        "quantize_per_channel(Tensor input, Tensor scales, Tensor zero_points, int axis, "
        f"{_PER_TENSOR_ARGS}) -> Tensor",
        quantize_per_channel,
        _quantize_per_channel_meta,
    ),
    _spec(
        "dequantize_per_channel(Tensor input, Tensor scales, Tensor? zero_points, int axis, "
        f"{_PER_TENSOR_ARGS}, {_OUT_DTYPE}) -> Tensor",
        dequantize_per_channel,
        _dequantize_per_channel_meta,
    ),
    _spec(
        f"choose_qparams_per_token(Tensor input, ScalarType dtype) -> {_QPARAMS}",
        _choose_qparams_per_token,
        _per_token_qparams_meta,
    ),
    # Composite-implicit: it decomposes into aten ops wherever it is called directly.
    _spec(
        f"_choose_qparams_per_token_asymmetric_impl(Tensor input, ScalarType dtype) -> {_QPARAMS}",
        _choose_qparams_per_token_asymmetric_impl,
        None,
        key="CompositeImplicitAutograd",
    ),
    _spec(
        f"choose_qparams_per_token_asymmetric(Tensor input, ScalarType dtype) -> {_QPARAMS}",
        _choose_qparams_per_token_asymmetric_impl,
        _per_token_qparams_meta,
    ),
    _spec(
        "quantize_per_token(Tensor input, Tensor scales, Tensor zero_points, "
        f"{_PER_TENSOR_ARGS}) -> Tensor",
        _quantize_per_token,
        _quantize_per_token_meta,
    ),
    _spec(
        "dequantize_per_token(Tensor input, Tensor scales, Tensor zero_points, "
        f"{_PER_TENSOR_ARGS}, ScalarType output_dtype) -> Tensor",
        _dequantize_per_token,
        _dequantize_per_token_meta,
    ),
    _spec(
        "quantize_per_channel_group(Tensor input, Tensor scales, Tensor zero_points, "
        f"{_PER_TENSOR_ARGS}, int group_size) -> Tensor",
        _quantize_per_channel_group,
        _quantize_per_channel_group_meta,
    ),
    # torch registers no Meta kernel here either; the composite kernel traces under fake mode.
    _spec(
        "dequantize_per_channel_group(Tensor input, Tensor scales, Tensor? zero_points, "
        f"{_PER_TENSOR_ARGS}, int group_size, ScalarType output_dtype) -> Tensor",
        _dequantize_per_channel_group,
        None,
    ),
    # An Autograd kernel, so the straight-through gradient survives; Meta for tracing.
    _spec(
        "fake_quant_per_channel(Tensor input, Tensor scales, Tensor zero_points, int axis, "
        "int quant_min, int quant_max) -> Tensor",
        _FakeQuantPerChannelFunction.apply,
        lambda input, *_: torch.empty_like(input),
        key="Autograd",
    ),
    _spec(
        "convert_element_type.no_fuse(Tensor input, ScalarType dtype) -> Tensor",
        _convert_element_type,
        lambda input, dtype: torch.empty_like(input, dtype=dtype),
    ),
)


def expected_schemas() -> dict[str, str]:
    """``"name.overload"`` -> the schema string torch 2.13 prints for it."""
    return {f"{spec.name}.{spec.overload}": spec.qualified_schema for spec in OP_SPECS}


def _is_defined(spec: OpSpec) -> bool:
    """Whether anyone (torch, torchao, ExecuTorch, an earlier call) already defined it."""
    try:
        packet = getattr(getattr(torch.ops, NAMESPACE), spec.name)
        getattr(packet, spec.overload)
    except (AttributeError, RuntimeError):
        return False
    return True


#: Kept alive for the life of the process: dropping a Library unregisters what it defined.
_LIBRARIES: list[Library] = []


def register_missing() -> tuple[str, ...]:
    """Define every overload of :data:`OP_SPECS` that is not defined yet; returns their names.

    A ``FRAGMENT`` library is used so the namespace is not claimed exclusively: another
    package defining the rest of it must still be able to.
    """
    missing = [spec for spec in OP_SPECS if not _is_defined(spec)]
    if not missing:
        return ()
    library = Library(NAMESPACE, "FRAGMENT")
    _LIBRARIES.append(library)
    for spec in missing:
        library.define(spec.schema)
        qualified = spec.name if spec.overload == "default" else f"{spec.name}.{spec.overload}"
        for key, kernel in spec.kernels:
            library.impl(qualified, kernel, key)
    return tuple(f"{spec.name}.{spec.overload}" for spec in missing)
