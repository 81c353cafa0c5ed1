"""The batch summary and stand-in batch of pt2e_quant/distributed/fake_quant_proxy.py, one
process: an all-reduce is emulated by an elementwise minimum of the ranks' summaries."""

from __future__ import annotations

import warnings

import pytest
import torch

from pt2e_quant.distributed.fake_quant_proxy import stand_in_batch, summarize_batch
from pt2e_quant.observer import MinMaxObserver, PerChannelMinMaxObserver

NAN, INF = float("nan"), float("inf")


def _reduce(*shards: torch.Tensor, ch_axis: int | None) -> torch.Tensor:
    summaries = [summarize_batch(s, ch_axis) for s in shards]
    return torch.stack(summaries).amin(dim=0)


def test_the_worked_example_of_the_module_doc():
    a, b = torch.tensor([-1.0, 2.0]), torch.tensor([0.5, 3.0, NAN])
    assert summarize_batch(a, None).tolist() == [-1.0, -2.0, -0.0]
    assert summarize_batch(b, None).tolist() == [0.5, -3.0, -1.0]
    stand_in = stand_in_batch(_reduce(a, b, ch_axis=None), a, None)
    assert stand_in[:2].tolist() == [-1.0, 3.0] and stand_in[2].isnan()


@pytest.mark.parametrize(
    ("shape", "ch_axis", "stand_in_shape"),
    [
        ((2, 3, 4), 1, (3, 3, 1)),
        ((2, 3, 4), 2, (3, 1, 4)),
        ((2, 3, 4), -1, (3, 1, 4)),
        ((5, 3), 0, (5, 3)),
        ((3,), 0, (3, 3)),
        ((3,), -1, (3, 3)),
    ],
)
def test_the_stand_in_puts_the_channels_where_the_observer_reads_them(
    shape, ch_axis, stand_in_shape
):
    torch.manual_seed(0)
    shards = [torch.randn(shape) * 3, torch.randn(shape)]
    stand_in = stand_in_batch(_reduce(*shards, ch_axis=ch_axis), shards[0], ch_axis)
    assert tuple(stand_in.shape) == stand_in_shape
    rows = stand_in.movedim(ch_axis, 0).reshape(shape[ch_axis], -1)
    whole = torch.stack(shards).movedim(ch_axis % len(shape) + 1, 0).reshape(shape[ch_axis], -1)
    assert torch.equal(rows.amin(dim=1), whole.amin(dim=1))
    assert torch.equal(rows.amax(dim=1), whole.amax(dim=1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_extremes_survive_the_float64_round_trip_bit_for_bit(dtype):
    x = (torch.randn(64) * 1e3).to(dtype)
    stand_in = stand_in_batch(_reduce(x, ch_axis=None), x, None)
    assert stand_in.dtype == dtype
    assert torch.equal(stand_in, torch.stack([x.min(), x.max()]))


def test_every_rank_empty_gives_an_empty_stand_in_and_the_observer_stays_unseen():
    empty = torch.empty(0, 3)
    for ch_axis in (None, 1):
        stand_in = stand_in_batch(_reduce(empty, empty, ch_axis=ch_axis), empty, ch_axis)
        assert stand_in.numel() == 0
    observer = PerChannelMinMaxObserver(ch_axis=1)
    observer(stand_in)
    assert not observer.has_observed_data()


def test_nothing_finite_anywhere_gives_a_nan_the_observer_drops():
    shards = [torch.tensor([NAN, INF]), torch.empty(0)]
    stand_in = stand_in_batch(_reduce(*shards, ch_axis=None), shards[0], None)
    assert stand_in.shape == (1,) and stand_in.isnan().all()
    observer, alone = MinMaxObserver(), MinMaxObserver()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        observer(stand_in)
        alone(torch.cat(shards))
    assert len(caught) == 2  # each warns once about the non-finite input
    assert observer.min_val == alone.min_val == INF
