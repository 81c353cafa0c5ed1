"""Per-channel range estimators for weights: MSE-optimal and percentile clipping per channel.

A weight is small enough to search on directly, so these observers need no histogram: each
channel's range is chosen from the values themselves (exact squared error for MSE, exact
order statistics for the percentile). The search runs once per distinct tensor, in the
forward that first sees it. A weight is observed with the same tensor object at every
calibration batch; seeing it again unmodified (same object, same version counter) is skipped
at the cost of one comparison, so calibration costs less than a min/max observer's after the
first batch. Distinct tensors (an activation observed per channel) are each searched, and the
range kept is, per channel, the widest of their chosen ranges, the way min/max accumulates.

Degenerate data behaves as in :class:`~pt2e_quant.observer.PerChannelMinMaxObserver`
(running ``min_val`` / ``max_val`` are kept exactly as it keeps them): NaN/Inf values are
dropped per channel with one warning and excluded from the search, an all-zero or constant
channel gets that channel's min/max qparams, a channel that never saw a finite value gets
the qparams of an all-zero channel, an empty batch is a no-op (reported once), an observer
that saw nothing returns scale 1.0 / zero point 0 with a warning.
"""

from __future__ import annotations

import abc
import weakref
from typing import Any

import torch

from pt2e_quant.observer.base import _EPS_F32, UnsupportedObserverConfigError
from pt2e_quant.observer.minmax import PerChannelMinMaxObserver
from pt2e_quant.observer.range_estimators import check_percentile
from pt2e_quant.observer.range_histogram import report_degenerate
from pt2e_quant.observer.range_search import search_clipping_ratio

__all__ = ["PerChannelMSEObserver", "PerChannelPercentileObserver"]

#: elements of one (candidates, channels, values) block of the MSE search (16 MiB of float32)
_SEARCH_BLOCK_ELEMENTS = 1 << 22
#: the per-channel ratio grid: 1, 15/16, ..., 1/16, then 8 steps of 1/128 either side
_CHANNEL_COARSE_RATIOS = 16
_CHANNEL_FINE_RATIOS = 8


