"""numeric_report: per-op rows in graph order, drops, the worst layer, and text / CSV / HTML."""

from __future__ import annotations

import base64
import csv
import io
import math
import sys
from html.parser import HTMLParser

import pytest
import torch
from torch import Tensor, nn

from pt2e_quant import QuantizationError, convert_pt2e, prepare_pt2e
from pt2e_quant.debug.comparison import (
    NodeAccuracySummary,
    QuantizationComparisonResult,
    compare_results,
    compute_sqnr,
)
from pt2e_quant.debug.handles import generate_numeric_debug_handle
from pt2e_quant.debug.loggers import (
    extract_results_from_loggers,
    prepare_for_propagation_comparison,
)
from pt2e_quant.debug.report import (
    MissingDebugHandlesError,
    NumericReport,
    ReportRow,
    _min_sqnr,
    numeric_report,
)
from pt2e_quant.debug.weights import extract_weights
from pt2e_quant.graph.node_meta import get_debug_handle
from pt2e_quant.ops.qdq_ops import is_dequantize, is_quantize
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.models import ZOO
from tests.models.seed_models import TwoLinearModule


class OneBadConv(nn.Module):
    """A healthy conv, then a conv whose weight has 1e3 outliers that only ever multiply zeros.

    Channel 0 of ``good``'s output is exactly 0 after the relu (zero weights, negative bias),
    so the float model never feels ``bad.weight[:, 0] = 1e3``; the per-tensor weight scale
    does, and rounds every real weight of ``bad`` to zero::

        x (1,3,8,8) ─ good: Conv2d(3→4, k3) ─ relu ─ bad: Conv2d(4→4, k1) ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.good = nn.Conv2d(3, 4, 3)
        self.bad = nn.Conv2d(4, 4, 1)
        with torch.no_grad():
            self.good.weight[0] = 0
            self.good.bias[0] = -1
            self.bad.weight[:, 0] = 1e3

    def forward(self, x: Tensor) -> Tensor:
        return self.bad(torch.relu(self.good(x)))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 8, 8),)


def _quantize(model: nn.Module, per_channel: bool = False):
    model = model.eval()
    inputs = model.example_inputs()
    ep = torch.export.export(model, inputs)
    generate_numeric_debug_handle(ep)
    config = get_symmetric_quantization_config(is_per_channel=per_channel)
    prepared = prepare_pt2e(ep.module(), XNNPACKQuantizer().set_global(config))
    prepared(*inputs)
    return ep, convert_pt2e(prepared), inputs


@pytest.fixture(scope="module")
def bad_report() -> NumericReport:
    torch.manual_seed(0)
    ep, quantized, inputs = _quantize(OneBadConv())
    return numeric_report(ep, quantized, inputs)


# ------------------------------------------------------------------------------ the table


@pytest.mark.parametrize(
    "name",
    ["tiny_resnet", "mobilenet_v2_block", "transformer_encoder_block", "conv_transpose_decoder"],
)
def test_rows_follow_graph_order_and_equal_compare_results(name: str) -> None:
    torch.manual_seed(0)
    ep, quantized, inputs = _quantize(ZOO[name](), per_channel=True)
    report = numeric_report(ep, quantized, inputs)

    # What the debugger API gives directly, without the report.
    logged = []
    for model in (ep.module(), quantized):
        with_loggers = prepare_for_propagation_comparison(model)
        with_loggers(*inputs)
        logged.append(extract_results_from_loggers(with_loggers))
    direct = compare_results(*logged)
    weights = extract_weights(ep, quantized)

    order = {node.name: i for i, node in enumerate(quantized.graph.nodes)}
    dequantized = {get_debug_handle(n) for n in quantized.graph.nodes if is_dequantize(n)}
    assert len(report.rows) >= 3
    assert [row.index for row in report.rows] == list(range(len(report.rows)))
    assert [order[row.node_name] for row in report.rows] == sorted(
        order[row.node_name] for row in report.rows
    )
    for row in report.rows:
        assert row.handle in dequantized or row.handle in weights
        assert row.activation_sqnr == float(direct[row.handle].results[0].sqnr)
        if row.handle in weights:
            assert row.weight_sqnr == weights[row.handle].min_sqnr
        else:
            assert row.weight_sqnr is None
        assert row.activation_sqnr > 20  # healthy models quantize well
    assert {row.handle for row in report.rows} >= set(weights)


def test_drop_on_two_linear_layers_by_hand() -> None:
    """linear1 reads the quantized graph input; linear2 reads linear1's dequantized output."""
    torch.manual_seed(0)
    ep, quantized, inputs = _quantize(TwoLinearModule())
    report = numeric_report(ep, quantized, inputs)
    first, second = report.rows
    assert (first.module_path, second.module_path) == ("linear1", "linear2")

    (q,) = [n for n in quantized.graph.nodes if is_quantize(n) and n.args[0].op == "placeholder"]
    scale, zero_point = q.args[1], q.args[2]
    (x,) = inputs
    x_read = (torch.clamp(torch.round(x / scale) + zero_point, -128, 127) - zero_point) * scale
    assert first.input_sqnr == pytest.approx(float(compute_sqnr(x, x_read)), rel=1e-6)
    assert first.drop == pytest.approx(first.input_sqnr - first.activation_sqnr)
    assert second.input_sqnr == first.activation_sqnr
    assert second.drop == pytest.approx(first.activation_sqnr - second.activation_sqnr)
    assert report.first_jump(threshold_db=100.0) is None
    jump = min(first.drop, second.drop) - 1e-3
    assert report.first_jump(threshold_db=jump) is first


