"""Min/max observers: running extremes, per tensor or per channel, plain or moving-average.

Finite inputs give exactly torch.ao's statistics (the same extremes and update arithmetic, by
faster means where torch.ao's are slow: see ``PerChannelMinMaxObserver._batch_extremes`` and
``MinMaxObserver._update``), so the qparams agree bit for bit. The extra work for degenerate inputs happens only
after a cheap check of the batch extremes shows a NaN or infinity, which is the only way such
values can reach ``aminmax``'s result.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from pt2e_quant.errors import SpecError
from pt2e_quant.observer.base import (
    _EPS_F32,
    PER_CHANNEL_QSCHEMES,
    PER_TENSOR_QSCHEMES,
    UniformQuantizationObserverBase,
    UnsupportedObserverConfigError,
)

__all__ = [
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "finite_row_extremes",
]


def _is_cpu_scalar(t: torch.Tensor) -> bool:
    return t.is_cpu and t.dim() == 0


def _all_finite(low: torch.Tensor, high: torch.Tensor) -> bool:
    """Whether a batch's extremes are finite (aminmax propagates NaN and infinities).

    Runs once per observed batch, so it reads two scalars rather than launching an
    ``isfinite`` / ``all`` chain per tensor (eleven kernels for a per-channel observer, each
    batch, for every weight). For per-channel extremes the two scalars are ``low.min()`` and
    ``high.max()``: both reductions propagate NaN, and an infinite extreme of any channel
    shows in one of them (a channel whose max is -inf has min -inf too, and vice versa).
    """
    if not (_is_cpu_scalar(low) and _is_cpu_scalar(high)):
        low, high = low.min(), high.max()
    return math.isfinite(low.item()) and math.isfinite(high.item())


def finite_row_extremes(
    rows: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-row (min, max) of the finite values of a (rows, values) tensor, and which rows hold
    any: ``seen`` is None when every value was finite (the common case, two reductions and
    two scalar reads); otherwise rows without a finite value get +inf / -inf.

    Not ``aminmax(rows, dim=1)``: on CPU (torch 2.13) that kernel runs 5-9x slower than
    these two reductions, with the same values; on a ResNet-50 it was a quarter of every
    calibration batch, observing weights.
    """
    low, high = rows.amin(dim=1), rows.amax(dim=1)
    if _all_finite(low, high):
        return low, high, None
    finite = torch.isfinite(rows)
    inf = torch.tensor(float("inf"), dtype=rows.dtype, device=rows.device)
    low = torch.where(finite, rows, inf).amin(dim=1)
    high = torch.where(finite, rows, -inf).amax(dim=1)
    return low, high, finite.any(dim=1)


def _check_averaging_constant(owner: str, value: Any) -> float:
    if not (isinstance(value, numbers.Real) and 0 <= float(value) <= 1):
        raise SpecError(f"{owner}: averaging_constant={value!r} must be a number in [0, 1]")
    return value


class MinMaxObserver(UniformQuantizationObserverBase):
    """Tracks the smallest and largest value seen and maps that range onto the quantized one.

    NaN and infinite values are dropped (with one warning per observer); a batch with nothing
    finite, or an empty batch, leaves the statistics untouched.
    """

    min_val: torch.Tensor
    max_val: torch.Tensor

    def __init__(
        self,
        dtype: torch.dtype | None = torch.quint8,
        qscheme: torch.qscheme | None = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float | None = _EPS_F32,
        is_dynamic: bool | None = False,
    ) -> None:
        if qscheme is not None and qscheme not in PER_TENSOR_QSCHEMES:
            raise UnsupportedObserverConfigError(
                f"{type(self).__name__}: qscheme={qscheme} is per-channel; this observer is "
                "per-tensor (use PerChannelMinMaxObserver)"
            )
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
        # +inf / -inf mean "nothing seen yet"; any real value replaces them on first update.
        self.register_buffer("min_val", torch.tensor(float("inf"), **fk))
        self.register_buffer("max_val", torch.tensor(float("-inf"), **fk))
        self._reject_symmetric_reduced_quint8()

    def _batch_extremes(self, x_orig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(min, max) of the finite values of a batch, or None if it has none."""
        if x_orig.numel() == 0:
            return None
        x = x_orig.detach().to(self.min_val.dtype)
        low, high = torch.aminmax(x)
        if _all_finite(low, high):
            return low, high
        self._report_non_finite()
        x = x[torch.isfinite(x)]
        if x.numel() == 0:
            return None
        return torch.aminmax(x)

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        extremes = self._batch_extremes(x_orig)
        if extremes is not None:
            self._update(*extremes)
        return x_orig

    def _update(self, low: torch.Tensor, high: torch.Tensor) -> None:
        min_val, max_val = self.min_val, self.max_val
        if _is_cpu_scalar(low) and _is_cpu_scalar(min_val) and _is_cpu_scalar(max_val):
            # Four scalar reads instead of min / max / copy_ kernels on every batch; the range
            # is written only when it grows, with the batch's own value: what min / max keep.
            if low.item() < min_val.item():
                min_val.copy_(low)
            if high.item() > max_val.item():
                max_val.copy_(high)
            return
        min_val.copy_(torch.min(low, min_val))
        max_val.copy_(torch.max(high, max_val))

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero_point) as 1-element tensors; scale 1.0 / zero point 0 (with a warning)
        if no finite value was ever observed."""
        return self._calculate_qparams(self.min_val, self.max_val)

    def has_observed_data(self) -> bool:
        return bool(self.min_val <= self.max_val)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"

    def reset_min_max_vals(self) -> None:
        """Forget the recorded range (back to the never-calibrated state)."""
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))


