"""explain(): every float reason on a purpose-built tiny model, exact counts, summary and table.

Each model isolates one reason; ``Mixed`` puts several side by side so the counts and the
summary line are pinned exactly.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.coverage import CoverageReport, explain
from quantizers import (
    ComposableQuantizer,
    EmbeddingQuantizer,
    X86InductorQuantizer,
    XNNPACKQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from quantizers.x86_inductor.inductor_fusion import FREEZING_WARNING


def _xnnpack() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _quantize(model: nn.Module, example: tuple, quantizer, convert: bool = True):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model.eval(), example).module()
        prepared = prepare_pt2e(exported, quantizer)
        with torch.no_grad():
            prepared(*example)
        return convert_pt2e(prepared) if convert else prepared


def _row(report: CoverageReport, node: str):
    (row,) = [r for r in report.rows if r.node == node]
    return row


class Mixed(nn.Module):
    """x ─ conv ─ relu ─ hardswish ─ max_pool2d ─ conv(head) ─ out

    conv+relu: quantized (relu fused); hardswish: no XNNPACK rule; max_pool2d: its rule shares
    the producer's qparams, but the producer (hardswish) is float; head: scoped out.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.Hardswish()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(torch.relu(self.conv(x)))
        return self.head(torch.nn.functional.max_pool2d(y, 2))

    @staticmethod
    def example_inputs() -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 8, 8),)


@pytest.fixture(scope="module")
def mixed() -> tuple[CoverageReport, XNNPACKQuantizer]:
    quantizer = _xnnpack().set_module_name("head", None)
    converted = _quantize(Mixed(), Mixed.example_inputs(), quantizer)
    return explain(converted, quantizer), quantizer


def test_each_row_of_the_mixed_model(mixed) -> None:
    report, _ = mixed
    assert [(r.node, r.quantized, r.reason) for r in report.rows] == [
        ("conv2d", True, None),
        ("relu", True, "fused into conv2d"),
        ("hardswish", False, "no rule for this op in xnnpack"),
        ("max_pool2d", False, "input not quantized ('hardswish' is float)"),
        ("conv2d_1", False, "filtered by scope setter (set_module_name('head'))"),
    ]
    assert [r.module for r in report.rows] == ["conv", "", "act", "", "head"]


def test_counts_and_summary_are_exact(mixed) -> None:
    report, _ = mixed
    assert report.counts == {
        "compute": 5,
        "quantized": 2,
        "float": 3,
        "filtered by scope": 1,
        "input not quantized": 1,
        "no rule": 1,
        "xnnpack fp32": 3,
        "xnnpack int8": 2,
    }
    assert report.summary() == (
        "5 compute ops: 2 quantized, 3 float (1 filtered by scope, 1 input not quantized, "
        "1 no rule); XNNPACK will delegate 2 as int8, 3 in fp32"
    )


def test_table_has_a_line_per_row_and_the_summary(mixed) -> None:
    report, _ = mixed
    text = str(report)
    assert text == report.to_text()
    lines = text.splitlines()
    assert lines[0].split() == [
        "node",
        "op",
        "module",
        "quantized",
        "reason",
        "XNNPACK",
        "prediction",
        "scheme",
    ]
    for row in report.rows:
        (line,) = [ln for ln in lines if ln.startswith(row.node + " ")]
        assert row.op in line and ("yes" if row.quantized else "no") in line
        assert (row.reason or "")[:40] in line
    assert lines[-1] == report.summary()


def test_prepared_model_reads_like_the_converted_one(mixed) -> None:
    report, quantizer = mixed
    prepared = _quantize(Mixed(), Mixed.example_inputs(), quantizer, convert=False)
    assert explain(prepared, quantizer).rows == report.rows


def test_without_a_quantizer_only_evidence_based_reasons() -> None:
    quantizer = _xnnpack()
    converted = _quantize(Mixed(), Mixed.example_inputs(), quantizer)
    report = explain(converted)
    assert report.backend is None and report.warnings == []
    reasons = {r.node: r.reason for r in report.rows}
    assert reasons["hardswish"] == "no quantizer given (pass it to explain() to see why)"
    assert reasons["max_pool2d"] == "input not quantized ('hardswish' is float)"
    assert all(r.prediction is None for r in report.rows)


