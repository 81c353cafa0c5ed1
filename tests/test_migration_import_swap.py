"""Every name torchao's PT2E tutorials import resolves after the README's import swap.

Migrating is meant to be an import change: each (torchao module, name) a tutorial imports must
exist in torchao and, under the same name, in the pt2e_quant / quantizers module the README's
"Migrating" table sends it to. A renamed or dropped export breaks users' copied code before any
numerics are compared, so the table is checked name by name.
"""

from __future__ import annotations

import importlib
import warnings

import pytest

pytestmark = pytest.mark.torchao

#: (torchao module, name) -> where the README's import swap sends it
SWAPPED_NAMES = {
    ("torchao.quantization.pt2e.quantize_pt2e", "prepare_pt2e"): "pt2e_quant",
    ("torchao.quantization.pt2e.quantize_pt2e", "prepare_qat_pt2e"): "pt2e_quant",
    ("torchao.quantization.pt2e.quantize_pt2e", "convert_pt2e"): "pt2e_quant",
    ("torchao.quantization.pt2e", "move_exported_model_to_eval"): "pt2e_quant",
    ("torchao.quantization.pt2e", "move_exported_model_to_train"): "pt2e_quant",
    ("torchao.quantization.pt2e", "allow_exported_model_train_eval"): "pt2e_quant",
    ("torchao.quantization.pt2e.quantizer", "Quantizer"): "pt2e_quant",
    ("torchao.quantization.pt2e.quantizer", "QuantizationSpec"): "pt2e_quant",
    ("torchao.quantization.pt2e.quantizer", "SharedQuantizationSpec"): "pt2e_quant",
    ("torchao.quantization.pt2e.quantizer", "DerivedQuantizationSpec"): "pt2e_quant",
    ("torchao.quantization.pt2e.quantizer", "FixedQParamsQuantizationSpec"): "pt2e_quant",
    ("torchao.quantization.pt2e.quantizer", "QuantizationAnnotation"): "pt2e_quant",
    ("torchao.quantization.pt2e.quantizer", "EdgeOrNode"): "pt2e_quant",
    ("torchao.quantization.pt2e.quantizer", "QuantizationConfig"): "quantizers",
    ("torchao.quantization.pt2e.observer", "HistogramObserver"): "pt2e_quant.observer",
    ("torchao.quantization.pt2e.observer", "MinMaxObserver"): "pt2e_quant.observer",
    ("torchao.quantization.pt2e.fake_quantize", "disable_observer"): "pt2e_quant.fake_quantize",
    ("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer", "X86InductorQuantizer"): (
        "quantizers.x86_inductor.quantizer"
    ),
    (
        "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer",
        "get_default_x86_inductor_quantization_config",
    ): "quantizers.x86_inductor.quantizer",
    (
        "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer",
        "get_x86_inductor_linear_dynamic_fp16_config",
    ): "quantizers.x86_inductor.quantizer",
    ("torchao.quantization.pt2e", "generate_numeric_debug_handle"): "pt2e_quant",
    ("torchao.quantization.pt2e", "compare_results"): "pt2e_quant",
    ("torchao.quantization.pt2e", "disable_observer"): "pt2e_quant",
    ("torchao.quantization.pt2e", "ObserverOrFakeQuantize"): "pt2e_quant",
    ("torchao.quantization.pt2e.quantizer", "get_input_act_qspec"): "quantizers",
    ("torchao.quantization.pt2e.quantizer", "get_output_act_qspec"): "quantizers",
    ("torchao.quantization.pt2e.quantizer", "get_weight_qspec"): "quantizers",
    ("torchao.quantization.pt2e.quantizer", "get_bias_qspec"): "quantizers",
}


@pytest.mark.parametrize(
    ("source", "name"), sorted(SWAPPED_NAMES), ids=[n for _, n in sorted(SWAPPED_NAMES)]
)
def test_tutorial_names_resolve_after_import_swap(source: str, name: str) -> None:
    pytest.importorskip("torchao")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert hasattr(importlib.import_module(source), name)
    assert hasattr(importlib.import_module(SWAPPED_NAMES[source, name]), name)
