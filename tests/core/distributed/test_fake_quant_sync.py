"""DDP QAT with synchronised fake-quant observers (pt2e_quant/distributed/fake_quant_sync.py):
two gloo ranks, each on its own shard, against one process on the concatenated batch."""

from __future__ import annotations

import pytest
import torch

from pt2e_quant.distributed.fake_quant_sync import (
    FakeQuantizeSyncError,
    synchronize_fake_quantize,
)
from pt2e_quant.errors import QuantizationError
from tests.core.distributed import qat_programs as programs
from tests.ranks import run_ranks

SYNCHRONISED = ("per_tensor", "per_channel", "plain_batch_norm", "exported_sync_batch_norm")
#: the fake-quant observing the model input: its statistics depend on the data alone
INPUT_FAKE_QUANT = "activation_post_process_0."
QPARAM_SUFFIXES = ("scale", "zero_point", "min_val", "max_val")


@pytest.fixture(scope="module")
def ddp_runs() -> list[dict]:
    """Every DDP configuration trained for three steps, one result dict per rank."""
    return [checks["ddp"] for checks in programs.run_all_checks_once()]


@pytest.fixture(scope="module")
def module_checks() -> list[dict]:
    return [checks["modules"] for checks in programs.run_all_checks_once()]


def _quant_keys(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in state if k.endswith(QPARAM_SUFFIXES)]


@pytest.mark.parametrize("config", SYNCHRONISED)
def test_every_fake_quant_has_the_same_qparams_on_every_rank_after_every_step(ddp_runs, config):
    rank0, rank1 = (run[config]["states"] for run in ddp_runs)
    for step, (mine, theirs) in enumerate(zip(rank0, rank1, strict=True)):
        differ = [k for k in _quant_keys(mine) if not torch.equal(mine[k], theirs[k])]
        assert differ == [], f"step {step}"


