"""Observers on degenerate data: NaN/Inf, empty, all-zero, one-channel and uncalibrated inputs.

torch.ao has no defined behaviour for most of these (NaN poisons min/max, an uncalibrated
observer silently returns scale 1), so here we pin our own documented behaviour: non-finite
values are dropped and reported once, empty batches are no-ops, zero ranges still give a
finite positive scale, and an uncalibrated observer warns. Where torch.ao does define the
result (finite parts, all zeros) we still require its exact qparams.
"""

from __future__ import annotations

import copy
import warnings

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
    quietly,
    run_both,
)

NAN, INF = float("nan"), float("inf")


def _finite(x: torch.Tensor) -> torch.Tensor:
    return x[torch.isfinite(x)]


@pytest.mark.parametrize("name", PER_TENSOR)
def test_non_finite_values_are_dropped_and_reported_once(name):
    clean = [torch.tensor([1.0, -2.0, 3.5]), torch.tensor([0.5, 4.0]), torch.tensor([-6.0])]
    dirty = [
        torch.tensor([1.0, NAN, -2.0, INF, 3.5]),
        torch.tensor([0.5, -INF, 4.0, NAN]),
        torch.tensor([NAN, INF]),
        torch.tensor([-6.0, NAN]),
    ]
    ref = quietly(getattr(ao, name))
    for x in clean:
        ref(x)
    got = getattr(ours, name)()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x in dirty:
            got(x)
    reports = [w for w in caught if issubclass(w.category, ours.NonFiniteObservationWarning)]
    assert len(reports) == 1 and name in str(reports[0].message)
    assert_same_state(ref, got)
    scale, zero_point = got.calculate_qparams()
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert_same_qparams(ref.calculate_qparams(), (scale, zero_point))


@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_all_non_finite_batch_is_a_no_op(name):
    obs = getattr(ours, name)()
    before = copy.deepcopy(obs.state_dict())
    quietly(obs, torch.full((3, 4), NAN))
    quietly(obs, torch.tensor([[INF, -INF], [NAN, INF]]))
    after = obs.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not obs.has_observed_data()


@pytest.mark.parametrize("name", PER_CHANNEL)
def test_per_channel_non_finite_values_dropped_per_channel(name):
    x = torch.randn(3, 5)
    x[0, 1], x[2, 4] = NAN, -INF
    x[1] = NAN  # a channel with nothing finite in this batch
    x2 = torch.randn(3, 5) * 2
    got = getattr(ours, name)(qscheme=torch.per_channel_symmetric, dtype=torch.qint8)
    quietly(got, x)
    got(x2)
    scale, zero_point = got.calculate_qparams()
    assert torch.isfinite(scale).all() and (scale > 0).all()
    # Channels 0 and 2 equal torch.ao fed only their finite values; channel 1 only saw x2.
    for ch in range(3):
        ref = quietly(getattr(ao, name), qscheme=torch.per_channel_symmetric, dtype=torch.qint8)
        parts = [_finite(x[ch]), x2[ch]] if ch != 1 else [x2[ch]]
        for part in parts:
            ref(part.reshape(1, -1))
        ref_scale, ref_zp = ref.calculate_qparams()
        assert torch.equal(scale[ch : ch + 1], ref_scale)
        assert torch.equal(zero_point[ch : ch + 1], ref_zp)
    # A channel with running statistics keeps them through a batch where it has no finite value.
    before_min, before_max = got.min_val.clone(), got.max_val.clone()
    x3 = torch.randn(3, 5) * 10
    x3[2] = INF
    got(x3)
    assert got.min_val[2] == before_min[2] and got.max_val[2] == before_max[2]
    assert not torch.equal(got.min_val[:2], before_min[:2])


