"""NumericReport.accumulation(): where a gradual SQNR decay comes from.

Hand-made rows pin the definitions (loss against the worst input, gains as zero, what is not
counted, shares, ranking). A 16-layer chain whose SQNR decays by many small drops, three of
them larger but none above first_jump()'s 10 dB, shows the summary naming those three where
first_jump() names nothing, in the text and HTML reports too.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.debug import (
    Accumulation,
    NumericReport,
    ReportRow,
    generate_numeric_debug_handle,
    numeric_report,
)
from pt2e_quant.debug.accumulation import op_loss
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from quantizers.config import QuantizationConfig
from tests.models.numeric_decay import LinearChain


def _row(index: int, activation: float | None, *inputs: float | None, op="linear") -> ReportRow:
    first = inputs[0] if inputs else None
    drop = None
    if activation is not None and first is not None and math.isfinite(first):
        drop = first - activation
    return ReportRow(
        index, op, f"layers.{index}", index + 1, f"{op}_{index}", activation, first, drop,
        inputs_sqnr=inputs,
    )  # fmt: skip


# -------------------------------------------------------------------------- definitions


def test_loss_is_against_the_worst_input_and_gains_count_as_zero() -> None:
    assert op_loss(_row(0, 30.0, 34.0)) == pytest.approx(4.0)  # single input: the drop
    # a residual add reading a clean branch (38 dB) and a noisy skip (31 dB): it lost 1 dB,
    # although its drop from the first input is 8 dB
    assert op_loss(_row(1, 30.0, 38.0, 31.0, op="add")) == pytest.approx(1.0)
    assert op_loss(_row(2, 35.0, 30.0)) == 0.0  # output cleaner than the input
    assert op_loss(_row(3, 30.0, math.inf, 33.0, op="add")) == pytest.approx(3.0)


def test_ops_without_a_finite_input_or_output_are_not_counted() -> None:
    assert op_loss(_row(0, 20.0, math.inf)) is None  # all error starts here
    assert op_loss(_row(1, 20.0, None)) is None  # input not measured
    assert op_loss(_row(2, 20.0)) is None  # no data input
    assert op_loss(_row(3, None, 30.0)) is None
    assert op_loss(_row(4, math.inf, 30.0)) is None


def test_shares_rank_and_total() -> None:
    rows = (
        _row(0, 37.0, 40.0),  # 3
        _row(1, 31.0, 37.0),  # 6
        _row(2, 30.0, 31.0),  # 1
        _row(3, 32.0, 30.0),  # gain: counted, loses 0
        _row(4, 20.0, math.inf),  # not counted
    )
    accumulation = NumericReport(rows=rows).accumulation(top=2)
    assert isinstance(accumulation, Accumulation)
    assert accumulation.total == pytest.approx(10.0) and accumulation.counted == 4
    assert [(c.row.index, c.loss, c.share) for c in accumulation.contributions] == [
        (1, pytest.approx(6.0), pytest.approx(0.6)),
        (0, pytest.approx(3.0), pytest.approx(0.3)),
    ]
    assert str(accumulation) == (
        "Error accumulates over 4 ops (per-op losses sum to 10.00 dB); largest shares: "
        "layers.1 (linear_1) 6.00 dB (60%), layers.0 (linear_0) 3.00 dB (30%)"
    )


def test_ties_keep_graph_order_and_top_is_checked() -> None:
    rows = (_row(0, 30.0, 32.0), _row(1, 28.0, 30.0), _row(2, 26.0, 28.0))
    report = NumericReport(rows=rows)
    assert [c.row.index for c in report.accumulation(top=3).contributions] == [0, 1, 2]
    for top in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="accumulation: top must be a positive int"):
            report.accumulation(top=top)  # type: ignore[arg-type]


def test_summary_when_nothing_was_lost_or_measured() -> None:
    assert NumericReport(rows=()).accumulation().summary() == (
        "Error accumulation: no op with a finite input and output SQNR was measured."
    )
    flat = NumericReport(rows=(_row(0, 30.0, 30.0), _row(1, 31.0, 30.0)))
    assert flat.accumulation().contributions == ()
    assert flat.accumulation().summary() == (
        "Error accumulation: none of the 2 measured ops lost SQNR."
    )


# ---------------------------------------------------------------------- a gradual decay

#: the layers whose int8 output is replaced by a coarser one, and its bits
COARSE = {"layers.3": 6, "layers.8": 5, "layers.12": 4}


def _coarse_output(bits: int) -> QuantizationConfig:
    config = get_symmetric_quantization_config(is_per_channel=True)
    half = 2 ** (bits - 1)
    output = dataclasses.replace(config.output_activation, quant_min=-half, quant_max=half - 1)
    return dataclasses.replace(config, output_activation=output)


@pytest.fixture(scope="module")
def decay() -> NumericReport:
    torch.manual_seed(0)
    model = LinearChain().eval()
    example = model.example_inputs()
    program = torch.export.export(model, example)
    generate_numeric_debug_handle(program)
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True)
    )
    for name, bits in COARSE.items():
        quantizer.set_module_name(name, _coarse_output(bits))
    prepared = prepare_pt2e(program.module(), quantizer)
    prepared(*example)
    return numeric_report(program, convert_pt2e(prepared), example)


def test_gradual_decay_has_no_first_jump_but_names_the_lossy_layers(decay) -> None:
    first, last = decay.rows[0], decay.rows[-1]
    assert first.input_sqnr - last.activation_sqnr > 20  # a real decay ...
    assert decay.first_jump() is None  # ... with no single drop above 10 dB
    accumulation = decay.accumulation(top=3)
    assert {c.row.module_path for c in accumulation.contributions} == set(COARSE)
    assert sum(c.share for c in accumulation.contributions) > 0.6
    # a chain: the per-op losses add up to the decay, up to the few unmeasured inputs
    assert accumulation.total == pytest.approx(first.input_sqnr - last.activation_sqnr, abs=1.0)


def test_text_and_html_carry_the_accumulation(decay) -> None:
    summary = decay.accumulation().summary()
    lines = decay.to_text().splitlines()
    assert lines[-2] == summary and lines[-1].startswith("Worst layer:")
    page = decay.to_html()
    assert f'<p id="accumulation">{summary}</p>' in page
    ranked = page[page.index('<ol class="accumulation">') : page.index("</ol>")]
    assert ranked.count("<li>") == 5
    for contribution in decay.accumulation().contributions:
        assert f"<li>{contribution.row.label}: linear, loss {contribution.loss:.2f} dB" in ranked
    assert page.index('id="worst"') < page.index('id="accumulation"') < page.index("<table>")
