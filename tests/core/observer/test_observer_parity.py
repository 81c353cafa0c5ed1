"""Observer parity with torch.ao.quantization across configurations and input sequences.

Quantized models are only interchangeable with torchao's if every observer computes the same
min/max state and qparams, bit for bit: a one-ulp scale difference changes rounding and so
the model's outputs. These tests sweep dtypes, ranges, eps, qschemes, channel axes, input
dtypes / layouts and calibration sequences (widening, constant, tiny, heavy-tailed, ...),
plus a hypothesis search, and require identical state_dicts and qparams.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pt2e_quant.observer as ours
from tests.core.observer._observer_parity import (
    KINDS,
    PER_CHANNEL,
    PER_TENSOR,
    ao,
    calibration_batches,
    quietly,
    run_both,
)

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


def _symmetric_quint8_reduced(kwargs: dict, qscheme) -> bool:
    """Symmetric quint8 with reduce_range: the min/max observers raise NotImplementedError."""
    return (
        kwargs.get("dtype") == torch.quint8
        and kwargs.get("reduce_range", False)
        and qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric)
    )


@pytest.mark.parametrize("rng", RANGES, ids=lambda r: "-".join(f"{v}" for v in r.values()))
@pytest.mark.parametrize("qscheme", [torch.per_tensor_affine, torch.per_tensor_symmetric])
@pytest.mark.parametrize("name", PER_TENSOR)
def test_per_tensor_parity(name, qscheme, rng):
    kwargs = {**rng, "qscheme": qscheme}
    if name == "HistogramObserver":
        kwargs["bins"] = 256
    if _symmetric_quint8_reduced(kwargs, qscheme) and name != "HistogramObserver":
        with pytest.raises(NotImplementedError):
            quietly(getattr(ao, name), **kwargs)
        with pytest.raises(NotImplementedError):
            getattr(ours, name)(**kwargs)
        return
    seed = RANGES.index(rng)
    run_both(name, kwargs, calibration_batches(KINDS[seed % len(KINDS)], seed))


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
    run_both(name, kwargs, calibration_batches(KINDS[(seed + 5) % len(KINDS)], seed))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", PER_TENSOR + PER_CHANNEL)
def test_parity_across_input_sequences(name, kind):
    kwargs = {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric}
    if name in PER_CHANNEL:
        kwargs = {"dtype": torch.uint8, "quant_min": 0, "quant_max": 255, "ch_axis": 1}
    run_both(name, kwargs, calibration_batches(kind, seed=KINDS.index(kind)))


@pytest.mark.parametrize("rng", FLOAT8_RANGES, ids=str)
@pytest.mark.parametrize("name", ["MinMaxObserver", "PerChannelMinMaxObserver"])
def test_float8_parity(name, rng):
    run_both(name, rng, calibration_batches("normal", seed=3))


@pytest.mark.parametrize(
    "name", ["MovingAverageMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"]
)
@pytest.mark.parametrize("averaging_constant", [0.01, 0.5, 1.0, 0.0])
def test_moving_average_constants(name, averaging_constant):
    run_both(
        name, {"averaging_constant": averaging_constant}, calibration_batches("widening", seed=7)
    )


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
    batches = [
        b.to(input_dtype) for b in calibration_batches("widening", seed=2, shape=(2, 3, 4, 5))
    ]
    batches[1] = batches[1].to(memory_format=torch.channels_last)
    batches.append(batches[0].transpose(1, 3))
    run_both(name, {"factory_kwargs": factory_kwargs}, batches)


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
    run_both(name, kwargs, batches)


@pytest.mark.parametrize("qscheme", [torch.per_tensor_affine, torch.per_tensor_symmetric])
def test_min_max_running_range_with_ties_signed_zeros_and_shrinking_batches(qscheme):
    """MinMaxObserver updates its range from scalars, writing only when the range grows: ties,
    signed zeros and batches inside the range must leave torch.ao's exact state."""
    batches = [
        torch.tensor([0.0, -0.0]),
        torch.tensor([-0.0, 0.0]),
        torch.tensor([-1.5, 2.0]),
        torch.tensor([-1.5, 2.0]),  # ties on both ends
        torch.tensor([-0.25, 0.5]),  # inside the range
        torch.tensor([-3.0, 1.0]),  # only the minimum grows
        torch.tensor([4.0, 4.0]),  # only the maximum grows
    ]
    ref, got = run_both("MinMaxObserver", {"qscheme": qscheme, "dtype": torch.qint8}, batches)
    assert got.min_val.item() == -3.0 and got.max_val.item() == 4.0
