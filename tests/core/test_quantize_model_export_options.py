"""quantize(): a preset's backend decides how the model is exported.

``Backend.export_strict`` makes the first export strict (Cadence's annotators read metadata
only strict export writes); ``Backend.check_guards=False`` hands prepare the module without the
export guard call (Arm's and Cortex-M's flows). An explicit quantizer keeps the caller's
``strict`` and the guard.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pt2e_quant.contract import backends as registry
from pt2e_quant.quantize_model import quantize
from tests.cli_models import tiny


@pytest.fixture
def recorded_exports(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The ``strict`` flag of every torch.export.export call, in order."""
    calls: list[bool] = []
    export = torch.export.export

    def recording(*args, strict: bool = False, **kwargs):
        calls.append(strict)
        return export(*args, strict=strict, **kwargs)

    monkeypatch.setattr(torch.export, "export", recording)
    return calls


@pytest.fixture
def backend_named_like(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(registry, "_registered", dict(registry.installed_backends()))

    def register(name: str, **options) -> str:
        xnnpack = registry.get_backend("xnnpack")
        registry.register(dataclasses.replace(xnnpack, name=name, **options))
        return name

    return register


def _guarded(module: torch.nn.Module) -> bool:
    return any(name == "_guards_fn" for name, _ in module.named_children())


def _quantize(backend: str | None, quantizer=None):
    model, example = tiny()
    return quantize(
        model, example, quantizer, backend=backend, calibration=[example], progress=False
    )


def test_defaults_export_non_strict_with_the_guard(recorded_exports, backend_named_like) -> None:
    result = _quantize(backend_named_like("plain"))
    assert recorded_exports == [False, False]  # the float export, then the converted one
    assert _guarded(result.module)


def test_a_backend_can_ask_for_strict_export_and_no_guard(
    recorded_exports, backend_named_like
) -> None:
    result = _quantize(backend_named_like("strictish", export_strict=True, check_guards=False))
    assert recorded_exports == [True, False]
    assert not _guarded(result.module)


def test_an_explicit_quantizer_keeps_the_callers_choice(
    recorded_exports, backend_named_like
) -> None:
    backend_named_like("strictish", export_strict=True, check_guards=False)
    quantizer = registry.get_backend("strictish").preset()
    result = _quantize(None, quantizer)
    assert recorded_exports == [False, False]
    assert _guarded(result.module)
