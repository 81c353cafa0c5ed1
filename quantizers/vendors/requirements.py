"""What a vendor backend needs installed, and the one error that says so.

A vendor quantizer lives in a package pt2e_quant does not depend on (ExecuTorch, tosa-tools,
nncf, coremltools) or in a vendor SDK that is not on PyPI at all (MediaTek's, NXP's). A backend
module lists its :class:`Requirement` objects and imports the vendor module through
:func:`import_vendor`, which checks each requirement first (``importlib.util.find_spec``, no
import) so the error names the missing module and how to get it, rather than whichever import
inside the vendor's package happened to fail first.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from pt2e_quant.errors import MissingPackageError

__all__ = [
    "COREMLTOOLS",
    "EXECUTORCH",
    "MEDIATEK_SDK",
    "NEUTRON_SDK",
    "NNCF",
    "OPENVINO",
    "TOSA_TOOLS",
    "Requirement",
    "check_requirements",
    "import_vendor",
]


@dataclass(frozen=True)
class Requirement:
    """A top-level module a backend imports, and how a user gets it: ``install`` is either a
    pip command (a registry package) or a sentence naming the vendor SDK."""

    module: str
    install: str

    def is_installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):  # a broken parent package counts as missing
            return False


EXECUTORCH = Requirement("executorch", "pip install executorch==1.5.1")
#: the pins of executorch 1.5.1's ethos-u extra
TOSA_TOOLS = Requirement("tosa_serializer", "pip install tosa-tools==2026.5.0 ml_dtypes==0.5.1")
COREMLTOOLS = Requirement("coremltools", "pip install coremltools==9.0")
NNCF = Requirement("nncf", "pip install nncf==3.4.0")
OPENVINO = Requirement("openvino", "pip install openvino==2026.4.1")
MEDIATEK_SDK = Requirement(
    "mtk_converter",
    "MediaTek's NeuroPilot Express SDK provides it (its mtk_converter and mtk_neuron wheels "
    "are not on PyPI; see ExecuTorch's MediaTek backend guide)",
)
NEUTRON_SDK = Requirement(
    "eiq_neutron_sdk",
    "NXP's eIQ Neutron SDK provides it (from NXP's eIQ package index, not PyPI; ExecuTorch's "
    "examples/nxp/setup.sh installs it)",
)


def check_requirements(backend: str, *requirements: Requirement) -> None:
    """Raise :class:`MissingPackageError` for the first requirement that is not installed."""
    for requirement in requirements:
        if not requirement.is_installed():
            raise MissingPackageError(
                f"backend {backend!r} needs the module {requirement.module!r}, which is not "
                f"installed: {requirement.install}"
            )


def import_vendor(backend: str, module: str, *requirements: Requirement) -> ModuleType:
    """``importlib.import_module(module)`` once ``requirements`` are met; a failure of the
    vendor's own import (another module it needs, an SDK check at import time) is reported
    naming the backend, the module and the original error."""
    check_requirements(backend, *requirements)
    try:
        return importlib.import_module(module)
    except Exception as error:  # vendors raise RuntimeError too (NXP's SDK check)
        missing = getattr(error, "name", None)
        hint = f"; install the module {missing!r}" if isinstance(error, ImportError) else ""
        raise MissingPackageError(
            f"backend {backend!r}: importing {module} failed with {type(error).__name__}: "
            f"{error}{hint}"
        ) from error
