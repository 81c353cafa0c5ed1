"""The vendor-package overlay ``.venv-vendors/`` and what tests/vendors/ needs from it.

Vendor quantizers (Arm TOSA and Cortex-M in ExecuTorch, needing ``tosa-tools``; ExecuTorch's
OpenVINOQuantizer, needing ``nncf`` and ``openvino``) pin an older numpy and flatbuffers than
``.venv`` has, so ``.ci/vendors.sh`` installs them without dependencies into an overlay folder
instead. ``conftest.py`` appends the overlay to ``sys.path`` - appends, so every package
``.venv`` has (numpy, flatbuffers, torch) still comes from ``.venv`` and the overlay can only
add modules, never replace one. The build script checks that the overlay imports that way.
The overlay's packages import cleanly in this interpreter, so no subprocess or second virtual
environment is needed.

A test asks for a vendor module with :func:`require_vendor`. A missing or out-of-date overlay
skips the test with the command that builds it; an up-to-date overlay that still lacks the
module fails it, since then the requirement list itself is wrong.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from enum import Enum
from types import ModuleType

import pytest

from tests.paths import REPO

OVERLAY = REPO / ".venv-vendors"
REQUIREMENTS = REPO / ".ci" / "vendor-requirements.txt"
BUILD_SCRIPT = REPO / ".ci" / "vendors.sh"
BUILD_COMMAND = "sh .ci/vendors.sh"


class OverlayState(Enum):
    MISSING = "missing"
    STALE = "out of date"
    CURRENT = "current"


def expected_stamp() -> str:
    """The key ``.ci/vendors.sh`` writes: sha256 of the requirement list, the script itself
    and ``sys.version`` followed by a newline, concatenated in that order."""
    data = REQUIREMENTS.read_bytes() + BUILD_SCRIPT.read_bytes() + f"{sys.version}\n".encode()
    return hashlib.sha256(data).hexdigest()


def overlay_state() -> OverlayState:
    """Whether the overlay was built (the script writes its stamp last) and for what."""
    stamp = OVERLAY / ".stamp"
    if not stamp.is_file():
        return OverlayState.MISSING
    if stamp.read_text().strip() != expected_stamp():
        return OverlayState.STALE
    return OverlayState.CURRENT


def add_overlay_to_path() -> bool:
    """Append a built overlay to the end of ``sys.path`` (once); say whether it is there."""
    if overlay_state() is OverlayState.MISSING:
        return False
    if str(OVERLAY) not in sys.path:
        sys.path.append(str(OVERLAY))
    return True


def require_vendor(module: str) -> ModuleType:
    """Import ``module`` from the overlay, or skip the test naming the command that builds it.

    Import errors other than a missing module (say, a vendor release that no longer works
    with ``.venv``'s numpy) propagate and fail the test: a broken overlay is never skipped.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        state = overlay_state()
        if state is OverlayState.CURRENT:
            pytest.fail(
                f"{module} does not import from the up-to-date vendor overlay ({error}): "
                f"pin the missing package in .ci/vendor-requirements.txt and run {BUILD_COMMAND}"
            )
        pytest.skip(
            f"needs {module} (no module named {error.name!r}) from the vendor overlay "
            f"{OVERLAY.name}/ ({state.value}): run {BUILD_COMMAND}"
        )
