"""examples/debug_quantization.py runs as a user would run it and blames the badly scaled layer."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.paths import REPO

ROOT = REPO


def test_debug_example_finds_the_badly_scaled_layer():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "debug_quantization.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout

    # the numeric report: a table row per quantized op, then the first jump at `body`'s conv
    assert re.search(r"^2\s+conv2d\s+body\.0\s+3\s+conv2d_1\s", output, re.M), output
    jump = re.search(
        r"^error first jumps at: (\S+) \((\w+)\): SQNR ([-0-9.]+) dB, drop ([-0-9.]+) dB$",
        output,
        re.M,
    )
    assert jump, output
    assert jump.group(1, 2) == ("body.0", "conv2d_1")
    assert float(jump.group(3)) < 20.0 and float(jump.group(4)) > 10.0

    # sensitivity: the top-3 ranking starts with the same layer, fused with its relu
    ranking = output.split("most sensitive layers", 1)[1].splitlines()[2:]
    assert len(ranking) == 3, output
    first = ranking[0].split()
    assert first[:2] == ["1", "SQNR"] and first[4] == "body.0", ranking
    assert ranking[0].endswith("conv2d_1, relu_1")
    assert float(first[2]) + 10.0 < float(ranking[1].split()[2])  # well ahead of the rest
