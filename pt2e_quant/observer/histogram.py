"""HistogramObserver: pick the clipping range that minimises the L2 quantization error.

The observer keeps a fixed number of bins over the running [min, max]. When a batch widens the
range, the old histogram is re-binned onto the new range by splitting every bin into
``upsample_rate`` equal parts and moving each part (by its midpoint) into the new bin it lands
in. ``calculate_qparams`` then shrinks [min, max] from whichever side holds less mass, one
quantile step at a time, as long as the estimated quantization error keeps falling.

All of this reproduces torch.ao's arithmetic exactly (it is numerically sensitive: the search
compares float errors). The search's scalar bookkeeping runs on Python floats with the same
float32 comparison semantics torch.ao gets from comparing 0-dim tensors, which makes it several
times faster without changing a single decision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pt2e_quant.errors import SpecError
from pt2e_quant.observer.base import (
    _EPS_F32,
    PER_TENSOR_QSCHEMES,
    UniformQuantizationObserverBase,
    UnsupportedObserverConfigError,
)

__all__ = ["HistogramObserver"]


def _scalar_rounder(dtype: torch.dtype) -> Callable[[float], float]:
    """How torch rounds a Python float compared against a 0-dim tensor of ``dtype``: the
    comparison happens in the tensor's dtype, so the scalar is rounded to it first."""
    if dtype == torch.float64:
        return float
    if dtype == torch.float32:
        return lambda value: float(np.float32(value))
    return lambda value: torch.tensor(value, dtype=dtype).item()


_IDLE_CHUNK = 256


def _idle_step_skipper(
    dtype: torch.dtype, total: float, step: float
) -> Callable[[float, float, float | None], float] | None:
    """Fast-forward the range search through steps that change nothing.

    Once neither quantile bound crosses a bin, the search only lowers ``beta`` by ``step``
    per iteration (``alpha`` and so the lower bound stay put) until the upper quantile drops
    below the cumulative mass at the current end bin, or ``alpha`` catches up. Those
    iterations are replayed in numpy: ``np.add.accumulate`` subtracts ``step`` one element at
    a time exactly like the Python loop, and the float32 cast rounds exactly like comparing
    against a float32 tensor. Returns None for histogram dtypes this does not model.
    """
    if dtype == torch.float32:
        to_mark_dtype = np.float32
    elif dtype == torch.float64:
        to_mark_dtype = np.float64
    else:
        return None

    def skip(alpha: float, beta: float, end_mass: float | None) -> float:
        """The ``beta`` of the next iteration that changes a bound (or ends the loop)."""
        while True:
            betas = np.add.accumulate(np.concatenate(([beta], np.full(_IDLE_CHUNK, -step))))
            current, following = betas[:-1], betas[1:]
            stops = current <= alpha  # the loop condition ``alpha < beta`` fails
            if end_mass is not None:
                marks = (following * total).astype(to_mark_dtype).astype(np.float64)
                stops |= end_mass > marks  # the end bin moves: a real iteration
            hits = np.flatnonzero(stops)
            if hits.size:
                return float(current[hits[0]])
            beta = float(betas[-1])

    return skip


def _l2_mass(begin: Any, end: Any, density: Any) -> Any:
    """Squared error mass of a uniform density over [begin, end] around 0: density * (e^3-b^3)/3."""
    cubes = end * end * end - begin * begin * begin
    return density * (cubes / 3)