def test_unquantized_graph_input_is_exact_and_has_no_drop() -> None:
    """Embedding reads integer indices, which stay exact: input SQNR +inf, drop undefined."""
    from quantizers import EmbeddingQuantizer
    from tests.models.seed_models import EmbeddingModule

    model = EmbeddingModule().eval()
    inputs = model.example_inputs()
    ep = torch.export.export(model, inputs)
    generate_numeric_debug_handle(ep)
    prepared = prepare_pt2e(ep.module(), EmbeddingQuantizer())
    prepared(*inputs)
    (row,) = numeric_report(ep, convert_pt2e(prepared), inputs).rows
    assert row.op == "embedding" and row.input_sqnr == math.inf and row.drop is None


def test_badly_scaled_layer_is_worst_and_first_jump(bad_report: NumericReport) -> None:
    (worst,) = bad_report.worst()
    assert (worst.module_path, worst.op) == ("bad", "conv2d")
    assert worst.activation_sqnr < 10
    good = [row for row in bad_report.rows if row.module_path == "good"]
    assert good and all(row.activation_sqnr > 30 for row in good)
    assert bad_report.first_jump(threshold_db=10.0) is worst
    assert [r.activation_sqnr for r in bad_report.worst(2)] == sorted(
        r.activation_sqnr for r in bad_report.worst(2)
    )


def test_multi_output_value_uses_the_worst_element() -> None:
    ref = [torch.ones(4), torch.ones(4)]
    actual = [torch.ones(4) * 1.001, torch.ones(4) * 1.1]
    summary = NodeAccuracySummary(
        handle=1,
        actual_node_name="split",
        actual_module_stack="",
        ref_node_name="split",
        ref_module_stack="",
        results=[QuantizationComparisonResult(actual=actual, ref=ref)],
    )
    assert _min_sqnr(summary) == pytest.approx(20.0, abs=1e-3)  # the 10 % element, not 60 dB


# ------------------------------------------------------------------------ model handling


def test_quantized_model_without_handles_says_what_to_do() -> None:
    model = TwoLinearModule().eval()
    inputs = model.example_inputs()
    ep = torch.export.export(model, inputs)
    prepared = prepare_pt2e(
        ep.module(), XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    )
    prepared(*inputs)
    with pytest.raises(MissingDebugHandlesError, match=r"generate_numeric_debug_handle\(ep\)"):
        numeric_report(ep, convert_pt2e(prepared), inputs)
    assert issubclass(MissingDebugHandlesError, QuantizationError)


def test_float_graph_module_without_handles_is_rejected() -> None:
    torch.manual_seed(0)
    model = TwoLinearModule().eval()
    _, quantized, inputs = _quantize(model)
    bare = torch.export.export(model, inputs).module()
    with pytest.raises(MissingDebugHandlesError, match="pass the ExportedProgram"):
        numeric_report(bare, quantized, inputs)


def test_eager_model_and_handle_less_program_give_the_same_report() -> None:
    torch.manual_seed(0)
    model = TwoLinearModule().eval()
    ep, quantized, inputs = _quantize(model)
    expected = [(r.handle, r.activation_sqnr) for r in numeric_report(ep, quantized, inputs).rows]

    from_eager = numeric_report(model, quantized, inputs)
    bare = torch.export.export(model, inputs)
    from_bare = numeric_report(bare, quantized, inputs)
    assert [(r.handle, r.activation_sqnr) for r in from_eager.rows] == expected
    assert [(r.handle, r.activation_sqnr) for r in from_bare.rows] == expected
    assert all(get_debug_handle(n) is None for n in bare.graph.nodes)  # handles went on a copy


