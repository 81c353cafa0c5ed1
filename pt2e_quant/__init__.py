"""pt2e_quant: PyTorch 2 export (PT2E) quantization with pluggable backends.

The public surface is this re-export list (names match torchao's, so migrating is an import
change); everything it re-exports lives in a small private-by-convention module.
"""

from __future__ import annotations

from pt2e_quant._compat import ensure_quantized_decomposed_ops

ensure_quantized_decomposed_ops()

from pt2e_quant import fake_quantize, observer  # noqa: E402
from pt2e_quant.annotation import QuantizationAnnotation  # noqa: E402
from pt2e_quant.errors import (  # noqa: E402
    AnnotationError,
    ModelNotExportedError,
    QuantizationError,
    SpecError,
)
from pt2e_quant.model_checks import model_is_exported  # noqa: E402
from pt2e_quant.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e  # noqa: E402
from pt2e_quant.quantizer import Quantizer  # noqa: E402
from pt2e_quant.specs import (  # noqa: E402
    DerivedQuantizationSpec,
    EdgeOrNode,
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)
from pt2e_quant.train_eval import (  # noqa: E402
    allow_exported_model_train_eval,
    move_exported_model_to_eval,
    move_exported_model_to_train,
)

__all__ = [
    # pipeline
    "prepare_pt2e",
    "prepare_qat_pt2e",
    "convert_pt2e",
    "move_exported_model_to_eval",
    "move_exported_model_to_train",
    "allow_exported_model_train_eval",
    "model_is_exported",
    # specs and annotations
    "QuantizationSpecBase",
    "QuantizationSpec",
    "FixedQParamsQuantizationSpec",
    "SharedQuantizationSpec",
    "DerivedQuantizationSpec",
    "QuantizationAnnotation",
    "EdgeOrNode",
    "Quantizer",
    # errors
    "QuantizationError",
    "SpecError",
    "AnnotationError",
    "ModelNotExportedError",
    # modules
    "observer",
    "fake_quantize",
]
