"""Fake-quant modules under bad input: degenerate data is survived, invalid configs are refused.

A single NaN or Inf in a QAT batch must not poison the running statistics (and so every later
scale), and an empty batch must not move them; non-finite values are dropped with a warning and
what remains matches torch.ao fed the finite values alone. Impossible configurations (empty or
out-of-dtype ranges, a fused module without a moving-average observer) raise errors naming the
offending field and value at construction, not a wrong result later.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import pt2e_quant.fake_quantize as ours
import pt2e_quant.observer as ours_obs
from pt2e_quant.errors import SpecError
from tests.core.fake_quantize._fake_quant_parity import (
    ao,
    ao_obs,
    assert_same_state,
    quiet,
    run_parity_script,
    step_both,
)

NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------------------- degenerate inputs


def test_fake_quantize_drops_non_finite_values():
    x = torch.tensor([1.0, NAN, -2.0, INF, 3.0, -INF])
    ref = quiet(ao.default_fake_quant)
    got = ours.default_fake_quant()
    with pytest.warns(ours_obs.NonFiniteObservationWarning, match="MovingAverageMinMaxObserver"):
        got(x)
    ref(x[torch.isfinite(x)])
    assert_same_state(ref, got)
    assert torch.isfinite(got.scale).all() and (got.scale > 0).all()
    assert not ours.FakeQuantize().has_observed_data()


def test_fused_drops_non_finite_values_per_tensor():
    finite = torch.tensor([1.0, -2.0, 3.0])
    dirty = torch.tensor([1.0, NAN, -2.0, INF, 3.0])
    ref = quiet(ao.default_fused_act_fake_quant)
    got = ours.default_fused_act_fake_quant()
    step_both(ref, got, torch.randn(6))
    ref_out = ref(finite)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = got(dirty)
        got(torch.full((3,), NAN))  # nothing finite: statistics untouched
    assert sum(issubclass(w.category, ours_obs.NonFiniteObservationWarning) for w in caught) == 1
    assert_same_state(ref, got)
    assert torch.equal(out[[0, 2, 4]], ref_out)


def test_fused_drops_non_finite_values_per_channel():
    got = ours.default_fused_per_channel_wt_fake_quant()
    ref = quiet(ao.default_fused_per_channel_wt_fake_quant)
    x = torch.randn(3, 4)
    dirty = x.clone()
    dirty[0, 1], dirty[2, 3] = NAN, INF
    dirty[1] = NAN  # channel 1 has nothing finite
    quiet(got, dirty)
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
    quiet(got, y)
    assert torch.isfinite(post.min_val).all() and post.min_val[1] == y[1].min()
    # A started channel keeps its statistics (and qparams) through a batch without finite data.
    state = [t.clone() for t in (post.min_val, post.max_val, got.scale, got.zero_point)]
    z = torch.randn(3, 4) * 5
    z[0] = NAN
    quiet(got, z)
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
    run_parity_script(quiet(ao.FusedMovingAvgObsFakeQuantize), mixed)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_fused_takes_half_inputs_as_float32(dtype: torch.dtype, per_channel: bool):
    """torch's fused kernel takes float32 only; a float16 / bfloat16 batch is fake-quantized
    in float32 (as the converted model's quantize op widens it) and comes back in its own
    dtype, with the same statistics and a gradient that reaches the input."""
    make = ours.default_fused_per_channel_wt_fake_quant if per_channel else None
    make = make or ours.default_fused_act_fake_quant
    x = torch.randn(3, 4)
    wide, half = make(), make()
    expected = wide(x.to(dtype).float())
    source = x.to(dtype).requires_grad_()
    out = half(source)
    assert out.dtype == dtype
    assert torch.equal(out, expected.to(dtype))
    assert_same_state(wide, half)
    out.sum().backward()
    assert source.grad is not None and source.grad.dtype == dtype
