"""``explain()`` and the numeric debugger on graphs a vendor quantizer annotated.

A quantizer written for torchao has none of our coverage interface, so the coverage report
reads it with defaults: statuses come from the graph, reasons are the generic ones, and a float
op the quantizer left alone reads "not annotated by <quantizer>". The numeric report matches
ops through the debug handles ``quantize()`` added, whoever annotated.
"""

from __future__ import annotations

import pytest

from pt2e_quant import explain
from tests.quantizers.vendors.pipelines import run_both

pytestmark = [pytest.mark.vendor, pytest.mark.torchao]

COMPUTE_OPS = [
    "conv2d",
    "relu",
    "conv2d",
    "add",
    "relu",
    "max_pool2d",
    "adaptive_avg_pool2d",
    "linear",
]


@pytest.mark.parametrize("name", ["executorch_xnnpack", "qnn"])
def test_every_op_of_the_cnn_is_reported_quantized(name: str) -> None:
    result = run_both(name).ours
    rows = result.coverage.rows
    assert [row.op for row in rows] == COMPUTE_OPS
    assert all(row.quantized for row in rows)
    again = explain(result.module, result.quantizer)  # the quantizer alone, no backend name
    assert [(row.op, row.quantized) for row in again.rows] == [(op, True) for op in COMPUTE_OPS]
    assert again.summary() == "8 compute ops: 8 quantized, 0 float"


def test_xnnpack_fusions_and_delegation_are_predicted() -> None:
    coverage = run_both("executorch_xnnpack").ours.coverage
    fused = {row.node: row.reason for row in coverage.rows if row.reason}
    assert fused == {"relu": "fused into conv2d", "relu_1": "fused into add"}
    assert coverage.summary().endswith("; XNNPACK will delegate 8 as int8, 0 in fp32")


def test_ops_a_vendor_left_float_get_generic_reasons() -> None:
    result = run_both("vulkan").ours  # VulkanQuantizer quantizes linear weights only
    reasons = {row.node: row.reason for row in result.coverage.rows if not row.quantized}
    assert reasons["conv2d"] == (
        "not annotated by VulkanQuantizer (it declares no rule table, so whether it covers "
        "this op is unknown)"
    )
    assert reasons["relu"] == reasons["conv2d"]
    assert result.coverage.summary() == "8 compute ops: 1 quantized, 7 float (7 not annotated)"


#: the ops the numeric report compares: every op with a debug handle whose output is observed
#: (XNNPACK fuses add + relu, so the add's output is never quantized and has no row)
REPORTED = {
    "executorch_xnnpack": ["conv2d", "relu", "conv2d", "relu", "max_pool2d"],
    "qnn": ["conv2d", "relu", "conv2d", "add", "relu", "max_pool2d"],
}


@pytest.mark.parametrize("name", list(REPORTED))
def test_the_numeric_report_compares_every_op(name: str) -> None:
    report = run_both(name).ours.report()
    tail = ["adaptive_avg_pool2d", "flatten", "linear"]
    assert [row.op for row in report.rows] == REPORTED[name] + tail
    for row in report.rows:
        assert row.activation_sqnr is not None and 15 < row.activation_sqnr < 60, row
    weighted = [row for row in report.rows if row.op in ("conv2d", "linear")]
    assert len(weighted) == 3 and all(row.weight_sqnr > 40 for row in weighted)
    worst = min(report.rows, key=lambda row: row.activation_sqnr)
    assert report.worst()[0] == worst
