"""quantize(): which backend the result's coverage report speaks for.

With the preset quantizer, ``backend`` is the backend the user chose, so the coverage report
must carry its predictions (XNNPACK delegation per op). With an explicit quantizer,
``backend=None`` is the documented way to say "infer it from the quantizer" and must be
accepted.
"""

from __future__ import annotations

import torch

from pt2e_quant.quantize_model import quantize
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.cli_models import tiny


def _batches() -> list[tuple[torch.Tensor]]:
    return [(torch.randn(1, 3, 8, 8),) for _ in range(2)]


def test_preset_backend_is_the_coverage_backend() -> None:
    model, example = tiny()
    result = quantize(model, example, backend="xnnpack", calibration=_batches(), progress=False)

    assert result.backend == "xnnpack"
    assert any(row.prediction == "xnnpack int8" for row in result.coverage.rows)


def test_explicit_quantizer_accepts_backend_none() -> None:
    model, example = tiny()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    result = quantize(
        model, example, quantizer, backend=None, calibration=_batches(), progress=False
    )

    assert result.backend is None and result.quantizer is quantizer
    assert "XNNPACK will delegate" in result.coverage.summary()  # inferred from the type
