"""pt2e_quant: PyTorch 2 export (PT2E) quantization with pluggable backends.

The public surface is this re-export list (names match torchao's, so migrating is an import
change); everything it re-exports lives in a small private-by-convention module.

Observer and fake-quantize classes, their switches and two default constructors are re-exported
here as well as from :mod:`pt2e_quant.observer` / :mod:`pt2e_quant.fake_quantize`, because
torchao's tutorials reach them from ``torchao.quantization.pt2e`` directly (e.g.
``prepared.apply(torchao.quantization.pt2e.disable_observer)``).

The user layer (:func:`quantize`, :func:`explain`) picks and inspects backend quantizers from
the ``quantizers`` package, which itself imports this core; those names are therefore resolved
on first access, so importing the core never imports a backend.
"""

from __future__ import annotations

import importlib

from pt2e_quant.ops.compat import ensure_quantized_decomposed_ops

ensure_quantized_decomposed_ops()

from pt2e_quant import debug, fake_quantize, observer  # noqa: E402
from pt2e_quant.contract.annotation import QuantizationAnnotation  # noqa: E402
from pt2e_quant.contract.quantizer import Quantizer  # noqa: E402
from pt2e_quant.contract.specs import (  # noqa: E402
    DerivedQuantizationSpec,
    EdgeOrNode,
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)
from pt2e_quant.debug import *  # noqa: E402,F403  (the debugger's names, listed in debug.__all__)
from pt2e_quant.errors import (  # noqa: E402
    AnnotationError,
    ModelAlreadyQuantizedError,
    ModelNotExportedError,
    QuantizationError,
    SpecError,
)
from pt2e_quant.fake_quantize import (  # noqa: E402
    FakeQuantize,
    FakeQuantizeBase,
    FixedQParamsFakeQuantize,
    FusedMovingAvgObsFakeQuantize,
    LearnableFakeQuantize,
    ObserverOrFakeQuantize,
    ObserverOrFakeQuantizeConstructor,
    default_dynamic_fake_quant,
    default_fake_quant,
    disable_fake_quant,
    disable_observer,
    disable_range_learning,
    enable_fake_quant,
    enable_observer,
    enable_range_learning,
)
from pt2e_quant.observer import (  # noqa: E402
    DerivedObserverOrFakeQuantize,
    FixedQParamsObserver,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    ObserverBase,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
    UniformQuantizationObserverBase,
)
from pt2e_quant.ops.saved_programs import load  # noqa: E402
from pt2e_quant.pipeline.model_checks import model_is_exported  # noqa: E402
from pt2e_quant.pipeline.prepare_convert import convert_pt2e, prepare_pt2e, prepare_qat_pt2e  # noqa: E402
from pt2e_quant.pipeline.train_eval import (  # noqa: E402
    allow_exported_model_train_eval,
    move_exported_model_to_eval,
    move_exported_model_to_train,
)

#: name -> module of the one-call API and the coverage diagnostics
_USER_LAYER = {
    "quantize": "pt2e_quant.quantize_model",
    "QuantizationResult": "pt2e_quant.quantize_model",
    "ExportFailedError": "pt2e_quant.quantize_model",
    "explain": "pt2e_quant.coverage",
    "CoverageReport": "pt2e_quant.coverage",
}

__all__ = [
    # pipeline
    "prepare_pt2e",
    "prepare_qat_pt2e",
    "convert_pt2e",
    "move_exported_model_to_eval",
    "move_exported_model_to_train",
    "allow_exported_model_train_eval",
    "model_is_exported",
    "load",
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
    "ModelAlreadyQuantizedError",
    # observers and fake-quantize, as torchao.quantization.pt2e exports them
    "ObserverOrFakeQuantize",
    "ObserverOrFakeQuantizeConstructor",
    "ObserverBase",
    "UniformQuantizationObserverBase",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "HistogramObserver",
    "PlaceholderObserver",
    "FixedQParamsObserver",
    "DerivedObserverOrFakeQuantize",
    "FakeQuantizeBase",
    "FakeQuantize",
    "FixedQParamsFakeQuantize",
    "FusedMovingAvgObsFakeQuantize",
    "LearnableFakeQuantize",
    "enable_observer",
    "disable_observer",
    "enable_fake_quant",
    "disable_fake_quant",
    "enable_range_learning",
    "disable_range_learning",
    "default_fake_quant",
    "default_dynamic_fake_quant",
    # modules
    "observer",
    "fake_quantize",
    "debug",
    # numeric debugger
    *debug.__all__,
    # user layer (resolved lazily, see the module docstring)
    *_USER_LAYER,
]


def __getattr__(name: str) -> object:
    """Import a user-layer name on first access (PEP 562)."""
    module_name = _USER_LAYER.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pt2e_quant' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