class IntAdd(nn.Module):
    """float x ─ linear ─ out0;  int64 i ─ add(1) ─ out1"""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        return self.fc(x), i + 1


def test_integer_op_is_reported_with_its_dtype() -> None:
    example = (torch.randn(2, 4), torch.arange(3))
    quantizer = _xnnpack()
    report = explain(_quantize(IntAdd(), example, quantizer), quantizer)
    assert _row(report, "linear").quantized
    row = _row(report, "add")
    assert (row.quantized, row.reason) == (False, "unsupported dtype torch.int64")


class CondRelu(nn.Module):
    """torch.cond(x.sum() > 0, relu(x) @ fc, x @ fc): the relu reads a body input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        def yes(x: Tensor) -> Tensor:
            return torch.relu(x)

        def no(x: Tensor) -> Tensor:
            return x - 1.0

        return self.fc(torch.cond(x.sum() > 0, yes, no, (x,)))


def test_op_in_a_cond_body_whose_input_enters_float() -> None:
    example = (torch.randn(2, 4),)
    quantizer = _xnnpack()
    report = explain(_quantize(CondRelu(), example, quantizer), quantizer)
    (relu,) = [r for r in report.rows if r.op == "relu"]
    assert relu.node.startswith("true_graph_0.")
    assert not relu.quantized
    assert relu.reason.startswith("inside a cond sub-graph (its input ")
    assert report.counts["inside sub-graph"] == 1


def test_composed_quantizers_weight_only_embedding_counts_as_quantized() -> None:
    class EmbedLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.fc = nn.Linear(4, 4)

        def forward(self, i: Tensor) -> Tensor:
            return self.fc(self.emb(i))

    quantizer = ComposableQuantizer([EmbeddingQuantizer(), _xnnpack()])
    report = explain(_quantize(EmbedLinear(), (torch.arange(3),), quantizer), quantizer)
    assert [(r.op, r.quantized, r.reason) for r in report.rows] == [
        ("embedding", True, None),
        ("linear", True, None),
    ]
    assert report.backend == "xnnpack"


def test_x86_fusion_prediction_and_freezing_warning() -> None:
    class ConvReluLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            y = torch.relu(self.conv(x)).mean((2, 3))
            return torch.tanh(self.fc(y))

    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    converted = _quantize(ConvReluLinear(), (torch.randn(1, 3, 6, 6),), quantizer)
    with torch._inductor.config.patch(freezing=False):
        report = explain(converted, quantizer)
    assert report.warnings == [FREEZING_WARNING]
    assert {r.node: r.prediction for r in report.rows} == {
        "conv2d": "int8 qconv",
        "relu": "fused into qconv (conv2d)",
        "mean": None,
        "linear": "int8 qlinear",
        "tanh": "fused into qlinear (linear)",
    }
    assert report.summary().endswith("; Inductor will fuse 2 int8 kernels (+2 fused post-ops)")
    with torch._inductor.config.patch(freezing=True):
        assert explain(converted, quantizer).warnings == []


def test_x86_matmul_is_filtered_by_the_global_setter() -> None:
    class MatMul(nn.Module):
        def forward(self, a: Tensor, b: Tensor) -> Tensor:
            return a @ b

    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    example = (torch.randn(2, 3), torch.randn(3, 2))
    report = explain(_quantize(MatMul(), example, quantizer), quantizer)
    (row,) = report.rows
    assert row.reason == (
        "filtered by scope setter (set_global, which leaves matmul float unless scoped explicitly)"
    )


def test_unknown_backend_is_rejected() -> None:
    converted = _quantize(Mixed(), Mixed.example_inputs(), _xnnpack())
    with pytest.raises(ValueError, match="backend must be one of"):
        explain(converted, backend="tensorrt")
