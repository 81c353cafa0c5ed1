"""accumulation() on real transformer blocks: tiny GPT-2 and BERT from ``transformers``
configs (random weights, nothing downloaded), quantized for XNNPACK.

Both decay gradually (about 40 -> 30 dB over four layers) with no drop above 10 dB, so
first_jump() is None, and the accumulation says where the loss goes:

* GPT-2's MLP activation is the tanh GELU, decomposed into float ops; XNNPACK quantizes its
  ``mul``s, and the cube ``x * x * x`` loses 3-5 dB per layer, the largest losses of the
  model. Its ``Conv1D`` projections (``addmm``) are quantized too and lose 2-3 dB each;
* BERT's residual adds read a cleaner branch first and the noisier skip second. Their drop
  from the first input is the largest in the table, yet they lose little themselves: the
  accumulation, measured against the worst input, does not charge them for the skip's error.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.debug import NumericReport, generate_numeric_debug_handle, numeric_report
from pt2e_quant.debug.accumulation import op_loss
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.models.numeric_decay import tiny_bert, tiny_gpt2

pytestmark = pytest.mark.slow  # about ten seconds per model
pytest.importorskip("transformers")


def _report(build) -> NumericReport:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' config chatter
        model = build()
        example = model.example_inputs()
        program = torch.export.export(model, example)
        generate_numeric_debug_handle(program)
        config = get_symmetric_quantization_config(is_per_channel=True)
        prepared = prepare_pt2e(program.module(), XNNPACKQuantizer().set_global(config))
        for _ in range(4):
            prepared(*model.example_inputs())
        return numeric_report(program, convert_pt2e(prepared), example)


def _assert_consistent(report: NumericReport, top: int) -> None:
    """The contributions are the ``top`` largest losses, shares of the summed losses."""
    accumulation = report.accumulation(top=top)
    losses = sorted((loss for r in report.rows if (loss := op_loss(r)) is not None), reverse=True)
    assert [c.loss for c in accumulation.contributions] == losses[:top]
    assert accumulation.total == pytest.approx(sum(losses))
    for contribution in accumulation.contributions:
        assert contribution.share == pytest.approx(contribution.loss / accumulation.total)


def test_gpt2_loss_accumulates_in_the_gelu_cube() -> None:
    report = _report(tiny_gpt2)
    assert report.first_jump() is None
    _assert_consistent(report, top=6)
    top = report.accumulation(top=6).contributions
    cubes = [c for c in top if c.row.op == "mul"]
    assert {c.row.module_path for c in cubes} == {f"model.h.{layer}.mlp.act" for layer in range(4)}
    assert top[0] in cubes and sum(c.share for c in cubes) > 0.35
    assert any(c.row.op == "addmm" for c in top)  # the Conv1D projections, quantized as linears
    assert "mlp.act" in report.to_text().splitlines()[-2]  # the text summary names them


def test_bert_residual_adds_are_not_charged_for_the_skip_connection() -> None:
    report = _report(tiny_bert)
    assert report.first_jump() is None
    _assert_consistent(report, top=5)
    residual = [r for r in report.rows if r.op == "add" and r.module_path.endswith(".output")]
    largest_drop = max((r for r in report.rows if r.drop is not None), key=lambda r: r.drop)
    assert largest_drop in residual  # what ranking by the first input's drop would name
    named = {c.row.node_name for c in report.accumulation(top=5).contributions}
    assert named.isdisjoint(r.node_name for r in residual)
