"""compare_results / QuantizationComparisonResult: which side is the reference, and refusing
values that cannot be compared.

SQNR and normalized L2 are not symmetric, so swapping the float and quantized values gives a
different, wrong number; a user reading "SQNR 20 dB" must get ``sqnr(float, quantized)``.
Values whose structure differs (a list of another length, a dict with other keys, a tensor
against None) mean a handle sits on the wrong node: that must be a ValueError at comparison
time, naming the handle, not a silent None or a KeyError later.
"""

from __future__ import annotations

import math

import pytest
import torch

from pt2e_quant.debug import (
    QuantizationComparisonResult,
    compare_results,
    compute_normalized_l2,
    compute_sqnr,
)


def test_summary_scores_the_float_side_as_reference() -> None:
    """ref [1, 1] vs actual [2, 2]: SQNR 0 dB and L2 1.0; reversed they would be 6 dB / 0.5."""
    ref = {3: ("linear", None, [torch.ones(2)])}
    actual = {3: ("dequantize_per_tensor", None, [torch.full((2,), 2.0)])}

    (result,) = compare_results(ref, actual)[3].results

    assert torch.equal(result.ref, torch.ones(2))
    assert torch.equal(result.actual, torch.full((2,), 2.0))
    assert float(result.sqnr) == pytest.approx(0.0, abs=1e-6)
    assert float(result.l2) == pytest.approx(1.0)


def test_normalized_l2_of_two_all_zero_tensors_is_zero() -> None:
    """Identical all-zero values (a relu that is off everywhere) are exact: L2 0, not NaN."""
    zero = torch.zeros(4)
    assert compute_normalized_l2(zero, zero) == 0
    assert compute_sqnr(zero, zero) == math.inf


@pytest.mark.parametrize(
    ("ref", "actual"),
    [
        ([torch.ones(2)], [torch.ones(2), torch.ones(2)]),
        ((torch.ones(2), torch.ones(2)), (torch.ones(2),)),
        ({"a": torch.ones(2)}, {"a": torch.ones(2), "b": torch.ones(2)}),
        ({"a": torch.ones(2), "b": torch.ones(2)}, {"a": torch.ones(2), "c": torch.ones(2)}),
        (torch.ones(2), None),
        (None, torch.ones(2)),
        ([torch.ones(2)], [3]),
    ],
    ids=[
        "longer-list",
        "shorter-tuple",
        "extra-key",
        "other-key",
        "none-actual",
        "none-ref",
        "int",
    ],
)
def test_values_of_different_structure_are_refused(ref, actual) -> None:
    with pytest.raises(ValueError, match="cannot compare values of different shapes"):
        QuantizationComparisonResult(actual=actual, ref=ref)


def test_compare_results_names_the_handle_for_a_list_of_other_length() -> None:
    ref = {5: ("split", None, [[torch.ones(2), torch.ones(2)]])}
    actual = {5: ("split_q", None, [[torch.ones(2)]])}
    with pytest.raises(ValueError, match=r"debug handle 5: .*'split'.*'split_q'"):
        compare_results(ref, actual)
