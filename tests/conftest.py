"""Make the repository root importable, so ``from tests.models import ...`` and
``import pt2e_quant`` work however pytest is launched.

``python -m pytest`` from the root already has it on ``sys.path``; a bare ``pytest`` (or an IDE
runner) with ``--import-mode=importlib`` does not, and the package may not be installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parents[1])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def peer_pattern_cache():
    """Cache the peers' pattern exports for the whole session (see tests/peer_pattern_cache)."""
    from tests.peer_pattern_cache import cached_peer_pattern_exports

    with cached_peer_pattern_exports():
        yield
