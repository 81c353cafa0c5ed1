"""calibration helpers: argument checks and the random data the CLI calibrates on.

* ``max_batches`` is checked before any slow work and must be a positive int: a float such
  as 2.0 (a computed fraction of a dataset) must be refused with a message naming it, not
  fail later inside ``islice`` after the model has been exported.
* Random integer inputs stand for indices (token ids, embedding rows): they must cover the
  whole range ``0 .. example.max()`` the model was exported with, including the maximum.
"""

from __future__ import annotations

import pytest
import torch

from pt2e_quant.pipeline.calibration import (
    calibrate,
    check_max_batches,
    load_batches,
    random_batches,
)


@pytest.mark.parametrize("bad", [2.0, 0, -1, "3"])
def test_max_batches_must_be_a_positive_int(bad) -> None:
    with pytest.raises(ValueError, match="max_batches must be a positive int or None"):
        check_max_batches(bad)


def test_calibrate_refuses_a_float_max_batches_before_running_the_model() -> None:
    calls = []
    with pytest.raises(ValueError, match="max_batches must be a positive int"):
        calibrate(calls.append, [(torch.ones(1),)], (torch.ones(1),), max_batches=1.0)
    assert calls == []


def test_random_integer_inputs_cover_zero_to_the_example_maximum() -> None:
    torch.manual_seed(0)
    example = (torch.tensor([[0, 2]]), torch.randn(1, 3))
    batches = random_batches(example, 60)

    ids = torch.cat([batch[0].reshape(-1) for batch in batches])
    assert ids.dtype == torch.int64 and set(ids.tolist()) == {0, 1, 2}
    assert all(batch[1].shape == (1, 3) and batch[1].is_floating_point() for batch in batches)


def test_a_saved_tensor_is_split_into_full_batches_only(tmp_path) -> None:
    """5 rows with a batch of 2: two batches; the 1-row rest would fail a static-batch model."""
    path = tmp_path / "data.pt"
    torch.save(torch.arange(5.0).reshape(5, 1), path)

    batches = load_batches(path, (torch.zeros(2, 1),))

    assert [batch[0].shape for batch in batches] == [(2, 1), (2, 1)]


def test_a_saved_tensor_for_a_two_input_model_is_refused(tmp_path) -> None:
    path = tmp_path / "data.pt"
    torch.save(torch.zeros(4, 3), path)
    with pytest.raises(ValueError, match=r"holds one tensor but the model takes 2 inputs"):
        load_batches(path, (torch.zeros(1, 3), torch.zeros(1, 3)))
