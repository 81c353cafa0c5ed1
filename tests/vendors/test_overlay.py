"""The overlay helper agrees with the script that builds the overlay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO
from tests.vendors._overlay import BUILD_SCRIPT, expected_stamp

VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def test_stamp_key_is_the_one_the_build_script_writes() -> None:
    if not VENV_PYTHON.exists() or Path(sys.executable).resolve() != VENV_PYTHON.resolve():
        pytest.skip("the build script hashes .venv's Python version; run the tests with .venv")
    printed = subprocess.run(
        ["sh", str(BUILD_SCRIPT), "--print-key"], capture_output=True, text=True, check=True
    )
    assert printed.stdout.strip() == expected_stamp()
