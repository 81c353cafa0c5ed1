"""Every use of a private torch API in pt2e_quant, in one place.

torch gives no stability promise for underscored modules and attributes, so keeping them here
means a torch upgrade breaks this file and nothing else, and each use says why no public API
would do. Sections: operator registration; higher-order op kernels.

Nothing in this module changes global torch state (default dtype, flags, dispatch modes): it
only imports torch modules and defines operators.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, Literal

import torch

__all__ = ["ensure_quantized_decomposed_ops", "dense_kernel", "namespace_schemas"]


# --------------------------------------------------------------------------------------------
# operator registration
# --------------------------------------------------------------------------------------------

#: torch's private module that defines the ``quantized_decomposed`` operators on import.
TORCH_DECOMPOSED_MODULE = "torch.ao.quantization.fx._decomposed"

OpsSource = Literal["torch", "fallback"]

_ops_source: OpsSource | None = None
_ops_lock = threading.Lock()


def ensure_quantized_decomposed_ops() -> OpsSource:
    """Make sure ``torch.ops.quantized_decomposed.*`` exist; say who defined them.

    Convert emits those exact overloads because Inductor and ExecuTorch pattern-match them,
    but torch only defines them as a side effect of importing a private module that nothing
    imports eagerly. So this imports it, and returns ``"torch"``. If a future torch no
    longer has that module, :mod:`pt2e_quant.ops.decomposed_fallback` defines the same schemas
    with the same numerics and this returns ``"fallback"``. Doing both would fail (an
    operator can be defined once), which is why the fallback is only consulted when the import
    fails. The answer is cached: repeat calls cost one global read.
    """
    global _ops_source
    source = _ops_source
    if source is not None:
        return source
    with _ops_lock:
        if _ops_source is None:
            _ops_source = _load_quantized_decomposed_ops()
        return _ops_source


def _load_quantized_decomposed_ops() -> OpsSource:
    try:
        # Private: torch.ao.quantization.fx._decomposed is the only place torch defines these
        # operators (torch.ao.quantization imports it lazily, Inductor at import time).
        importlib.import_module(TORCH_DECOMPOSED_MODULE)
    except ImportError:
        from pt2e_quant.ops import decomposed_fallback as _decomposed_fallback

        # Defines only what is missing, so a third party (torchao, ExecuTorch) that already
        # defined some of them on a torch without the module does not make this fail.
        _decomposed_fallback.register_missing()
        return "fallback"
    return "torch"


def namespace_schemas(namespace: str) -> list[str]:
    """The schema string of every operator overload currently defined in ``namespace``.

    Used to check the fallback covers everything torch defines. Private: no public API lists
    a namespace's operators (``dir(torch.ops.<ns>)`` only shows the ones already looked up).
    """
    prefix = f"{namespace}::"
    return sorted(
        text
        for text in (str(schema) for schema in torch._C._jit_get_all_schemas())
        if text.startswith(prefix)
    )


# --------------------------------------------------------------------------------------------
# higher-order op kernels
# --------------------------------------------------------------------------------------------


def dense_kernel(op: Any) -> Callable[..., Any]:
    """The CompositeExplicitAutograd Python kernel of a higher-order op (cond, scan, ...).

    That kernel runs the op's bodies as plain Python, which is what prepared models need
    (see :mod:`pt2e_quant.graph.control_flow`). Private: ``HigherOrderOperator.py_kernels`` and
    ``torch._C.DispatchKey`` are the only way to reach one kernel without going through the
    dispatcher, which would trace the bodies.
    """
    return op.py_kernels[torch._C.DispatchKey.CompositeExplicitAutograd]
