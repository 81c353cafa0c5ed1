"""Observer configuration errors: invalid ranges, dtypes, eps, qschemes and channel axes.

A bad observer configuration must fail when the observer is built (or, for the channel
axis, when it first sees data), with a ValueError / SpecError naming the field and value,
instead of producing garbage qparams later. Unsupported combinations raise an error that is
both a ValueError (ours) and a NotImplementedError (what torch.ao code catches).
"""

from __future__ import annotations

import pytest
import torch

import pt2e_quant.observer as ours
from pt2e_quant.errors import SpecError
from tests.core.observer._observer_parity import PER_CHANNEL, PER_TENSOR


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
