"""Fake-quant modules: bit-exact forward / backward / qparams parity with torch.ao (and torchao's
LearnableFakeQuantize), switches that act across libraries, and degenerate inputs."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

import pt2e_quant.fake_quantize as ours
import pt2e_quant.observer as ours_obs
from pt2e_quant.errors import SpecError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch.ao.quantization.fake_quantize as ao
    import torch.ao.quantization.observer as ao_obs

NAN, INF = float("nan"), float("inf")


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _observer_pair(name: str):
    return getattr(ao_obs, name), getattr(ours_obs, name)


def _assert_same_state(ref: torch.nn.Module, got: torch.nn.Module) -> None:
    ref_sd, got_sd = ref.state_dict(), got.state_dict()
    assert list(ref_sd) == list(got_sd)
    for key in ref_sd:
        assert ref_sd[key].dtype == got_sd[key].dtype, key
        assert torch.equal(ref_sd[key], got_sd[key]), (key, ref_sd[key], got_sd[key])


def _assert_same_pair(ref, got) -> None:
    for r, g in zip(ref, got, strict=True):
        assert r.dtype == g.dtype and r.shape == g.shape and torch.equal(r, g), (r, g)


def _step_both(ref: torch.nn.Module, got: torch.nn.Module, x: torch.Tensor) -> None:
    """One forward/backward through each module on identical inputs; outputs, input gradients
    and state must agree exactly."""
    x_ref = x.clone().requires_grad_()
    x_got = x.clone().requires_grad_()
    y_ref = _quiet(ref, x_ref)
    y_got = _quiet(got, x_got)
    assert y_ref.dtype == y_got.dtype and torch.equal(y_ref, y_got)
    upstream = torch.linspace(-1, 2, y_ref.numel()).reshape(y_ref.shape)
    y_ref.backward(upstream)
    y_got.backward(upstream)
    assert torch.equal(x_ref.grad, x_got.grad)
    _assert_same_state(ref, got)


def _script(ref, got, shape=(4, 3, 5), seed=0) -> None:
    """Several steps, widening ranges, with the observer and fake-quant switched off and on."""
    g = torch.Generator().manual_seed(seed)
    schedule = [(True, True), (True, True), (False, True), (True, False), (True, True)]
    for i, (observe, fake_quant) in enumerate(schedule):
        for module in (ref, got):
            module.enable_observer(observe)
            module.enable_fake_quant(fake_quant)
        x = torch.randn(shape, generator=g) * (1 + 2 * i) + 0.5 * i
        _step_both(ref, got, x)
    _assert_same_pair(_quiet(ref.calculate_qparams), _quiet(got.calculate_qparams))


FAKE_QUANT_CONFIGS = [
    ("MovingAverageMinMaxObserver", {}),
    (
        "MovingAverageMinMaxObserver",
        {
            "dtype": torch.qint8,
            "qscheme": torch.per_tensor_symmetric,
            "quant_min": -128,
            "quant_max": 127,
        },
    ),
    ("MovingAverageMinMaxObserver", {"averaging_constant": 0.5, "reduce_range": True}),
    ("MinMaxObserver", {"dtype": torch.uint8, "quant_min": 0, "quant_max": 255}),
    ("MinMaxObserver", {"dtype": torch.int8, "quant_min": -8, "quant_max": 7}),
    ("MinMaxObserver", {"dtype": torch.int16}),
    ("MinMaxObserver", {"dtype": torch.uint16, "qscheme": torch.per_tensor_symmetric}),
    ("MinMaxObserver", {"dtype": torch.int32}),
    ("HistogramObserver", {"bins": 64}),
    (
        "PerChannelMinMaxObserver",
        {
            "dtype": torch.int8,
            "quant_min": -127,
            "quant_max": 127,
            "qscheme": torch.per_channel_symmetric,
            "ch_axis": 1,
        },
    ),
    ("PerChannelMinMaxObserver", {"qscheme": torch.per_channel_affine_float_qparams}),
    (
        "MovingAveragePerChannelMinMaxObserver",
        {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric, "ch_axis": 0},
    ),
    (
        "MovingAveragePerChannelMinMaxObserver",
        {
            "dtype": torch.quint8,
            "qscheme": torch.per_channel_affine,
            "ch_axis": 2,
            "averaging_constant": 0.3,
        },
    ),
]


@pytest.mark.parametrize(("observer", "kwargs"), FAKE_QUANT_CONFIGS, ids=lambda v: str(v)[:40])
def test_fake_quantize_parity(observer, kwargs):
    ref_obs, got_obs = _observer_pair(observer)
    ref = _quiet(ao.FakeQuantize, observer=ref_obs, **kwargs)
    got = ours.FakeQuantize(observer=got_obs, **kwargs)
    for attr in (
        "quant_min",
        "quant_max",
        "dtype",
        "qscheme",
        "ch_axis",
        "is_per_channel",
        "is_dynamic",
    ):
        assert getattr(got, attr) == getattr(ref, attr), attr
    _script(ref, got, seed=len(kwargs))


FUSED_CONFIGS = [
    ("MovingAverageMinMaxObserver", {}),
    (
        "MovingAverageMinMaxObserver",
        {
            "quant_min": -128,
            "quant_max": 127,
            "dtype": torch.qint8,
            "qscheme": torch.per_tensor_symmetric,
        },
    ),
    (
        "MovingAverageMinMaxObserver",
        {
            "quant_min": -127,
            "quant_max": 127,
            "dtype": torch.int8,
            "qscheme": torch.per_tensor_symmetric,
            "eps": 2**-12,
            "averaging_constant": 1.0,
        },
    ),
    (
        "MovingAveragePerChannelMinMaxObserver",
        {
            "quant_min": -128,
            "quant_max": 127,
            "dtype": torch.qint8,
            "qscheme": torch.per_channel_symmetric,
        },
    ),
    (
        "MovingAveragePerChannelMinMaxObserver",
        {
            "quant_min": 0,
            "quant_max": 255,
            "dtype": torch.uint8,
            "qscheme": torch.per_channel_affine,
            "averaging_constant": 0.2,
        },
    ),
]


@pytest.mark.parametrize(("observer", "kwargs"), FUSED_CONFIGS, ids=lambda v: str(v)[:40])
def test_fused_parity(observer, kwargs):
    ref_obs, got_obs = _observer_pair(observer)
    ref = _quiet(ao.FusedMovingAvgObsFakeQuantize, observer=ref_obs, **kwargs)
    got = ours.FusedMovingAvgObsFakeQuantize(observer=got_obs, **kwargs)
    assert got.observer_enabled.dtype == torch.long and got.is_symmetric_quant == (
        ref.is_symmetric_quant
    )
    _script(ref, got, seed=3)


@pytest.mark.parametrize(
    "default",
    [
        "default_fake_quant",
        "default_weight_fake_quant",
        "default_per_channel_weight_fake_quant",
        "default_histogram_fake_quant",
        "default_dynamic_fake_quant",
        "default_fused_act_fake_quant",
        "default_fused_wt_fake_quant",
        "default_fused_per_channel_wt_fake_quant",
        "default_fixed_qparams_range_neg1to1_fake_quant",
        "default_fixed_qparams_range_0to1_fake_quant",
    ],
)
def test_default_constructors_parity(default):
    ref = _quiet(getattr(ao, default))
    got = getattr(ours, default)()
    assert type(got).__name__ == type(ref).__name__
    assert type(got.activation_post_process).__name__ == type(ref.activation_post_process).__name__
    _script(ref, got, seed=9)


def test_pt2e_style_constructor_kwargs():
    kwargs = {
        "dtype": torch.uint8,
        "quant_min": 0,
        "quant_max": 255,
        "qscheme": torch.per_tensor_affine,
        "is_dynamic": False,
    }
    ref = _quiet(ao.default_fake_quant.with_args(**kwargs))
    got = ours.default_fake_quant.with_args(**kwargs)()
    _script(ref, got)
    # None fields keep the constructor's own bindings.
    nones = dict.fromkeys(kwargs)
    bound = ours.default_weight_fake_quant.with_args(**nones)()
    assert (bound.dtype, bound.qscheme, bound.quant_min, bound.quant_max) == (
        torch.qint8,
        torch.per_tensor_symmetric,
        -128,
        127,
    )
    plain = ours.FakeQuantize.with_args(**nones)()
    assert (plain.dtype, plain.qscheme, plain.quant_min, plain.quant_max) == (
        torch.quint8,
        torch.per_tensor_affine,
        0,
        255,
    )
    per_channel = ours.FakeQuantize.with_args(
        observer=ours_obs.MovingAveragePerChannelMinMaxObserver
    ).with_args(**nones, ch_axis=1)()
    assert per_channel.ch_axis == 1 and per_channel.is_per_channel


def test_fixed_qparams_fake_quantize_shares_observer_buffers():
    got = ours.default_fixed_qparams_range_0to1_fake_quant()
    assert got.scale is got.activation_post_process.scale
    assert got.zero_point is got.activation_post_process.zero_point
    assert got.has_observed_data()
    with pytest.raises(ValueError, match="FixedQParamsObserver"):
        ours.FixedQParamsFakeQuantize(observer=ours_obs.MinMaxObserver)
    # torch.ao's fixed observer is accepted too.
    mixed = ours.FixedQParamsFakeQuantize(observer=ao_obs.default_fixed_qparams_range_0to1_observer)
    _script(_quiet(ao.default_fixed_qparams_range_0to1_fake_quant), mixed)


def test_state_dict_loads_across_libraries():
    kwargs = {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric, "ch_axis": 1}
    ref = _quiet(ao.FakeQuantize, observer=ao_obs.MovingAveragePerChannelMinMaxObserver, **kwargs)
    got = ours.FakeQuantize(observer=ours_obs.MovingAveragePerChannelMinMaxObserver, **kwargs)
    x = torch.randn(2, 6, 3)
    ref(x)
    got(x * 2)
    fresh_ref = _quiet(
        ao.FakeQuantize, observer=ao_obs.MovingAveragePerChannelMinMaxObserver, **kwargs
    )
    fresh_got = ours.FakeQuantize(observer=ours_obs.MovingAveragePerChannelMinMaxObserver, **kwargs)
    fresh_ref.load_state_dict(got.state_dict())
    fresh_got.load_state_dict(ref.state_dict())
    _assert_same_state(ref, fresh_got)
    _assert_same_state(fresh_ref, got)
    y = torch.randn(2, 6, 3)
    for module in (ref, fresh_got):
        module.disable_observer()
    assert torch.equal(ref(y), fresh_got(y))


# ---------------------------------------------------------------------------- learnable


def _torchao_learnable():
    pytest.importorskip("torchao")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module("torchao.quantization.pt2e.learnable_fake_quantize")
        ao_observer = importlib.import_module("torchao.quantization.pt2e.observer")
    return module, ao_observer


@pytest.mark.torchao
@pytest.mark.parametrize(
    ("observer", "kwargs"),
    [
        ("MovingAverageMinMaxObserver", {}),
        (
            "MovingAverageMinMaxObserver",
            {
                "dtype": torch.qint8,
                "qscheme": torch.per_tensor_symmetric,
                "quant_min": -128,
                "quant_max": 127,
                "use_grad_scaling": True,
            },
        ),
        (
            "MovingAveragePerChannelMinMaxObserver",
            {
                "dtype": torch.qint8,
                "qscheme": torch.per_channel_symmetric,
                "quant_min": -127,
                "quant_max": 127,
                "ch_axis": 1,
            },
        ),
        (
            "MovingAveragePerChannelMinMaxObserver",
            {"qscheme": torch.per_channel_affine, "use_grad_scaling": True},
        ),
    ],
    ids=lambda v: str(v)[:40],
)
def test_learnable_fake_quantize_matches_torchao(observer, kwargs):
    learnable, tao_obs = _torchao_learnable()
    ref = learnable.LearnableFakeQuantize(getattr(tao_obs, observer), **kwargs)
    got = ours.LearnableFakeQuantize(getattr(ours_obs, observer), **kwargs)
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        if step == 2:
            ref.enable_range_learning()
            got.enable_range_learning()
        x = torch.randn(4, 3, 5, generator=g) * (step + 1)
        x_ref, x_got = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ref, y_got = ref(x_ref), got(x_got)
        assert torch.equal(y_ref, y_got)
        upstream = torch.linspace(-1, 1, y_ref.numel()).reshape(y_ref.shape)
        y_ref.backward(upstream)
        y_got.backward(upstream)
        assert torch.equal(x_ref.grad, x_got.grad)
        for name in ("scale", "zero_point"):
            p_ref, p_got = getattr(ref, name), getattr(got, name)
            assert p_ref.requires_grad == p_got.requires_grad
            if p_ref.grad is not None or p_got.grad is not None:
                assert torch.equal(p_ref.grad, p_got.grad), name
                with torch.no_grad():  # a plain SGD step, identical on both sides
                    p_ref -= 1e-5 * p_ref.grad
                    p_got -= 1e-5 * p_got.grad
                p_ref.grad, p_got.grad = None, None
        _assert_same_state(ref, got)
    _assert_same_pair(ref.calculate_qparams(), got.calculate_qparams())
    ref.enable_observer()
    got.enable_observer()
    assert not got.scale.requires_grad and got.learning_enabled[0] == 0


@pytest.mark.parametrize(
    ("observer", "kwargs", "channels"),
    [
        ("MovingAverageMinMaxObserver", {"quant_min": 0, "quant_max": 255}, -1),
        (
            "MovingAverageMinMaxObserver",
            {
                "quant_min": -128,
                "quant_max": 127,
                "dtype": torch.qint8,
                "qscheme": torch.per_tensor_symmetric,
                "use_grad_scaling": True,
            },
            -1,
        ),
        (
            "MovingAveragePerChannelMinMaxObserver",
            {
                "quant_min": -128,
                "quant_max": 127,
                "dtype": torch.qint8,
                "qscheme": torch.per_channel_symmetric,
            },
            4,
        ),
    ],
    ids=["affine", "symmetric-grad-scaling", "per-channel"],
)
def test_learnable_fake_quantize_matches_torch_ao_kernels(observer, kwargs, channels):
    from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize

    ref_obs, got_obs = _observer_pair(observer)
    ref = _quiet(_LearnableFakeQuantize, ref_obs, channel_len=channels, **kwargs)
    got = ours.LearnableFakeQuantize(got_obs, **kwargs)
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        if step == 2:
            ref.enable_param_learning()
            got.enable_range_learning()
            ref.scale.grad = ref.zero_point.grad = None  # torch.ao's params always had grads
        x = torch.randn(4, 3, 5, generator=g) * (step + 1)
        x_ref, x_got = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ref, y_got = ref(x_ref), got(x_got)
        assert torch.equal(y_ref, y_got)
        upstream = torch.linspace(-1, 1, y_ref.numel()).reshape(y_ref.shape)
        y_ref.backward(upstream)
        y_got.backward(upstream)
        assert torch.equal(x_ref.grad, x_got.grad)
        if step >= 2:
            for name in ("scale", "zero_point"):
                p_ref, p_got = getattr(ref, name), getattr(got, name)
                assert torch.equal(p_ref.grad, p_got.grad), name
                with torch.no_grad():  # small enough to keep the scale above eps
                    p_ref -= 1e-5 * p_ref.grad
                    p_got -= 1e-5 * p_got.grad
                p_ref.grad, p_got.grad = None, None
        assert torch.equal(ref.scale, got.scale) and torch.equal(ref.zero_point, got.zero_point)
    _assert_same_pair(ref.calculate_qparams(), got.calculate_qparams())


def test_learnable_fake_quantize_lifecycle():
    fq = ours.LearnableFakeQuantize(
        ours_obs.MovingAverageMinMaxObserver, quant_min=None, quant_max=None, dtype=torch.qint8
    )
    assert (fq.quant_min, fq.quant_max) == (-128, 127)
    assert not fq.has_observed_data() and fq.scale is None
    with pytest.raises(RuntimeError, match="first forward"):
        fq.calculate_qparams()
    fq(torch.randn(8))
    assert fq.has_observed_data() and isinstance(fq.scale, torch.nn.Parameter)
    ours.enable_range_learning(fq)
    assert fq.scale.requires_grad and fq.observer_enabled[0] == 0
    ours.disable_range_learning(fq)
    assert not fq.zero_point.requires_grad
    restored = ours.LearnableFakeQuantize(
        ours_obs.MovingAverageMinMaxObserver, quant_min=None, quant_max=None, dtype=torch.qint8
    )
    restored.load_state_dict(fq.state_dict())
    assert torch.equal(restored.scale, fq.scale) and restored.has_observed_data()
    with pytest.raises(ValueError, match="quant_min=5"):
        ours.LearnableFakeQuantize(ours_obs.MovingAverageMinMaxObserver, quant_min=5, quant_max=5)
    with pytest.raises(ValueError, match="quant_max=255"):
        ours.LearnableFakeQuantize(ours_obs.MovingAverageMinMaxObserver, dtype=torch.qint8)


# ---------------------------------------------------------------------------- predicates / switches


def _foreign_modules() -> list[torch.nn.Module]:
    modules = [_quiet(ao.default_fake_quant), _quiet(ao.default_fused_act_fake_quant)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tao = importlib.import_module("torchao.quantization.pt2e.fake_quantize")
        modules.append(_quiet(tao.default_fake_quant))
    except ImportError:
        pass
    return modules


def test_is_observer_or_fake_quant():
    positives = [
        ours_obs.MinMaxObserver(),
        ours_obs.HistogramObserver(),
        ours_obs.PlaceholderObserver(),
        ours_obs.default_fixed_qparams_range_0to1_observer(),
        ours_obs.DerivedObserverOrFakeQuantize(torch.int32, [], lambda obs: None),
        ours.default_fake_quant(),
        ours.default_fused_wt_fake_quant(),
        ours.LearnableFakeQuantize(ours_obs.MovingAverageMinMaxObserver),
        _quiet(ao_obs.MinMaxObserver),
        _quiet(ao_obs.PlaceholderObserver),
        *_foreign_modules(),
    ]
    for module in positives:
        assert ours.is_observer_or_fake_quant(module), type(module)
    for other in [
        torch.nn.Identity(),
        torch.nn.Linear(2, 2),
        torch.nn.Sequential(),
        None,
        ours_obs.MinMaxObserver,
        "MinMaxObserver",
    ]:
        assert not ours.is_observer_or_fake_quant(other), other


def test_switches_act_on_all_libraries():
    mine = [
        ours.default_fake_quant(),
        ours.default_fused_act_fake_quant(),
        ours.LearnableFakeQuantize(ours_obs.MovingAverageMinMaxObserver),
    ]
    model = torch.nn.Sequential(*mine, *_foreign_modules(), torch.nn.ReLU())
    fake_quants = [m for m in model if ours.is_observer_or_fake_quant(m)]
    assert len(fake_quants) >= 5
    for switch, flag, value in [
        (ours.disable_observer, "observer_enabled", 0),
        (ours.enable_observer, "observer_enabled", 1),
        (ours.disable_fake_quant, "fake_quant_enabled", 0),
        (ours.enable_fake_quant, "fake_quant_enabled", 1),
    ]:
        model.apply(switch)
        assert all(int(getattr(m, flag)[0]) == value for m in fake_quants), switch.__name__
    ours.disable_observer(torch.nn.Linear(2, 2))  # anything else is left alone


def test_disabled_fake_quant_passes_input_through():
    fq = ours.default_fake_quant()
    fq.disable_fake_quant()
    x = torch.randn(5)
    assert fq(x) is x
    assert fq.has_observed_data()


# ---------------------------------------------------------------------------- degenerate inputs


def test_fake_quantize_drops_non_finite_values():
    x = torch.tensor([1.0, NAN, -2.0, INF, 3.0, -INF])
    ref = _quiet(ao.default_fake_quant)
    got = ours.default_fake_quant()
    with pytest.warns(ours_obs.NonFiniteObservationWarning, match="MovingAverageMinMaxObserver"):
        got(x)
    ref(x[torch.isfinite(x)])
    _assert_same_state(ref, got)
    assert torch.isfinite(got.scale).all() and (got.scale > 0).all()
    assert not ours.FakeQuantize().has_observed_data()


def test_fused_drops_non_finite_values_per_tensor():
    finite = torch.tensor([1.0, -2.0, 3.0])
    dirty = torch.tensor([1.0, NAN, -2.0, INF, 3.0])
    ref = _quiet(ao.default_fused_act_fake_quant)
    got = ours.default_fused_act_fake_quant()
    _step_both(ref, got, torch.randn(6))
    ref_out = ref(finite)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = got(dirty)
        got(torch.full((3,), NAN))  # nothing finite: statistics untouched
    assert sum(issubclass(w.category, ours_obs.NonFiniteObservationWarning) for w in caught) == 1
    _assert_same_state(ref, got)
    assert torch.equal(out[[0, 2, 4]], ref_out)


def test_fused_drops_non_finite_values_per_channel():
    got = ours.default_fused_per_channel_wt_fake_quant()
    ref = _quiet(ao.default_fused_per_channel_wt_fake_quant)
    x = torch.randn(3, 4)
    dirty = x.clone()
    dirty[0, 1], dirty[2, 3] = NAN, INF
    dirty[1] = NAN  # channel 1 has nothing finite
    _quiet(got, dirty)
    post = got.activation_post_process
    assert post.min_val[1] == INF and post.max_val[1] == -INF  # still unseen
    assert torch.isfinite(got.scale).all() and (got.scale > 0).all()
    # Channels 0 and 2 match torch.ao fed a copy whose bad values repeat a finite neighbour.
    clean = x.clone()
    clean[0, 1], clean[2, 3], clean[1] = x[0, 0], x[2, 0], 0.0
    ref(clean)
    ref_post = ref.activation_post_process
    for ch in (0, 2):
        assert torch.equal(post.min_val[ch], ref_post.min_val[ch])
        assert torch.equal(got.scale[ch], ref.scale[ch])
        assert torch.equal(got.zero_point[ch], ref.zero_point[ch])
    # The unseen channel's qparams are what the kernel computes for an all-zero channel.
    assert torch.equal(got.scale[1], ref.scale[1])
    y = torch.randn(3, 4)
    _quiet(got, y)
    assert torch.isfinite(post.min_val).all() and post.min_val[1] == y[1].min()
    # A started channel keeps its statistics (and qparams) through a batch without finite data.
    state = [t.clone() for t in (post.min_val, post.max_val, got.scale, got.zero_point)]
    z = torch.randn(3, 4) * 5
    z[0] = NAN
    _quiet(got, z)
    current = (post.min_val, post.max_val, got.scale, got.zero_point)
    for before, now in zip(state, current, strict=True):
        assert torch.equal(before[0], now[0])
    assert not torch.equal(state[0][1:], post.min_val[1:])


def test_empty_input_is_a_no_op_for_statistics():
    got = ours.default_fake_quant()
    got(torch.randn(4))
    before = {k: v.clone() for k, v in got.state_dict().items()}
    got(torch.empty(0))
    after = got.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"quant_min": 10, "quant_max": 5}, "quant_min=10"),
        ({"dtype": torch.qint8, "quant_min": 0, "quant_max": 255}, "quant_max=255"),
        ({"dtype": torch.uint8, "quant_min": -5, "quant_max": 100}, "quant_min=-5"),
    ],
)
def test_invalid_ranges_raise_value_error(kwargs, needle):
    with pytest.raises(SpecError, match=needle):
        ours.FakeQuantize(**kwargs)
    with pytest.raises(ValueError, match=needle):
        ours.FakeQuantize.with_args(**kwargs)()


def test_fused_requires_moving_average_observer():
    with pytest.raises(ValueError, match="MovingAverage"):
        ours.FusedMovingAvgObsFakeQuantize(observer=ours_obs.MinMaxObserver)
    # torch.ao's moving-average observers are accepted.
    mixed = ours.FusedMovingAvgObsFakeQuantize(observer=ao_obs.MovingAverageMinMaxObserver)
    _script(_quiet(ao.FusedMovingAvgObsFakeQuantize), mixed)


def test_with_args_on_fake_quantize_classes():
    ctor = ours.FakeQuantize.with_args(observer=ours_obs.MovingAverageMinMaxObserver)
    ctor = ctor.with_args(dtype=torch.qint8, quant_min=-128, quant_max=127)
    assert ctor.p.func is ours.FakeQuantize
    a, b = ctor(), ctor()
    assert a is not b and a.activation_post_process is not b.activation_post_process
    assert a.dtype == torch.qint8
    lazy = ours.FakeQuantize.with_callable_args(observer=lambda: ours_obs.MinMaxObserver)
    assert isinstance(lazy().activation_post_process, ours_obs.MinMaxObserver)
