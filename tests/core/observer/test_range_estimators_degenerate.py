"""Range estimators on degenerate data and bad arguments: the min/max observers' guarantees.

All-zero and constant data get exactly MinMaxObserver's qparams (with one message naming the
observer), NaN/Inf values are dropped with the same warning as the other observers, empty
batches are no-ops (reported once), an uncalibrated observer returns the defaults with a
warning, single channels and 1-D inputs work, and bad constructor arguments raise a SpecError
naming the argument.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

import pt2e_quant.observer as ours
from pt2e_quant.errors import SpecError
from pt2e_quant.observer import (
    DegenerateObservationWarning,
    KLDivergenceObserver,
    MinMaxObserver,
    MSEObserver,
    NonFiniteObservationWarning,
    PercentileObserver,
    PerChannelMinMaxObserver,
    PerChannelMSEObserver,
    PerChannelPercentileObserver,
    UnsupportedObserverConfigError,
)

PER_TENSOR = [PercentileObserver, MSEObserver, KLDivergenceObserver]
PER_CHANNEL = [PerChannelMSEObserver, PerChannelPercentileObserver]
NAN, INF = float("nan"), float("inf")


def _quietly(observer: torch.nn.Module, *batches: torch.Tensor) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in batches:
            observer(batch)
    return observer


def _same_qparams(got: tuple, expected: tuple) -> bool:
    return torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def _reference(cls: type) -> type:
    return PerChannelMinMaxObserver if cls in PER_CHANNEL else MinMaxObserver


@pytest.mark.parametrize("value", [0.0, 3.25, -0.5])
@pytest.mark.parametrize("cls", PER_TENSOR + PER_CHANNEL)
def test_constant_data_gets_minmax_qparams_and_one_message_naming_the_observer(cls, value):
    observer = cls(dtype=torch.qint8, qscheme=None)
    observer.observed_node = "relu_3"
    with pytest.warns(DegenerateObservationWarning, match=rf"{cls.__name__} of 'relu_3'") as rec:
        observer(torch.full((4, 5), value))
        observer(torch.full((4, 5), value))
    assert sum(issubclass(w.category, DegenerateObservationWarning) for w in rec) == 1
    reference = _reference(cls)(dtype=torch.qint8)
    reference(torch.full((4, 5), value))
    assert _same_qparams(observer.calculate_qparams(), reference.calculate_qparams())
    scale = observer.calculate_qparams()[0]
    assert bool(torch.isfinite(scale).all()) and bool((scale > 0).all())


@pytest.mark.parametrize("cls", PER_TENSOR + PER_CHANNEL)
def test_empty_batch_is_a_no_op_reported_once(cls):
    observer = cls()
    x = torch.randn(3, 8)
    observer(x)
    before = copy.deepcopy(observer.state_dict())
    with pytest.warns(DegenerateObservationWarning, match="empty batch") as rec:
        observer(torch.empty(0, 8))
        observer(torch.empty(3, 0))
    assert sum(issubclass(w.category, DegenerateObservationWarning) for w in rec) == 1
    after = observer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    fresh = _quietly(cls(), torch.empty(0))
    assert not fresh.has_observed_data()


@pytest.mark.parametrize("cls", PER_TENSOR)
def test_non_finite_values_are_dropped_with_one_warning(cls):
    clean = torch.tensor([1.0, -2.0, 3.5, 0.25, -0.75])
    dirty = torch.tensor([1.0, NAN, -2.0, INF, 3.5, 0.25, -INF, -0.75])
    reference = cls()
    reference(clean)
    observer = cls()
    with pytest.warns(NonFiniteObservationWarning, match=cls.__name__) as rec:
        observer(dirty)
        observer(torch.tensor([NAN, INF]))  # nothing finite: a no-op
    assert sum(issubclass(w.category, NonFiniteObservationWarning) for w in rec) == 1
    for key, value in reference.state_dict().items():
        assert torch.equal(value, observer.state_dict()[key]), key
    assert _same_qparams(observer.calculate_qparams(), reference.calculate_qparams())


@pytest.mark.parametrize("cls", PER_CHANNEL)
def test_per_channel_non_finite_values_are_dropped_per_channel(cls):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 64, generator=g)
    dirty = x.clone()
    dirty[0, 5], dirty[2, 9] = NAN, INF
    dirty[1] = NAN  # a channel that sees nothing finite
    observer = cls(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    with pytest.warns(NonFiniteObservationWarning):
        observer(dirty)
    for row in (0, 2):
        kept = x[row][torch.isfinite(dirty[row])][None]
        alone = cls(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        alone(kept)
        assert torch.equal(observer.calculate_qparams()[0][row], alone.calculate_qparams()[0][0])
    zero = PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    zero(torch.zeros(1, 4))
    assert _same_qparams(
        tuple(t[1:2] for t in observer.calculate_qparams()), zero.calculate_qparams()
    )


@pytest.mark.parametrize("cls", PER_TENSOR + PER_CHANNEL)
def test_uncalibrated_observer_returns_defaults_and_warns(cls):
    observer = cls()
    assert not observer.has_observed_data()
    with pytest.warns(UserWarning, match=cls.__name__):
        scale, zero_point = observer.calculate_qparams()
    assert torch.equal(scale, torch.tensor([1.0])) and torch.equal(zero_point, torch.tensor([0]))
    observer(torch.randn(2, 3))
    assert observer.has_observed_data()


@pytest.mark.parametrize("cls", PER_CHANNEL)
def test_single_channel_and_one_dimensional_inputs(cls):
    x = torch.randn(5, 1, 30, generator=torch.Generator().manual_seed(1))
    observer = cls(ch_axis=1)
    observer(x)
    scale, _ = observer.calculate_qparams()
    assert scale.shape == (1,)
    alone = cls(ch_axis=0)
    alone(x.movedim(1, 0))
    assert torch.equal(scale, alone.calculate_qparams()[0])
    bias = torch.randn(6)
    one_d = cls()
    one_d(bias)
    assert one_d.calculate_qparams()[0].shape == (6,)


@pytest.mark.parametrize("cls", PER_TENSOR)
def test_zeros_first_then_real_data(cls):
    """All-zero batches start the grid at its finest width; wider data then merges it, and
    the zeros stay counted in the zero bin."""
    observer = _quietly(cls(), torch.zeros(100))
    x = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    observer(x)
    assert int(observer.histogram.sum()) == 1100
    assert observer.histogram.numel() <= 2 * observer.bins + 1
    scale, _ = observer.calculate_qparams()
    assert 0 < float(scale) <= float(MinMaxObserver()._calculate_qparams(x.min(), x.max())[0])


@pytest.mark.parametrize("cls", PER_TENSOR)
def test_values_near_the_float32_limit_give_finite_qparams(cls):
    observer = _quietly(cls(), torch.tensor([-3e38, 3e38, 1.0, 0.0]))
    scale, _ = observer.calculate_qparams()
    assert bool(torch.isfinite(scale).all()) and float(scale) > 0
    assert int(observer.histogram.sum()) == 4


@pytest.mark.parametrize("cls", PER_TENSOR)
def test_float64_value_beyond_float32_is_dropped_like_an_inf(cls):
    kept = torch.tensor([-1.0, 2.0, 0.5], dtype=torch.float64)
    reference = cls()
    reference(kept)
    observer = cls()
    with pytest.warns(NonFiniteObservationWarning):
        observer(torch.cat([kept, torch.tensor([1e39], dtype=torch.float64)]))
    assert _same_qparams(observer.calculate_qparams(), reference.calculate_qparams())


@pytest.mark.parametrize("cls", PER_TENSOR + PER_CHANNEL)
def test_half_precision_statistics_give_finite_qparams(cls):
    observer = cls().to(torch.float16)
    observer(torch.tensor([[-1.0, 0.5, 2.0], [0.25, -0.75, 1.5]]).to(torch.float16))
    scale, _ = observer.calculate_qparams()
    assert scale.dtype == torch.float16 and bool(torch.isfinite(scale).all())


@pytest.mark.parametrize("cls", PER_TENSOR + PER_CHANNEL)
def test_reset_returns_to_uncalibrated_and_state_dict_round_trips(cls):
    x = torch.randn(4, 50, generator=torch.Generator().manual_seed(3))
    observer = cls()
    observer(x)
    loaded = cls()
    loaded.load_state_dict(observer.state_dict())
    assert _same_qparams(loaded.calculate_qparams(), observer.calculate_qparams())
    observer.reset_min_max_vals()
    assert not observer.has_observed_data()
    observer(torch.randn(2, 3))
    assert observer.has_observed_data()


def test_qparams_are_searched_once_until_the_next_batch(monkeypatch):
    observer = MSEObserver()
    observer(torch.randn(200))
    calls = []
    search = MSEObserver._choose_range
    monkeypatch.setattr(MSEObserver, "_choose_range", lambda self: calls.append(1) or search(self))
    first = observer.calculate_qparams()
    assert _same_qparams(observer.calculate_qparams(), first) and len(calls) == 1
    observer(torch.randn(200) * 3)
    observer.calculate_qparams()
    assert len(calls) == 2


def test_a_weight_seen_again_unchanged_is_not_searched_again(monkeypatch):
    weight = torch.nn.Parameter(torch.randn(4, 16))
    observer = PerChannelMSEObserver()
    calls = []
    search = PerChannelMSEObserver._clip_rows
    monkeypatch.setattr(
        PerChannelMSEObserver, "_clip_rows", lambda self, *a: calls.append(1) or search(self, *a)
    )
    observer(weight)
    observer(weight)
    assert len(calls) == 1
    with torch.no_grad():
        weight.mul_(2)  # modified in place: a new version, searched again
    observer(weight)
    assert len(calls) == 2
    fresh = PerChannelMSEObserver()
    fresh(weight)
    assert torch.equal(observer.clip_max, fresh.clip_max)  # the wider (doubled) ranges are kept


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("cls", PER_TENSOR + PER_CHANNEL)
def test_with_args_is_a_drop_in_for_minmax(cls):
    """prepare passes every spec field (None for unset ones) on top of with_args bindings."""
    ctor = cls.with_args(eps=2**-12)
    qscheme = torch.per_channel_symmetric if cls in PER_CHANNEL else torch.per_tensor_symmetric
    kwargs = {"dtype": torch.int8, "quant_min": -127, "quant_max": 127, "qscheme": qscheme}
    observer = ctor(**kwargs, is_dynamic=False, reduce_range=None)
    assert (observer.quant_min, observer.quant_max, observer.qscheme) == (-127, 127, qscheme)
    assert float(observer.eps) == 2**-12
    assert isinstance(observer, ours.UniformQuantizationObserverBase)


@pytest.mark.parametrize("bad", [50, 0, 100.5, "99", True, None])
def test_bad_percentile_names_the_argument(bad):
    if bad is None:  # None means the default
        assert PercentileObserver(percentile=None).percentile == 99.99
        return
    for cls in (PercentileObserver, PerChannelPercentileObserver):
        with pytest.raises(SpecError, match=r"percentile=.*\(50, 100\]"):
            cls(percentile=bad)


@pytest.mark.parametrize("cls", PER_TENSOR)
def test_bad_configurations_are_refused_naming_the_field(cls):
    with pytest.raises(SpecError, match="bins=0"):
        cls(bins=0)
    with pytest.raises(UnsupportedObserverConfigError, match="per-channel"):
        cls(qscheme=torch.per_channel_symmetric)
    with pytest.raises(UnsupportedObserverConfigError, match="dynamic"):
        cls(is_dynamic=True)


@pytest.mark.parametrize("cls", PER_CHANNEL)
def test_per_channel_estimators_refuse_float_qparams(cls):
    with pytest.raises(UnsupportedObserverConfigError, match="float_qparams"):
        cls(qscheme=torch.per_channel_affine_float_qparams)


@pytest.mark.parametrize("cls", PER_TENSOR + PER_CHANNEL)
def test_calibrated_observers_pickle_and_deepcopy(cls):
    """A prepared model is saved with torch.save and copied with deepcopy; the per-channel
    observers' reference to the last weight they searched is not part of their state."""
    observer = cls()
    observer(torch.nn.Parameter(torch.randn(3, 40)))
    for copied in (copy.deepcopy(observer), pickle.loads(pickle.dumps(observer))):
        assert _same_qparams(copied.calculate_qparams(), observer.calculate_qparams())
