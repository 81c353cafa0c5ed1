"""One vendor backend, two pipelines: ``quantize(backend=name)`` against the vendor's own
quantizer run through torchao's prepare / convert, on :class:`~tests.models.vendor_cnn.VendorCNN`.

Both export the model the way the backend declares (``Backend.export_strict`` /
``check_guards``), calibrate on the same batches and run a held-out batch. Results are cached
per backend for the session, so the differential, lowering and coverage tests share one run
(Core ML's quantizer alone takes a minute to annotate).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch.export import ExportedProgram
from torch.fx import GraphModule

from pt2e_quant import quantize
from pt2e_quant.contract.backends import get_backend
from pt2e_quant.errors import MissingPackageError
from pt2e_quant.quantize_model import QuantizationResult
from tests.models.vendor_cnn import VendorCNN
from tests.vendors.differential import export_model

__all__ = ["Pipelines", "preset_or_skip", "run_both"]


@dataclass
class Pipelines:
    ours: QuantizationResult
    theirs: GraphModule
    theirs_program: ExportedProgram
    held_out: tuple[torch.Tensor, ...]


def preset_or_skip(name: str, **knobs: bool) -> Any:
    """The backend's preset, or a skip naming what to install."""
    try:
        return get_backend(name).preset(**knobs)
    except MissingPackageError as error:
        pytest.skip(str(error))


def _batches() -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(1, 3, 8, 8, generator=generator),) for _ in range(4)]


@functools.cache
def _run_both(name: str) -> Pipelines:
    backend = get_backend(name)
    *calibration, held_out = _batches()
    torch.manual_seed(0)
    model = VendorCNN().eval()
    example = model.example_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vendor and observer chatter is not compared here
        ours = quantize(model, example, backend=name, calibration=calibration, progress=False)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        exported = export_model(
            model, example, strict=backend.export_strict, check_guards=backend.check_guards
        )
        prepared = prepare_pt2e(exported, backend.preset())
        with torch.no_grad():
            for batch in calibration:
                prepared(*batch)
        theirs = convert_pt2e(prepared)
        program = torch.export.export(theirs, example, strict=False)
    return Pipelines(ours, theirs, program, held_out)


def run_both(name: str) -> Pipelines:
    preset_or_skip(name)  # skips, uncached, when the vendor package is missing
    pytest.importorskip("torchao.quantization.pt2e.quantize_pt2e")
    return _run_both(name)
