"""The running statistics of the per-tensor range estimators: a histogram on a power-of-two grid.

Every bin is ``[k * w, (k + 1) * w)`` for an integer ``k`` and a bin width ``w = 2**e``; the
stored bins are ``first_bin .. first_bin + len(histogram) - 1`` and always include bin 0, so
zero (which every quantization range contains) sits on an edge. A batch that reaches beyond
the stored bins extends them; when that would exceed ``2 * bins + 1`` bins, the width doubles
(as often as needed) and each pair of neighbouring bins merges into one. Merging pairs is exact:
no value ever moves to a bin it was not in, unlike re-binning onto arbitrary new edges, so many
calibration batches accumulate without drift. Counts are integers (int64).

Resolution: the first batch with a non-zero range gets between ``bins`` and ``2 * bins + 1``
bins over its zero-including range, and that stays true as the range grows. Memory is bounded
by ``2 * bins + 1`` counts. The result is deterministic for a given sequence of batches; the
order of batches can change the grid (the first batch fixes the starting width).

Degenerate data, as the min/max observers define it: NaN/Inf values (and values a float32
statistic cannot hold) are dropped with one :class:`NonFiniteObservationWarning`; a batch with
nothing finite is a no-op; an empty batch is a no-op reported once; data that is one value so
far (all zeros, a constant) gets exactly MinMaxObserver's qparams and is reported once; an
observer that saw nothing returns scale 1.0 / zero point 0 with a warning.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch

from pt2e_quant.errors import SpecError, warn_user
from pt2e_quant.observer.base import (
    _EPS_F32,
    PER_TENSOR_QSCHEMES,
    UniformQuantizationObserverBase,
    UnsupportedObserverConfigError,
    observing,
)

__all__ = ["DegenerateObservationWarning", "HistogramRangeObserver", "report_degenerate"]

#: the smallest bin width, 2**-140 (a float32 subnormal step multiple, so edges stay exact)
_MIN_WIDTH_EXPONENT = -140
_F32_MAX = torch.finfo(torch.float32).max


class DegenerateObservationWarning(UserWarning):
    """A range estimator got data it cannot estimate from (an empty batch, or one value so
    far); it behaves as MinMaxObserver does and says so once per observer."""


def report_degenerate(observer: torch.nn.Module, kind: str, what: str) -> None:
    """Warn that ``observer`` met degenerate data of ``kind``, once per observer and kind."""
    reported: set[str] = observer.__dict__.setdefault("_degenerate_reported", set())
    if kind not in reported:
        reported.add(kind)
        warn_user(
            f"{type(observer).__name__}{observing(observer)} {what} (reported once per observer).",
            DegenerateObservationWarning,
        )


def check_bins(owner: str, bins: Any) -> int:
    """``bins`` validated (a positive int); None means the default 2048."""
    bins = 2048 if bins is None else bins
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise SpecError(f"{owner}: bins={bins!r} must be a positive int (2048 by default)")
    return bins


def _initial_exponent(span: float, bins: int) -> int:
    """``e`` with ``span / 2**e`` in ``[bins, 2 * bins)``: at least ``bins`` bins over the span."""
    if span <= 0:
        return _MIN_WIDTH_EXPONENT
    _, exponent = math.frexp(span / bins)  # span / bins = m * 2**exponent, m in [0.5, 1)
    return max(exponent - 1, _MIN_WIDTH_EXPONENT)


def merges_needed(low_bin: int, high_bin: int, capacity: int) -> int:
    """The fewest width doublings after which bins ``low_bin..high_bin`` fit in ``capacity``."""
    shift = max(0, (high_bin - low_bin).bit_length() - capacity.bit_length() - 1)
    while (high_bin >> shift) - (low_bin >> shift) + 1 > capacity:
        shift += 1
    return shift


class HistogramRangeObserver(UniformQuantizationObserverBase, abc.ABC):
    """Base of the per-tensor range estimators: accumulation, state, degenerate cases, caching.

    A subclass implements :meth:`_choose_range`, returning the clipping range (as Python
    floats) from :meth:`histogram_edges_and_counts` and ``min_val`` / ``max_val``. The qparams
    of that range come from the base class's min/max mapping, so they follow the spec's qscheme
    and quantization range exactly as MinMaxObserver's do; they are cached until the next batch.
    """

    histogram: torch.Tensor
    first_bin: torch.Tensor
    width_exponent: torch.Tensor
    min_val: torch.Tensor
    max_val: torch.Tensor

    def __init__(
        self,
        bins: int = 2048,
        dtype: torch.dtype | None = torch.quint8,
        qscheme: torch.qscheme | None = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float | None = _EPS_F32,
        is_dynamic: bool | None = False,
    ) -> None:
        owner = type(self).__name__
        if qscheme is not None and qscheme not in PER_TENSOR_QSCHEMES:
            raise UnsupportedObserverConfigError(
                f"{owner}: qscheme={qscheme} is per-channel; this estimator is per-tensor "
                "(use PerChannelMSEObserver or PerChannelPercentileObserver for weights)"
            )
        if is_dynamic:
            raise UnsupportedObserverConfigError(
                f"{owner}: range estimators calibrate static ranges; dynamic quantization "
                "chooses its qparams at run time (use PlaceholderObserver with is_dynamic=True)"
            )
        self.bins = check_bins(owner, bins)
        super().__init__(
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
        device = fk.get("device")
        self.register_buffer("histogram", torch.zeros(0, dtype=torch.int64, device=device))
        self.register_buffer("first_bin", torch.tensor(0, dtype=torch.int64, device=device))
        self.register_buffer(
            "width_exponent", torch.tensor(_MIN_WIDTH_EXPONENT, dtype=torch.int64, device=device)
        )
        self.register_buffer("min_val", torch.tensor(float("inf"), **fk))
        self.register_buffer("max_val", torch.tensor(float("-inf"), **fk))
        self._reject_symmetric_reduced_quint8()
        self._observations = 0
        self._cached: tuple[Any, tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def bin_capacity(self) -> int:
        """The most bins the running histogram may span; a wider span doubles the bin width
        (merging bins in pairs) until it fits. A merge across ranks obeys the same bound."""
        return 2 * self.bins + 1

    # ------------------------------------------------------------------ observing

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        if x_orig.numel() == 0:
            report_degenerate(self, "empty", "got an empty batch; it adds nothing")
            return x_orig
        x = x_orig.detach()
        low, high = torch.aminmax(x)
        if not (_storable(float(low)) and _storable(float(high))):
            self._report_non_finite()
            x = x[torch.isfinite(x) & (x.abs() <= _F32_MAX)]
            if x.numel() == 0:
                return x_orig
            low, high = torch.aminmax(x)
        self._accumulate(x, float(low), float(high))
        self._observations += 1
        if float(self.min_val) == float(self.max_val):
            report_degenerate(
                self,
                "constant",
                f"has seen only the value {float(self.min_val)} so far; there is no range to "
                "clip, so until wider data arrives its qparams are MinMaxObserver's",
            )
        return x_orig

    def _accumulate(self, x: torch.Tensor, low: float, high: float) -> None:
        started = self.histogram.numel() > 0
        exponent = int(self.width_exponent) if started else None
        if exponent is None:
            exponent = _initial_exponent(max(high, 0.0) - min(low, 0.0), self.bins)
        width = math.ldexp(1.0, exponent)
        batch_low, batch_high = (
            math.floor(min(low, 0.0) / width),
            math.floor(max(high, 0.0) / width),
        )
        old_first = int(self.first_bin)
        old_last = old_first + self.histogram.numel() - 1
        first = min(batch_low, old_first) if started else batch_low
        last = max(batch_high, old_last) if started else batch_high
        shift = merges_needed(first, last, self.bin_capacity)
        first, last, exponent = first >> shift, last >> shift, exponent + shift
        histogram = self.histogram
        if started and (shift or first != old_first or last != old_last):
            histogram = self.regrid(histogram, old_first, shift, first, last - first + 1)
        elif not started:
            histogram = torch.zeros(last - first + 1, dtype=torch.int64, device=x.device)
        batch = _bin_counts(x, first, last, math.ldexp(1.0, exponent))
        self._store(histogram + batch.to(histogram.device), first, exponent, low, high)

    @staticmethod
    def regrid(
        histogram: torch.Tensor, old_first: int, shift: int, first: int, size: int
    ) -> torch.Tensor:
        """The stored counts on the new grid: bin ``k`` moves to bin ``k >> shift``."""
        old_bins = torch.arange(histogram.numel(), device=histogram.device) + old_first
        new_index = torch.bitwise_right_shift(old_bins, min(shift, 62)) - first
        regridded = torch.zeros(size, dtype=torch.int64, device=histogram.device)
        return regridded.index_add_(0, new_index, histogram)

    def _store(
        self, histogram: torch.Tensor, first: int, exponent: int, low: float, high: float
    ) -> None:
        self.histogram.resize_(histogram.shape)
        self.histogram.copy_(histogram)
        self.first_bin.fill_(first)
        self.width_exponent.fill_(exponent)
        self.min_val.copy_(torch.clamp(self.min_val, max=low))
        self.max_val.copy_(torch.clamp(self.max_val, min=high))

    # ------------------------------------------------------------------ choosing the range

    def histogram_edges_and_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Bin edges (float64, clamped to [min_val, max_val]) and counts (float64), on the CPU."""
        width = math.ldexp(1.0, int(self.width_exponent))
        first = int(self.first_bin)
        steps = torch.arange(self.histogram.numel() + 1, dtype=torch.float64) + first
        edges = (steps * width).clamp(min=float(self.min_val), max=float(self.max_val))
        return edges, self.histogram.detach().to("cpu", torch.float64)

    def bin_width(self) -> float:
        """The current bin width (0.0 before any data)."""
        return math.ldexp(1.0, int(self.width_exponent)) if self.histogram.numel() else 0.0

    @abc.abstractmethod
    def _choose_range(self) -> tuple[float, float]:
        """The clipping range (low, high) for the accumulated, non-constant statistics."""

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero_point) of the estimated range as 1-element tensors; MinMaxObserver's
        for one-value data; scale 1.0 / zero point 0 (with a warning) before any finite data."""
        if not self.has_observed_data():
            return self._default_qparams(self.min_val.device)
        key = (self._observations, self.min_val.dtype, self.min_val.device, id(self.histogram))
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._calculate_qparams(*self._range_tensors()))
        scale, zero_point = self._cached[1]
        return scale.clone(), zero_point.clone()

    def clipping_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (low, high) range the qparams are computed from, in the statistics' dtype:
        within [min_val, max_val], and exactly those two buffers when nothing is clipped."""
        if not self.has_observed_data():
            return self.min_val.clone(), self.max_val.clone()
        return self._range_tensors()

    def _range_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if bool(self.min_val == self.max_val):
            return self.min_val, self.max_val
        low, high = self._choose_range()
        low, high = max(low, float(self.min_val)), min(high, float(self.max_val))
        like = {"dtype": self.min_val.dtype, "device": self.min_val.device}
        low_t = self.min_val if low <= float(self.min_val) else torch.tensor(low, **like)
        high_t = self.max_val if high >= float(self.max_val) else torch.tensor(high, **like)
        return low_t, high_t

    def has_observed_data(self) -> bool:
        return bool(self.min_val <= self.max_val) and self.histogram.numel() > 0

    def reset_min_max_vals(self) -> None:
        """Forget the histogram and range (back to the never-calibrated state)."""
        self.histogram.resize_(0)
        self.first_bin.fill_(0)
        self.width_exponent.fill_(_MIN_WIDTH_EXPONENT)
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))
        self._observations += 1

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._observations += 1
        super()._load_from_state_dict(*args, **kwargs)

    def _resizable_buffers(self) -> tuple[str, ...]:
        return ("histogram",)

    def extra_repr(self) -> str:
        return (
            f"bins={self.bins}, min_val={float(self.min_val)}, max_val={float(self.max_val)}, "
            f"stored_bins={self.histogram.numel()}"
        )


def _storable(value: float) -> bool:
    """Finite and within float32's range (the statistics' dtype)."""
    return math.isfinite(value) and abs(value) <= _F32_MAX


def _bin_counts(x: torch.Tensor, first: int, last: int, width: float) -> torch.Tensor:
    """Counts of ``x`` in bins ``first..last`` of width ``width`` (int64).

    ``torch.histc`` does it in one pass; its edges ``k * width`` are exact in float32 (a power
    of two times a small integer), so every value lands in its bin. A grid wider than float32
    can express (data spanning more than 3.4e38) falls back to computing each value's bin.
    """
    size = last - first + 1
    values = x.reshape(-1)
    if values.dtype != torch.float32:
        values = values.to(torch.float32)
    low_edge, high_edge = first * width, (last + 1) * width
    if high_edge - low_edge <= _F32_MAX:  # histc measures from the low edge in float32
        counts = torch.histc(values, bins=size, min=low_edge, max=high_edge)
        return counts.round().to(torch.int64)
    index = torch.floor(values * (1.0 / width)).clamp_(first, last).to(torch.int64) - first
    return torch.bincount(index, minlength=size)
