"""The searches behind the range estimators: percentile, MSE-optimal clipping, KL clipping.

Pure functions over a histogram (``edges``: the bin boundaries, ``counts``: the values per bin,
both float64) or over a clipping-ratio grid, so the observers stay small and each search can be
tested on its own. Every search is vectorised over its candidates and deterministic; ties go to
the widest candidate, so a distribution whose optimum is the full range gets exactly the
min/max range.

The histogram model is piecewise uniform: a bin's values are spread evenly between its edges
(a bin of zero width is a point mass). Under that model the expected squared quantization error
of a candidate range has a closed form (:func:`histogram_quantization_mse`), so the MSE search
needs no sampling and no Python loop over bins.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "histogram_percentile",
    "histogram_quantization_mse",
    "kl_clipping_bins",
    "search_clipping_ratio",
]

#: ratios tried first (1, (K-1)/K, ..., 1/K), then ``FINE`` steps either side of the best
COARSE_RATIOS = 32
FINE_RATIOS = 8
#: the KL search tries at most this many thresholds before refining around the best
KL_COARSE_CANDIDATES = 128
#: float64 elements of one KL candidate block (4 MiB per temporary)
_KL_BLOCK_ELEMENTS = 1 << 19


def search_clipping_ratio(
    error_of: Callable[[torch.Tensor], torch.Tensor],
    channels: int = 1,
    coarse: int = COARSE_RATIOS,
    fine: int = FINE_RATIOS,
) -> torch.Tensor:
    """The clipping ratio in (0, 1] with the smallest error, per channel, by a two-stage grid.

    ``error_of(ratios)`` takes a ``(K, channels)`` float64 tensor of ratios and returns the
    ``(K, channels)`` errors. The coarse grid is ``1, (coarse-1)/coarse, ..., 1/coarse``; the
    fine grid spans one coarse step either side of each channel's best with ``fine`` points per
    side. Among equal errors the largest ratio wins (ratio 1 is always tried).
    """
    coarse_ratios = torch.linspace(1.0, 1.0 / coarse, coarse, dtype=torch.float64)
    coarse_ratios = coarse_ratios[:, None].expand(coarse, channels)
    coarse_errors = error_of(coarse_ratios)
    best = coarse_ratios.gather(0, coarse_errors.argmin(dim=0, keepdim=True))  # (1, C)
    step = 1.0 / coarse
    offsets = torch.linspace(step, -step, 2 * fine + 1, dtype=torch.float64)[:, None]
    fine_ratios = (best + offsets).clamp(min=step / fine, max=1.0)
    fine_errors = error_of(fine_ratios)
    ratios = torch.cat([coarse_ratios, fine_ratios])
    errors = torch.cat([coarse_errors, fine_errors])
    order = ratios.argsort(dim=0, descending=True, stable=True)
    ratios, errors = ratios.gather(0, order), errors.gather(0, order)
    return ratios.gather(0, errors.argmin(dim=0, keepdim=True)).squeeze(0)


def _sawtooth_integral(y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``∫_0^y (t - scale * round(t / scale))^2 dt``: each full period adds ``scale^3 / 12``,
    the partial one the integral of ``t^2`` from ``-scale / 2`` to where ``y`` ends in it."""
    u = y / scale + 0.5
    periods = torch.floor(u)
    phase = u - periods - 0.5
    return scale**3 * (periods / 12 + phase**3 / 3)


def histogram_quantization_mse(
    edges: torch.Tensor,
    counts: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    quant_min: int,
    quant_max: int,
) -> torch.Tensor:
    """Expected total squared error of quantizing the histogram with each (scale, zero_point).

    ``scale`` / ``zero_point`` are ``(K,)`` candidates; returns ``(K,)`` float64. The grid
    points are ``(q - zero_point) * scale`` for ``q`` in ``quant_min..quant_max``; values
    between them round to the nearest, values beyond the outermost are clamped to it. With
    ``F(x) = ∫_0^x error(t)^2 dt`` in closed form (the sawtooth inside the grid, a cubic
    beyond it), a bin ``[a, b)`` holding ``n`` values contributes ``n * (F(b) - F(a)) / (b - a)``.
    """
    s = scale.to(torch.float64)[:, None]
    zp = zero_point.to(torch.float64)[:, None]
    low, high = (quant_min - zp) * s, (quant_max - zp) * s
    begins, ends = edges[:-1], edges[1:]
    occupied = counts > 0  # empty bins add nothing: skip them (outliers leave most empty)
    begins, ends, counts = begins[occupied], ends[occupied], counts[occupied]
    widths = ends - begins
    spread = widths > 0
    density = torch.where(spread, counts / torch.where(spread, widths, 1.0), 0.0)

    def antiderivative(x: torch.Tensor) -> torch.Tensor:
        inside = _sawtooth_integral(torch.maximum(torch.minimum(x, high), low), s)
        above = (x - high).clamp(min=0) ** 3 / 3
        below = (low - x).clamp(min=0) ** 3 / 3
        return inside + above - below

    error = ((antiderivative(ends[None, :]) - antiderivative(begins[None, :])) * density).sum(1)
    if not bool(spread.all()):
        at = begins[~spread][None, :]
        rounded = (torch.round(at / s) * s).clamp(min=low, max=high)
        error = error + ((at - rounded) ** 2 * counts[~spread]).sum(dim=1)
    return error