@pytest.mark.parametrize("config", ["per_tensor", "per_channel", "exported_sync_batch_norm"])
def test_two_ranks_train_as_one_process_on_the_concatenated_batch(ddp_runs, config):
    run = ddp_runs[0][config]
    for step, (mine, want) in enumerate(zip(run["states"], run["reference_states"], strict=True)):
        for key in _quant_keys(mine) + ["bn.running_mean", "bn.running_var"]:
            if key.startswith(INPUT_FAKE_QUANT):
                # observes data only: the mechanism's promise, bit for bit
                assert torch.equal(mine[key], want[key]), (step, key)
            elif mine[key].is_floating_point():
                # downstream of weights whose gradients were averaged in another order
                torch.testing.assert_close(mine[key], want[key], rtol=1e-5, atol=1e-7)
            else:
                assert (mine[key] - want[key]).abs().max() <= 1, (step, key)
    for name, value in run["parameters"].items():
        torch.testing.assert_close(value, run["reference_parameters"][name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("config", SYNCHRONISED)
def test_the_converted_model_is_identical_on_every_rank(ddp_runs, config):
    assert torch.equal(ddp_runs[0][config]["converted"], ddp_runs[1][config]["converted"])


def test_without_synchronisation_the_ranks_qparams_differ(ddp_runs):
    """The problem is real: each rank observes its own shard (DDP's broadcast at the next
    forward hides it only until the ranks observe again), and the converted models differ."""
    rank0, rank1 = (run["unsynchronised"] for run in ddp_runs)
    for mine, theirs in zip(rank0["states"], rank1["states"], strict=True):
        key = INPUT_FAKE_QUANT + "scale"
        assert not torch.equal(mine[key], theirs[key])
    assert not torch.equal(rank0["converted"], rank1["converted"])


def test_weight_fake_quants_are_skipped_and_still_identical(ddp_runs):
    """The linear weight's fake-quant reads a parameter only: no collective, same qparams.
    The conv weight's reads the batch norm's running variance too (the QAT fold), so it is
    synchronised. (This run synchronised through the DDP wrapper, whose module it reads.)"""
    run = ddp_runs[0]["per_channel"]
    assert run["skipped"] == {
        "activation_post_process_4": "reads parameters only (identical on every rank under DDP)"
    }
    assert "activation_post_process_1" in run["synchronized"]
    for mine, theirs in zip(run["states"], ddp_runs[1]["per_channel"]["states"], strict=True):
        for key in _quant_keys(mine):
            if key.startswith("activation_post_process_4."):
                assert torch.equal(mine[key], theirs[key])


@pytest.mark.parametrize("kind", list(programs.FAKE_QUANT_KINDS))
def test_each_kind_matches_one_process_bit_for_bit_through_degenerate_batches(module_checks, kind):
    """NaN / Inf on one rank, an empty batch on rank 0, a channel with no finite value on any
    rank: statistics, qparams and the fake-quantized local output all equal those of one
    module fed the concatenated batches."""
    for rank, checks in enumerate(module_checks):
        result = checks["kinds"][kind]
        assert result["synchronized"] == ("0",)
        for step, ((state, out), (want_state, want_out)) in enumerate(
            zip(result["got"], result["want"], strict=True)
        ):
            assert state.keys() == want_state.keys()
            for key in state:
                assert torch.equal(state[key], want_state[key]), (rank, step, key)
            assert torch.equal(out, want_out), (rank, step)


@pytest.mark.parametrize(
    "kind", ["torchao_moving_average", "torchao_per_channel_axis1", "torchao_fused"]
)
def test_torchaos_fake_quants_are_synchronised_too(module_checks, kind):
    for checks in module_checks:
        result = checks["torchao_kinds"][kind]
        assert result["synchronized"] == ("0",)
        for (state, out), (want_state, want_out) in zip(result["got"], result["want"], strict=True):
            assert all(torch.equal(state[k], want_state[k]) for k in want_state)
            assert torch.equal(out, want_out)


def test_a_disabled_observer_or_a_removed_handle_runs_no_collective(module_checks):
    # five observing calls: input, scaled conv weight, relu output (twice: shared with the
    # flatten), linear output; the linear weight's is skipped
    assert module_checks[0]["collectives"] == {"observing": 5, "disabled": 0, "removed": 0}


def test_an_observer_with_other_running_state_is_refused_before_any_hook(module_checks):
    found = module_checks[0]["unsupported"]
    error_type, message = found["refused"]
    assert error_type == "UnsupportedFakeQuantizeSyncError"
    assert "FakeQuantize '1' uses HistogramObserver" in message
    assert "MovingAverageMinMaxObserver" in message  # lists what is supported
    assert found["hooks_after_refusal"] == 0


def test_a_frozen_unsupported_observer_is_skipped_until_it_is_re_enabled(module_checks):
    found = module_checks[0]["unsupported"]
    assert found["frozen_skipped"] == {
        "1": "HistogramObserver is disabled (frozen); re-enabling it raises"
    }
    error_type, message = found["re_enabled"]
    assert error_type == "UnsupportedFakeQuantizeSyncError"
    assert "re-enabled after synchronize_fake_quantize skipped it" in message
    assert found["after_remove"] == ("", "")  # remove() takes the guard off too


def test_synchronising_twice_is_refused(module_checks):
    error_type, message = module_checks[0]["unsupported"]["twice"]
    assert error_type == "FakeQuantizeSyncError"
    assert "already synchronised; remove() the first handle" in message


def test_a_rank_raising_mid_step_fails_its_peer_with_a_named_error_not_a_hang():
    outcomes = run_ranks(programs.rank_one_raises_mid_step, 2, deadline=30, collective_timeout=2)
    assert outcomes[1].error_message == "planted failure on rank 1"
    survivor = outcomes[0]
    assert survivor.error_type == "FakeQuantizeSyncError"
    assert "'activation_post_process_2' (observing node 'relu')" in survivor.error_message
    assert "a rank was lost" in survivor.error_message


def test_without_a_process_group_it_says_how_to_start_one():
    assert not torch.distributed.is_initialized()
    with pytest.raises(FakeQuantizeSyncError, match="init_process_group"):
        synchronize_fake_quantize(torch.nn.Linear(2, 2))
    assert issubclass(FakeQuantizeSyncError, QuantizationError)
    assert issubclass(FakeQuantizeSyncError, RuntimeError)
