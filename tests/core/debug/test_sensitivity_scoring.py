"""How sensitivity() scores and orders units: eval_data, non-float outputs, NaN damage.

* ``eval_data`` is what the quantized model is scored on; calibrating and scoring on the same
  batches would hide over-fitted ranges, so a user passing held-out data must get it used.
* The built-in metrics score floating-point outputs only: an integer output (an argmax, a
  token id) is not signal, and counting it would inflate every SQNR by its magnitude.
* A unit whose metric is NaN is broken (its output blew up): it must rank first, not last.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pt2e_quant.debug.handles import generate_numeric_debug_handle
from pt2e_quant.debug.sensitivity import sensitivity
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config


class TwoLinear(nn.Module):
    """``x ─ fc1 ─ fc2 ─ out`` (and, with ``with_index``, a constant int64 second output)."""

    def __init__(self, with_index: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 4)
        self.with_index = with_index

    def forward(self, x: torch.Tensor):
        y = self.fc2(self.fc1(x))
        if self.with_index:
            return y, torch.full((4,), 1000, dtype=torch.int64)
        return y


def _batches(n: int, rows: int) -> list[tuple[torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(rows, 8, generator=generator),) for _ in range(n)]


def _program(model: nn.Module) -> torch.export.ExportedProgram:
    ep = torch.export.export(
        model.eval(), _batches(1, 4)[0], dynamic_shapes=({0: torch.export.Dim("rows")},)
    )
    generate_numeric_debug_handle(ep)
    return ep


def _quantizer() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=False))


def test_eval_data_is_what_the_units_are_scored_on() -> None:
    seen_rows = []

    def rows_scored(ref: torch.Tensor, out: torch.Tensor) -> float:
        seen_rows.append(ref.shape[0])
        return float((ref - out).abs().mean())

    ranking = sensitivity(
        _program(TwoLinear()),
        _quantizer(),
        _batches(2, rows=4),
        rows_scored,
        eval_data=_batches(3, rows=2),
        progress=False,
    )

    assert len(ranking) == 2
    assert seen_rows == [2] * 3 * len(ranking)  # three eval batches of two rows, per unit


def test_integer_outputs_do_not_count_in_the_sqnr() -> None:
    """The same layers with an extra int64 output of 1000s must score exactly the same."""
    plain = sensitivity(_program(TwoLinear()), _quantizer(), _batches(2, 4), progress=False)
    indexed = sensitivity(
        _program(TwoLinear(with_index=True)), _quantizer(), _batches(2, 4), progress=False
    )

    assert [r.node_names for r in indexed] == [r.node_names for r in plain]
    assert [r.value for r in indexed] == pytest.approx([r.value for r in plain])


def test_a_unit_with_nan_damage_ranks_first() -> None:
    """The metric is NaN for the first unit measured (fc1): it must lead the ranking."""
    calls = []

    def first_unit_blows_up(ref: torch.Tensor, out: torch.Tensor) -> float:
        calls.append(1)
        return math.nan if len(calls) == 1 else float((ref - out).abs().max())

    ranking = sensitivity(
        _program(TwoLinear()), _quantizer(), _batches(1, 4), first_unit_blows_up, progress=False
    )

    assert len(ranking) == 2 and len(calls) == 2
    assert math.isnan(ranking[0].damage) and not ranking[0].failed
    assert ranking[0].node_names == ("linear",)
