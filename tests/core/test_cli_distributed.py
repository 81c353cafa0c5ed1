"""``torchrun --nproc-per-node 2 -m pt2e_quant quantize ...``: each rank calibrates on its share
of the batches, rank 0 alone writes, and the program equals a one-process run's; a rank
without data fails every rank and nothing is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pt2e_quant
from pt2e_quant.cli import main
from tests.cli_models import EXAMPLE_SHAPE
from tests.paths import REPO

pytestmark = pytest.mark.slow


def _torchrun(*argv: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "pt2e_quant", *argv, "--no-progress",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=240
    )


def _batches(path: Path, count: int) -> Path:
    generator = torch.Generator().manual_seed(3)
    torch.save([(torch.randn(EXAMPLE_SHAPE, generator=generator) * (i + 1),) for i in range(count)],
               path)  # fmt: skip
    return path


def test_two_ranks_write_once_the_program_one_process_writes(tmp_path):
    data = _batches(tmp_path / "batches.pt", 5)
    out = tmp_path / "out" / "model.pt2"
    out.parent.mkdir()
    run = _torchrun("quantize", "tests.cli_models:tiny", "--calibration-data", str(data),
                    "--output", str(out))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("wrote ") == 1, run.stderr  # rank 0 only
    assert "merged the observers of 2 ranks (batches per rank: 3, 2)" in run.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.pt2"]  # no leftovers

    single = tmp_path / "single.pt2"
    argv = ["quantize", "tests.cli_models:tiny", "--calibration-data", str(data),
            "--output", str(single), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    probe = torch.randn(EXAMPLE_SHAPE, generator=torch.Generator().manual_seed(11))
    ours, theirs = (pt2e_quant.load(str(path)).module()(probe) for path in (out, single))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_a_rank_without_batches_fails_both_and_writes_nothing(tmp_path):
    data = _batches(tmp_path / "one.pt", 1)  # rank 1's share is empty
    out = tmp_path / "model.pt2"
    run = _torchrun("quantize", "tests.cli_models:tiny", "--calibration-data", str(data),
                    "--output", str(out))  # fmt: skip
    assert run.returncode != 0
    assert run.stderr.count("rank 1 of 2 has no calibration data") == 2, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.pt"]
