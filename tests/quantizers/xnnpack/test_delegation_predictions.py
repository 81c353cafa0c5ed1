"""explain()'s XNNPACK prediction per op, pinned without lowering (fast).

The expected strings are what ExecuTorch 1.5.1's partitioner did with the same models
(``tests.models.delegation``), which ``test_delegation_against_lowering.py`` re-checks by
lowering them (``executorch`` marker): a dynamically quantized linear runs int8 (XNNPACK's
dynamically quantized fully-connected), an integer add is not delegated (XNNPACK takes float
tensors only), an op breaking a per-op constraint is not delegated in any precision.
"""

from __future__ import annotations

import warnings

import torch

from pt2e_quant import prepare_pt2e
from pt2e_quant.coverage import explain
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from quantizers.xnnpack.delegation import FP32, INT8, INT8_DYNAMIC, NOT_DELEGATED
from tests.models.delegation import (
    ConstraintTails,
    DynamicConvs,
    DynamicLinears,
    IndexArithmetic,
    WeightForms,
)
from tests.ptq import explain_quantized


def _quantizer(**config: bool) -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**config))


def _predictions(model: torch.nn.Module, quantizer: XNNPACKQuantizer) -> list[tuple[str, str]]:
    report = explain_quantized(model, model.example_inputs(), quantizer)
    return [(row.node, row.prediction) for row in report.rows]  # type: ignore[misc]


def test_dynamically_quantized_linears_are_predicted_int8_dynamic() -> None:
    quantizer = _quantizer(is_dynamic=True, is_per_channel=True)
    model = DynamicLinears()
    report = explain_quantized(model, model.example_inputs(), quantizer)
    assert [(r.node, r.quantized, r.prediction) for r in report.rows] == [
        ("linear", True, INT8_DYNAMIC),
        ("relu", False, FP32),  # not fused: a dynamic linear's output is float
        ("linear_1", True, INT8_DYNAMIC),
        ("add", False, FP32),
    ]
    assert report.counts[INT8_DYNAMIC] == 2
    assert report.summary().endswith(
        "; XNNPACK will delegate 2 as int8 (2 dynamically quantized), 2 in fp32"
    )


def test_dynamic_linear_with_per_tensor_weights_falls_back_to_fp32() -> None:
    """XNNPACK's dynamic fully-connected needs per-channel weights; the linear is then
    decomposed and delegated as a float addmm."""
    predictions = dict(_predictions(DynamicLinears(), _quantizer(is_dynamic=True)))
    assert predictions["linear"] == predictions["linear_1"] == FP32


def test_dynamic_convs_need_per_channel_weights_and_a_standard_2d_conv() -> None:
    per_channel = _predictions(DynamicConvs(), _quantizer(is_dynamic=True, is_per_channel=True))
    assert per_channel == [
        ("conv2d", INT8_DYNAMIC),
        ("conv2d_1", FP32),  # the depthwise conv reads a float input: an fp32 conv
        ("conv_transpose2d", INT8_DYNAMIC),
    ]
    per_tensor = _predictions(DynamicConvs(), _quantizer(is_dynamic=True))
    assert per_tensor == [
        ("conv2d", NOT_DELEGATED),
        ("conv2d_1", FP32),
        ("conv_transpose2d", NOT_DELEGATED),
    ]


def test_integer_ops_are_not_delegated_and_the_float_add_is() -> None:
    predictions = _predictions(IndexArithmetic(), _quantizer(is_per_channel=True))
    assert predictions == [
        ("add", NOT_DELEGATED),  # idx + 1, int64
        ("mul", NOT_DELEGATED),  # (idx + 1) * 2, int64
        ("embedding", NOT_DELEGATED),
        ("linear", INT8),
        ("add_1", INT8),  # the float residual add
    ]


def test_each_broken_constraint_keeps_the_op_out_of_the_delegate() -> None:
    assert _predictions(ConstraintTails(), _quantizer()) == [
        ("conv2d", INT8),
        ("conv2d_1", INT8),
        ("add", NOT_DELEGATED),  # alpha=2
        ("cat", NOT_DELEGATED),  # one input
        ("max_pool2d", NOT_DELEGATED),  # stride 3 > kernel 2
        ("mean", NOT_DELEGATED),  # no keepdim
        ("mean_1", INT8),  # keepdim, dims 2, 3
        ("max_pool2d_1", INT8),  # ceil_mode on static shapes
        ("adaptive_avg_pool2d", NOT_DELEGATED),  # to 2x2, not 1x1
        ("softmax", NOT_DELEGATED),  # dim 1 of 4
        ("avg_pool2d", NOT_DELEGATED),  # ceil_mode
        ("elu", NOT_DELEGATED),  # no ELU config in ExecuTorch 1.5.1
    ]


def test_a_gemm_needs_a_constant_weight() -> None:
    expected = [
        ("linear", INT8),
        ("linear_1", NOT_DELEGATED),  # weight is the input y, even quantized
        ("matmul", FP32),  # 3-D x @ constant w: mm on a constant
        ("matmul_1", NOT_DELEGATED),  # x @ w.t(): mm on a computed weight
        ("bmm", FP32),
    ]
    assert _predictions(WeightForms(), _quantizer()) == expected
    float_model = [(node, FP32 if node == "linear" else p) for node, p in expected]
    assert _predictions(WeightForms(), XNNPACKQuantizer()) == float_model


def test_a_prepared_model_gets_the_converted_models_dynamic_predictions() -> None:
    """Before convert, the dynamic activation observer stands for choose_qparams -> q -> dq."""
    quantizer = _quantizer(is_dynamic=True, is_per_channel=True)
    for model in (DynamicLinears(), DynamicConvs()):
        program = torch.export.export(model.eval(), model.example_inputs())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_pt2e(program.module(), quantizer)
            before = [(r.node, r.prediction) for r in explain(prepared, quantizer).rows]
        assert before == _predictions(model, quantizer)
        assert INT8_DYNAMIC in dict(before).values()
