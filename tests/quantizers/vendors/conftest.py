"""tests/quantizers/vendors/: the vendor backends of ``quantizers/vendors/``.

The vendor packages ExecuTorch's Arm, Cortex-M and OpenVINO quantizers import (tosa-tools,
nncf, openvino) live in the overlay ``.venv-vendors/`` that ``.ci/vendors.sh`` builds; its
helper ``tests/vendors/_overlay.py`` appends it to ``sys.path`` (after ``.venv``'s packages),
here as for ``tests/vendors/``. Without the overlay those backends' tests skip, naming the
command that installs what is missing.

The backends are registered by hand (:func:`vendor_backends`), so the tests see the code of
this tree even where the installed entry points are older.
"""

from __future__ import annotations

import importlib

import pytest

from pt2e_quant.contract import backends as registry

try:
    from tests.vendors._overlay import add_overlay_to_path
except ImportError:  # a tree without the overlay helper: the vendor tests skip instead
    pass
else:
    add_overlay_to_path()

#: every module of quantizers/vendors/ that defines a backend, by backend name
VENDOR_BACKENDS = (
    "arm",
    "cadence",
    "coreml",
    "cortex_m",
    "executorch_xnnpack",
    "mediatek",
    "nxp",
    "openvino",
    "qnn",
    "samsung",
    "vulkan",
)


@pytest.fixture(autouse=True)
def vendor_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry with every vendor backend of this tree registered by hand; and no QNN SDK
    download (``QNN_SDK_ROOT`` set empty tells ExecuTorch the caller handles the SDK)."""
    monkeypatch.setattr(registry, "_registered", dict(registry.installed_backends()))
    for name in VENDOR_BACKENDS:
        registry.register(importlib.import_module(f"quantizers.vendors.{name}").BACKEND)
    monkeypatch.setenv("QNN_SDK_ROOT", "")
