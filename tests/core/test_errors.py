"""Bad input: invalid specs and annotations, wrong model kinds, failures that must not corrupt."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.fx import GraphModule

import pt2e_quant.observer as our_observer
from pt2e_quant import (
    AnnotationError,
    DerivedQuantizationSpec,
    FixedQParamsQuantizationSpec,
    ModelNotExportedError,
    QuantizationAnnotation,
    QuantizationSpec,
    SharedQuantizationSpec,
    SpecError,
    convert_pt2e,
    prepare_pt2e,
)
from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.replace_observers import UncalibratedObserverWarning
from tests.core.contract.quantizer_fixtures import (
    ConvLinearQuantizer,
    FunctionQuantizer,
    int8_specs,
)
from tests.models import ConvWithBNRelu, TwoLinearModule

aten = torch.ops.aten
OBS = our_observer.MinMaxObserver


# ---------------------------------------------------------------- specs validate themselves


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"dtype": torch.uint8, "quant_min": 10, "quant_max": 5}, "quant_min"),
        ({"dtype": torch.uint8, "quant_min": -1, "quant_max": 255}, "quant_min"),
        ({"dtype": torch.int8, "quant_min": -128, "quant_max": 300}, "quant_max"),
        ({"dtype": torch.int8, "qscheme": torch.per_channel_affine, "ch_axis": -1}, "ch_axis"),
        ({"dtype": "int8"}, "dtype"),
        ({"dtype": torch.int8, "qscheme": "per_tensor"}, "qscheme"),
        ({"dtype": torch.int8, "quant_min": 1.5}, "quant_min"),
    ],
)
def test_quantization_spec_validates_fields(kwargs, field) -> None:
    with pytest.raises(SpecError, match=rf"QuantizationSpec\.{field}"):
        QuantizationSpec(observer_or_fake_quant_ctr=OBS, **kwargs)
    with pytest.raises(ValueError):  # SpecError is a ValueError, as torchao callers expect
        QuantizationSpec(observer_or_fake_quant_ctr=OBS, **kwargs)


def test_quantization_spec_needs_callable_ctor() -> None:
    with pytest.raises(SpecError, match="observer_or_fake_quant_ctr"):
        QuantizationSpec(dtype=torch.int8, observer_or_fake_quant_ctr=None)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scale": 0.0, "zero_point": 0}, "scale"),
        ({"scale": math.nan, "zero_point": 0}, "scale"),
        ({"scale": 0.1, "zero_point": 300}, "zero_point"),
        ({"scale": 0.1, "zero_point": 1.5}, "zero_point"),
    ],
)
def test_fixed_qparams_spec_validates_fields(kwargs, field) -> None:
    with pytest.raises(SpecError, match=rf"FixedQParamsQuantizationSpec\.{field}"):
        FixedQParamsQuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=255, **kwargs)


def test_derived_spec_needs_sources() -> None:
    with pytest.raises(SpecError, match=r"DerivedQuantizationSpec\.derived_from"):
        DerivedQuantizationSpec(
            derived_from=[], derive_qparams_fn=lambda obs: obs, dtype=torch.int32
        )


def test_shared_spec_needs_node_or_edge() -> None:
    with pytest.raises(SpecError, match=r"SharedQuantizationSpec\.edge_or_node"):
        SharedQuantizationSpec("conv2d")


def test_specs_have_value_equality() -> None:
    a = QuantizationSpec(dtype=torch.int8, observer_or_fake_quant_ctr=OBS, quant_min=-128)
    b = QuantizationSpec(dtype=torch.int8, observer_or_fake_quant_ctr=OBS, quant_min=-128)
    assert a == b and a is not b and hash(a) == hash(b)


# ---------------------------------------------------------------- annotations checked by prepare


def _export(model):
    return torch.export.export(model.eval(), model.example_inputs()).module()


def _act():
    return int8_specs(our_observer)[0]


def test_annotation_on_non_input_node_names_it() -> None:
    def annotate(gm: GraphModule) -> None:
        first, second = [n for n in gm.graph.nodes if n.target == aten.linear.default]
        placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
        second.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={placeholder: _act()}
        )

    with pytest.raises(AnnotationError, match=r"'linear_1'.*'x' is not an input of 'linear_1'"):
        prepare_pt2e(_export(TwoLinearModule()), FunctionQuantizer(annotate))


def test_constant_input_in_annotation_is_rejected() -> None:
    class AddConstant(torch.nn.Module):
        def forward(self, x):
            return x + 6

        def example_inputs(self):
            return (torch.randn(2, 2),)

    def annotate(gm: GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.target == aten.add.Tensor:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[0]: _act(), node.args[1]: _act()}
                )

    with pytest.raises(AnnotationError, match=r"'add'.*not a graph node"):
        prepare_pt2e(_export(AddConstant()), FunctionQuantizer(annotate))


def test_shared_spec_pointing_at_unannotated_edge() -> None:
    def annotate(gm: GraphModule) -> None:
        first, second = [n for n in gm.graph.nodes if n.target == aten.linear.default]
        second.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={first: SharedQuantizationSpec((first.args[0], first))}
        )

    with pytest.raises(AnnotationError, match=r"edge 'x' -> 'linear'.*no annotation quantizes"):
        prepare_pt2e(_export(TwoLinearModule()), FunctionQuantizer(annotate))


class QuantizationSpec_FromAnotherLibrary:  # noqa: N801 - reads as what it stands for
    """Stands in for torchao's / ExecuTorch's QuantizationSpec: same role, not our class."""


def test_spec_of_an_unreadable_class_names_it_the_edge_and_the_quantizer() -> None:
    """A spec object that is no quantization spec at all (torchao's are read by shape): the
    error names its class, the edge and the quantizer, and asks no vendor's user to import
    our classes."""
    foreign = QuantizationSpec_FromAnotherLibrary()

    def annotate(gm: GraphModule) -> None:
        first = next(n for n in gm.graph.nodes if n.target == aten.linear.default)
        first.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={first.args[0]: foreign}
        )

    model = _export(TwoLinearModule())
    code = model.code
    with pytest.raises(AnnotationError) as caught:
        prepare_pt2e(model, FunctionQuantizer(annotate))
    message = str(caught.value)
    assert "tests.core.test_errors.QuantizationSpec_FromAnotherLibrary" in message
    assert "edge 'x' -> 'linear'" in message
    assert "FunctionQuantizer (tests.core.contract.quantizer_fixtures)" in message
    assert "import it from pt2e_quant" not in message
    assert model.code == code


def test_per_channel_axis_out_of_range_names_node() -> None:
    bad_weight = QuantizationSpec(
        dtype=torch.int8,
        qscheme=torch.per_channel_symmetric,
        ch_axis=5,
        observer_or_fake_quant_ctr=our_observer.PerChannelMinMaxObserver,
    )
    with pytest.raises(AnnotationError, match=r"'linear'.*ch_axis=5.*2 dimension"):
        prepare_pt2e(_export(TwoLinearModule()), ConvLinearQuantizer(_act(), bad_weight))


def test_edge_with_other_dtype_than_its_producer_gets_its_own_observer() -> None:
    """Not an error: the peers requantize (q int8 -> dq -> q uint8 -> dq) on such an edge."""
    uint8 = QuantizationSpec(
        dtype=torch.uint8, quant_min=0, quant_max=255, observer_or_fake_quant_ctr=OBS
    )

    def annotate(gm: GraphModule) -> None:
        first, second = [n for n in gm.graph.nodes if n.target == aten.linear.default]
        first.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=_act())
        second.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={first: uint8}, output_qspec=SharedQuantizationSpec(first)
        )

    model = TwoLinearModule()
    prepared = prepare_pt2e(_export(model), FunctionQuantizer(annotate))
    prepared(*model.example_inputs())
    converted = convert_pt2e(prepared)
    dtypes = [n.args[-1] for n in converted.graph.nodes if n.target == qdq_ops.QUANTIZE_PER_TENSOR]
    assert dtypes == [torch.int8, torch.uint8, torch.int8]


# ---------------------------------------------------------------- wrong model kinds


def test_eager_module_is_rejected_with_fix() -> None:
    with pytest.raises(ModelNotExportedError, match=r"torch\.export\.export\(model"):
        prepare_pt2e(TwoLinearModule(), FunctionQuantizer(lambda m: None))


def test_exported_program_is_rejected_with_fix() -> None:
    model = TwoLinearModule()
    program = torch.export.export(model, model.example_inputs())
    with pytest.raises(ModelNotExportedError, match=r"exported_program\.module\(\)"):
        prepare_pt2e(program, FunctionQuantizer(lambda m: None))
    with pytest.raises(TypeError):
        convert_pt2e(program)


def test_symbolic_trace_result_is_prepared_with_a_warning_naming_the_fix() -> None:
    """torchao accepts any GraphModule; ours does too, saying why it may stay float."""
    traced = torch.fx.symbolic_trace(TwoLinearModule())
    with pytest.warns(UserWarning, match=r"symbolic_trace.*torch\.export\.export\(model"):
        prepare_pt2e(traced, FunctionQuantizer(lambda m: None))


def test_convert_flags_must_be_bool() -> None:
    model = _export(TwoLinearModule())
    with pytest.raises(ValueError, match="use_reference_representation must be a bool"):
        convert_pt2e(model, "yes")


# ---------------------------------------------------------------- failures leave models untouched


def _snapshot(gm: GraphModule):
    return (
        gm.code,
        [dict(n.meta) for n in gm.graph.nodes],
        sorted(name for name, _ in gm.named_modules()),
        {k: v.clone() for k, v in gm.state_dict().items()},
    )


def test_failed_prepare_leaves_model_untouched() -> None:
    model = ConvWithBNRelu(relu=True, bn=True)
    model.bn.running_mean.uniform_(-1, 1)
    gm = torch.export.export(model.eval(), model.example_inputs()).module()
    before = _snapshot(gm)

    def annotate(gm_: GraphModule) -> None:
        ConvLinearQuantizer(*int8_specs(our_observer)).annotate(gm_)
        raise RuntimeError("quantizer bug")

    with pytest.raises(RuntimeError, match="quantizer bug"):
        prepare_pt2e(gm, FunctionQuantizer(annotate))
    after = _snapshot(gm)
    assert before[0] == after[0] and before[2] == after[2]
    assert all("quantization_annotation" not in meta for meta in after[1])
    assert all(torch.equal(before[3][k], after[3][k]) for k in before[3])


def test_failed_convert_leaves_prepared_model_untouched() -> None:
    class Broken(our_observer.MinMaxObserver):
        def calculate_qparams(self):
            raise RuntimeError("observer bug")

    act = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=Broken,
    )
    model = TwoLinearModule().eval()
    inputs = model.example_inputs()
    prepared = prepare_pt2e(_export(model), ConvLinearQuantizer(act, int8_specs(our_observer)[1]))
    prepared(*inputs)
    code = prepared.code
    with pytest.raises(RuntimeError, match="observer bug"):
        convert_pt2e(prepared)
    assert prepared.code == code
    prepared(*inputs)  # still calibratable


def test_prepare_returns_copy_and_original_still_runs() -> None:
    model = TwoLinearModule().eval()
    inputs = model.example_inputs()
    gm = _export(model)
    prepared = prepare_pt2e(gm, ConvLinearQuantizer(*int8_specs(our_observer)))
    assert prepared is not gm
    assert not any(
        n.op == "call_module" and "activation_post_process" in n.target for n in gm.graph.nodes
    )
    assert torch.equal(gm(*inputs), model(*inputs))


# ---------------------------------------------------------------- degenerate calibration


def test_uncalibrated_observers_warn_by_name_and_get_defined_qparams() -> None:
    model = TwoLinearModule().eval()
    prepared = prepare_pt2e(_export(model), ConvLinearQuantizer(*int8_specs(our_observer)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = convert_pt2e(prepared)
    ours = [w for w in caught if issubclass(w.category, UncalibratedObserverWarning)]
    messages = [str(w.message) for w in ours]
    assert len(messages) == 1 and "'x'" in messages[0] and "'linear'" in messages[0]
    assert ours[0].filename == __file__  # points at the user's convert_pt2e call
    for node in converted.graph.nodes:
        if node.target == qdq_ops.QUANTIZE_PER_TENSOR:
            assert math.isfinite(node.args[1]) and node.args[1] > 0
    assert torch.isfinite(converted(*model.example_inputs())).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_calibration_data_never_gives_nan_scales(bad: float) -> None:
    model = TwoLinearModule().eval()
    inputs = model.example_inputs()
    prepared = prepare_pt2e(_export(model), ConvLinearQuantizer(*int8_specs(our_observer)))
    poisoned = inputs[0].clone()
    poisoned[0, 0] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared(poisoned)
        prepared(*inputs)
        converted = convert_pt2e(prepared)
    for node in converted.graph.nodes:
        if node.target == qdq_ops.QUANTIZE_PER_TENSOR:
            assert math.isfinite(node.args[1]) and node.args[1] > 0, node.format_node()
    assert torch.isfinite(converted(*inputs)).all()
