"""The public surface is a contract (names match torchao's): changes to it must be deliberate."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pt2e_quant
from pt2e_quant import fake_quantize, observer

EXPECTED_TOP_LEVEL = {
    "prepare_pt2e",
    "prepare_qat_pt2e",
    "convert_pt2e",
    "move_exported_model_to_eval",
    "move_exported_model_to_train",
    "allow_exported_model_train_eval",
    "model_is_exported",
    "load",  # torch.export.load with the quantized_decomposed ops defined first (issue 21)
    "QuantizationSpecBase",
    "QuantizationSpec",
    "FixedQParamsQuantizationSpec",
    "SharedQuantizationSpec",
    "DerivedQuantizationSpec",
    "QuantizationAnnotation",
    "EdgeOrNode",
    "Quantizer",
    "QuantizationError",
    "SpecError",
    "AnnotationError",
    "ModelNotExportedError",
    "ModelAlreadyQuantizedError",
    "observer",
    "fake_quantize",
    "debug",
}

#: observer / fake-quantize names torchao.quantization.pt2e exports at its top level (its
#: tutorials use them from there), the same objects as in pt2e_quant.observer / fake_quantize
TORCHAO_TOP_LEVEL_MODULE_NAMES = {
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
}

#: the numeric debugger (issue 5), importable from pt2e_quant.debug and from pt2e_quant
DEBUG_NAMES = {
    "CUSTOM_KEY",
    "NUMERIC_DEBUG_HANDLE_KEY",
    "generate_numeric_debug_handle",
    "bfs_trace_with_node_process",
    "OutputLogger",
    "prepare_for_propagation_comparison",
    "extract_results_from_loggers",
    "compute_sqnr",
    "compute_mse",
    "compute_normalized_l2",
    "compute_cosine_similarity",
    "QuantizationComparisonResult",
    "NodeAccuracySummary",
    "compare_results",
    "module_path",
    "WeightComparison",
    "extract_weights",
    "numeric_report",
    "NumericReport",
    "ReportRow",
    "Accumulation",
    "LossContribution",
    "MissingDebugHandlesError",
    "sensitivity",
    "SensitivityRanking",
    "LayerSensitivity",
}

#: the user layer (issue 6), resolved on first access so the core never imports a backend
USER_LAYER_NAMES = {
    "quantize",
    "QuantizationResult",
    "ExportFailedError",
    "explain",
    "CoverageReport",
}

OBSERVER_NAMES = {
    "ObserverBase",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "HistogramObserver",
    "PlaceholderObserver",
    "FixedQParamsObserver",
    "default_observer",
    "default_weight_observer",
    "default_per_channel_weight_observer",
    "default_histogram_observer",
    "default_placeholder_observer",
    "default_dynamic_quant_observer",
}

FAKE_QUANTIZE_NAMES = {
    "FakeQuantize",
    "PerTokenFakeQuantize",
    "WeightFakeQuantize",
    "FusedMovingAvgObsFakeQuantize",
    "FixedQParamsFakeQuantize",
    "LearnableFakeQuantize",
    "enable_observer",
    "disable_observer",
    "enable_fake_quant",
    "disable_fake_quant",
    "default_fake_quant",
    "default_weight_fake_quant",
}


#: ``quantizers``' re-exports: the backend quantizers and config presets under the peers' names
EXPECTED_QUANTIZERS = {
    "ComposableQuantizer",
    "EmbeddingQuantizer",
    "QuantizationConfig",
    "X86InductorQuantizer",
    "XNNPACKQuantizer",
    "get_bias_qspec",
    "get_default_x86_inductor_quantization_config",
    "get_embedding_quantization_config",
    "get_input_act_qspec",
    "get_output_act_qspec",
    "get_per_token_quantization_config",
    "get_weight_only_embedding_config",
    "get_weight_only_quantization_config",
    "get_symmetric_quantization_config",
    "get_weight_qspec",
    "get_x86_inductor_dynamic_int8_config",
    "get_x86_inductor_linear_dynamic_fp16_config",
    "get_x86_inductor_weight_only_int8_config",
    "rewrite_for_inductor",
}


def _parameters(fn) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


def test_top_level_names():
    assert set(pt2e_quant.__all__) == (
        EXPECTED_TOP_LEVEL | DEBUG_NAMES | USER_LAYER_NAMES | TORCHAO_TOP_LEVEL_MODULE_NAMES
    )
    for name in pt2e_quant.__all__:
        assert getattr(pt2e_quant, name) is not None


def test_quantizers_names():
    import quantizers

    assert set(quantizers.__all__) == EXPECTED_QUANTIZERS
    for name in quantizers.__all__:
        assert getattr(quantizers, name) is not None


def test_debugger_names_are_the_same_objects_in_both_places():
    from pt2e_quant import debug

    assert set(debug.__all__) == DEBUG_NAMES
    for name in DEBUG_NAMES:
        assert getattr(pt2e_quant, name) is getattr(debug, name)
    assert pt2e_quant.CUSTOM_KEY == "custom"
    assert pt2e_quant.NUMERIC_DEBUG_HANDLE_KEY == "numeric_debug_handle"


def test_importing_the_core_does_not_import_a_backend():
    """quantizers imports the core; the reverse at import time would be a cycle."""
    code = (
        "import sys, pt2e_quant; assert 'quantizers' not in sys.modules; "
        "from pt2e_quant import quantize, explain; assert callable(quantize) and callable(explain)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_quantize_function_is_not_shadowed_by_a_submodule():
    import pt2e_quant.quantize_model  # noqa: F401  (a submodule import must not rebind the name)

    assert inspect.isfunction(pt2e_quant.quantize)
    from pt2e_quant import quantize

    assert inspect.isfunction(quantize)


def test_observer_and_fake_quantize_modules_export_the_issue_names():
    assert OBSERVER_NAMES <= set(observer.__all__)
    assert FAKE_QUANTIZE_NAMES <= set(fake_quantize.__all__)
    for cls_name in ("MinMaxObserver", "HistogramObserver", "FixedQParamsObserver"):
        assert callable(getattr(observer, cls_name).with_args)
    assert callable(fake_quantize.FakeQuantize.with_args)


def test_pipeline_signatures_match_torchao():
    empty = inspect.Parameter.empty
    assert _parameters(pt2e_quant.prepare_pt2e) == [("model", empty), ("quantizer", empty)]
    assert _parameters(pt2e_quant.prepare_qat_pt2e) == [("model", empty), ("quantizer", empty)]
    assert _parameters(pt2e_quant.convert_pt2e) == [
        ("model", empty),
        ("use_reference_representation", False),
        ("fold_quantize", True),
    ]


def test_spec_signatures():
    empty = inspect.Parameter.empty
    assert _parameters(pt2e_quant.QuantizationSpec) == [
        ("dtype", empty),
        ("observer_or_fake_quant_ctr", empty),
        ("quant_min", None),
        ("quant_max", None),
        ("qscheme", None),
        ("ch_axis", None),
        ("is_dynamic", False),
    ]
    assert [name for name, _ in _parameters(pt2e_quant.QuantizationAnnotation)] == [
        "input_qspec_map",
        "output_qspec",
        "allow_implicit_sharing",
        "_annotated",
    ]
    assert [name for name, _ in _parameters(pt2e_quant.DerivedQuantizationSpec)][:6] == [
        "derived_from",
        "derive_qparams_fn",
        "dtype",
        "quant_min",
        "quant_max",
        "qscheme",
    ]


def test_torchao_top_level_observer_names_are_the_module_objects():
    """``prepared.apply(pt2e_quant.disable_observer)`` is the object pt2e_quant.fake_quantize
    defines, so either spelling switches the same modules."""
    for name in TORCHAO_TOP_LEVEL_MODULE_NAMES:
        source = observer if name in observer.__all__ else fake_quantize
        assert getattr(pt2e_quant, name) is getattr(source, name), name
