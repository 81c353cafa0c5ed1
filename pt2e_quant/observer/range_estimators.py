"""Per-tensor range estimators: percentile, MSE-optimal and KL (entropy) clipping.

Min/max ranges let one outlier stretch the quantization step for every other value; these
observers clip instead. All three accumulate the same exact running histogram
(:class:`~pt2e_quant.observer.range_histogram.HistogramRangeObserver`), so calibrating over
many batches is well defined and memory-bounded, and differ only in how ``calculate_qparams``
picks the clipping range from it (then cached until the next batch):

* :class:`PercentileObserver` keeps the central ``percentile`` of the values.
* :class:`MSEObserver` minimises the expected squared quantization error of the histogram,
  rounding and clipping together, evaluated in closed form for every candidate range.
* :class:`KLDivergenceObserver` is TensorRT's entropy calibration: the threshold whose clipped
  and quantized distribution loses the least information (smallest KL divergence).

The chosen range goes through the same min/max -> qparams mapping as MinMaxObserver's, so the
result follows the spec's qscheme, dtype and quant_min/quant_max exactly; when the estimator
keeps the full range the qparams are MinMaxObserver's bit for bit. Constructor arguments are
MinMaxObserver's plus the estimator's own knobs, so ``X.with_args(...)`` replaces a MinMax
observer in any spec.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch

from pt2e_quant.errors import SpecError
from pt2e_quant.observer.base import _EPS_F32, SYMMETRIC_QSCHEMES
from pt2e_quant.observer.range_histogram import HistogramRangeObserver
from pt2e_quant.observer.range_search import (
    histogram_percentile,
    histogram_quantization_mse,
    kl_clipping_bins,
    search_clipping_ratio,
)

__all__ = ["KLDivergenceObserver", "MSEObserver", "PercentileObserver", "check_percentile"]

#: rounds of the affine MSE search that move one end of the range with the other fixed
_COORDINATE_ROUNDS = 2


def check_percentile(owner: str, percentile: Any) -> float:
    """``percentile`` validated: a number in (50, 100]; None means the default 99.99."""
    percentile = 99.99 if percentile is None else percentile
    if (
        isinstance(percentile, bool)
        or not isinstance(percentile, numbers.Real)
        or not 50 < float(percentile) <= 100
    ):
        raise SpecError(
            f"{owner}: percentile={percentile!r} must be a number in (50, 100] (the share of "
            "values kept inside the range, in percent; 100 keeps min/max)"
        )
    return float(percentile)


class PercentileObserver(HistogramRangeObserver):
    """Clips the ``(100 - percentile)`` percent most extreme values of each tail.

    The range is ``[q(1 - p), q(p)]`` with ``p = percentile / 100`` and ``q`` the histogram's
    quantile (linear within a bin, so within one bin width of ``torch.quantile``); a symmetric
    qscheme then uses the larger magnitude, as MinMaxObserver does. ``percentile=100`` is
    exactly MinMaxObserver. Cheap and predictable; the right choice when the share of outliers
    is known (e.g. 99.99 for activations with rare spikes).
    """

    def __init__(
        self,
        percentile: float = 99.99,
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
        self.percentile = check_percentile(type(self).__name__, percentile)
        super().__init__(
            bins=bins,
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            factory_kwargs=factory_kwargs,
            eps=eps,
            is_dynamic=is_dynamic,
        )

    def _choose_range(self) -> tuple[float, float]:
        if self.percentile == 100:
            return float(self.min_val), float(self.max_val)
        edges, counts = self.histogram_edges_and_counts()
        share = self.percentile / 100
        return histogram_percentile(edges, counts, 1 - share), histogram_percentile(
            edges, counts, share
        )

    def extra_repr(self) -> str:
        return f"percentile={self.percentile}, " + super().extra_repr()


class MSEObserver(HistogramRangeObserver):
    """The clipping range with the smallest expected squared quantization error.

    Candidate ranges scale the min/max range by a ratio in (0, 1] (32 ratios, then 17 around
    the best); each candidate's qparams are the ones convert would use, and its error, rounding
    inside plus clipping outside, is computed in closed form over the histogram. A symmetric
    qscheme searches the bound; an affine one first scales both ends together, then moves each
    end over its whole extent with the other fixed (two rounds of coordinate search), so a long
    tail on one side is clipped more than a short one on the other. Ties keep the wider range.
    The general-purpose choice for weights and activations with outliers.
    """

    def _choose_range(self) -> tuple[float, float]:
        edges, counts = self.histogram_edges_and_counts()
        full_low, full_high = min(float(self.min_val), 0.0), max(float(self.max_val), 0.0)

        def error_of(lows: torch.Tensor, highs: torch.Tensor) -> torch.Tensor:
            """Histogram MSE of each candidate (low, high), with the qparams convert uses."""
            like = {"dtype": self.min_val.dtype, "device": self.min_val.device}
            scale, zero_point = self._calculate_qparams(
                lows.reshape(-1).to(**like), highs.reshape(-1).to(**like)
            )
            mse = histogram_quantization_mse(
                edges, counts, scale.cpu(), zero_point.cpu(), self.quant_min, self.quant_max
            )
            return mse.reshape(lows.shape)

        ratio = float(search_clipping_ratio(lambda r: error_of(r * full_low, r * full_high))[0])
        low, high = ratio * full_low, ratio * full_high
        if self.qscheme in SYMMETRIC_QSCHEMES or low == 0.0 or high == 0.0:
            return low, high
        for _ in range(_COORDINATE_ROUNDS):  # each end over its whole extent, the other fixed
            high = _best_end(
                lambda r, fixed=low: error_of(torch.full_like(r, fixed), r * full_high), full_high
            )
            low = _best_end(
                lambda r, fixed=high: error_of(r * full_low, torch.full_like(r, fixed)), full_low
            )
        return low, high


def _best_end(error_of_ratio: Callable[[torch.Tensor], torch.Tensor], extent: float) -> float:
    """The end of the range, a ratio of ``extent``, that ``error_of_ratio`` likes best."""
    return float(search_clipping_ratio(error_of_ratio)[0]) * extent


class KLDivergenceObserver(HistogramRangeObserver):
    """TensorRT-style entropy calibration: the threshold minimising KL(P || Q).

    P is the histogram of magnitudes ``|x|`` cut at a candidate threshold, the cut-off mass
    added to its last bin; Q is P quantized to the number of levels the spec gives that
    magnitude range, each level's mass spread evenly over its non-empty bins. The threshold
    ``T`` with the smallest divergence gives the range ``[max(min_val, -T), min(max_val, T)]``.

    Levels: a symmetric qscheme has ``(quant_max - quant_min + 1) // 2`` per sign (128 for
    int8). An affine (asymmetric or unsigned) spec on one-signed data (after ReLU) spends all
    ``quant_max - quant_min + 1`` levels on that sign; on data of both signs it is searched as
    if symmetric (half the levels per sign) and the threshold is then clipped to each side's
    extreme, so a short negative tail keeps its full extent. Meant for 8-bit activations;
    with more levels than histogram bins there is nothing to merge and the full range is kept.
    """

    def _levels(self) -> int:
        levels = self.quant_max - self.quant_min + 1
        one_signed = float(self.min_val) >= 0 or float(self.max_val) <= 0
        if self.qscheme in SYMMETRIC_QSCHEMES or not one_signed:
            return levels // 2
        return levels

    def _choose_range(self) -> tuple[float, float]:
        counts = self.histogram.detach().to("cpu", torch.float64)
        first = int(self.first_bin)
        # Fold the negative bins onto the positive ones: bin k < 0 holds |x| in bin -k - 1.
        magnitude_bins = max(first + counts.numel(), -first)
        magnitudes = torch.zeros(magnitude_bins, dtype=torch.float64)
        positions = torch.arange(counts.numel()) + first
        folded = torch.where(positions < 0, -positions - 1, positions)
        magnitudes.index_add_(0, folded, counts)
        kept = kl_clipping_bins(magnitudes, self._levels())
        threshold = kept * self.bin_width()
        return max(float(self.min_val), -threshold), min(float(self.max_val), threshold)
