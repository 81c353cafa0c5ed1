"""Lowering a converted program to an ExecuTorch ``.pte`` with a vendor's partitioner.

:func:`lower` runs ExecuTorch's ``to_edge_transform_and_lower`` with one partitioner (tests
count its delegates); :func:`pte_writer` makes a backend's ``write_pte`` from a partitioner
factory; :func:`needs_sdk` is the ``write_pte`` of a backend whose lowering needs a vendor SDK
that is not on PyPI (QNN, Samsung ENN, MediaTek, NXP), so ``--pte`` says so instead of failing
deep inside the vendor's code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pt2e_quant.errors import MissingPackageError
from quantizers.vendors.requirements import EXECUTORCH, import_vendor

__all__ = ["lower", "needs_sdk", "pte_writer"]


def lower(backend: str, program: Any, partitioner: Any) -> Any:
    """``to_edge_transform_and_lower(program, partitioner=[partitioner])``: the edge program
    manager, delegated parts as ``executorch_call_delegate`` calls."""
    exir = import_vendor(backend, "executorch.exir", EXECUTORCH)
    return exir.to_edge_transform_and_lower(program, partitioner=[partitioner])


def pte_writer(backend: str, partitioner: Callable[[], Any]) -> Callable[[Any, Path], None]:
    """A ``write_pte(program, path)`` that lowers with ``partitioner()`` and writes the file."""

    def write_pte(program: Any, path: Path) -> None:
        edge = lower(backend, program, partitioner())
        Path(path).write_bytes(edge.to_executorch().buffer)

    return write_pte


def needs_sdk(backend: str, sdk: str) -> Callable[[Any, Path], None]:
    """A ``write_pte`` that refuses: lowering for ``backend`` needs ``sdk``."""

    def write_pte(program: Any, path: Path) -> None:
        raise MissingPackageError(
            f"backend {backend!r}: writing a .pte needs {sdk}, which pt2e_quant cannot "
            "install for you; quantize here (the .pt2 is complete) and lower with the vendor's "
            "tools"
        )

    return write_pte
