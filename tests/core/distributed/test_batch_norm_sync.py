"""Global (SyncBatchNorm) batch norm for exported graphs (pt2e_quant/distributed/
batch_norm_sync.py): two gloo ranks against one process on the concatenated batch. The DDP QAT
runs with it (and with an exported ``nn.SyncBatchNorm``) are in test_fake_quant_sync.py."""

from __future__ import annotations

import pytest
import torch

from pt2e_quant.distributed.batch_norm_sync import BatchNormSyncError, synchronize_batch_norm
from tests.core.distributed import qat_programs as programs


@pytest.fixture(scope="module")
def runs() -> list[dict]:
    return [checks["batch_norm"] for checks in programs.run_all_checks_once()]


@pytest.mark.parametrize("step", [0, 1], ids=["even_shards", "rank0_empty"])
def test_two_ranks_compute_what_one_process_computes_on_the_concatenated_batch(runs, step):
    """Outputs, input gradients, parameter gradients (summed over ranks) and running
    statistics, for a BatchNorm2d and a BatchNorm1d without running statistics."""
    for run in runs:
        got, want = run["got"][step], run["want"][step]
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].shape == want[key].shape, key
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)


def test_without_global_statistics_the_ranks_would_differ(runs):
    """Guards the test above against a vacuous pass: the shards' own statistics differ."""
    step0 = [run["got"][0]["bn.running_mean"] for run in runs]
    assert torch.equal(step0[0], step0[1])  # synchronised
    local_means = [
        programs._shard(programs._global_batch(0)[0], rank, 2).mean() for rank in range(2)
    ]
    assert not torch.isclose(local_means[0], local_means[1])


def test_the_rewrite_keeps_each_node_and_remove_restores_aten_batch_norm(runs):
    structure = runs[0]["structure"]
    assert structure["nodes"] == ("batch_norm", "batch_norm_1")
    assert structure["while_synced"] == [
        ("batch_norm", "call_module", "global_batch_norm_0"),
        ("batch_norm_1", "call_module", "global_batch_norm_1"),
    ]
    assert structure["after_remove"] == [
        ("batch_norm", "call_function", "aten.batch_norm.default"),
        ("batch_norm_1", "call_function", "aten.batch_norm.default"),
    ]
    assert structure["modules_left"] == []


def test_fewer_than_two_values_per_channel_globally_raise_on_every_rank(runs):
    """Rank 0 holds one sample, rank 1 none: BatchNorm1d has one value per channel in the
    global batch, and every rank raises the same error (no rank is left waiting)."""
    for run in runs:
        error_type, message = run["too_few"]
        assert error_type == "ValueError"
        assert "GlobalBatchNorm 'batch_norm_1'" in message
        assert "got 1" in message


def test_a_decomposed_training_batch_norm_is_refused_by_name(runs):
    error_type, message = runs[0]["decomposed"]
    assert error_type == "BatchNormSyncError"
    assert "'_native_batch_norm_legit_functional'" in message
    assert "before run_decompositions" in message


def test_without_a_process_group_it_says_how_to_start_one():
    assert not torch.distributed.is_initialized()
    gm = torch.fx.symbolic_trace(torch.nn.Linear(2, 2))
    with pytest.raises(BatchNormSyncError, match="init_process_group"):
        synchronize_batch_norm(gm)


@pytest.mark.parametrize(
    ("config", "while_synced"),
    [
        ("per_tensor", ["global_batch_norm_0"]),
        # nn.SyncBatchNorm exports as aten.batch_norm (exported in eval mode: with a process
        # group, torch refuses to run it in training mode on CPU), which is then rewritten
        ("exported_sync_batch_norm", ["global_batch_norm_0"]),
        ("plain_batch_norm", ["aten.batch_norm.default"]),
    ],
)
def test_qat_batch_norm_follows_the_users_choice(config, while_synced):
    for checks in programs.run_all_checks_once():
        run = checks["ddp"][config]
        assert run["batch_norm_while_synced"] == while_synced
        assert run["batch_norm_after_remove"] == ["aten.batch_norm.default"]