# ------------------------------------------------------------------------------ rendering


def test_text_is_aligned_and_names_the_worst_layer(bad_report: NumericReport) -> None:
    text = bad_report.to_text()
    assert str(bad_report) == text
    lines = text.splitlines()
    header, rule, *body = lines[: 2 + len(bad_report.rows)]
    assert set(rule.replace(" ", "")) == {"-"}
    column = header.index("activation SQNR (dB)")
    for row, line in zip(bad_report.rows, body, strict=True):
        assert line[column:].startswith(f"{row.activation_sqnr:.2f}")
    worst = bad_report.worst()[0]
    assert lines[-1] == (
        f"Worst layer: bad ({worst.node_name}): conv2d, handle {worst.handle}, "
        f"activation SQNR {worst.activation_sqnr:.2f} dB"
    )


def test_csv_round_trips(bad_report: NumericReport, tmp_path) -> None:
    path = tmp_path / "report.csv"
    text = bad_report.to_csv(path)
    assert path.read_text() == text
    header, *records = list(csv.reader(io.StringIO(text)))
    assert header[5] == "activation SQNR (dB)" and len(records) == len(bad_report.rows)
    for row, record in zip(bad_report.rows, records, strict=True):
        assert int(record[0]) == row.index and record[2] == row.module_path
        assert float(record[5]) == row.activation_sqnr
        assert (float(record[8]) if record[8] else None) == row.weight_sqnr
        assert (record[7] == "") == (row.drop is None)
    per_tensor = [r for r in records if r[8]]
    assert per_tensor and all(r[9] == "" for r in per_tensor)  # per-tensor: no channel list


def test_csv_lists_per_channel_weight_sqnr() -> None:
    torch.manual_seed(0)
    ep, quantized, inputs = _quantize(OneBadConv(), per_channel=True)
    report = numeric_report(ep, quantized, inputs)
    _, *records = list(csv.reader(io.StringIO(report.to_csv())))
    for row, record in zip(report.rows, records, strict=True):
        channels = [float(v) for v in record[9].split(";")] if record[9] else None
        assert channels == row.weight_channel_sqnr
    assert any(row.weight_channel_sqnr for row in report.rows)


class _Page(HTMLParser):
    """Collects headings, table rows (with their class) and images of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.rows: list[tuple[str | None, list[str]]] = []
        self.images: list[str] = []
        self.notes: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h2", "td", "p"):
            self._open = tag if tag != "p" or attrs.get("class") == "note" else None
        if tag == "tr":
            self.rows.append((attrs.get("class"), []))
        if tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        self._open = None

    def handle_data(self, data):
        if self._open == "h2":
            self.headings.append(data)
        elif self._open == "td":
            self.rows[-1][1].append(data)
        elif self._open == "p":
            self.notes.append(data)


def test_html_is_written_parses_and_names_the_worst_layer(bad_report, tmp_path) -> None:
    path = tmp_path / "report.html"
    bad_report.to_html(path)
    page = _Page()
    page.feed(path.read_text())
    page.close()

    worst = bad_report.worst()[0]
    assert len(page.headings) == 1 and "Worst layer: bad" in page.headings[0]
    highlighted = [cells for cls, cells in page.rows if cls == "worst"]
    assert highlighted == [highlighted[0]] and worst.node_name in highlighted[0]
    assert len([cells for _, cells in page.rows if cells]) == len(bad_report.rows)
    (image,) = page.images
    prefix = "data:image/png;base64,"
    assert image.startswith(prefix)
    assert base64.b64decode(image[len(prefix) :]).startswith(b"\x89PNG\r\n\x1a\n")
    assert page.notes == []


def test_html_without_matplotlib_has_a_note_instead_of_the_plot(bad_report, monkeypatch) -> None:
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    text = bad_report.to_html()
    page = _Page()
    page.feed(text)
    assert page.images == [] and "matplotlib" in page.notes[0]
    assert "Worst layer: bad" in page.headings[0]
    # the note sits where the plot would, above the table, and says so
    assert "the table below has the same numbers" in page.notes[0]
    assert text.index('<p class="note">') < text.index("<table>")


def test_html_escapes_user_strings() -> None:
    row = ReportRow(0, "conv2d", "<script>x</script>", 1, "a&b", 12.0, 40.0, 28.0)
    page_text = NumericReport(rows=(row,)).to_html()
    assert "<script>" not in page_text and "&lt;script&gt;" in page_text and "a&amp;b" in page_text
    page = _Page()
    page.feed(page_text)
    assert "<script>x</script> (a&b)" in page.headings[0]