@pytest.mark.parametrize("name", PER_CHANNEL)
@pytest.mark.parametrize(
    "bad_row",
    [[1.0, INF, 2.0], [1.0, -INF, 2.0], [INF, INF, INF], [-INF, -INF, -INF], [1.0, NAN, 2.0]],
    ids=["one-inf", "one-neg-inf", "all-inf", "all-neg-inf", "one-nan"],
)
def test_per_channel_detects_any_non_finite_kind_in_one_channel(name, bad_row):
    """The finiteness check reads only the smallest minimum and largest maximum over channels:
    each kind of non-finite channel must still show there, and be dropped."""
    x = torch.tensor([[0.5, -0.25, 0.75], bad_row, [-3.0, 0.0, 1.5]])
    got = getattr(ours, name)(qscheme=torch.per_channel_symmetric, dtype=torch.qint8)
    with pytest.warns(ours.NonFiniteObservationWarning):
        got(x)
    finite_row = _finite(torch.tensor(bad_row))
    assert got.min_val[0] == -0.25 and got.max_val[2] == 1.5
    if finite_row.numel():
        assert got.min_val[1] == finite_row.min() and got.max_val[1] == finite_row.max()
    else:  # nothing finite in that channel: still "not seen"
        assert got.min_val[1] == INF and got.max_val[1] == -INF


def test_per_channel_unseen_channel_gets_all_zero_qparams():
    x = torch.randn(2, 4)
    x[1] = NAN
    got = ours.PerChannelMinMaxObserver()
    quietly(got, x)
    assert got.has_observed_data()
    zero_ref = ao.PerChannelMinMaxObserver()
    zero_ref(torch.zeros(1, 4))
    scale, zero_point = got.calculate_qparams()
    ref_scale, ref_zp = zero_ref.calculate_qparams()
    assert torch.equal(scale[1:], ref_scale) and torch.equal(zero_point[1:], ref_zp)


@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_all_zero_tensor_gives_finite_positive_scale(name):
    ref, got = run_both(name, {}, [torch.zeros(2, 3)])
    scale, _ = got.calculate_qparams()
    assert torch.isfinite(scale).all() and (scale > 0).all()


@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_empty_tensor_is_a_no_op(name):
    ref, got = ao_and_ours(name)
    x = torch.randn(3, 4)
    got(x)
    ref(x)
    got(torch.empty(0, 4))
    got(torch.empty(3, 0))
    assert_same_state(ref, got)
    fresh = getattr(ours, name)()
    fresh(torch.empty(0))
    assert not fresh.has_observed_data()


@pytest.mark.parametrize("name", PER_CHANNEL)
def test_single_channel_and_one_dimensional_inputs(name):
    run_both(name, {"ch_axis": 1}, [torch.randn(5, 1, 3), torch.randn(5, 1, 3) * 4])
    # torch.ao cannot observe a 1-D tensor per channel; we treat each element as a channel.
    got = getattr(ours, name)()
    ref = quietly(getattr(ao, name))
    bias = torch.randn(6)
    got(bias)
    ref(bias.reshape(6, 1))
    assert_same_qparams(ref.calculate_qparams(), got.calculate_qparams())


@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_uncalibrated_observer_returns_defaults_and_warns(name):
    obs = getattr(ours, name)()
    assert obs.has_observed_data() is False
    with pytest.warns(UserWarning, match=name):
        scale, zero_point = obs.calculate_qparams()
    assert torch.equal(scale, torch.tensor([1.0])) and torch.equal(zero_point, torch.tensor([0]))
    assert_same_qparams(quietly(getattr(ao, name)().calculate_qparams), (scale, zero_point))
    obs(torch.randn(2, 3))
    assert obs.has_observed_data() is True


def test_range_wider_than_float32_still_gives_finite_qparams():
    for name in ("MinMaxObserver", "HistogramObserver"):
        obs = getattr(ours, name)()
        obs(torch.tensor([-3e38, 3e38]))
        scale, zero_point = quietly(obs.calculate_qparams)
        assert torch.isfinite(scale).all() and (scale > 0).all(), name


def test_reset_min_max_vals_returns_to_uncalibrated():
    for name in PER_TENSOR + PER_CHANNEL:
        obs = getattr(ours, name)()
        obs(torch.randn(2, 3))
        obs.reset_min_max_vals()
        assert not obs.has_observed_data(), name
        obs(torch.ones(2, 3))
        assert obs.has_observed_data(), name


