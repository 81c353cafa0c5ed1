"""Constructing observers the ways PT2E and torch.ao code does: defaults, with_args, None.

Quantizer specs carry observer constructors (``with_args`` partials, ``default_*``
instances, PT2E-style keyword sets with explicit ``None``), and torch.ao's FakeQuantize
builds observers from them. Migrating is only an import change if each of these builds an
observer with torch.ao's configuration and qparams, so these tests compare them directly.
"""

from __future__ import annotations

import pytest
import torch

import pt2e_quant.observer as ours
from tests.core.observer._observer_parity import (
    PER_CHANNEL,
    PER_TENSOR,
    ao,
    assert_same_qparams,
    calibration_batches,
    quietly,
)


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
        ref = quietly(getattr(ao, name).with_args(**spec))
        got = getattr(ours, name).with_args(**spec)()
        for x in calibration_batches("normal", seed=1):
            ref(x)
            got(x)
        assert_same_qparams(ref.calculate_qparams(), got.calculate_qparams())


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
        ref = quietly(getattr(ao, name))
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
    ref, got = quietly(getattr(ao, default)), getattr(ours, default)()
    assert type(got).__name__ == type(ref).__name__
    for attr in ("dtype", "qscheme", "quant_min", "quant_max", "is_dynamic"):
        assert getattr(got, attr) == getattr(ref, attr), attr
    if isinstance(got, ours.PlaceholderObserver):
        return
    for x in calibration_batches("widening", seed=11):
        ref(x)
        got(x)
    assert_same_qparams(quietly(ref.calculate_qparams), got.calculate_qparams())


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

    fq = quietly(
        AOFakeQuantize,
        observer=ours.MovingAverageMinMaxObserver.with_args(dtype=torch.qint8),
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_symmetric,
    )
    assert isinstance(fq.activation_post_process, ours.MovingAverageMinMaxObserver)
    assert fq.activation_post_process.dtype == torch.qint8
