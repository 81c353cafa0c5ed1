"""quantize() under torch.distributed: each rank passes its shard, every rank returns the same
program, equal to one process calibrated on all the shards (the stock XNNPACK preset's
observers are min/max ones, merged exactly)."""

from __future__ import annotations

import pytest
import torch

from pt2e_quant import quantize
from tests.cli_models import tiny
from tests.core.distributed import quantize_programs as programs
from tests.ranks import run_ranks, values


def _single_process(count: int, **knobs) -> torch.Tensor:
    model, example_inputs = tiny()
    result = quantize(
        model, example_inputs, calibration=programs.data(count), progress=False, **knobs
    )
    assert result.merge is None  # nothing to merge in one process
    return result.module(programs.probe())


@pytest.mark.parametrize("knobs", [{}, {"range_estimator": "mse"}], ids=["stock", "mse"])
def test_every_rank_returns_the_single_process_program(knobs):
    outcomes = values(run_ranks(programs.quantize_shard, 2, 5, knobs))
    expected = _single_process(5, **knobs)
    for outcome in outcomes:
        assert outcome["merged_batches"] == (3, 2)
        torch.testing.assert_close(outcome["output"], outcomes[0]["output"], rtol=0, atol=0)
    if not knobs:  # min/max merges bit for bit; MSE's histogram grid may start coarser
        torch.testing.assert_close(outcomes[0]["output"], expected, rtol=0, atol=0)


def test_the_local_only_algorithms_are_refused_on_every_rank_before_any_work():
    outcomes = run_ranks(programs.quantize_shard, 2, 4, {"bias_correction": True})
    for outcome in outcomes:
        assert outcome.error_type == "DistributedQuantizationError", outcome
        assert "bias_correction" in outcome.error_message
        assert f"rank {outcome.rank} of 2" in outcome.error_message


def test_a_rank_without_data_fails_every_rank_naming_it():
    outcomes = run_ranks(programs.quantize_shard, 3, 2, {})  # rank 2's shard is empty
    for outcome in outcomes:
        assert outcome.error_type == "DistributedQuantizationError", outcome
        assert "rank 2 of 3 has no calibration data" in outcome.error_message
