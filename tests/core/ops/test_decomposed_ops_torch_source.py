"""With torch's ``quantized_decomposed`` module importable, pt2e_quant uses it and adds nothing.

Convert's output is only useful if Inductor / ExecuTorch recognise it, and they match the exact
overloads torch defines. So in a normal process importing pt2e_quant must load torch's module
(once), every overload convert may emit must then exist under torch's namespace, and the
fallback must stand aside: its schema table equals the live schemas and it registers nothing.
"""

from __future__ import annotations

import importlib
import sys

import pytest

import pt2e_quant  # noqa: F401  (the import under test)
from pt2e_quant.ops import compat as _compat
from pt2e_quant.ops import decomposed_fallback as _decomposed_fallback
from tests.core.ops._decomposed_op_cases import NAMESPACE, REQUIRED_OVERLOADS, TORCH_MODULE, resolve


def test_import_uses_torch_module_and_defines_every_overload() -> None:
    assert _compat.ensure_quantized_decomposed_ops() == "torch"
    assert TORCH_MODULE in sys.modules
    for qualified in REQUIRED_OVERLOADS:
        assert str(resolve(qualified)._schema).startswith(f"{NAMESPACE}::"), qualified


def test_repeat_calls_do_not_import_again(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_import(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("ensure_quantized_decomposed_ops imported again")

    monkeypatch.setattr(importlib, "import_module", no_import)
    assert [_compat.ensure_quantized_decomposed_ops() for _ in range(3)] == ["torch"] * 3


def test_fallback_table_matches_live_schemas() -> None:
    table = _decomposed_fallback.expected_schemas()
    assert set(REQUIRED_OVERLOADS) <= set(table)
    assert {q: str(resolve(q)._schema) for q in table} == table


def test_fallback_defines_nothing_already_defined() -> None:
    assert _decomposed_fallback.register_missing() == ()