def _uncrossed(new_min: torch.Tensor, new_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo a rounding crossover of averaged extremes.

    Averaging both extremes towards a constant batch (``m + c * (v - m)`` and
    ``M + c * (v - M)``) can leave min one rounding step above max; read as "never
    calibrated", that would give scale 1.0. Crossed finite pairs are swapped back; every
    other value is untouched, and an unseen channel (+inf / -inf) stays unseen.
    """
    if _is_cpu_scalar(new_min) and _is_cpu_scalar(new_max):
        if new_min.item() <= new_max.item():  # the usual case, read without a kernel launch
            return new_min, new_max
    crossed = new_min > new_max
    if not bool(crossed.any()):  # the usual case: nothing to undo
        return new_min, new_max
    crossed &= torch.isfinite(new_min) & torch.isfinite(new_max)
    return torch.where(crossed, new_max, new_min), torch.where(crossed, new_min, new_max)


def _never_updated(running_min: torch.Tensor, running_max: torch.Tensor) -> bool:
    if _is_cpu_scalar(running_min):
        return running_min.item() == math.inf and running_max.item() == -math.inf
    return bool(running_min == math.inf) and bool(running_max == -math.inf)


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Like MinMaxObserver, but the range follows an exponential moving average of batch
    extremes, so a few outlier batches in QAT do not widen it for good.

    ``averaging_constant`` is the weight of the newest batch; 1 keeps only the last batch (the
    only setting usable for dynamic quantization). The first batch initialises the average.
    """

    def __init__(
        self,
        averaging_constant: float = 0.01,
        dtype: torch.dtype | None = torch.quint8,
        qscheme: torch.qscheme | None = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float | None = _EPS_F32,
        is_dynamic: bool | None = False,
        factory_kwargs: dict[str, Any] | None = None,
    ) -> None:
        averaging_constant = 0.01 if averaging_constant is None else averaging_constant
        self.averaging_constant = _check_averaging_constant(type(self).__name__, averaging_constant)
        if is_dynamic and averaging_constant != 1:
            raise UnsupportedObserverConfigError(
                f"{type(self).__name__}: dynamic quantization needs averaging_constant=1, got "
                f"{averaging_constant}"
            )
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

    def _update(self, low: torch.Tensor, high: torch.Tensor) -> None:
        running_min, running_max = self.min_val, self.max_val
        if _never_updated(running_min, running_max):
            new_min, new_max = low, high
        else:
            c = self.averaging_constant
            new_min = running_min + c * (low - running_min)
            new_max = running_max + c * (high - running_max)
            new_min, new_max = _uncrossed(new_min, new_max)
        self.min_val.copy_(new_min)
        self.max_val.copy_(new_max)


class PerChannelMinMaxObserver(UniformQuantizationObserverBase):
    """Running min/max kept separately for every index along ``ch_axis`` (weights, usually).

    The statistics buffers start empty and take the channel count of the first batch. Non-finite
    values are dropped per channel; a channel left with nothing finite keeps its previous
    statistics, and a channel that never saw a finite value gets the qparams of an all-zero
    channel. Works for any rank >= 1, including a single channel.
    """

    min_val: torch.Tensor
    max_val: torch.Tensor

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
        owner = type(self).__name__
        if qscheme is not None and qscheme not in PER_CHANNEL_QSCHEMES:
            raise UnsupportedObserverConfigError(
                f"{owner}: qscheme={qscheme} is per-tensor; this observer is per-channel "
                "(use MinMaxObserver)"
            )
        if is_dynamic:
            raise UnsupportedObserverConfigError(
                f"{owner}: per-channel observers do not support dynamic quantization"
            )
        ch_axis = 0 if ch_axis is None else ch_axis
        if isinstance(ch_axis, bool) or not isinstance(ch_axis, numbers.Integral):
            raise SpecError(f"{owner}: ch_axis must be an int, got {ch_axis!r}")
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
        self.ch_axis = int(ch_axis)
        fk = torch.nn.factory_kwargs(factory_kwargs)
        self.register_buffer("min_val", torch.tensor([], **fk))
        self.register_buffer("max_val", torch.tensor([], **fk))
        self._reject_symmetric_reduced_quint8()

    @classmethod
    def _default_qscheme(cls) -> torch.qscheme:
        return torch.per_channel_affine

    def _rows(self, x_orig: torch.Tensor) -> torch.Tensor:
        """The input as a (channels, everything else) matrix in the statistics dtype."""
        x = x_orig.detach()
        if x.dim() == 0 or not -x.dim() <= self.ch_axis < x.dim():
            raise SpecError(
                f"{type(self).__name__}: ch_axis={self.ch_axis} does not exist in an input of "
                f"shape {tuple(x.shape)}"
            )
        return x.movedim(self.ch_axis, 0).to(self.min_val.dtype).reshape(x.shape[self.ch_axis], -1)

    def _batch_extremes(
        self, x_orig: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """Per-channel (min, max, seen) of the finite values; ``seen`` is None when every
        channel had finite data. Returns None when the batch has no finite value at all."""
        if x_orig.numel() == 0:
            return None
        low, high, seen = finite_row_extremes(self._rows(x_orig))
        if seen is None:
            return low, high, None
        self._report_non_finite()
        if not bool(seen.any()):
            return None
        return low, high, seen

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        extremes = self._batch_extremes(x_orig)
        if extremes is None:
            return x_orig
        low, high, seen = extremes
        if self.min_val.numel() == 0 or self.max_val.numel() == 0:
            # Channels without finite data stay at +inf / -inf, meaning "not seen yet".
            new_min, new_max = low, high
        else:
            new_min, new_max = self._combine(low, high, seen)
        self.min_val.resize_(new_min.shape)
        self.max_val.resize_(new_max.shape)
        self.min_val.copy_(new_min)
        self.max_val.copy_(new_max)
        return x_orig

    def _combine(
        self, low: torch.Tensor, high: torch.Tensor, seen: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Unseen channels carry +inf / -inf here, which min / max ignore.
        return torch.min(low, self.min_val), torch.max(high, self.max_val)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (scale, zero_point); 1-element defaults (with a warning) before any data."""
        return self._calculate_qparams(self.min_val, self.max_val)

    def has_observed_data(self) -> bool:
        if self.min_val.numel() == 0 or self.min_val.shape != self.max_val.shape:
            return False
        return bool((self.min_val <= self.max_val).any())

    def _resizable_buffers(self) -> tuple[str, ...]:
        return ("min_val", "max_val")

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"

    def reset_min_max_vals(self) -> None:
        """Forget the recorded ranges (the channel count is re-learned from the next batch)."""
        self.min_val.resize_(0)
        self.max_val.resize_(0)


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Per-channel moving average of batch extremes (see MovingAverageMinMaxObserver).

    A channel that has no running statistics yet takes the batch's values directly; a channel
    with no finite values in a batch keeps its running statistics.
    """

    def __init__(
        self,
        averaging_constant: float = 0.01,
        ch_axis: int | None = 0,
        dtype: torch.dtype | None = torch.quint8,
        qscheme: torch.qscheme | None = torch.per_channel_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float | None = _EPS_F32,
        is_dynamic: bool | None = False,
        factory_kwargs: dict[str, Any] | None = None,
    ) -> None:
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
        averaging_constant = 0.01 if averaging_constant is None else averaging_constant
        self.averaging_constant = _check_averaging_constant(type(self).__name__, averaging_constant)

    def _combine(
        self, low: torch.Tensor, high: torch.Tensor, seen: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        running_min, running_max = self.min_val, self.max_val
        c = self.averaging_constant
        new_min = running_min + c * (low - running_min)
        new_max = running_max + c * (high - running_max)
        # Channels without running statistics (+inf) start from the batch; for all others the
        # selects pick the averaged values unchanged.
        new_min = torch.where(torch.isinf(running_min), low, new_min)
        new_max = torch.where(torch.isinf(running_max), high, new_max)
        if seen is not None:
            new_min = torch.where(seen, new_min, running_min)
            new_max = torch.where(seen, new_max, running_max)
        return _uncrossed(new_min, new_max)
