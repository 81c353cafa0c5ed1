"""``python -m pt2e_quant`` as a subprocess: help, every error path, and full runs.

Each process pays torch's import (seconds), so the runs are declared once in ``RUNS`` and
started together on a small thread pool when the module's first test asks for one; tests
then assert on the finished processes. The ExecuTorch run starts only when its (marked)
test asks for it, so ``-m "not executorch"`` does not pay for lowering.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import pt2e_quant  # noqa: F401  (registers the quantized_decomposed ops torch.export.load needs)
from tests.cli_models import EXAMPLE_SHAPE
from tests.paths import REPO

PREFIX = "pt2e-quant: "

# name -> arguments after `python -m pt2e_quant`; {tmp} is the module's temporary directory
RUNS: dict[str, list[str]] = {
    "help": ["--help"],
    "quantize_help": ["quantize", "--help"],
    "no_module": ["quantize", "no_such_pkg.models:net", "--backend", "xnnpack", "--output", "{tmp}/a.pt2"],
    "no_attribute": ["quantize", "tests.cli_models:nope", "--backend", "xnnpack", "--output", "{tmp}/a.pt2"],
    "no_inputs": ["quantize", "tests/cli_models.py", "--backend", "xnnpack", "--output", "{tmp}/a.pt2"],
    "pte_x86": ["quantize", "tests.cli_models:tiny", "--backend", "x86", "--output", "{tmp}/a.pt2", "--pte", "{tmp}/a.pte"],
    "unwritable": ["quantize", "tests.cli_models:tiny", "--backend", "xnnpack", "--output", "{tmp}/missing/dir/a.pt2"],
    "bad_shape": ["explain", "tests.cli_models:tiny", "--backend", "xnnpack", "--input-shape", "1,x,8"],
    "empty_data": ["explain", "tests.cli_models:tiny", "--backend", "xnnpack", "--calibration-data", "{tmp}/empty.pt"],
    "export_fails": ["quantize", "tests.cli_models:unexportable", "--backend", "xnnpack", "--output", "{tmp}/a.pt2"],
    "wrong_shape_debug": ["explain", "tests.cli_models:tiny", "--backend", "xnnpack", "--calibration-data", "{tmp}/wrong.pt", "--debug"],
    "no_executorch": ["quantize", "tests.cli_models:tiny", "--backend", "xnnpack", "--output", "{tmp}/a.pt2", "--pte", "{tmp}/a.pte"],
    "x86_full": ["quantize", "tests/cli_models.py", "--input-shape", "1,3,8,8", "--backend", "x86", "--calibration-batches", "2", "--output", "{tmp}/x86.pt2", "--report", "{tmp}/x86.html"],
    "explain": ["explain", "tests.cli_models:tiny", "--backend", "xnnpack", "--calibration-data", "{tmp}/tensor.pt", "--calibration-batches", "2"],
    "accuracy": ["quantize", "tests.cli_models:tiny", "--backend", "xnnpack", "--calibration-data", "{tmp}/batches.pt", "--output", "{tmp}/accuracy.pt2", "--range-estimator", "mse", "--weight-range-estimator", "mse", "--smooth-quant", "0.5", "--bias-correction", "--target-sqnr", "200", "--max-float-ops", "1", "--explain"],
    "bad_alpha": ["explain", "tests.cli_models:tiny", "--backend", "xnnpack", "--smooth-quant", "1.5"],
    "cap_without_target": ["explain", "tests.cli_models:tiny", "--backend", "xnnpack", "--max-float-ops", "2"],
}  # fmt: skip
# started only on demand (needs ExecuTorch)
LAZY_RUNS: dict[str, list[str]] = {
    "pte_full": ["quantize", "tests/cli_models.py:tiny", "--backend", "xnnpack", "--calibration-data", "{tmp}/batches.pt", "--output", "{tmp}/full.pt2", "--pte", "{tmp}/full.pte", "--report", "{tmp}/full.html", "--explain"],
}  # fmt: skip


class Runs:
    """The CLI processes of this module, keyed by name, each run at most once."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self._pool = ThreadPoolExecutor(max_workers=3)
        self._futures: dict[str, Future] = {}
        for name in RUNS:
            self._start(name)

    def _start(self, name: str) -> None:
        argv = [part.format(tmp=self.tmp) for part in {**RUNS, **LAZY_RUNS}[name]]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        if name == "no_executorch":  # a package that fails to import, ahead of the real one
            env["PYTHONPATH"] = str(self.tmp / "shadow")
        command = [sys.executable, "-m", "pt2e_quant", *argv, "--no-progress"]
        if name.endswith("help"):
            command.remove("--no-progress")
        self._futures[name] = self._pool.submit(
            subprocess.run, command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )

    def __getitem__(self, name: str) -> subprocess.CompletedProcess:
        if name not in self._futures:
            self._start(name)
        return self._futures[name].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    torch.save([], tmp / "empty.pt")
    torch.save(torch.randn(4, 4, 8, 8), tmp / "wrong.pt")  # 4 channels, the model takes 3
    torch.save(torch.randn(4, *EXAMPLE_SHAPE[1:]), tmp / "tensor.pt")  # 4 batches of 1
    torch.save([(torch.randn(EXAMPLE_SHAPE),) for _ in range(3)], tmp / "batches.pt")
    shadow = tmp / "shadow" / "executorch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("executorch is not installed")\n')
    runs = Runs(tmp)
    yield runs
    runs.close()


