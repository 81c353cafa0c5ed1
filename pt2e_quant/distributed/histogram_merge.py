"""Merging the two histogram observers' state across ranks.

**Range estimators** (:class:`~pt2e_quant.observer.range_histogram.HistogramRangeObserver`:
percentile, MSE, KL) keep integer counts on a power-of-two grid whose bins only ever merge in
pairs. Their merge is exact: the merged width is the widest of the ranks' widths, doubled
further while the union of the ranks' bins exceeds ``2 * bins + 1``; every rank's counts are
moved onto that grid (bin ``k`` to bin ``k >> shift``, a bin never splits) and added;
min / max are the union's. Every finite value observed on any rank is thus counted in the bin
of the merged grid it lies in, which is what one process holds on the same grid. One process
over the concatenated shards ends with the grid its *first* batch started, doubled as the
union's range requires, while the merge starts from the coarsest grid any rank's first batch
started. So the merged state equals one process over the concatenated data, bit for bit
(counts, grid, min / max, hence qparams), whenever that process's first batch starts a grid at
least as coarse as every rank's first batch did, or the union's range alone forces a grid at
least that coarse; otherwise the merge's grid is coarser (same total count, same min / max).

**HistogramObserver** (torch.ao's algorithm) keeps ``bins`` float counts over its running
[min, max]. The merge folds the ranks' histograms in rank order, as the observer folds a batch
that widens its range: the running histogram and the next rank's are each re-binned onto the
union range with the observer's own re-binning (every bin split into ``upsample_rate`` parts,
each moved by its midpoint) and added. Exact where no re-binning happens: when every rank's
first batch already spans the global [min, max] (identical data, or shards whose first batch
holds the extremes), every histogram holds integer counts on one grid, added bin for bin, which
is what one process over the concatenated shards holds, bit for bit. Otherwise min / max and
the total count are exact and the mass of each rank's histogram moves by at most one bin of
the union range (a rank's bin is never wider than a union bin), as it would in one process
folding a wider batch.
"""

from __future__ import annotations

import torch
from torch import nn

from pt2e_quant.observer.histogram import HistogramObserver
from pt2e_quant.observer.range_histogram import HistogramRangeObserver, merges_needed

__all__ = ["MergeShapeError", "State", "merge_histograms", "merge_range_histograms"]

#: an observer's exported state: buffer name -> CPU tensor
State = dict[str, torch.Tensor]


class MergeShapeError(ValueError):
    """Ranks hold state of different shapes for one observer (different programs)."""


def _rebinner(observer: nn.Module) -> HistogramObserver:
    """Our HistogramObserver's re-binning with ``observer``'s bins and upsample rate (the
    observer itself when it is ours; torch.ao's arithmetic is the same)."""
    if isinstance(observer, HistogramObserver):
        return observer
    stand_in = HistogramObserver(bins=int(observer.bins))
    stand_in.upsample_rate = int(getattr(observer, "upsample_rate", stand_in.upsample_rate))
    return stand_in


def merge_histograms(observer: nn.Module, states: list[State]) -> State | None:
    """Fold the ranks' histograms in rank order onto the union range (module doc)."""
    holding = [state for state in states if bool(state["min_val"] <= state["max_val"])]
    if not holding:
        return None
    sizes = {state["histogram"].numel() for state in holding}
    if len(sizes) > 1:
        raise MergeShapeError(f"ranks hold histograms of different bin counts {sorted(sizes)}")
    rebin = _rebinner(observer)
    hist = holding[0]["histogram"].clone()
    low, high = holding[0]["min_val"].clone(), holding[0]["max_val"].clone()
    for state in holding[1:]:
        new_low = torch.min(low, state["min_val"])
        new_high = torch.max(high, state["max_val"])
        nothing = torch.zeros_like(hist)
        hist = rebin.merge_into_wider_range(hist, low, high, nothing, new_low, new_high)
        hist = rebin.merge_into_wider_range(
            state["histogram"], state["min_val"], state["max_val"], hist, new_low, new_high
        )
        low, high = new_low, new_high
    return {"histogram": hist, "min_val": low, "max_val": high}


def merge_range_histograms(observer: nn.Module, states: list[State]) -> State | None:
    """Counts of every rank on the coarsest common power-of-two grid, added (module doc)."""
    holding = [state for state in states if state["histogram"].numel() > 0]
    if not holding:
        return None
    exponent = max(int(state["width_exponent"]) for state in holding)
    spans = []
    for state in holding:
        shift = exponent - int(state["width_exponent"])
        first = int(state["first_bin"])
        last = first + state["histogram"].numel() - 1
        spans.append((first >> shift, last >> shift))
    first = min(span[0] for span in spans)
    last = max(span[1] for span in spans)
    extra = merges_needed(first, last, observer.bin_capacity)
    first, last, exponent = first >> extra, last >> extra, exponent + extra
    counts = torch.zeros(last - first + 1, dtype=torch.int64)
    for state in holding:
        counts += HistogramRangeObserver.regrid(
            state["histogram"].to(torch.int64),
            int(state["first_bin"]),
            exponent - int(state["width_exponent"]),
            first,
            counts.numel(),
        )
    low, high = holding[0]["min_val"], holding[0]["max_val"]
    for state in holding[1:]:
        low, high = torch.min(state["min_val"], low), torch.max(state["max_val"], high)
    return {
        "histogram": counts,
        "first_bin": torch.tensor(first, dtype=torch.int64),
        "width_exponent": torch.tensor(exponent, dtype=torch.int64),
        "min_val": low,
        "max_val": high,
    }
