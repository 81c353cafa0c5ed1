"""Every example runs as a user would run it (a fresh interpreter) and prints what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=EXAMPLES.parent,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_quickstart_prints_a_good_sqnr():
    output = _run("quickstart.py")
    match = re.search(r"SQNR float vs int8: ([0-9.]+) dB", output)
    assert match, output
    assert float(match.group(1)) > 30.0
    assert re.search(r"quantized graph: [1-9][0-9]* quantize/dequantize ops", output)
