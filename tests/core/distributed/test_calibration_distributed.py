"""Data-parallel calibration on real gloo ranks: every rank converts to the same model, equal to
one process over the concatenated shards for min/max observers; a rank with no data, a
failing batch or a lost peer makes every surviving rank raise, naming the rank, in time."""

from __future__ import annotations

import time

import pytest
import torch

from pt2e_quant.distributed.calibration import calibrate_distributed, sync_observers
from pt2e_quant.distributed.collectives import gather_or_fail, world
from tests.core.distributed import calibration_programs as programs
from tests.ranks import run_ranks, values


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _assert_same_states(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for name in left:
        for buffer in left[name]:
            assert _bitwise_equal(left[name][buffer], right[name][buffer]), (name, buffer)


CASES_2_RANKS = [
    ("conv", "minmax", "uneven"),
    ("linear", "minmax", "uneven"),
    ("conv", "histogram", "uneven"),
    ("conv", "histogram", "same_one_batch"),
    ("linear", "moving_average", "same"),
    ("linear", "moving_average", "uneven"),
]


def test_two_ranks_convert_to_the_same_model_as_one_process_over_all_shards():
    results = values(run_ranks(programs.model_guarantees, 2, CASES_2_RANKS, [2, 1], deadline=60))
    for index, (model, kind, data) in enumerate(CASES_2_RANKS):
        rank0, rank1 = results[0][index], results[1][index]
        assert rank0["batches"] == (2, 1) or data != "uneven"
        assert _bitwise_equal(rank0["merged"], rank1["merged"]), (model, kind, data)
        _assert_same_states(rank0["merged_states"], rank1["merged_states"])
        exact = kind == "minmax" or data != "uneven"
        if exact:  # min/max always; histogram and moving average on identical data
            assert _bitwise_equal(rank0["merged"], rank0["single"]), (model, kind, data)
            _assert_same_states(rank0["merged_states"], rank0["single_states"])
        else:  # the merge's own rule: close to one process, not equal
            assert torch.allclose(rank0["merged"], rank0["single"], atol=0.5)


def test_three_ranks_with_uneven_shards_match_one_process_bit_for_bit():
    cases = [("conv", "minmax", "uneven")]
    results = values(run_ranks(programs.model_guarantees, 3, cases, [1, 3, 2], deadline=60))
    for result in results:
        assert result[0]["batches"] == (1, 3, 2)
        assert _bitwise_equal(result[0]["merged"], results[0][0]["single"])
        _assert_same_states(result[0]["merged_states"], results[0][0]["single_states"])


def _assert_every_rank_raises(outcomes, *patterns: str) -> None:
    for outcome in outcomes:
        assert outcome.error_type == "DistributedQuantizationError", outcome
        for pattern in patterns:
            assert pattern in outcome.error_message, (pattern, outcome.error_message)


def test_ranks_with_an_empty_shard_or_a_failing_batch_fail_every_rank_naming_each():
    outcomes = run_ranks(programs.empty_shard_and_bad_batch, 3, deadline=30, collective_timeout=5)
    _assert_every_rank_raises(
        outcomes,
        "calibrate_distributed failed on 2 of 3 ranks",
        "rank 1: CalibrationError: rank 1 of 3 has no calibration data",
        "DistributedSampler",
        "rank 2: CalibrationError: calibration batch 0 has inputs ((2, 5))",
    )


def test_a_rank_that_exits_before_the_merge_fails_its_peer_within_the_timeout():
    start = time.monotonic()
    outcomes = run_ranks(
        programs.rank_1_exits_before_the_merge, 2, deadline=30, collective_timeout=3
    )
    assert time.monotonic() - start < 20
    assert outcomes[1].error_type == "Died"
    _assert_every_rank_raises(
        outcomes[:1], "sync_observers: rank 0 of 2 lost contact", "init_process_group(timeout="
    )


def test_an_unknown_observer_is_refused_on_every_rank_by_class():
    outcomes = run_ranks(programs.unknown_observer, 2, deadline=30, collective_timeout=5)
    _assert_every_rank_raises(
        outcomes, "ranks 0, 1: DistributedQuantizationError", "(RunningMeanObserver)"
    )


def test_merging_twice_on_real_ranks_changes_nothing():
    results = values(run_ranks(programs.sync_twice, 2, deadline=30))
    for after_first, after_second, contributors in results:
        _assert_same_states(after_first, after_second)
        _assert_same_states(after_first, results[0][0])
        assert set(contributors.values()) == {()}


def test_without_a_process_group_everything_runs_as_one_process():
    net = programs.TinyNet()
    assert world() is None
    report = calibrate_distributed(net, programs._tiny_shard(0), (torch.randn(2, 4),))
    assert (report.world_size, report.batches, report.observers) == (1, (2,), 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert not sync_observers(net).distributed
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert gather_or_fail({"a": 1}, "step") == [{"a": 1}]
    with pytest.raises(KeyError, match="local"):
        gather_or_fail(KeyError("local"), "step")