def _error_line(run: subprocess.CompletedProcess) -> str:
    """The last stderr line: where the CLI (and argparse) put the one-line reason."""
    return run.stderr.strip().splitlines()[-1]


def test_help_lists_commands_and_options(runs):
    assert runs["help"].returncode == 0
    assert "{quantize,explain}" in runs["help"].stdout or "quantize" in runs["help"].stdout
    text = runs["quantize_help"].stdout
    assert runs["quantize_help"].returncode == 0
    for option in ("--backend {xnnpack,x86", "--per-tensor", "--dynamic", "--input-shape",
                   "--calibration-batches", "--calibration-data", "--output", "--pte",
                   "--report", "--explain", "--debug", "get_model", "--range-estimator",
                   "--weight-range-estimator", "--smooth-quant", "--bias-correction",
                   "--target-sqnr", "--max-float-ops"):  # fmt: skip
        assert option in text, option


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_module", "error: MODEL 'no_such_pkg.models:net': no module named 'no_such_pkg'"),
        (
            "no_attribute",
            "error: MODEL 'tests.cli_models:nope': tests.cli_models has no attribute 'nope'",
        ),  # fmt: skip
        (
            "no_inputs",
            "error: MODEL 'tests/cli_models.py' returned no example inputs: pass --input-shape",
        ),  # fmt: skip
        ("pte_x86", "error: --pte: lowering to ExecuTorch needs --backend xnnpack"),
        ("unwritable", "a.pt2: cannot write there (No such file or directory)"),
        ("bad_shape", "error: argument --input-shape: expected comma-separated sizes"),
        ("empty_data", "empty.pt holds no calibration batch"),
        ("bad_alpha", "error: --smooth-quant: ALPHA must be in [0, 1], got 1.5"),
        ("cap_without_target", "error: --max-float-ops caps the ops --target-sqnr keeps float"),
    ],
)
def test_usage_errors_exit_2_with_one_line(runs, name, message):
    run = runs[name]
    assert run.returncode == 2, run.stderr
    assert message in _error_line(run)
    assert "Traceback" not in run.stderr
    if name == "unwritable":
        assert _error_line(run).startswith(f"{PREFIX}error: --output ")
    if name == "empty_data":
        assert _error_line(run).startswith(f"{PREFIX}error: --calibration-data ")


def test_export_failure_exits_1_with_reason_and_fix(runs):
    run = runs["export_fails"]
    assert run.returncode == 1
    line = _error_line(run)
    assert line.startswith(f"{PREFIX}error: could not export the model")
    assert "likely fix: the model branches on tensor values" in line
    assert "Traceback" not in run.stderr
    assert not (runs.tmp / "a.pt2").exists()


