"""A rank's batch summarised for a min/max observer, and the tiny tensor that stands in for the
global batch.

A min/max observer (plain or moving-average, per tensor or per channel) updates from nothing
but the batch's extremes: the finite minimum and maximum (per channel), and whether the batch
held NaN / Inf values (ours drop those with a warning). So N ranks can update every copy of the
observer as one process would on the concatenated batch by exchanging just those numbers:

1. :func:`summarize_batch` packs a rank's summary into one float64 vector
   ``[low_0 .. low_C-1, -high_0 .. -high_C-1, -nonfinite]``. Every entry is combined with
   MIN: the maximum of the highs is ``-min(-high)`` and "some rank saw a non-finite value" is
   ``-min(-flag)``, so one all-reduce per observer call carries it all. Every rank must have
   the same channel count C (the model's, along ``ch_axis``): a collective of mismatched
   sizes is an error of the backend (gloo aborts the process). A channel (or a whole batch)
   with no finite value contributes ``+inf`` / ``-inf``, the identities of MIN / MAX, so an
   empty local batch simply adds nothing.
2. :func:`stand_in_batch` turns the reduced vector into a tensor whose (per-channel) minimum
   and maximum are the global ones, laid out like the real input (the channel count along
   ``ch_axis``), with a NaN where the global batch had non-finite values. Feeding it to the
   observer runs the observer's own update rule on the global extremes: a min/max (or moving
   average) of ``[low, high]`` is ``low`` / ``high``, whatever the batch size.

Float64 carries every float16 / bfloat16 / float32 value exactly, so the round trip through
the collective changes no bit of the extremes.

Worked example, per tensor, two ranks::

    rank 0 batch [-1.0, 2.0]       summary [-1.0, -2.0, -0.0]
    rank 1 batch [ 0.5, 3.0, nan]  summary [ 0.5, -3.0, -1.0]
    MIN                                    [-1.0, -3.0, -1.0]
    stand-in batch on both ranks   [-1.0, 3.0, nan]
"""

from __future__ import annotations

import torch

from pt2e_quant.observer.minmax import finite_row_extremes

__all__ = ["summarize_batch", "stand_in_batch"]

_INF = float("inf")


def _rows(x: torch.Tensor, ch_axis: int | None) -> torch.Tensor:
    """The input as (channels, everything else); one row per tensor."""
    if ch_axis is None:
        return x.reshape(1, -1)
    return x.movedim(ch_axis, 0).reshape(x.shape[ch_axis], -1)


def _finite_extremes(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Per-row (min, max) of the finite values (+inf / -inf for a row without any) and
    whether any value was non-finite."""
    channels = rows.shape[0]
    if rows.numel() == 0:
        empty = torch.full((channels,), _INF, dtype=torch.float64)
        return empty, -empty, False
    low, high, seen = finite_row_extremes(rows)  # exactly what the observers keep
    return low.to(torch.float64), high.to(torch.float64), seen is not None


def summarize_batch(x: torch.Tensor, ch_axis: int | None) -> torch.Tensor:
    """The MIN-reducible float64 summary of one rank's batch (module doc, step 1).

    ``ch_axis`` None means per tensor. The summary lives on the input's device, where the
    collective runs (gloo on CPU, NCCL on GPU).
    """
    x = x.detach()
    low, high, nonfinite = _finite_extremes(_rows(x, ch_axis))
    flag = torch.tensor([-float(nonfinite)], dtype=torch.float64)
    return torch.cat([low.cpu(), -high.cpu(), flag]).to(x.device)


def stand_in_batch(reduced: torch.Tensor, like: torch.Tensor, ch_axis: int | None) -> torch.Tensor:
    """The tensor to observe in place of the global batch (module doc, step 2).

    Per tensor: ``[low, high]`` (plus a NaN if some rank saw a non-finite value), ``[nan]``
    when no rank had a finite value but some had NaN / Inf, and an empty tensor when every
    rank's batch was empty: exactly what the observer would make of the concatenated batch.
    Per channel: three values per channel, ``[low, high, high or nan]``, ``[nan, nan, nan]``
    for a channel with no finite value anywhere, laid out with the channels along ``ch_axis``
    in a tensor of the input's rank (at least 2); empty when every batch was.
    """
    channels = (reduced.numel() - 1) // 2
    reduced = reduced.cpu()
    low, high = reduced[:channels], -reduced[channels : 2 * channels]
    nonfinite = bool(reduced[2 * channels] < 0)
    nan = float("nan")
    if ch_axis is None:
        if not torch.isfinite(low[0]):
            values = [nan] if nonfinite else []
        else:
            values = [low[0].item(), high[0].item()] + ([nan] if nonfinite else [])
        return torch.tensor(values, dtype=torch.float64).to(like.dtype).to(like.device)
    seen = torch.isfinite(low)
    if not nonfinite and not bool(seen.any()):
        return like.new_empty((0,))  # every rank's batch was empty
    marker = torch.full_like(high, nan) if nonfinite else high
    table = torch.stack([low, high, marker], dim=1)  # (channels, 3)
    table = torch.where(seen.unsqueeze(1), table, nan)
    return _lay_out_channels(table, like, ch_axis).to(like.dtype).to(like.device)


def _lay_out_channels(table: torch.Tensor, like: torch.Tensor, ch_axis: int) -> torch.Tensor:
    """Reshape (channels, 3) so the channels sit along ``ch_axis`` as the observer reads it:
    a tensor of ``like``'s rank with the three values along another axis, or, for a 1-D
    input, a 2-D tensor whose axis ``ch_axis`` (0 or -1) holds the channels."""
    if like.dim() < 2:
        return table if ch_axis >= 0 else table.t().contiguous()
    axis = ch_axis % like.dim()
    other = 1 if axis == 0 else 0
    shape = [1] * like.dim()
    shape[axis], shape[other] = table.shape[0], 3
    ordered = table if axis < other else table.t()
    return ordered.contiguous().reshape(shape)
