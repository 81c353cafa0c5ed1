"""Where the repository is, for tests that read or run its files (examples, tools, the CLI):
one definition, so a test file can move between folders without recounting ``parents``."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
