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


def test_qat_converts_one_program_on_every_rank_and_sync_batch_norm_uses_the_global_batch():
    plain = values(run_ranks(programs.quantize_qat, 2, False))
    synced = values(run_ranks(programs.quantize_qat, 2, True))
    for outputs in (plain, synced):
        torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    # one process on the global batch normalises with the global statistics, as
    # nn.SyncBatchNorm does across ranks; plain batch norm keeps per-rank statistics
    one_process = programs.quantize_qat(0, 1, False)
    synced_gap = (synced[0] - one_process).abs().max()
    plain_gap = (plain[0] - one_process).abs().max()
    assert synced_gap < plain_gap, (synced_gap, plain_gap)