@pytest.mark.parametrize(
    "name", ["MovingAverageMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"]
)
def test_averaging_onto_a_constant_batch_keeps_a_calibrated_range(name):
    """With averaging_constant=1 (the dynamic / QAT-dynamic presets) a constant batch after
    any other ends the two averages one rounding step apart in the wrong order (torch.ao then
    asserts). The range is the constant's, as a fresh observer gives it, to that last step."""
    first, constant = torch.tensor([[-0.6, 1.1, 0.9, -0.2]]), torch.full((1, 4), 0.05)
    kwargs = {"averaging_constant": 1, "dtype": torch.qint8, "quant_min": -128}
    kwargs |= {"quant_max": 127, "eps": 2**-12}
    if "PerChannel" in name:
        kwargs |= {"ch_axis": 0, "qscheme": torch.per_channel_symmetric}
    obs, fresh = getattr(ours, name)(**kwargs), getattr(ours, name)(**kwargs)
    obs(first)
    obs(constant)
    fresh(constant)
    assert obs.has_observed_data() and bool((obs.min_val <= obs.max_val).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (scale, zero_point), (ref_scale, ref_zero_point) = (
            obs.calculate_qparams(),
            fresh.calculate_qparams(),
        )
    assert torch.allclose(scale, ref_scale, rtol=1e-6, atol=0)
    assert torch.equal(zero_point, ref_zero_point)


def test_averaging_keeps_an_unseen_channel_unseen():
    obs = ours.MovingAveragePerChannelMinMaxObserver(averaging_constant=1)
    x = torch.randn(2, 3)
    obs(x)
    x[1] = NAN
    quietly(obs, x)
    assert obs.min_val[1] <= obs.max_val[1]
    fresh = ours.MovingAveragePerChannelMinMaxObserver(averaging_constant=1)
    y = torch.full((2, 3), NAN)
    y[0] = x[0]
    for _ in range(2):  # the first batch initialises, the second averages
        quietly(fresh, y)
    assert (fresh.min_val[1], fresh.max_val[1]) == (INF, -INF)


@pytest.mark.parametrize("buffer_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_half_precision_statistics_give_torch_ao_qparams(name, buffer_dtype):
    """An observer moved to float16 / bfloat16 (``.half()`` on a prepared model) computes its
    qparams in that dtype, as torch.ao does; the float32 cap on huge scales must not overflow
    the narrower dtype."""
    x = torch.tensor([[-1.0, 0.5, 2.0], [0.25, -0.75, 1.5]])
    ref, got = ao_and_ours(name)
    ref, got = ref.to(buffer_dtype), got.to(buffer_dtype)
    ref(x)
    got(x)
    assert_same_qparams(ref.calculate_qparams(), got.calculate_qparams())
    wide = getattr(ours, name)().to(buffer_dtype)
    wide(torch.tensor([[-6e4, 6e4], [6e4, -6e4]]).to(buffer_dtype))
    scale, _ = quietly(wide.calculate_qparams)
    assert scale.dtype == buffer_dtype and bool(torch.isfinite(scale).all())


@pytest.mark.parametrize("name", PER_TENSOR)
def test_float64_value_beyond_float32_is_dropped_like_an_inf(name):
    """1e39 is finite in a float64 batch but inf in the float32 statistics: dropped (and
    reported) like an Inf, so the range and qparams are those of the rest of the batch, and
    the observer keeps working on later batches."""
    kept = torch.tensor([-1.0, 2.0, 0.5], dtype=torch.float64)
    ref, got = ao_and_ours(name)
    ref(kept)
    with pytest.warns(UserWarning):
        got(torch.cat([kept, torch.tensor([1e39], dtype=torch.float64)]))
    assert_same_qparams(ref.calculate_qparams(), got.calculate_qparams())
    got(torch.randn(8))
    assert bool(torch.isfinite(got.max_val))
