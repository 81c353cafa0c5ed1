"""Observers that do not observe: FixedQParams, Placeholder and Derived observers.

These kinds pass data through and get their qparams elsewhere (fixed by the spec, not
computed at all, or derived from other observers, e.g. a bias scale from input and weight
scales). They must match torch.ao's attributes and qparams and validate their arguments, or
sigmoid/softmax outputs, dynamic quantization and int32 biases come out wrong.
"""

from __future__ import annotations

import pytest
import torch

import pt2e_quant.observer as ours
from tests.core.observer._observer_parity import ao_and_ours, assert_same_qparams, assert_same_state


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
    ref, got = ao_and_ours("FixedQParamsObserver", **kwargs)
    x = torch.randn(3)
    assert got(x) is x
    assert_same_state(ref, got)
    assert_same_qparams(ref.calculate_qparams(), got.calculate_qparams())
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
    ref, got = ao_and_ours("PlaceholderObserver", **kwargs)
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
    assert_same_qparams(expected, derived.calculate_qparams())
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
