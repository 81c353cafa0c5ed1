"""The public surface is a contract (names match torchao's): changes to it must be deliberate."""

from __future__ import annotations

import inspect

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
    "observer",
    "fake_quantize",
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


def _parameters(fn) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


def test_top_level_names():
    assert set(pt2e_quant.__all__) == EXPECTED_TOP_LEVEL
    for name in EXPECTED_TOP_LEVEL:
        assert getattr(pt2e_quant, name) is not None


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