def histogram_percentile(edges: torch.Tensor, counts: torch.Tensor, fraction: float) -> float:
    """The value below which ``fraction`` of the histogram's mass lies (linear within a bin)."""
    cumulative = torch.cumsum(counts, dim=0)
    target = fraction * float(cumulative[-1])
    index = int(torch.searchsorted(cumulative, torch.tensor([target], dtype=torch.float64)))
    index = min(index, counts.numel() - 1)
    before = float(cumulative[index - 1]) if index > 0 else 0.0
    mass = float(counts[index])
    share = 0.0 if mass <= 0 else min(max((target - before) / mass, 0.0), 1.0)
    low, high = float(edges[index]), float(edges[index + 1])
    return low + share * (high - low)


def _kl_divergences(counts: torch.Tensor, kept: torch.Tensor, levels: int) -> torch.Tensor:
    """KL(P || Q) for each candidate number of kept bins (``kept``, ``(M,)`` int64).

    P is the histogram cut after ``kept`` bins with the cut-off mass added to the last kept
    bin (what clipping does to the values). Q quantizes the kept bins into ``levels`` groups of
    consecutive bins: each group's in-range mass spread evenly over its bins where P is
    non-zero. A candidate whose P has mass where Q has none scores +inf.
    """
    bins = counts.numel()
    total = counts.sum()
    cumulative = torch.cumsum(counts, dim=0)
    position = torch.arange(bins)[None, :]
    in_range = position < kept[:, None]
    p = torch.where(in_range, counts[None, :], 0.0)
    tail = (total - cumulative[kept - 1])[:, None]
    p = p.scatter_add(1, (kept - 1)[:, None], tail)
    group = torch.where(in_range, position * levels // kept[:, None], levels)  # levels: unused
    rows = torch.arange(kept.numel())[:, None] * (levels + 1)
    flat = (rows + group).reshape(-1)
    slots = kept.numel() * (levels + 1)
    in_range_mass = torch.where(in_range, counts[None, :], 0.0).reshape(-1)
    support = p > 0
    group_mass = torch.zeros(slots, dtype=torch.float64).index_add_(0, flat, in_range_mass)
    group_bins = torch.zeros(slots, dtype=torch.float64).index_add_(
        0, flat, support.reshape(-1).to(torch.float64)
    )
    spread = group_mass[flat] / group_bins[flat].clamp(min=1.0)
    q = torch.where(support, spread.reshape(p.shape), 0.0)
    p = p / p.sum(dim=1, keepdim=True)
    q = q / q.sum(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float64).tiny)
    safe_q = torch.where(q > 0, q, 1.0)
    terms = torch.where(
        support, p * (torch.log(torch.where(support, p, 1.0)) - torch.log(safe_q)), 0.0
    )
    divergence = terms.sum(dim=1)
    return torch.where((support & (q <= 0)).any(dim=1), torch.inf, divergence)


def _kl_for(counts: torch.Tensor, candidates: list[int], levels: int) -> torch.Tensor:
    block = max(1, _KL_BLOCK_ELEMENTS // counts.numel())
    parts = [
        _kl_divergences(counts, torch.tensor(candidates[i : i + block]), levels)
        for i in range(0, len(candidates), block)
    ]
    return torch.cat(parts)


def kl_clipping_bins(counts: torch.Tensor, levels: int) -> int:
    """How many of the histogram's leading bins to keep so that KL(P || Q) is smallest.

    ``counts`` is a histogram of magnitudes starting at 0; ``levels`` the number of quantized
    values available for them. Candidates run from ``levels`` bins to all of them; with many
    bins every ``stride``-th is tried first, then every one within a stride of the best. Ties
    go to the most bins; a histogram with no more bins than levels keeps them all.
    """
    bins = counts.numel()
    if bins <= levels:
        return bins
    stride = max(1, -(-(bins - levels + 1) // KL_COARSE_CANDIDATES))
    coarse = list(range(bins, levels - 1, -stride))
    divergences = _kl_for(counts, coarse, levels)
    best = coarse[int(divergences.argmin())]
    if stride == 1:
        return best
    near = list(range(min(bins, best + stride - 1), max(levels, best - stride + 1) - 1, -1))
    near_divergences = _kl_for(counts, near, levels)
    candidates = torch.tensor(coarse + near)
    divergences = torch.cat([divergences, near_divergences])
    order = candidates.argsort(descending=True, stable=True)
    return int(candidates[order][divergences[order].argmin()])
