"""pt2e_quant.load: a saved quantized program loads in a fresh interpreter.

Each check runs in a new Python process, because this one defined the
``quantized_decomposed`` ops long ago (importing pt2e_quant does). The first check documents
why ``load`` exists: plain ``torch.export.load`` in a process that never imported pt2e_quant
cannot resolve the ops the program calls.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from pt2e_quant.quantize_model import quantize
from tests.cli_models import tiny
from tests.paths import REPO


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(quantized program saved by torch.export.save, its example input and output)."""
    folder = tmp_path_factory.mktemp("saved")
    model, example = tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = quantize(model, example, progress=False)
    program, expected = folder / "model.pt2", folder / "expected.pt"
    torch.export.save(result.exported_program, str(program))
    torch.save((example, result.exported_program.module()(*example)), expected)
    return program, expected


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def test_plain_torch_export_load_fails_without_pt2e_quant(saved) -> None:
    program, _ = saved
    code = (
        "import sys, torch\n"
        f"torch.export.load({str(program)!r})\n"
        "assert 'pt2e_quant' not in sys.modules\n"
    )
    result = _fresh_python(code)
    assert result.returncode != 0
    assert "failed to resolve torch.ops.quantized_decomposed" in result.stderr


def test_pt2e_quant_load_registers_the_ops_and_returns_the_same_program(saved) -> None:
    program, expected = saved
    code = (
        "import torch\n"
        "from pt2e_quant import load\n"
        f"loaded = load({str(program)!r})\n"
        "assert isinstance(loaded, torch.export.ExportedProgram)\n"
        f"example, output = torch.load({str(expected)!r})\n"
        "assert torch.equal(loaded.module()(*example), output)\n"
        "print('ok')\n"
    )
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
