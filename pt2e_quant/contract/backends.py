"""The backend registry: how the core finds the backends it must never import.

A backend is a package of its own (this repository's ``quantizers.xnnpack``, or any installed
distribution) that declares a :class:`Backend` under the ``pt2e_quant.backends`` entry-point
group of its ``pyproject.toml``::

    [project.entry-points."pt2e_quant.backends"]
    xnnpack = "quantizers.xnnpack.backend:BACKEND"

``quantize(backend=...)``, the CLI's ``--backend`` choices and ``explain()`` ask this module,
so installing a backend is all it takes to use it by name; nothing in the core changes. Entry
points are read once, on the first question; :func:`register` adds a backend by hand (tests,
notebooks, a backend defined in a script).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pt2e_quant.contract.quantizer import Quantizer

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "backend_for",
    "get_backend",
    "installed_backends",
    "register",
]

ENTRY_POINT_GROUP = "pt2e_quant.backends"


@dataclass(frozen=True)
class Backend:
    """What the core needs to know about a backend.

    * ``name``: what users pass as ``backend=`` / ``--backend``.
    * ``preset(per_tensor=False, dynamic=False, qat=False)``: a new quantizer with the
      backend's recommended global config; raises ``ValueError`` naming the knob it cannot
      honour.
    * ``quantizer_types``: the quantizer classes whose models this backend runs, so
      ``explain(model, quantizer)`` can tell the backend from the quantizer.
    * ``title``: how reports name the runtime (``"XNNPACK"``, ``"Inductor"``).
    * ``predict(node, status)``: what the backend will make of a compute op (a short string
      such as ``"xnnpack int8"``) or None; ``status`` is the op's coverage status
      (``pt2e_quant.coverage.evidence.Status``).
    * ``summarize(counts)``: the end of the coverage summary line, from the report's counts
      (``"; XNNPACK will delegate 9 as int8, 2 in fp32"``).
    * ``warnings()``: environment problems the report should mention (Inductor's freezing flag).
    * ``write_pte(program, path)``: lower an ``ExportedProgram`` to an ExecuTorch ``.pte``, for
      backends that lower to ExecuTorch (the CLI's ``--pte``).
    * ``supports_per_tensor``: whether ``preset(per_tensor=True)`` is allowed.
    * ``order``: where help texts and error messages list the backend (lower first, then by
      name); entry points come in no defined order.
    * ``export_strict``: ``quantize()`` exports with ``strict=True`` for this backend's preset,
      whatever the caller passed, because its quantizer matches on metadata only strict export
      writes (Cadence's annotators read ``source_fn_stack`` as its own compiler exports it).
    * ``check_guards``: False makes ``quantize()`` take the exported program's
      ``module(check_guards=False)``, without the ``_guards_fn`` call a quantizer may not
      expect in the graph (Arm's and Cortex-M's flows export that way).

    A backend whose quantizer lives in another package (ExecuTorch's vendor backends) imports
    it inside ``preset``; when the package is missing, ``preset`` raises
    :class:`~pt2e_quant.errors.MissingPackageError` naming what to install.
    """

    name: str
    preset: Callable[..., Quantizer]
    quantizer_types: tuple[type, ...] = ()
    title: str = ""
    description: str = ""
    predict: Callable[[Any, Any], str | None] | None = None
    summarize: Callable[[Mapping[str, int]], str] | None = None
    warnings: Callable[[], list[str]] = field(default=lambda: [])
    write_pte: Callable[[Any, Any], None] | None = None
    supports_per_tensor: bool = True
    order: int = 100
    export_strict: bool = False
    check_guards: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(
                f"Backend.name must be an identifier such as 'xnnpack', got {self.name!r}"
            )
        if not callable(self.preset):
            raise ValueError(f"Backend {self.name!r}: preset must be callable, got {self.preset!r}")


_registered: dict[str, Backend] = {}
_entry_points_read = False


def register(backend: Backend) -> Backend:
    """Add ``backend`` (replacing one of the same name); returns it, so a module can write
    ``BACKEND = register(Backend(...))``."""
    if not isinstance(backend, Backend):
        raise TypeError(
            f"register expects a pt2e_quant Backend, got {type(backend).__name__}; build one "
            "with pt2e_quant.contract.backends.Backend(name=..., preset=...)"
        )
    _registered[backend.name] = backend
    return backend


def _read_entry_points() -> None:
    """Load every backend declared under :data:`ENTRY_POINT_GROUP`, once.

    A backend that fails to load is reported by name and skipped, so one broken plugin does
    not hide the others.
    """
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in _registered:
            continue
        try:
            loaded = entry_point.load()
        except Exception as error:  # a plugin's own import error: name it, keep the rest
            import warnings

            warnings.warn(
                f"pt2e_quant: backend {entry_point.name!r} ({entry_point.value}) failed to "
                f"load and is skipped: {type(error).__name__}: {error}",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        backend = loaded() if callable(loaded) and not isinstance(loaded, Backend) else loaded
        if isinstance(backend, Backend):
            _registered.setdefault(backend.name, backend)


def installed_backends() -> dict[str, Backend]:
    """Every known backend by name, in :attr:`Backend.order` (entry points and backends
    registered by hand alike)."""
    _read_entry_points()
    ranked = sorted(_registered.values(), key=lambda backend: (backend.order, backend.name))
    return {backend.name: backend for backend in ranked}


def get_backend(name: str) -> Backend:
    """The backend called ``name``; a ``ValueError`` listing the installed ones otherwise."""
    backends = installed_backends()
    if name not in backends:
        choices = ", ".join(map(repr, backends)) or "none (install one, e.g. pip install -e .)"
        raise ValueError(f"backend must be one of {choices}, got {name!r}")
    return backends[name]


def backend_for(quantizer: Quantizer | None) -> Backend | None:
    """The backend whose quantizer types ``quantizer`` (or, for a composition, its first
    leaf that has one) is an instance of; None when no installed backend claims it. A
    quantizer written for torchao has no ``leaf_quantizers`` and stands for itself."""
    if quantizer is None:
        return None
    backends = [b for b in installed_backends().values() if b.predict is not None]
    leaves = getattr(quantizer, "leaf_quantizers", None)
    for leaf in leaves() if callable(leaves) else [quantizer]:
        for backend in backends:
            if backend.quantizer_types and isinstance(leaf, backend.quantizer_types):
                return backend
    return None