class _PerChannelClippingObserver(PerChannelMinMaxObserver, abc.ABC):
    """Per-channel running min/max plus a per-channel clipping range chosen per tensor."""

    clip_min: torch.Tensor
    clip_max: torch.Tensor

    def __init__(
        self,
        ch_axis: int | None = 0,
        dtype: torch.dtype | None = torch.quint8,
        qscheme: torch.qscheme | None = torch.per_channel_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float | None = _EPS_F32,
        is_dynamic: bool | None = False,
    ) -> None:
        if qscheme == torch.per_channel_affine_float_qparams:
            raise UnsupportedObserverConfigError(
                f"{type(self).__name__}: qscheme=torch.per_channel_affine_float_qparams "
                "(embedding tables) is not supported; use PerChannelMinMaxObserver"
            )
        super().__init__(
            ch_axis=ch_axis,
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            factory_kwargs=factory_kwargs,
            eps=eps,
            is_dynamic=is_dynamic,
        )
        fk = torch.nn.factory_kwargs(factory_kwargs)
        self.register_buffer("clip_min", torch.tensor([], **fk))
        self.register_buffer("clip_max", torch.tensor([], **fk))
        self._last_input: weakref.ref | None = None
        self._last_version = -1

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        if self._seen_unchanged(x_orig):
            return x_orig
        if x_orig.numel() == 0:
            report_degenerate(self, "empty", "got an empty batch; it adds nothing")
            return x_orig
        super().forward(x_orig)  # running min/max, NaN/Inf dropped and reported
        rows = self._rows(x_orig)
        finite = torch.isfinite(rows)
        all_finite = bool(finite.all())
        if not all_finite:
            rows = torch.where(finite, rows, 0.0)
        inf = torch.tensor(float("inf"), dtype=rows.dtype, device=rows.device)
        low = torch.where(finite, rows, inf).amin(dim=1) if not all_finite else rows.amin(dim=1)
        high = torch.where(finite, rows, -inf).amax(dim=1) if not all_finite else rows.amax(dim=1)
        seen = low <= high
        low, high = torch.where(seen, low, 0.0), torch.where(seen, high, 0.0)
        clip_low, clip_high = self._clip_rows(rows, None if all_finite else finite, low, high)
        # A constant channel (all zeros, say) has nothing to clip: its min/max range.
        constant = low == high
        clip_low, clip_high = (
            torch.where(constant, low, clip_low),
            torch.where(constant, high, clip_high),
        )
        self._merge(clip_low, clip_high, seen)
        if bool(seen.any()) and float(low[seen].min()) == float(high[seen].max()):
            report_degenerate(
                self,
                "constant",
                f"got a batch whose finite values are all {float(high[seen].max())}; there is "
                "no range to clip, so its qparams are PerChannelMinMaxObserver's",
            )
        self._last_input = weakref.ref(x_orig)
        self._last_version = x_orig._version
        return x_orig

    def _seen_unchanged(self, x: torch.Tensor) -> bool:
        last = self._last_input() if self._last_input is not None else None
        return last is x and x._version == self._last_version

    @abc.abstractmethod
    def _clip_rows(
        self,
        rows: torch.Tensor,
        finite: torch.Tensor | None,
        low: torch.Tensor,
        high: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel clipping range of ``rows`` ((channels, values), non-finite entries
        zeroed and marked False in ``finite`` when there are any) within [low, high]."""

    def _merge(self, low: torch.Tensor, high: torch.Tensor, seen: torch.Tensor) -> None:
        if self.clip_min.shape != low.shape:
            new_low = torch.where(seen, low, float("inf"))
            new_high = torch.where(seen, high, float("-inf"))
        else:
            new_low = torch.where(seen, torch.minimum(low, self.clip_min), self.clip_min)
            new_high = torch.where(seen, torch.maximum(high, self.clip_max), self.clip_max)
        self.clip_min.resize_(new_low.shape).copy_(new_low)
        self.clip_max.resize_(new_high.shape).copy_(new_high)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (scale, zero_point) of the chosen ranges; 1-element defaults (with a
        warning) before any data."""
        if self.clip_min.shape != self.min_val.shape:  # e.g. a min/max-only checkpoint
            return self._calculate_qparams(self.min_val, self.max_val)
        return self._calculate_qparams(self.clip_min, self.clip_max)

    def reset_min_max_vals(self) -> None:
        """Forget the recorded ranges (the channel count is re-learned from the next batch)."""
        super().reset_min_max_vals()
        self.clip_min.resize_(0)
        self.clip_max.resize_(0)
        self._last_input = None

    def _resizable_buffers(self) -> tuple[str, ...]:
        return ("min_val", "max_val", "clip_min", "clip_max")

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        return {**state, "_last_input": None}  # a weak reference cannot be pickled

    def extra_repr(self) -> str:
        return super().extra_repr() + f", clip_min={self.clip_min}, clip_max={self.clip_max}"


class PerChannelMSEObserver(_PerChannelClippingObserver):
    """Per channel, the clipping range with the smallest squared quantization error.

    For each channel, candidate ranges scale that channel's min/max range by a ratio (16
    ratios from 1 down to 1/16, then 17 at 1/128 spacing around the best); each candidate is
    quantized with the qparams convert would use and its exact squared error over the channel's
    values is measured, all channels at once. Ties keep the wider range. For weights (conv,
    linear); ``ch_axis`` as in PerChannelMinMaxObserver.
    """

    def _clip_rows(
        self,
        rows: torch.Tensor,
        finite: torch.Tensor | None,
        low: torch.Tensor,
        high: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        low64 = torch.clamp(low, max=0).to("cpu", torch.float64)
        high64 = torch.clamp(high, min=0).to("cpu", torch.float64)
        values = rows.to(torch.float32)
        mask = finite.to(torch.float32) if finite is not None else None

        def error_of(ratios: torch.Tensor) -> torch.Tensor:
            block = max(1, _SEARCH_BLOCK_ELEMENTS // max(1, values.numel()))
            parts = [
                self._squared_errors(
                    values, mask, ratios[i : i + block] * low64, ratios[i : i + block] * high64
                )
                for i in range(0, ratios.shape[0], block)
            ]
            return torch.cat(parts)

        ratio = search_clipping_ratio(
            error_of, rows.shape[0], _CHANNEL_COARSE_RATIOS, _CHANNEL_FINE_RATIOS
        )
        return (ratio * low64).to(low), (ratio * high64).to(high)

    def _squared_errors(
        self,
        values: torch.Tensor,
        mask: torch.Tensor | None,
        lows: torch.Tensor,
        highs: torch.Tensor,
    ) -> torch.Tensor:
        """(K, channels) squared quantization error of each candidate range, quantized as
        convert does: ``clamp(round(x * (1 / scale)) + zero_point)``, then back. (Plain
        elementwise ops: ``fake_quantize_per_channel_affine`` is three times slower here.)"""
        like = {"dtype": self.min_val.dtype, "device": values.device}
        scale, zero_point = self._calculate_qparams(lows.to(**like), highs.to(**like))
        scale = scale.to(torch.float32)[:, :, None]
        zero_point = zero_point.to(torch.float32)[:, :, None]
        quantized = torch.round(values[None] * (1.0 / scale)).add_(zero_point)
        quantized = quantized.clamp_(self.quant_min, self.quant_max)
        error = quantized.sub_(zero_point).mul_(scale).sub_(values[None]).square_()
        if mask is not None:
            error.mul_(mask[None])
        return error.sum(dim=2).to("cpu", torch.float64)


class PerChannelPercentileObserver(_PerChannelClippingObserver):
    """Per channel, the range ``[q(1 - p), q(p)]`` of that channel's values,
    ``p = percentile / 100``, ``q`` exactly ``torch.quantile`` (linear interpolation between
    order statistics). ``percentile=100`` is PerChannelMinMaxObserver.
    """

    def __init__(
        self,
        percentile: float = 99.99,
        ch_axis: int | None = 0,
        dtype: torch.dtype | None = torch.quint8,
        qscheme: torch.qscheme | None = torch.per_channel_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float | None = _EPS_F32,
        is_dynamic: bool | None = False,
    ) -> None:
        self.percentile = check_percentile(type(self).__name__, percentile)
        super().__init__(
            ch_axis=ch_axis,
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            factory_kwargs=factory_kwargs,
            eps=eps,
            is_dynamic=is_dynamic,
        )

    def _clip_rows(
        self,
        rows: torch.Tensor,
        finite: torch.Tensor | None,
        low: torch.Tensor,
        high: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.percentile == 100:
            return low, high
        if finite is not None:  # non-finite entries sort last and are not counted
            rows = torch.where(finite, rows, float("inf"))
        ordered = rows.sort(dim=1).values.to(torch.float64)
        count = (
            finite.sum(dim=1) if finite is not None else torch.full_like(low, rows.shape[1])
        ).to(torch.float64)
        share = self.percentile / 100
        return (
            _order_statistic(ordered, count, 1 - share).to(low.dtype),
            _order_statistic(ordered, count, share).to(high.dtype),
        )

    def extra_repr(self) -> str:
        return f"percentile={self.percentile}, " + super().extra_repr()


def _order_statistic(ordered: torch.Tensor, count: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per row, the ``fraction`` quantile of its first ``count`` sorted values, interpolated
    linearly at position ``(count - 1) * fraction`` as torch.quantile does (0 for an empty row)."""
    position = (count - 1).clamp(min=0) * fraction
    below = position.floor().to(torch.int64)[:, None]
    above = position.ceil().to(torch.int64)[:, None]
    low_value = ordered.gather(1, below).squeeze(1)
    high_value = ordered.gather(1, above).squeeze(1)
    result = low_value + (high_value - low_value) * (position - below.squeeze(1))
    return torch.where(count > 0, result, 0.0)