def test_wrong_calibration_shape_names_the_batch_and_debug_shows_traceback(runs):
    run = runs["wrong_shape_debug"]
    assert run.returncode == 1
    assert _error_line(run).startswith(
        f"{PREFIX}error: calibration batch 0 has inputs ((1, 4, 8, 8)) but the model was "
        "exported with ((1, 3, 8, 8))"
    )
    assert "Traceback" in run.stderr and "CalibrationError" in run.stderr


def test_missing_executorch_says_how_to_install(runs):
    run = runs["no_executorch"]
    assert run.returncode == 1
    assert _error_line(run) == (
        f"{PREFIX}error: install executorch (pip install executorch==1.5.1) to write .pte"
    )


def test_x86_run_writes_program_and_report_from_random_data(runs):
    run = runs["x86_full"]
    assert run.returncode == 0, run.stderr
    assert "warning: no --calibration-data: calibrating on 2 batches of random data" in run.stderr
    lines = run.stderr.strip().splitlines()
    assert f"{PREFIX}wrote {runs.tmp / 'x86.pt2'}" in lines
    assert f"{PREFIX}wrote {runs.tmp / 'x86.html'}" in lines
    assert lines[-1].startswith(f"{PREFIX}3 compute ops: 3 quantized, 0 float; Inductor")
    program = torch.export.load(runs.tmp / "x86.pt2")
    assert program.module()(torch.randn(EXAMPLE_SHAPE)).shape == (1, 5)
    assert "<html" in (runs.tmp / "x86.html").read_text().lower()
    assert run.stdout == ""  # no --explain: the table is not printed


def test_explain_prints_only_the_table(runs):
    run = runs["explain"]
    assert run.returncode == 0, run.stderr
    header = run.stdout.splitlines()[0].split()
    assert header[:5] == ["node", "op", "module", "quantized", "reason"]
    assert "3 compute ops: 3 quantized, 0 float; XNNPACK will delegate 3" in run.stdout
    assert "wrote" not in run.stderr and "warning: no --calibration-data" not in run.stderr


def test_accuracy_flags_reach_quantize_and_report_the_fallback(runs):
    run = runs["accuracy"]
    assert run.returncode == 0, run.stderr
    # 200 dB cannot be met with one unit float: the fallback says so and keeps its best candidate
    assert "accuracy fallback: 1 of" in run.stderr and "does NOT meet the target 200" in run.stderr
    assert "kept float to meet the accuracy target" in run.stdout
    assert (runs.tmp / "accuracy.pt2").exists()


@pytest.mark.executorch
def test_full_run_writes_pt2_pte_and_html(runs):
    pytest.importorskip("executorch")
    run = runs["pte_full"]
    assert run.returncode == 0, run.stderr
    lines = run.stderr.strip().splitlines()
    for name in ("full.pt2", "full.pte", "full.html"):
        assert f"{PREFIX}wrote {runs.tmp / name}" in lines
    assert lines[-1].startswith(f"{PREFIX}3 compute ops: 3 quantized, 0 float; XNNPACK")
    assert "XNNPACK prediction" in run.stdout  # --explain
    assert (runs.tmp / "full.pte").read_bytes()[4:8] == b"ET12"  # ExecuTorch's file magic
    program = torch.export.load(runs.tmp / "full.pt2")
    assert program.module()(torch.randn(EXAMPLE_SHAPE)).shape == (1, 5)
    assert "conv2d" in (runs.tmp / "full.html").read_text()


def test_console_script_is_installed_and_runs():
    """``pt2e-quant`` is the installed entry point of pyproject's [project.scripts]."""
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "pt2e-quant"]
    assert script.value == "pt2e_quant.cli:main"
    executable = Path(sys.executable).parent / "pt2e-quant"
    assert executable.exists(), "reinstall the package (pip install -e .) to create the script"
    run = subprocess.run(
        [str(executable), "explain", "--help"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "MODEL" in run.stdout
