"""Observers: bit-exact parity with torch.ao.quantization, plus our defined degenerate behaviour.

torch.ao's observers are the oracle for every input they handle (finite data, any supported
dtype / qscheme / range / eps); for NaN/Inf, empty and uncalibrated inputs we check our own
documented behaviour instead.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pt2e_quant.observer as ours
from pt2e_quant.errors import SpecError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch.ao.quantization.observer as ao

NAN, INF = float("nan"), float("inf")
PER_TENSOR = ["MinMaxObserver", "MovingAverageMinMaxObserver", "HistogramObserver"]
PER_CHANNEL = ["PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"]

# dtype / range / eps configurations PT2E and torch.ao users pass.
RANGES = [
    {"dtype": torch.quint8},
    {"dtype": torch.quint8, "reduce_range": True},
    {"dtype": torch.qint8},
    {"dtype": torch.qint8, "reduce_range": True},
    {"dtype": torch.qint32},
    {"dtype": torch.uint8, "quant_min": 0, "quant_max": 255},
    {"dtype": torch.uint8, "quant_min": 0, "quant_max": 127},
    {"dtype": torch.uint8, "quant_min": 0, "quant_max": 255, "reduce_range": True},
    {"dtype": torch.int8, "quant_min": -128, "quant_max": 127},
    {"dtype": torch.int8, "quant_min": -127, "quant_max": 127, "eps": 2**-12},
    {"dtype": torch.int8, "quant_min": -8, "quant_max": 7},
    {"dtype": torch.int16},
    {"dtype": torch.int16, "quant_min": -1000, "quant_max": 1000},
    {"dtype": torch.int32},
    {"dtype": torch.uint16},
]
FLOAT8_RANGES = [
    {"dtype": torch.float8_e4m3fn},
    {"dtype": torch.float8_e4m3fn, "quant_min": -448, "quant_max": 448},
    {"dtype": torch.float8_e5m2, "quant_min": -57344, "quant_max": 57344},
]


def _batches(kind: str, seed: int, shape: tuple[int, ...] = (4, 3, 5)) -> list[torch.Tensor]:
    """Calibration sequences that exercise every update path (widening, constant, tiny...)."""
    g = torch.Generator().manual_seed(seed)

    def randn(scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=g) * scale + shift

    def full(value: float) -> torch.Tensor:
        return torch.full(shape, value)

    def ramp(lo: float, hi: float) -> torch.Tensor:
        # Exactly representable ranges whose re-binning puts midpoints on bin edges.
        return torch.linspace(lo, hi, torch.Size(shape).numel()).reshape(shape)

    def rand() -> torch.Tensor:
        return torch.rand(shape, generator=g)

    spiked = randn()
    spiked.view(-1)[3] = 250.0
    table = {
        "normal": lambda: [randn(1 + i, 0.3 * i) for i in range(3)],
        "widening": lambda: [randn(0.1), randn(1.0), randn(10.0, -2.0), randn(50.0, 5.0)],
        "widen_left": lambda: [randn(1.0, 3.0), randn(1.0, -4.0), randn(2.0, -20.0)],
        "widen_right": lambda: [randn(1.0, -3.0), randn(1.0, 4.0), randn(2.0, 30.0)],
        "shrinking": lambda: [randn(20.0), randn(1.0), randn(0.01)],
        "constant": lambda: [full(2.5), full(2.5)],
        "zeros": lambda: [full(0.0), full(0.0)],
        "constant_then_wide": lambda: [full(-1.5), randn(3.0), full(0.25)],
        "wide_then_constant": lambda: [randn(3.0), full(7.0), full(-9.0)],
        "tiny": lambda: [1.0 + 1e-7 * randn(), 1.0 + 3e-7 * randn(), 1e-30 * randn()],
        "positive": lambda: [rand() * 5, rand() * 7 + 1],
        "negative": lambda: [-rand() * 5, -rand() - 3],
        "outlier": lambda: [randn(), spiked, randn(0.5)],
        "heavy_tail": lambda: [torch.empty(shape).cauchy_(generator=g) for _ in range(3)],
        "integers": lambda: [torch.randint(-20, 20, shape, generator=g).float() for _ in range(2)],
        "mixed_scale": lambda: [randn(1e-3), randn(1e3), randn(1e-2, 1e2)],
        "ties": lambda: [ramp(0, 32), ramp(0, 33), ramp(-1, 33)],
    }
    return table[kind]()


KINDS = (
    "normal widening widen_left widen_right shrinking constant zeros constant_then_wide "
    "wide_then_constant tiny positive negative outlier heavy_tail integers mixed_scale ties"
).split()


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _pair(name: str, **kwargs):
    return _quiet(getattr(ao, name), **kwargs), _quiet(getattr(ours, name), **kwargs)


def _assert_same_qparams(ref, got) -> None:
    for r, g in zip(ref, got, strict=True):
        assert r.dtype == g.dtype and r.shape == g.shape and torch.equal(r, g), (r, g)


def _assert_same_state(ref: torch.nn.Module, got: torch.nn.Module) -> None:
    ref_sd, got_sd = ref.state_dict(), got.state_dict()
    assert list(ref_sd) == list(got_sd)
    for key in ref_sd:
        assert ref_sd[key].dtype == got_sd[key].dtype, key
        assert torch.equal(ref_sd[key], got_sd[key]), (key, ref_sd[key], got_sd[key])


def _run_both(name: str, kwargs: dict, batches: list[torch.Tensor]):
    ref, got = _pair(name, **kwargs)
    for x in batches:
        out = got(x)
        ref(x)
        assert out is x
    _assert_same_state(ref, got)
    _assert_same_qparams(_quiet(ref.calculate_qparams), _quiet(got.calculate_qparams))
    return ref, got


def _symmetric_quint8_reduced(kwargs: dict, qscheme) -> bool:
    return (
        kwargs.get("dtype") == torch.quint8
        and kwargs.get("reduce_range", False)
        and qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric)
    )


# ---------------------------------------------------------------------------- parity


@pytest.mark.parametrize("rng", RANGES, ids=lambda r: "-".join(f"{v}" for v in r.values()))
@pytest.mark.parametrize("qscheme", [torch.per_tensor_affine, torch.per_tensor_symmetric])
@pytest.mark.parametrize("name", PER_TENSOR)
def test_per_tensor_parity(name, qscheme, rng):
    kwargs = {**rng, "qscheme": qscheme}
    if name == "HistogramObserver":
        kwargs["bins"] = 256
    if _symmetric_quint8_reduced(kwargs, qscheme) and name != "HistogramObserver":
        with pytest.raises(NotImplementedError):
            _quiet(getattr(ao, name), **kwargs)
        with pytest.raises(NotImplementedError):
            getattr(ours, name)(**kwargs)
        return
    seed = RANGES.index(rng)
    _run_both(name, kwargs, _batches(KINDS[seed % len(KINDS)], seed))


@pytest.mark.parametrize("rng", RANGES, ids=lambda r: "-".join(f"{v}" for v in r.values()))
@pytest.mark.parametrize(
    "qscheme",
    [torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams],
)
@pytest.mark.parametrize("name", PER_CHANNEL)
def test_per_channel_parity(name, qscheme, rng):
    seed = RANGES.index(rng)
    kwargs = {**rng, "qscheme": qscheme, "ch_axis": [0, 1, 2, -1][seed % 4]}
    if _symmetric_quint8_reduced(kwargs, qscheme):
        with pytest.raises(NotImplementedError):
            getattr(ours, name)(**kwargs)
        return
    _run_both(name, kwargs, _batches(KINDS[(seed + 5) % len(KINDS)], seed))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_parity_across_input_sequences(name, kind):
    kwargs = {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric}
    if name in PER_CHANNEL:
        kwargs = {"dtype": torch.uint8, "quant_min": 0, "quant_max": 255, "ch_axis": 1}
    _run_both(name, kwargs, _batches(kind, seed=KINDS.index(kind)))


@pytest.mark.parametrize(
    "kind", ["normal", "widening", "heavy_tail", "constant_then_wide", "tiny", "ties"]
)
@pytest.mark.parametrize("bins", [2048, 64, 32, 3, 1])
def test_histogram_parity_default_and_odd_bin_counts(kind, bins):
    _run_both("HistogramObserver", {"bins": bins}, _batches(kind, seed=bins, shape=(60,)))


def _loaded_pair(histogram: torch.Tensor, low: float, high: float, **kwargs):
    state = {
        "eps": torch.tensor([torch.finfo(torch.float32).eps]),
        "histogram": histogram,
        "min_val": torch.tensor(low),
        "max_val": torch.tensor(high),
    }
    ref = _quiet(ao.HistogramObserver, bins=histogram.numel(), **kwargs)
    got = ours.HistogramObserver(bins=histogram.numel(), **kwargs)
    ref.load_state_dict(state)
    got.load_state_dict(state)
    return ref, got


def _search_both(histogram: torch.Tensor, low: float, high: float, **kwargs) -> None:
    """Load one histogram state into both libraries and compare the range search."""
    ref, got = _loaded_pair(histogram, low, high, **kwargs)
    _assert_same_qparams(_quiet(ref.calculate_qparams), got.calculate_qparams())


@pytest.mark.parametrize("dtype", [torch.quint8, torch.int16, torch.int32])
@pytest.mark.parametrize("bins", [1, 7, 256, 2048])
def test_histogram_error_estimate_matches_torch_ao_exactly(bins, dtype):
    g = torch.Generator().manual_seed(bins)
    histogram = torch.rand(bins, generator=g) * 100
    ref, got = _loaded_pair(histogram, -3.7, 12.1, dtype=dtype)
    ctx = got._error_context()
    for _ in range(6):
        start = int(torch.randint(0, bins, (1,), generator=g))
        end = int(torch.randint(start, bins, (1,), generator=g))
        assert ref._compute_quantization_error(start, end) == got._quantization_error(
            start, end, ctx
        )


def test_histogram_search_compares_quantiles_in_float32():
    # 1e-5 * 100000 is 1.0000000000000002 in double but 1.0 in float32: torch.ao's 0-dim tensor
    # comparison does not step past a first bin holding exactly 1.0 counts; neither may we.
    histogram = torch.zeros(64)
    histogram[0], histogram[10], histogram[-1] = 1.0, 49999.0, 50000.0
    _search_both(histogram, -1.0, 5.0)
    mirrored = histogram.flip(0)
    mirrored[-1], mirrored[0] = 1.0, 50000.0
    _search_both(mirrored, -1.0, 5.0)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    bins=st.sampled_from([8, 64, 257, 1024]),
    seed=st.integers(0, 2**16),
    sparsity=st.floats(0.0, 0.99),
    integer_counts=st.booleans(),
    total_scale=st.sampled_from([1.0, 1e3, 1e5, 7.0]),
    low=st.floats(-1e3, 1e3),
    width=st.floats(1e-6, 1e4),
    symmetric=st.booleans(),
)
def test_histogram_search_on_random_states(
    bins, seed, sparsity, integer_counts, total_scale, low, width, symmetric
):
    g = torch.Generator().manual_seed(seed)
    histogram = torch.rand(bins, generator=g) * total_scale
    histogram[torch.rand(bins, generator=g) < sparsity] = 0.0
    if integer_counts:
        histogram = histogram.round()
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    _search_both(histogram, low, low + width, qscheme=qscheme)


@pytest.mark.parametrize("rng", FLOAT8_RANGES, ids=str)
@pytest.mark.parametrize("name", ["MinMaxObserver", "PerChannelMinMaxObserver"])
def test_float8_parity(name, rng):
    _run_both(name, rng, _batches("normal", seed=3))


@pytest.mark.parametrize(
    "name", ["MovingAverageMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"]
)
@pytest.mark.parametrize("averaging_constant", [0.01, 0.5, 1.0, 0.0])
def test_moving_average_constants(name, averaging_constant):
    _run_both(name, {"averaging_constant": averaging_constant}, _batches("widening", seed=7))


@pytest.mark.parametrize(
    ("input_dtype", "factory_kwargs"),
    [
        (torch.float64, None),
        (torch.float16, None),
        (torch.bfloat16, None),
        (torch.float64, {"dtype": torch.float64}),
    ],
)
@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_parity_for_other_input_dtypes_and_layouts(name, input_dtype, factory_kwargs):
    batches = [b.to(input_dtype) for b in _batches("widening", seed=2, shape=(2, 3, 4, 5))]
    batches[1] = batches[1].to(memory_format=torch.channels_last)
    batches.append(batches[0].transpose(1, 3))
    _run_both(name, {"factory_kwargs": factory_kwargs}, batches)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(PER_TENSOR + PER_CHANNEL),
    symmetric=st.booleans(),
    dtype_index=st.integers(0, len(RANGES) - 1),
    scales=st.lists(st.floats(1e-6, 1e4), min_size=1, max_size=4),
    shifts=st.lists(st.floats(-100, 100), min_size=4, max_size=4),
    seed=st.integers(0, 2**16),
    numel=st.integers(1, 40),
)
def test_parity_hypothesis(name, symmetric, dtype_index, scales, shifts, seed, numel):
    rng = RANGES[dtype_index]
    per_channel = name in PER_CHANNEL
    qscheme = [
        [torch.per_tensor_affine, torch.per_tensor_symmetric],
        [torch.per_channel_affine, torch.per_channel_symmetric],
    ][per_channel][symmetric]
    kwargs = {**rng, "qscheme": qscheme}
    if name == "HistogramObserver":
        kwargs["bins"] = 128
    elif _symmetric_quint8_reduced(kwargs, qscheme):
        return
    g = torch.Generator().manual_seed(seed)
    shape = (3, numel) if per_channel else (numel,)
    batches = [torch.randn(shape, generator=g) * s + shifts[i] for i, s in enumerate(scales)]
    _run_both(name, kwargs, batches)


def test_pt2e_style_constructor_matches_torch_ao():
    kwargs = {
        "dtype": torch.uint8,
        "quant_min": 0,
        "quant_max": 255,
        "qscheme": torch.per_tensor_affine,
        "is_dynamic": False,
    }
    per_channel = {
        **kwargs,
        "qscheme": torch.per_channel_symmetric,
        "dtype": torch.int8,
        "quant_min": -127,
        "quant_max": 127,
        "ch_axis": 1,
    }
    for name in PER_TENSOR + PER_CHANNEL:
        spec = per_channel if name in PER_CHANNEL else kwargs
        ref = _quiet(getattr(ao, name).with_args(**spec))
        got = getattr(ours, name).with_args(**spec)()
        for x in _batches("normal", seed=1):
            ref(x)
            got(x)
        _assert_same_qparams(ref.calculate_qparams(), got.calculate_qparams())


def test_none_constructor_arguments_mean_defaults():
    nones = {
        "dtype": None,
        "quant_min": None,
        "quant_max": None,
        "qscheme": None,
        "is_dynamic": None,
    }
    for name in PER_TENSOR + PER_CHANNEL:
        extra = {"ch_axis": None} if name in PER_CHANNEL else {}
        got = getattr(ours, name).with_args(**nones, **extra)()
        ref = _quiet(getattr(ao, name))
        assert (got.dtype, got.qscheme, got.quant_min, got.quant_max) == (
            ref.dtype,
            ref.qscheme,
            ref.quant_min,
            ref.quant_max,
        )
        assert got.is_dynamic is False
    # None never erases what with_args bound earlier.
    weight = ours.default_weight_observer.with_args(**nones)()
    assert weight.dtype == torch.qint8 and weight.qscheme == torch.per_tensor_symmetric
    narrow = ours.default_observer.with_args(quant_min=None, quant_max=None)()
    assert (narrow.quant_min, narrow.quant_max) == (0, 127)
    assert ours.PerChannelMinMaxObserver(ch_axis=None, eps=None).ch_axis == 0


@pytest.mark.parametrize(
    "default",
    [
        "default_observer",
        "default_weight_observer",
        "default_per_channel_weight_observer",
        "default_histogram_observer",
        "default_float_qparams_observer",
        "weight_observer_range_neg_127_to_127",
        "per_channel_weight_observer_range_neg_127_to_127",
        "default_placeholder_observer",
        "default_dynamic_quant_observer",
    ],
)
def test_default_constructors_match_torch_ao(default):
    ref, got = _quiet(getattr(ao, default)), getattr(ours, default)()
    assert type(got).__name__ == type(ref).__name__
    for attr in ("dtype", "qscheme", "quant_min", "quant_max", "is_dynamic"):
        assert getattr(got, attr) == getattr(ref, attr), attr
    if isinstance(got, ours.PlaceholderObserver):
        return
    for x in _batches("widening", seed=11):
        ref(x)
        got(x)
    _assert_same_qparams(_quiet(ref.calculate_qparams), got.calculate_qparams())


# ---------------------------------------------------------------------------- degenerate data


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
    ref = _quiet(getattr(ao, name))
    for x in clean:
        ref(x)
    got = getattr(ours, name)()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x in dirty:
            got(x)
    reports = [w for w in caught if issubclass(w.category, ours.NonFiniteObservationWarning)]
    assert len(reports) == 1 and name in str(reports[0].message)
    _assert_same_state(ref, got)
    scale, zero_point = got.calculate_qparams()
    assert torch.isfinite(scale).all() and (scale > 0).all()
    _assert_same_qparams(ref.calculate_qparams(), (scale, zero_point))


@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_all_non_finite_batch_is_a_no_op(name):
    obs = getattr(ours, name)()
    before = copy.deepcopy(obs.state_dict())
    _quiet(obs, torch.full((3, 4), NAN))
    _quiet(obs, torch.tensor([[INF, -INF], [NAN, INF]]))
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
    _quiet(got, x)
    got(x2)
    scale, zero_point = got.calculate_qparams()
    assert torch.isfinite(scale).all() and (scale > 0).all()
    # Channels 0 and 2 equal torch.ao fed only their finite values; channel 1 only saw x2.
    for ch in range(3):
        ref = _quiet(getattr(ao, name), qscheme=torch.per_channel_symmetric, dtype=torch.qint8)
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


def test_per_channel_unseen_channel_gets_all_zero_qparams():
    x = torch.randn(2, 4)
    x[1] = NAN
    got = ours.PerChannelMinMaxObserver()
    _quiet(got, x)
    assert got.has_observed_data()
    zero_ref = ao.PerChannelMinMaxObserver()
    zero_ref(torch.zeros(1, 4))
    scale, zero_point = got.calculate_qparams()
    ref_scale, ref_zp = zero_ref.calculate_qparams()
    assert torch.equal(scale[1:], ref_scale) and torch.equal(zero_point[1:], ref_zp)


@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_all_zero_tensor_gives_finite_positive_scale(name):
    ref, got = _run_both(name, {}, [torch.zeros(2, 3)])
    scale, _ = got.calculate_qparams()
    assert torch.isfinite(scale).all() and (scale > 0).all()


@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_empty_tensor_is_a_no_op(name):
    ref, got = _pair(name)
    x = torch.randn(3, 4)
    got(x)
    ref(x)
    got(torch.empty(0, 4))
    got(torch.empty(3, 0))
    _assert_same_state(ref, got)
    fresh = getattr(ours, name)()
    fresh(torch.empty(0))
    assert not fresh.has_observed_data()


@pytest.mark.parametrize("name", PER_CHANNEL)
def test_single_channel_and_one_dimensional_inputs(name):
    _run_both(name, {"ch_axis": 1}, [torch.randn(5, 1, 3), torch.randn(5, 1, 3) * 4])
    # torch.ao cannot observe a 1-D tensor per channel; we treat each element as a channel.
    got = getattr(ours, name)()
    ref = _quiet(getattr(ao, name))
    bias = torch.randn(6)
    got(bias)
    ref(bias.reshape(6, 1))
    _assert_same_qparams(ref.calculate_qparams(), got.calculate_qparams())


@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_uncalibrated_observer_returns_defaults_and_warns(name):
    obs = getattr(ours, name)()
    assert obs.has_observed_data() is False
    with pytest.warns(UserWarning, match=name):
        scale, zero_point = obs.calculate_qparams()
    assert torch.equal(scale, torch.tensor([1.0])) and torch.equal(zero_point, torch.tensor([0]))
    _assert_same_qparams(_quiet(getattr(ao, name)().calculate_qparams), (scale, zero_point))
    obs(torch.randn(2, 3))
    assert obs.has_observed_data() is True


def test_range_wider_than_float32_still_gives_finite_qparams():
    for name in ("MinMaxObserver", "HistogramObserver"):
        obs = getattr(ours, name)()
        obs(torch.tensor([-3e38, 3e38]))
        scale, zero_point = _quiet(obs.calculate_qparams)
        assert torch.isfinite(scale).all() and (scale > 0).all(), name


def test_reset_min_max_vals_returns_to_uncalibrated():
    for name in PER_TENSOR + PER_CHANNEL:
        obs = getattr(ours, name)()
        obs(torch.randn(2, 3))
        obs.reset_min_max_vals()
        assert not obs.has_observed_data(), name
        obs(torch.ones(2, 3))
        assert obs.has_observed_data(), name


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"dtype": torch.uint8, "quant_min": 10, "quant_max": 5}, "quant_min=10"),
        ({"dtype": torch.uint8, "quant_min": 0, "quant_max": 300}, "quant_max=300"),
        ({"dtype": torch.int8, "quant_min": -200, "quant_max": 100}, "quant_min=-200"),
        ({"dtype": torch.quint8, "quant_min": -1, "quant_max": 255}, "quant_min=-1"),
        ({"dtype": torch.int8, "quant_min": 3, "quant_max": 3}, "quant_min=3"),
        ({"dtype": torch.int8, "quant_min": 1, "quant_max": 100}, "include 0"),
        ({"dtype": torch.int8, "quant_min": 0.5, "quant_max": 100}, "quant_min"),
        ({"dtype": torch.float32}, "dtype"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -1.0}, "eps"),
    ],
)
@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_invalid_configuration_raises_value_error_naming_field(name, kwargs, needle):
    with pytest.raises(ValueError, match=needle) as info:
        getattr(ours, name)(**kwargs)
    assert isinstance(info.value, SpecError)


def test_unsupported_combinations_raise_both_value_and_not_implemented_error():
    cases = [
        (ours.MinMaxObserver, {"qscheme": torch.per_channel_affine}),
        (ours.HistogramObserver, {"qscheme": torch.per_channel_symmetric}),
        (ours.HistogramObserver, {"is_dynamic": True}),
        (ours.PerChannelMinMaxObserver, {"qscheme": torch.per_tensor_affine}),
        (ours.PerChannelMinMaxObserver, {"is_dynamic": True}),
        (ours.MovingAverageMinMaxObserver, {"is_dynamic": True}),
    ]
    for cls, kwargs in cases:
        with pytest.raises(NotImplementedError):
            cls(**kwargs)
        with pytest.raises(ValueError):
            cls(**kwargs)
    ours.MovingAverageMinMaxObserver(is_dynamic=True, averaging_constant=1)


def test_per_channel_axis_out_of_range_is_reported():
    obs = ours.PerChannelMinMaxObserver(ch_axis=3)
    with pytest.raises(ValueError, match="ch_axis=3"):
        obs(torch.randn(2, 2))


# ---------------------------------------------------------------------------- with_args


def test_with_args_chaining_and_callable_args():
    ctor = ours.MinMaxObserver.with_args(dtype=torch.qint8).with_args(
        qscheme=torch.per_tensor_symmetric
    )
    assert ctor.p.func is ours.MinMaxObserver
    a, b = ctor(), ctor()
    assert a is not b and a.dtype == torch.qint8 and a.qscheme == torch.per_tensor_symmetric
    assert ctor.with_args(dtype=torch.quint8)().dtype == torch.quint8  # later binding wins
    assert ctor(dtype=torch.quint8).dtype == torch.quint8  # call-time keywords win too
    assert a.dtype == torch.qint8  # the original ctor is unchanged

    calls = []

    def make_eps():
        calls.append(1)
        return 2.0**-10

    lazy = ours.MinMaxObserver.with_callable_args(eps=make_eps).with_args(dtype=torch.qint8)
    first, second = lazy(), lazy()
    assert len(calls) == 2 and first.eps is not second.eps
    assert first.eps.item() == 2.0**-10 and first.dtype == torch.qint8
    assert lazy.with_args(eps=0.5)().eps.item() == 0.5 and len(calls) == 2
    assert lazy.with_args(eps=0.5).with_callable_args(eps=make_eps)().eps.item() == 2.0**-10
    assert lazy.with_args(eps=None)().eps.item() == 2.0**-10  # None keeps the factory
    assert "MinMaxObserver.with_args(" in repr(lazy)
    for cls in (
        ours.PlaceholderObserver,
        ours.FixedQParamsObserver,
        ours.HistogramObserver,
        ours.DerivedObserverOrFakeQuantize,
    ):
        assert cls.with_args(dtype=torch.qint8).p.keywords["dtype"] == torch.qint8


def test_torch_ao_fake_quantize_accepts_our_constructor():
    from torch.ao.quantization.fake_quantize import FakeQuantize as AOFakeQuantize

    fq = _quiet(
        AOFakeQuantize,
        observer=ours.MovingAverageMinMaxObserver.with_args(dtype=torch.qint8),
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_symmetric,
    )
    assert isinstance(fq.activation_post_process, ours.MovingAverageMinMaxObserver)
    assert fq.activation_post_process.dtype == torch.qint8


# ---------------------------------------------------------------------------- state_dict


@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_state_dict_loads_across_libraries(name):
    ref, got = _pair(name)
    batches = _batches("widening", seed=5)
    for x in batches:
        ref(x)
    for x in reversed(batches):
        got(x)
    # ours -> fresh torch.ao, torch.ao -> fresh ours (per-channel buffers start empty).
    ref_loaded = _quiet(getattr(ao, name))
    ref_loaded.load_state_dict(got.state_dict())
    got_loaded = getattr(ours, name)()
    got_loaded.load_state_dict(ref.state_dict())
    _assert_same_state(ref, got_loaded)
    _assert_same_state(ref_loaded, got)
    _assert_same_qparams(ref.calculate_qparams(), got_loaded.calculate_qparams())
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


# ---------------------------------------------------------------------------- passthrough kinds


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": 1.0 / 256, "zero_point": 0},
        {"scale": 2.0 / 256, "zero_point": 128, "dtype": torch.quint8},
        {
            "scale": 1.0 / 128,
            "zero_point": -128,
            "dtype": torch.int8,
            "quant_min": -128,
            "quant_max": 127,
            "qscheme": torch.per_tensor_symmetric,
        },
    ],
)
def test_fixed_qparams_observer_parity(kwargs):
    ref, got = _pair("FixedQParamsObserver", **kwargs)
    x = torch.randn(3)
    assert got(x) is x
    _assert_same_state(ref, got)
    _assert_same_qparams(ref.calculate_qparams(), got.calculate_qparams())
    for attr in ("dtype", "qscheme", "quant_min", "quant_max", "is_dynamic"):
        assert getattr(got, attr) == getattr(ref, attr), attr
    assert got.has_observed_data()


def test_fixed_qparams_observer_validation_and_none_defaults():
    with pytest.raises(ValueError, match="scale"):
        ours.FixedQParamsObserver(scale=0.0, zero_point=0)
    with pytest.raises(ValueError, match="zero_point=300"):
        ours.FixedQParamsObserver(scale=0.1, zero_point=300)
    with pytest.raises(ValueError, match="quant_max=255"):
        ours.FixedQParamsObserver(scale=0.1, zero_point=0, dtype=torch.int8)
    obs = ours.FixedQParamsObserver(
        scale=0.1, zero_point=0, dtype=torch.int8, quant_min=None, quant_max=None, qscheme=None
    )
    assert (obs.quant_min, obs.quant_max, obs.qscheme) == (-128, 127, torch.per_tensor_affine)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.quint8, torch.int8])
def test_placeholder_observer_parity(dtype):
    kwargs = {"dtype": dtype, "is_dynamic": dtype in (torch.quint8, torch.int8)}
    ref, got = _pair("PlaceholderObserver", **kwargs)
    x = torch.randn(4)
    assert got(x) is x
    for attr in ("dtype", "qscheme", "quant_min", "quant_max", "is_dynamic", "eps", "custom_op"):
        assert getattr(got, attr) == getattr(ref, attr), attr
    assert got.has_observed_data() and list(got.state_dict()) == list(ref.state_dict())
    with pytest.raises(RuntimeError):
        got.calculate_qparams()


def test_derived_observer():
    a, b = ours.MinMaxObserver(), ours.MinMaxObserver()
    a(torch.randn(5))
    b(torch.randn(5) * 3)

    def derive(observers):
        (sa, _), (sb, _) = (o.calculate_qparams() for o in observers)
        return sa * sb, torch.tensor([0], dtype=torch.int32)

    derived = ours.DerivedObserverOrFakeQuantize(
        obs_or_fqs=[a, b],
        derive_qparams_fn=derive,
        dtype=torch.int32,
        quant_min=-(2**31),
        quant_max=2**31 - 1,
        qscheme=torch.per_tensor_symmetric,
    )
    x = torch.randn(3)
    assert derived(x) is x
    expected = derive([a, b])
    _assert_same_qparams(expected, derived.calculate_qparams())
    assert list(derived.children()) == [] and derived.state_dict() == {}
    assert derived.has_observed_data() and derived.ch_axis is None
    defaulted = ours.DerivedObserverOrFakeQuantize(torch.int32, [a], derive)
    assert (defaulted.quant_min, defaulted.quant_max) == (-(2**31), 2**31 - 1)
    with pytest.raises(ValueError, match="ch_axis"):
        ours.DerivedObserverOrFakeQuantize(
            dtype=torch.int32,
            obs_or_fqs=[a],
            derive_qparams_fn=derive,
            qscheme=torch.per_channel_symmetric,
        )
