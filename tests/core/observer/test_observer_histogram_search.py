"""HistogramObserver's histogram and range search, compared with torch.ao exactly.

The histogram observer's qparams come from a search over candidate ranges scored by an
estimated quantization error; tiny differences in re-binning, in the error estimate or in
float32 vs float64 comparisons pick a different range. These tests load identical histogram
states into both libraries (odd bin counts, random sparse states, float32 quantile edge
cases) and require the same error estimates and the same qparams.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pt2e_quant.observer as ours
from tests.core.observer._observer_parity import (
    ao,
    assert_same_qparams,
    calibration_batches,
    quietly,
    run_both,
)


@pytest.mark.parametrize(
    "kind", ["normal", "widening", "heavy_tail", "constant_then_wide", "tiny", "ties"]
)
@pytest.mark.parametrize("bins", [2048, 64, 32, 3, 1])
def test_histogram_parity_default_and_odd_bin_counts(kind, bins):
    run_both("HistogramObserver", {"bins": bins}, calibration_batches(kind, seed=bins, shape=(60,)))


def _loaded_pair(histogram: torch.Tensor, low: float, high: float, **kwargs):
    state = {
        "eps": torch.tensor([torch.finfo(torch.float32).eps]),
        "histogram": histogram,
        "min_val": torch.tensor(low),
        "max_val": torch.tensor(high),
    }
    ref = quietly(ao.HistogramObserver, bins=histogram.numel(), **kwargs)
    got = ours.HistogramObserver(bins=histogram.numel(), **kwargs)
    ref.load_state_dict(state)
    got.load_state_dict(state)
    return ref, got


def _search_both(histogram: torch.Tensor, low: float, high: float, **kwargs) -> None:
    """Load one histogram state into both libraries and compare the range search."""
    ref, got = _loaded_pair(histogram, low, high, **kwargs)
    assert_same_qparams(quietly(ref.calculate_qparams), got.calculate_qparams())


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
