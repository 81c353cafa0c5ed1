"""Observer state_dicts load across libraries and from old checkpoint versions.

Calibrated observers are saved and restored with the model; a checkpoint written by
torch.ao must load into ours and vice versa (same keys, dtypes, version metadata), and a
pre-version-3 HistogramObserver checkpoint must load as uncalibrated rather than crash.
"""

from __future__ import annotations

import pytest
import torch

import pt2e_quant.observer as ours
from tests.core.observer._observer_parity import (
    PER_CHANNEL,
    PER_TENSOR,
    ao,
    ao_and_ours,
    assert_same_qparams,
    assert_same_state,
    calibration_batches,
    quietly,
)

INF = float("inf")


@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_state_dict_loads_across_libraries(name):
    ref, got = ao_and_ours(name)
    batches = calibration_batches("widening", seed=5)
    for x in batches:
        ref(x)
    for x in reversed(batches):
        got(x)
    # ours -> fresh torch.ao, torch.ao -> fresh ours (per-channel buffers start empty).
    ref_loaded = quietly(getattr(ao, name))
    ref_loaded.load_state_dict(got.state_dict())
    got_loaded = getattr(ours, name)()
    got_loaded.load_state_dict(ref.state_dict())
    assert_same_state(ref, got_loaded)
    assert_same_state(ref_loaded, got)
    assert_same_qparams(ref.calculate_qparams(), got_loaded.calculate_qparams())
    assert got.state_dict()._metadata[""]["version"] == ref.state_dict()._metadata[""]["version"]


def test_histogram_loads_pre_version_3_checkpoint():
    obs = ours.HistogramObserver(bins=8)
    state = {
        "eps": torch.tensor([1e-7]),
        "histogram": torch.zeros(8),
        "min_val": torch.tensor([]),
        "max_val": torch.tensor([]),
    }
    obs._load_from_state_dict(state, "", {"version": 2}, True, [], [], [])
    assert obs.min_val.item() == INF and obs.max_val.item() == -INF
    assert not obs.has_observed_data()
