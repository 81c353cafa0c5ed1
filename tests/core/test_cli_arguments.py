"""``pt2e-quant`` argument handling that tests/test_cli.py leaves open.

Argument *types* (``--input-shape``, ``--calibration-batches``) are checked in-process through
``build_parser()``, which is what ``main`` parses with. Everything that needs ``main`` runs
``python -m pt2e_quant`` as a subprocess, like tests/test_cli.py: the runs are declared in
``RUNS`` and started together on a small pool when the first test asks, so the torch imports
overlap. All runs but four fail before any export, so they take about an import each.
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
from pt2e_quant.cli import build_parser, load_hint
from pt2e_quant.quantize_model import DEFAULT_BACKEND
from tests.cli_models import EXAMPLE_SHAPE
from tests.paths import REPO

PREFIX = "pt2e-quant: "

#: a MODEL file whose callable returns a single tensor, not a tuple, as its example input
BARE_TENSOR_MODEL = """
import torch
from tests.cli_models import EXAMPLE_SHAPE, TinyNet

def get_model():
    torch.manual_seed(0)
    return TinyNet().eval(), torch.randn(EXAMPLE_SHAPE)
"""
#: an importable MODEL module that itself imports a package that is not installed
BROKEN_DEPENDENCY_MODEL = "import no_such_dependency_of_the_model\n"

# name -> (arguments after `python -m pt2e_quant`, working directory); {tmp} is the temp dir
RUNS: dict[str, tuple[list[str], str]] = {
    "per_tensor_x86": (["explain", "tests.cli_models:tiny", "--backend", "x86", "--per-tensor"], "{repo}"),
    "output_is_dir": (["quantize", "tests.cli_models:tiny", "--backend", "xnnpack", "--output", "{tmp}"], "{repo}"),
    "keeps_existing": (["quantize", "tests.cli_models:unexportable", "--backend", "xnnpack", "--output", "{tmp}/existing.pt2"], "{repo}"),
    "missing_dependency": (["explain", "broken_model:get_model", "--backend", "xnnpack"], "{tmp}"),
    "bare_tensor_inputs": (["explain", "{tmp}/bare_tensor_model.py", "--backend", "xnnpack", "--calibration-batches", "1"], "{repo}"),
    "first_batch_only": (["quantize", "tests.cli_models:tiny", "--backend", "xnnpack", "--calibration-data", "{tmp}/small_then_large.pt", "--calibration-batches", "1", "--output", "{tmp}/first.pt2"], "{repo}"),
    "default_backend": (["quantize", "tests.cli_models:tiny", "--calibration-batches", "1", "--output", "{tmp}/default.pt2"], "{repo}"),
    "dynamic": (["explain", "tests.cli_models:tiny", "--dynamic", "--calibration-batches", "1"], "{repo}"),
}  # fmt: skip


class Runs:
    """The CLI processes of this module, keyed by name, each run once."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self._pool = ThreadPoolExecutor(max_workers=2)
        # PYTHONPATH: a run from {tmp} must still import this checkout's pt2e_quant
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
        self._futures: dict[str, Future] = {}
        for name, (argv, cwd) in RUNS.items():
            argv = [part.format(tmp=tmp) for part in argv]
            command = [sys.executable, "-m", "pt2e_quant", *argv, "--no-progress"]
            self._futures[name] = self._pool.submit(
                subprocess.run,
                command,
                cwd=cwd.format(tmp=tmp, repo=REPO),
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )

    def __getitem__(self, name: str) -> subprocess.CompletedProcess:
        return self._futures[name].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_arguments")
    torch.manual_seed(0)
    (tmp / "existing.pt2").write_bytes(b"an earlier result")
    (tmp / "bare_tensor_model.py").write_text(BARE_TENSOR_MODEL)
    (tmp / "broken_model.py").write_text(BROKEN_DEPENDENCY_MODEL)
    # one small batch, then three batches a thousand times larger
    small = torch.rand(EXAMPLE_SHAPE) * 0.1
    torch.save(
        torch.cat([small, torch.randn(3, *EXAMPLE_SHAPE[1:]) * 100]), tmp / "small_then_large.pt"
    )
    runs = Runs(tmp)
    yield runs
    runs.close()


def _error_line(run: subprocess.CompletedProcess) -> str:
    return run.stderr.strip().splitlines()[-1]