class HistogramObserver(UniformQuantizationObserverBase):
    """Histogram of everything observed, reduced to a clipping range by error minimisation.

    Per-tensor only. NaN and infinite values are dropped (one warning per observer); a batch
    with nothing finite is a no-op, as is an empty batch. While everything seen is one value
    the histogram is a point mass, moved whole into the right bin once a wider batch arrives.
    All-zero data gives scale ``eps``.
    """

    histogram: torch.Tensor
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
                f"{owner}: qscheme={qscheme} is per-channel; the histogram observer is per-tensor"
            )
        if is_dynamic:
            raise UnsupportedObserverConfigError(
                f"{owner}: the histogram observer does not support dynamic quantization"
            )
        bins = 2048 if bins is None else bins
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise SpecError(f"{owner}: bins={bins!r} must be a positive int")
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
        self.bins = bins
        self.register_buffer("histogram", torch.zeros(self.bins, **fk))
        self.register_buffer("min_val", torch.tensor(float("inf"), **fk))
        self.register_buffer("max_val", torch.tensor(float("-inf"), **fk))
        # The error model quantizes into as many levels as the dtype has bit patterns (not the
        # configured range), as torch.ao does.
        bits = (
            torch.finfo(self.dtype).bits
            if self.dtype.is_floating_point
            else torch.iinfo(self.dtype).bits
        )
        self.dst_nbins = 2**bits
        self.upsample_rate = 16

    # ------------------------------------------------------------------ observing

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach()
        x_min, x_max = torch.aminmax(x)
        if not bool(self._storable(x_min) & self._storable(x_max)):
            self._report_non_finite()
            x = x[self._storable(x)]
            if x.numel() == 0:
                return x_orig
            x_min, x_max = torch.aminmax(x)

        if self.min_val == float("inf") or self.max_val == float("-inf"):
            self._start_histogram(x, x_min, x_max)
            return x_orig

        old_min, old_max = self.min_val, self.max_val
        new_min = torch.min(old_min, x_min).detach()
        new_max = torch.max(old_max, x_max).detach()
        batch_hist = torch.histc(x, self.bins, min=new_min, max=new_max).to(self.histogram.device)
        if new_min == old_min and new_max == old_max:
            self._store(self.histogram + batch_hist)
        else:
            merged = self.merge_into_wider_range(
                self.histogram, old_min, old_max, batch_hist, new_min, new_max
            )
            self._store(merged, new_min, new_max)
        return x_orig

    def _storable(self, values: torch.Tensor) -> torch.Tensor:
        """Finite, and finite once stored in the statistics' dtype: a float64 batch holding
        1e39 must not turn ``max_val`` into inf (the value is dropped as an Inf would be).
        The batch itself keeps its dtype, as torch.ao's histogram does."""
        return torch.isfinite(values) & (values.abs() <= torch.finfo(self.min_val.dtype).max)

    def _start_histogram(self, x: torch.Tensor, x_min: torch.Tensor, x_max: torch.Tensor) -> None:
        self.min_val.resize_(x_min.shape)
        self.min_val.copy_(x_min)
        self.max_val.resize_(x_max.shape)
        self.max_val.copy_(x_max)
        self._store(torch.histc(x, self.bins, min=x_min, max=x_max))

    def _store(
        self,
        histogram: torch.Tensor,
        new_min: torch.Tensor | None = None,
        new_max: torch.Tensor | None = None,
    ) -> None:
        self.histogram.detach_().resize_(histogram.shape)
        self.histogram.copy_(histogram)
        if new_min is not None and new_max is not None:
            self.min_val.detach_().resize_(new_min.shape)
            self.min_val.copy_(new_min)
            self.max_val.detach_().resize_(new_max.shape)
            self.max_val.copy_(new_max)

    def merge_into_wider_range(
        self,
        old_hist: torch.Tensor,
        old_min: torch.Tensor,
        old_max: torch.Tensor,
        batch_hist: torch.Tensor,
        new_min: torch.Tensor,
        new_max: torch.Tensor,
    ) -> torch.Tensor:
        """The old histogram re-binned onto [new_min, new_max], plus the batch's histogram."""
        if new_min == old_min and new_max == old_max:
            return old_hist + batch_hist
        if old_min == old_max:
            # Everything seen so far was one value: put all its mass into that value's new bin.
            mass = torch.sum(old_hist)
            moved = torch.histc(old_min, bins=self.bins, min=new_min, max=new_max) * mass
            return moved + batch_hist
        return batch_hist + self._rebin(old_hist, old_min, old_max, new_min, new_max)

    def _rebin(
        self,
        hist: torch.Tensor,
        old_min: torch.Tensor,
        old_max: torch.Tensor,
        new_min: torch.Tensor,
        new_max: torch.Tensor,
    ) -> torch.Tensor:
        """Split each old bin into ``upsample_rate`` parts and move each by its midpoint."""
        rate = self.upsample_rate
        fine_hist = hist.repeat_interleave(rate) / rate
        fine_width = (old_max - old_min) / (self.bins * rate)
        fine_starts = torch.linspace(old_min, old_max, self.bins * rate + 1, device=old_min.device)[
            :-1
        ].to(hist.device)
        midpoints = fine_starts + 0.5 * fine_width
        edges = torch.linspace(new_min, new_max, self.bins + 1, device=new_min.device).to(
            hist.device
        )
        target = torch.bucketize(midpoints, edges, right=True) - 1
        # Rounding can push a midpoint just outside [new_min, new_max]; keep it in range.
        target[target >= self.bins] = self.bins - 1
        target[target < 0] = 0
        return torch.bincount(target, weights=fine_hist, minlength=self.bins)

    # ------------------------------------------------------------------ choosing the range

    def _error_context(self) -> dict[str, Any]:
        """What :meth:`_quantization_error` needs that does not change during one search.

        For float32 / float64 histograms the elementwise error terms run on numpy views of
        the same values: every step is an IEEE-754 operation that numpy and torch round
        identically (a Python-float operand is rounded to the array's dtype by both, floor
        division is the same fmod-based formula), but a numpy call costs a fraction of a
        torch dispatch, and the search makes hundreds of them per observer. The final sum stays
        a torch reduction, whose summation order the chosen range depends on.
        """
        bin_width = (self.max_val.item() - self.min_val.item()) / self.bins
        density = self.histogram / bin_width
        if density.dtype in (torch.float32, torch.float64):
            density = density.detach().cpu().numpy()
            src_bin = np.arange(self.bins, dtype=density.dtype)
            scalar = density.dtype.type
            floor_div = lambda x, d: torch.from_numpy(x).div(d, rounding_mode="floor").numpy()  # noqa: E731
            reduce = lambda terms: torch.from_numpy(terms).sum().item()  # noqa: E731
        else:
            src_bin = torch.arange(self.bins, device=density.device)
            dtype, device = density.dtype, density.device
            scalar = lambda value: torch.tensor(value, dtype=dtype, device=device)  # noqa: E731
            floor_div = lambda x, d: torch.div(x, d, rounding_mode="floor")  # noqa: E731
            reduce = lambda terms: terms.sum().item()  # noqa: E731
        return {
            "bin_width": bin_width,
            "src_bin": src_bin,
            "density": density,
            "scalar": scalar,
            "floor_div": floor_div,
            "sum": reduce,
            "source_bounds": {},
        }

    def _source_bounds(self, start_bin: int, ctx: dict[str, Any]) -> tuple[Any, Any]:
        """Where each source bin begins and ends, measured from ``start_bin`` (cached per start)."""
        cache: dict[int, tuple[Any, Any]] = ctx["source_bounds"]
        if start_bin not in cache:
            src_begin = (ctx["src_bin"] - start_bin) * ctx["bin_width"]
            cache[start_bin] = (src_begin, src_begin + ctx["bin_width"])
        return cache[start_bin]

    def _quantization_error(self, start_bin: int, end_bin: int, ctx: dict[str, Any]) -> float:
        """Estimated L2 error of quantizing the histogram with range [start_bin, end_bin].

        Every elementwise step is torch.ao's, in the histogram's dtype; constant operands are
        0-dim scalars instead of filled vectors, which broadcasts to the same values with
        fewer full-length operations. The arrays are numpy or torch (see ``_error_context``);
        only operators and methods both share are used.
        """
        bin_width: float = ctx["bin_width"]
        dst_width = bin_width * (end_bin - start_bin + 1) / self.dst_nbins
        if dst_width == 0.0:
            return 0.0
        density = ctx["density"]
        scalar, floor_div = ctx["scalar"], ctx["floor_div"]
        last_dst = self.dst_nbins - 1

        src_begin, src_end = self._source_bounds(start_bin, ctx)
        dst_of_begin = floor_div(src_begin, dst_width).clip(0, last_dst)
        dst_of_end = floor_div(src_end, dst_width).clip(0, last_dst)
        begin_center = (dst_of_begin + 0.5) * dst_width
        end_center = dst_of_end * dst_width + dst_width / 2

        half = dst_width / 2
        # Error of the partial destination bin holding the source bin's start...
        error = _l2_mass(src_begin - begin_center, scalar(half), density)
        # ...of the whole destination bins strictly inside it...
        error += (dst_of_end - dst_of_begin - 1) * _l2_mass(scalar(-half), scalar(half), density)
        # ...and of the partial destination bin holding its end.
        error += _l2_mass(scalar(-dst_width / 2), src_end - end_center, density)
        return ctx["sum"](error)

    def _search_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Shrink [min, max] from the lighter side while the estimated error decreases."""
        if self.histogram.size(0) != self.bins:
            raise SpecError(
                f"{type(self).__name__}: histogram has {self.histogram.size(0)} bins but the "
                f"observer was built with bins={self.bins}"
            )
        width_t = (self.max_val - self.min_val) / self.bins
        total = torch.sum(self.histogram).item()
        # float64 holds every cumulative value of any histogram dtype exactly, so comparing it
        # with the dtype-rounded quantile marks decides exactly as torch.ao's comparisons do.
        cumulative = torch.cumsum(self.histogram, dim=0).detach().to("cpu", torch.float64).numpy()
        ctx = self._error_context()

        rounded = _scalar_rounder(self.histogram.dtype)
        step = 1e-5
        skip = _idle_step_skipper(self.histogram.dtype, total, step)
        alpha, beta = 0.0, 1.0
        start_bin, end_bin = 0, self.bins - 1
        best = float("inf")
        while alpha < beta:
            next_alpha = alpha + step
            next_beta = beta - step
            low_mark = rounded(next_alpha * total)
            high_mark = rounded(next_beta * total)
            # The cumulative mass never decreases, so torch.ao's bin-by-bin walks (forward
            # from start_bin while below the low mark, back from end_bin while above the high
            # mark) stop where a binary search says.
            left = int(np.searchsorted(cumulative, low_mark, side="left"))
            left = min(max(left, start_bin), end_bin)
            right = int(np.searchsorted(cumulative, high_mark, side="right")) - 1
            right = max(min(right, end_bin), start_bin)

            cand_start, cand_end = start_bin, end_bin
            if (left - start_bin) > (end_bin - right):
                cand_start = left
                alpha = next_alpha
            else:
                cand_end = right
                beta = next_beta
            if cand_start == start_bin and cand_end == end_bin:
                if skip is not None:
                    beta = skip(
                        alpha, beta, float(cumulative[end_bin]) if end_bin > start_bin else None
                    )
                continue
            error = self._quantization_error(cand_start, cand_end, ctx)
            if error > best:
                break
            best = error
            start_bin, end_bin = cand_start, cand_end

        return self.min_val + width_t * start_bin, self.min_val + width_t * (end_bin + 1)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero_point) for the error-minimising range; scale 1.0 / zero point 0 (with a
        warning) before any finite data."""
        if self.min_val == float("inf") and self.max_val == float("-inf"):
            return self._default_qparams(self.min_val.device)
        new_min, new_max = self._search_range()
        if not bool(torch.isfinite(new_min) & torch.isfinite(new_max)):
            # Only a range wider than float32 can express gets here (torch.ao returns a NaN
            # scale); fall back to the plain min/max range, whose scale is capped finite.
            new_min, new_max = self.min_val, self.max_val
        return self._calculate_qparams(new_min, new_max)

    def has_observed_data(self) -> bool:
        return bool(self.min_val <= self.max_val)

    def reset_min_max_vals(self) -> None:
        """Forget the histogram and range."""
        self.histogram.zero_()
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Before version 3 an uncalibrated range was stored as empty tensors, not +-inf.
        version = local_metadata.get("version")
        if version is None or version < 3:
            for name, empty_value in (("min_val", float("inf")), ("max_val", float("-inf"))):
                value = state_dict.get(prefix + name)
                if isinstance(value, torch.Tensor) and value.shape == torch.Size([0]):
                    state_dict[prefix + name] = torch.tensor(empty_value)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _resizable_buffers(self) -> tuple[str, ...]:
        return ("histogram", "min_val", "max_val")

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"
