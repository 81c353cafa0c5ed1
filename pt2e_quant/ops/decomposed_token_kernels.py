"""Kernels of the per-token and per-channel-group ``quantized_decomposed`` ops, for our fallback.

These serve dynamic activation quantization (one qparam pair per row of the last dimension)
and grouped weight quantization (one pair per ``group_size`` columns). Unlike the per-tensor
ops in :mod:`pt2e_quant.ops.decomposed_kernels`, torch adds the zero point *before* rounding
here, and keeps float64 scales until the final cast; we do the same so results stay
bit-identical to torch's.
"""

from __future__ import annotations

import math

import torch

from pt2e_quant.ops.decomposed_kernels import check_bounds

Tensor = torch.Tensor

# --- per-token (one qparam pair per row of the last dimension) ------------------------------


def choose_qparams_per_token(input: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    scales = input.abs().amax(dim=-1, keepdim=True)
    if scales.dtype == torch.float16:
        scales = scales.float()  # float16 scales overflow too easily
    if dtype != torch.int8:
        raise Exception(f"unsupported dtype in choose_qparams_per_token: {dtype}")  # noqa: TRY002
    scales = scales.clamp(min=1e-5).div(127)
    return scales, torch.zeros_like(scales)


def per_token_qparams_meta(input: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    shape = [*input.shape[:-1], 1]
    return (
        torch.empty(shape, dtype=torch.double, device=input.device),
        torch.empty(shape, dtype=torch.int64, device=input.device),
    )


def choose_qparams_per_token_asymmetric(input: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
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


def quantize_per_token(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
) -> Tensor:
    # Unlike per-tensor, the zero point is added before rounding.
    check_bounds(quant_min, quant_max, dtype)
    _check_per_token_qparams(input, scales, zero_points)
    shifted = input.mul(1.0 / scales).add(zero_points)
    return shifted.round().clamp(quant_min, quant_max).to(dtype)


def quantize_per_token_meta(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
) -> Tensor:
    check_bounds(quant_min, quant_max, dtype)
    return torch.empty_like(input, dtype=dtype)


def dequantize_per_token(
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


def dequantize_per_token_meta(
    input: Tensor,
    scales: Tensor,
    zero_points: Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    output_dtype: torch.dtype,
) -> Tensor:
    check_bounds(quant_min, quant_max, dtype)
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


def quantize_per_channel_group(
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


def quantize_per_channel_group_meta(
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


def dequantize_per_channel_group(
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