def _parse_error(args: list[str], capsys) -> str:
    """Parse ``args`` as argparse does in main; return its stderr, asserting exit code 2."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(args)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_negative_input_size_is_a_usage_error(capsys) -> None:
    """A negative size would only fail later inside torch.randn (exit 1, torch's message); the
    user mistyped an argument, so argparse must reject it and name the option."""
    err = _parse_error(
        ["explain", "m:f", "--backend", "xnnpack", "--input-shape", "1,-3,8"], capsys
    )
    assert "argument --input-shape: expected comma-separated sizes like 1,3,224,224, got '1,-3,8'" in err  # fmt: skip


def test_zero_calibration_batches_is_rejected_and_one_is_accepted(capsys) -> None:
    """``--calibration-batches 0`` must not be accepted: with random data ``0 or 8`` would
    silently calibrate on 8 batches, and 0 batches of a file calibrates nothing."""
    base = ["explain", "m:f", "--backend", "xnnpack", "--calibration-batches"]
    err = _parse_error([*base, "0"], capsys)
    assert "argument --calibration-batches: expected a positive integer, got '0'" in err
    assert build_parser().parse_args([*base, "1"]).calibration_batches == 1


def test_per_tensor_with_x86_is_a_usage_error(runs) -> None:
    """x86 has no per-tensor preset; the CLI says so as a usage error (exit 2) naming the
    flag, not as a failure (exit 1) worded for the Python API's ``per_tensor`` argument."""
    run = runs["per_tensor_x86"]
    assert run.returncode == 2, run.stderr
    assert _error_line(run) == (
        f"{PREFIX}error: --per-tensor: the x86 backend only supports per-channel weights"
    )


def test_output_directory_is_named_as_such(runs) -> None:
    """A directory given as ``--output`` gets its own message (a file path is expected) on
    every platform, instead of whatever error opening a directory raises."""
    run = runs["output_is_dir"]
    assert run.returncode == 2, run.stderr
    assert _error_line(run) == (
        f"{PREFIX}error: --output {runs.tmp}: is a directory, expected a file path"
    )


def test_failed_run_keeps_an_existing_output_file(runs) -> None:
    """Checking that ``--output`` is writable must not delete a file already there: when the
    run then fails (here: export), the user keeps their earlier result."""
    run = runs["keeps_existing"]
    assert run.returncode == 1, run.stderr
    assert _error_line(run).startswith(f"{PREFIX}error: could not export the model")
    assert (runs.tmp / "existing.pt2").read_bytes() == b"an earlier result"


def test_missing_dependency_of_the_model_is_a_failure_not_a_usage_error(runs) -> None:
    """MODEL resolved, but its own import failed: the user must see the dependency's error
    (exit 1), not be told that MODEL does not exist (exit 2)."""
    run = runs["missing_dependency"]
    assert run.returncode == 1, run.stderr
    assert _error_line(run) == (f"{PREFIX}error: No module named 'no_such_dependency_of_the_model'")


def test_model_returning_a_bare_tensor_input_runs(runs) -> None:
    """``get_model`` may return ``(module, tensor)``; the CLI wraps the single input into the
    tuple that quantize() requires."""
    run = runs["bare_tensor_inputs"]
    assert run.returncode == 0, run.stderr
    assert "3 compute ops: 3 quantized, 0 float" in run.stdout


def test_calibration_batches_limits_the_batches_read_from_data(runs) -> None:
    """``--calibration-batches 1`` with ``--calibration-data``: only the first (small) batch
    calibrates, so the input's scale fits values of about 0.1, not the later ones near 300."""
    run = runs["first_batch_only"]
    assert run.returncode == 0, run.stderr
    program = torch.export.load(runs.tmp / "first.pt2")
    (x,) = [n for n in program.graph.nodes if n.op == "placeholder" and n.name == "x"]
    (quantize,) = [u for u in x.users if "quantize_per_tensor" in str(u.target)]
    assert quantize.args[1] < 0.1 / 127 * 1.5


def test_backend_defaults_to_the_apis_default_and_the_output_says_how_to_load(runs) -> None:
    """Without --backend the CLI quantizes for quantize()'s default backend (xnnpack), and
    after saving it tells the user that the .pt2 needs pt2e_quant.load (issue 21)."""
    assert DEFAULT_BACKEND == "xnnpack"
    run = runs["default_backend"]
    assert run.returncode == 0, run.stderr
    lines = run.stderr.strip().splitlines()
    output = runs.tmp / "default.pt2"
    assert f"{PREFIX}wrote {output}" in lines
    assert f"{PREFIX}{load_hint(output)}" in lines
    assert "pt2e_quant.load(" in load_hint(output)
    assert "XNNPACK will delegate" in lines[-1]
    assert pt2e_quant.load(output).module()(torch.randn(EXAMPLE_SHAPE)).shape == (1, 5)


def test_dynamic_flag_quantizes_activations_at_run_time(runs) -> None:
    """--dynamic builds the quantizer quantize(dynamic=True) builds; random calibration data
    is not warned about, since dynamic activation ranges are not calibrated."""
    run = runs["dynamic"]
    assert run.returncode == 0, run.stderr
    assert "xnnpack int8 (dynamic)" in run.stdout
    assert "warning: no --calibration-data" not in run.stderr
