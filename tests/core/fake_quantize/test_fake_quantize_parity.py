"""Fake-quant modules are drop-in replacements for torch.ao's: bit-exact parity and interchange.

QAT checkpoints and training scripts written against torch.ao (or torchao's pt2e copy) must keep
working after the import changes to pt2e_quant. So ``FakeQuantize``,
``FusedMovingAvgObsFakeQuantize``, ``FixedQParamsFakeQuantize`` and every ``default_*``
constructor are driven in lock step with torch.ao's and must agree bit for bit (outputs, input
gradients, state dicts, qparams); state dicts load across libraries; ``with_args`` binds as
torch.ao's does; and the predicate and the enable/disable switches recognise fake-quant modules
from any of the three libraries.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

import pt2e_quant.fake_quantize as ours
import pt2e_quant.observer as ours_obs
from tests.core.fake_quantize._fake_quant_parity import (
    ao,
    ao_obs,
    assert_same_state,
    observer_pair,
    quiet,
    run_parity_script,
)

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
    ref_obs, got_obs = observer_pair(observer)
    ref = quiet(ao.FakeQuantize, observer=ref_obs, **kwargs)
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
    run_parity_script(ref, got, seed=len(kwargs))


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
    ref_obs, got_obs = observer_pair(observer)
    ref = quiet(ao.FusedMovingAvgObsFakeQuantize, observer=ref_obs, **kwargs)
    got = ours.FusedMovingAvgObsFakeQuantize(observer=got_obs, **kwargs)
    assert got.observer_enabled.dtype == torch.long and got.is_symmetric_quant == (
        ref.is_symmetric_quant
    )
    run_parity_script(ref, got, seed=3)


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
    ref = quiet(getattr(ao, default))
    got = getattr(ours, default)()
    assert type(got).__name__ == type(ref).__name__
    assert type(got.activation_post_process).__name__ == type(ref.activation_post_process).__name__
    run_parity_script(ref, got, seed=9)


def test_pt2e_style_constructor_kwargs():
    kwargs = {
        "dtype": torch.uint8,
        "quant_min": 0,
        "quant_max": 255,
        "qscheme": torch.per_tensor_affine,
        "is_dynamic": False,
    }
    ref = quiet(ao.default_fake_quant.with_args(**kwargs))
    got = ours.default_fake_quant.with_args(**kwargs)()
    run_parity_script(ref, got)
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
    run_parity_script(quiet(ao.default_fixed_qparams_range_0to1_fake_quant), mixed)


def test_state_dict_loads_across_libraries():
    kwargs = {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric, "ch_axis": 1}
    ref = quiet(ao.FakeQuantize, observer=ao_obs.MovingAveragePerChannelMinMaxObserver, **kwargs)
    got = ours.FakeQuantize(observer=ours_obs.MovingAveragePerChannelMinMaxObserver, **kwargs)
    x = torch.randn(2, 6, 3)
    ref(x)
    got(x * 2)
    fresh_ref = quiet(
        ao.FakeQuantize, observer=ao_obs.MovingAveragePerChannelMinMaxObserver, **kwargs
    )
    fresh_got = ours.FakeQuantize(observer=ours_obs.MovingAveragePerChannelMinMaxObserver, **kwargs)
    fresh_ref.load_state_dict(got.state_dict())
    fresh_got.load_state_dict(ref.state_dict())
    assert_same_state(ref, fresh_got)
    assert_same_state(fresh_ref, got)
    y = torch.randn(2, 6, 3)
    for module in (ref, fresh_got):
        module.disable_observer()
    assert torch.equal(ref(y), fresh_got(y))


def test_with_args_on_fake_quantize_classes():
    ctor = ours.FakeQuantize.with_args(observer=ours_obs.MovingAverageMinMaxObserver)
    ctor = ctor.with_args(dtype=torch.qint8, quant_min=-128, quant_max=127)
    assert ctor.p.func is ours.FakeQuantize
    a, b = ctor(), ctor()
    assert a is not b and a.activation_post_process is not b.activation_post_process
    assert a.dtype == torch.qint8
    lazy = ours.FakeQuantize.with_callable_args(observer=lambda: ours_obs.MinMaxObserver)
    assert isinstance(lazy().activation_post_process, ours_obs.MinMaxObserver)


# ---------------------------------------------------------------------------- predicates / switches


def _foreign_modules() -> list[torch.nn.Module]:
    modules = [quiet(ao.default_fake_quant), quiet(ao.default_fused_act_fake_quant)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tao = importlib.import_module("torchao.quantization.pt2e.fake_quantize")
        modules.append(quiet(tao.default_fake_quant))
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
        quiet(ao_obs.MinMaxObserver),
        quiet(ao_obs.PlaceholderObserver),
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
