"""The backend examples run as a user would run them (a fresh interpreter, ``--quick``) and
print what their docstrings promise: a delegated .pte that matches the converted model, and
Inductor int8 fusions with latencies."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import EXAMPLES


def _run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=EXAMPLES.parent,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _number(pattern: str, output: str) -> float:
    match = re.search(pattern, output)
    assert match, f"{pattern!r} not in:\n{output}"
    return float(match.group(1))


@pytest.mark.executorch
def test_xnnpack_example_writes_a_fully_delegated_pte_that_matches(tmp_path: Path) -> None:
    pytest.importorskip("executorch")
    pte = tmp_path / "model.pte"
    output = _run("xnnpack_to_executorch.py", "--output", str(pte))
    assert pte.stat().st_size > 0
    assert f"wrote {pte}" in output
    assert _number(r"delegated ops: (\d+)", output) > 0
    assert _number(r"undelegated ops: (\d+)", output) == 0
    max_diff = _number(r"vs converted model: ([0-9.]+)", output)
    assert max_diff <= _number(r"output step ([0-9.]+)", output)


@pytest.mark.inductor
def test_x86_example_fuses_every_conv_and_linear_and_times_both() -> None:
    output = _run("x86_inductor.py")
    # SmallConvNet: three convs and one linear, each prepacked; the residual add fused.
    assert _number(r"qconv_weight_prepack_matcher_count: (\d+)", output) == 3
    assert _number(r"qlinear_weight_prepack_matcher_count: (\d+)", output) == 1
    assert _number(r"qconv2d_binary_matcher_count: (\d+)", output) == 1
    assert _number(r"fp32 compiled: ([0-9.]+) ms", output) > 0
    assert _number(r"int8 compiled: ([0-9.]+) ms", output) > 0
    assert re.search(r"speedup: [0-9.]+x", output)
    assert _number(r"int8 compiled vs converted model: ([0-9.]+)", output) < 1e-3
