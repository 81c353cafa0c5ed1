"""The benchmarks still run and report a ratio for every model they promise.

The README quotes their tables, and nothing else in the suite imports them, so a renamed
helper or a peer API change would otherwise only show up the next time someone measures.
These runs use ``--quick`` and check the shape of the report, never the numbers: speed is
measured by running the benchmarks on a quiet machine, not by timed tests.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from tests.paths import REPO

ROOT = REPO
RATIO = r"([0-9]+\.[0-9]+)"


def _run(script: str, *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _assert_ratio(value: str, row: str) -> None:
    ratio = float(value)
    assert math.isfinite(ratio) and ratio > 0, row


@pytest.mark.torchao
def test_bench_core_reports_every_quick_model():
    pytest.importorskip("torchao")
    output = _run("bench_core.py", "--quick")
    rows = {
        match.group(1): match
        for match in re.finditer(rf"^(\S.*?x\d+)\s.*?{RATIO}\s*$", output, re.MULTILINE)
    }
    assert set(rows) == {
        "conv-bn-relu x10",
        "conv-bn-relu x20",
        "conv-bn-relu x40",
        "transformer x4",
    }, output
    for name, match in rows.items():
        _assert_ratio(match.group(2), name)


@pytest.mark.torchao
@pytest.mark.executorch
def test_bench_calibration_reports_every_quick_case():
    pytest.importorskip("torchao")
    pytest.importorskip("executorch")
    output = _run("bench_calibration.py", "--quick")
    rows = re.findall(rf"^(.+?)\s+(xnnpack|x86)\s+[0-9.]+ms\s+[0-9.]+ms\s+{RATIO}$", output, re.M)
    assert {(model, config) for model, config, _ in rows} == {
        ("resnet (small)", "xnnpack"),
        ("resnet (small)", "x86"),
        ("transformer (small)", "xnnpack"),
    }, output
    for model, config, ratio in rows:
        _assert_ratio(ratio, f"{model} {config}")


@pytest.mark.torchao
@pytest.mark.executorch
def test_bench_backends_reports_both_backends_per_quick_model():
    pytest.importorskip("torchao")
    pytest.importorskip("executorch")
    output = _run("bench_backends.py", "--quick", "--skip-inductor", "--skip-pte")
    rows = re.findall(rf"^(\w+)\s+(xnnpack|x86)\s+\S+s\s+\S+s\s+{RATIO}\*?$", output, re.M)
    assert {(model, backend) for model, backend, _ in rows} == {
        (model, backend)
        for model in ("resnet_basic_block", "tiny_mobilenet_v2", "transformer_encoder_block")
        for backend in ("xnnpack", "x86")
    }, output
    for model, backend, ratio in rows:
        _assert_ratio(ratio, f"{model} {backend}")
    # Rows the peer could only be timed on the strict IR are marked and the mark explained.
    assert re.search(r"^resnet_basic_block\s+x86\s.*\*$", output, re.M), output
    assert "timed on a strict export" in output


#: every configuration bench_vendors.py promises; Arm and OpenVINO need the vendor overlay env
VENDOR_CONFIGURATIONS = {
    "xnnpack per-channel",
    "xnnpack dynamic",
    "xnnpack qat",
    "vulkan w8 weight-only",
    "vulkan w8 dynamic",
    "qnn 8a8w",
    "qnn 16a8w",
    "qnn 16a4w",
    "qnn 8a8w qat",
    "cadence (strict)",
    "coreml a8w8 per-channel",
    "samsung enn",
    "torchao x86 inductor (strict)",
    "torchao embedding",
    "arm tosa int",
    "openvino int8_sym",
}


def test_bench_vendors_lists_every_configuration():
    output = _run("bench_vendors.py", "--list")
    assert {line for line in output.splitlines() if line} == VENDOR_CONFIGURATIONS, output


#: the in-process run measures a few configurations whose quantizers load fast: the whole
#: sweep (CoreML exports ~400 search patterns, Arm and OpenVINO need the vendor overlay) takes
#: minutes and is the benchmark's job; every vendor's quantizer is tested in tests/vendors
IN_PROCESS_SAMPLE = ("xnnpack per-channel", "qnn 8a8w", "torchao embedding")


@pytest.mark.torchao
@pytest.mark.executorch
@pytest.mark.slow
def test_bench_vendors_reports_a_ratio_or_a_skip_for_each_selected_configuration():
    pytest.importorskip("torchao")
    pytest.importorskip("executorch")
    output = _run("bench_vendors.py", "--quick", "--in-process", "--only", *IN_PROCESS_SAMPLE,
                  timeout=600)  # fmt: skip
    rows = re.findall(
        rf"^\| ([^|]+?) \| ([^|]+?) \| [^|]+ \| [^|]+ \| {RATIO}(?: !)? \|", output, re.M
    )
    # "skipped <configuration>: why" or "skipped <configuration> on <model>: why"
    skipped = {name.split(" on ")[0] for name in re.findall(r"^skipped ([^:]+):", output, re.M)}
    timed = {configuration for configuration, _, _ in rows}
    selected = {c for c in VENDOR_CONFIGURATIONS if any(s in c for s in IN_PROCESS_SAMPLE)}
    assert rows and "xnnpack per-channel" in timed, output
    assert timed | skipped == selected and not timed & skipped, output
    for configuration, model, ratio in rows:
        _assert_ratio(ratio, f"{configuration} {model}")


@pytest.mark.torchao
@pytest.mark.executorch
@pytest.mark.slow
def test_bench_vendors_runs_each_configuration_in_its_own_process():
    pytest.importorskip("executorch")
    output = _run("bench_vendors.py", "--quick", "--only", "vulkan w8 dynamic", timeout=600)
    rows = re.findall(rf"^\| vulkan w8 dynamic \| [^|]+ \| [^|]+ \| [^|]+ \| {RATIO}", output, re.M)
    assert len(rows) == 1, output
    assert "geometric mean ratio" in output, output


@pytest.mark.torchao
@pytest.mark.executorch
def test_bench_llm_reports_both_libraries_memory_and_growth():
    pytest.importorskip("torchao")
    pytest.importorskip("executorch")
    pytest.importorskip("transformers")
    output = _run("bench_llm.py", "--quick")
    rows = re.findall(r"^(dyn8|8da4w)\s+2\s+\S+B\s+(pt2e_quant|torchao)\s", output, re.M)
    assert set(rows) == {("dyn8", "pt2e_quant"), ("dyn8", "torchao"), ("8da4w", "pt2e_quant")}, (
        output
    )
    ratio = re.search(rf"convert time {RATIO}, convert peak memory {RATIO}", output)
    assert ratio, output
    _assert_ratio(ratio.group(1), "convert time")
    growth = re.findall(r"^\s+(\d+)\s+(\d+)\s+[0-9.]+s\s+[0-9.]+ us$", output, re.M)
    assert [layers for layers, _ in growth] == ["2", "4"], output
    assert int(growth[1][1]) > int(growth[0][1]), output  # more layers, more nodes


@pytest.mark.torchao
@pytest.mark.executorch
def test_bench_accuracy_reports_every_row_and_both_fallback_strategies():
    pytest.importorskip("sklearn")
    output = _run("bench_accuracy.py", "--quick", "--tasks", "digits", "--target-gains", "6")
    labels = [
        "float",
        "torchao stock (ExecuTorch XNNPACK)",
        "pt2e_quant stock",
        "+ range_estimator=mse",
        "+ smooth_quant=0.5",
        "+ bias_correction",
        "combination",
    ]
    for label in labels:
        row = re.search(rf"^{re.escape(label)}\s+(\d\.\d+)\s+(\S+)", output, re.MULTILINE)
        assert row is not None, (label, output)
        assert 0.0 <= float(row.group(1)) <= 1.0, row.group(0)
    for strategy in ("greedy", "search"):
        row = re.search(
            rf"^{strategy}\s+-?\d+\.\d+\s+(True|False)\s+(\d+)\s+(\d+)", output, re.MULTILINE
        )
        assert row is not None, (strategy, output)


def test_bench_distributed_reports_one_and_two_processes_and_the_merge():
    output = _run("bench_distributed.py", "--quick", "--observers", "minmax")
    rows = re.findall(
        r"^minmax\s+(1 x 1 thr|1 x 2 thr|2 x 1 thr)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+"
        r"([0-9.]+)$",
        output,
        re.M,
    )
    assert [row[0] for row in rows] == ["1 x 1 thr", "1 x 2 thr", "2 x 1 thr"], output
    single, _, parallel = rows
    assert float(single[3]) == 0.0 and float(parallel[3]) > 0.0  # only the ranks merge
    assert float(parallel[4]) > 0.0  # statistics were sent
    assert "model of N machines" in output
