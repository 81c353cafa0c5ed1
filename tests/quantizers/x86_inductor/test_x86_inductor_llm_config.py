"""The X86 LLM presets (int8 weight-only, int8 dynamic per token): what convert emits, what
``validate`` refuses, what ``rewrite_for_inductor`` turns them into (structure, flag, numbers)
and what the coverage report predicts. Compiling them: test_x86_inductor_llm_lowering.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pt2e_quant
from pt2e_quant.errors import AnnotationError
from pt2e_quant.observer import PerGroupMinMaxObserver
from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.driver import run_pass
from quantizers import (
    X86InductorQuantizer,
    get_per_token_quantization_config,
    get_x86_inductor_dynamic_int8_config,
    get_x86_inductor_weight_only_int8_config,
    rewrite_for_inductor,
)
from quantizers.config import QuantizationConfig
from quantizers.x86_inductor.inductor_rewrites import (
    decompose_per_token_quantization,
    use_int_mm,
    use_weight_int8pack_mm,
)
from tests.quantizers.x86_inductor._x86_llm_models import Conv1D, LinearPair, SwiGLU, converted

aten = torch.ops.aten
WEIGHT_ONLY = get_x86_inductor_weight_only_int8_config()
PER_TOKEN = get_x86_inductor_dynamic_int8_config()


def _targets(gm) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def _quantized_decomposed(gm) -> list:
    return [t for t in _targets(gm) if "quantized_decomposed" in str(t)]


def test_presets_are_int8_per_channel_weights_and_symmetric_per_token_activations():
    assert WEIGHT_ONLY.input_activation is None and WEIGHT_ONLY.output_activation is None
    weight = WEIGHT_ONLY.weight
    assert (weight.dtype, weight.qscheme, weight.ch_axis) == (
        torch.int8,
        torch.per_channel_symmetric,
        0,
    )
    activation = PER_TOKEN.input_activation
    assert activation.is_dynamic and activation.qscheme == torch.per_tensor_symmetric
    assert PER_TOKEN.weight == weight and PER_TOKEN.output_activation is None


def test_weight_only_converts_to_a_folded_int8_weight_and_float_activations():
    gm, _ = converted(LinearPair(), WEIGHT_ONLY)
    assert _quantized_decomposed(gm) == [qdq_ops.DEQUANTIZE_PER_CHANNEL] * 2
    for dq in [n for n in gm.graph.nodes if n.target == qdq_ops.DEQUANTIZE_PER_CHANNEL]:
        assert getattr(gm, dq.args[0].target).dtype == torch.int8


def test_per_token_converts_to_the_symmetric_chooser():
    gm, _ = converted(LinearPair(), PER_TOKEN)
    targets = _targets(gm)
    assert targets.count(qdq_ops.CHOOSE_QPARAMS_PER_TOKEN) == 2
    assert qdq_ops.CHOOSE_QPARAMS_PER_TOKEN_ASYMMETRIC not in targets
    assert targets.count(qdq_ops.DEQUANTIZE_PER_TOKEN) == 2


def test_per_token_leaves_mul_float_and_quantizes_the_three_linears():
    gm, _ = converted(SwiGLU(), PER_TOKEN)
    targets = _targets(gm)
    assert targets.count(qdq_ops.DEQUANTIZE_PER_TOKEN) == 2  # gate and up share their input
    assert targets.count(qdq_ops.DEQUANTIZE_PER_CHANNEL) == 3
    (mul,) = [n for n in gm.graph.nodes if n.target == aten.mul.Tensor]
    assert not any(qdq_ops.is_dequantize(arg) for arg in mul.args)


class _ConvThenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(5, 5, 1)
        self.linear = nn.Linear(32, 16)

    def forward(self, x):
        return self.linear(self.conv(x))


@pytest.mark.parametrize("config", [WEIGHT_ONLY, PER_TOKEN], ids=["weight_only", "per_token"])
def test_llm_presets_on_a_conv_are_refused_naming_the_scope_to_use(config):
    with pytest.raises(AnnotationError, match=r"conv1d.*linear layers only.*nn\.Linear"):
        converted(_ConvThenLinear(), config)


def test_llm_presets_scoped_to_linears_leave_the_conv_float():
    quantizer = X86InductorQuantizer().set_module_type_qconfig(nn.Linear, WEIGHT_ONLY)
    x = torch.randn(2, 5, 32)
    exported = torch.export.export(_ConvThenLinear().eval(), (x,)).module()
    prepared = pt2e_quant.prepare_pt2e(exported, quantizer)
    prepared(x)
    assert _quantized_decomposed(pt2e_quant.convert_pt2e(prepared)) == [
        qdq_ops.DEQUANTIZE_PER_CHANNEL
    ]


def test_per_group_weights_are_refused():
    import dataclasses

    grouped = dataclasses.replace(
        WEIGHT_ONLY.weight,
        observer_or_fake_quant_ctr=PerGroupMinMaxObserver.with_args(group_size=16),
    )
    with pytest.raises(AnnotationError, match="per group of input columns"):
        converted(LinearPair(), QuantizationConfig(None, None, grouped, None))


def test_asymmetric_per_token_activations_are_refused():
    """XNNPACK's 8da8w preset: Inductor's per-token pattern has no zero point."""
    config = get_per_token_quantization_config(weight_bits=8, group_size=None)
    with pytest.raises(AnnotationError, match="tokens\\s+must be quantized symmetrically"):
        converted(LinearPair(), config)


# ------------------------------------------------------------------------------ rewrites


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_use_weight_int8pack_mm_replaces_the_dequantized_linear(dtype):
    gm, x = converted(LinearPair(), WEIGHT_ONLY, dtype)
    before = gm(x)
    assert run_pass(gm, use_weight_int8pack_mm) is True
    targets = _targets(gm)
    assert targets.count(aten._weight_int8pack_mm.default) == 2
    assert aten.linear.default not in targets and not _quantized_decomposed(gm)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(gm(x), before, rtol=tolerance, atol=tolerance)
    assert use_weight_int8pack_mm(gm) is False


def test_use_weight_int8pack_mm_skips_bfloat16_rows_not_a_multiple_of_16():
    """The bfloat16 kernel crashes the process for such K (module docstring)."""
    gm, _ = converted(LinearPair(features_in=24), WEIGHT_ONLY, torch.bfloat16, features_in=24)
    assert run_pass(gm, use_weight_int8pack_mm) is True  # only the 48 -> 16 linear
    assert _targets(gm).count(aten._weight_int8pack_mm.default) == 1
    assert _targets(gm).count(aten.linear.default) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_use_int_mm_then_decompose_leaves_no_quantized_decomposed_op(dtype):
    gm, x = converted(LinearPair(), PER_TOKEN, dtype)
    before = gm(x)
    assert run_pass(gm, use_int_mm) is True
    assert _targets(gm).count(aten._int_mm.default) == 2
    assert qdq_ops.DEQUANTIZE_PER_TOKEN not in _targets(gm)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(gm(x), before, rtol=tolerance, atol=tolerance)
    assert run_pass(gm, decompose_per_token_quantization) is True
    assert not _quantized_decomposed(gm)
    assert use_int_mm(gm) is False and decompose_per_token_quantization(gm) is False


def test_decompose_per_token_quantization_is_bit_exact():
    gm, x = converted(LinearPair(), PER_TOKEN)
    before = gm(x)
    assert run_pass(gm, decompose_per_token_quantization) is True
    assert not [t for t in _targets(gm) if "per_token" in str(t)]
    assert torch.equal(gm(x), before)


def test_rewrite_for_inductor_reads_a_dequantize_shared_by_two_linears():
    gm, x = converted(SwiGLU(), PER_TOKEN)
    before = gm(x)
    assert rewrite_for_inductor(gm) is True
    assert _targets(gm).count(aten._int_mm.default) == 3 and not _quantized_decomposed(gm)
    torch.testing.assert_close(gm(x), before, rtol=1e-5, atol=1e-5)


def test_rewrite_for_inductor_on_gpt2_conv1d_with_per_token_activations():
    gm, x = converted(Conv1D(), PER_TOKEN)
    before = gm(x)
    assert rewrite_for_inductor(gm) is True
    assert _targets(gm).count(aten._int_mm.default) == 1 and not _quantized_decomposed(gm)
    torch.testing.assert_close(gm(x), before, rtol=1e-5, atol=1e-5)
    assert rewrite_for_inductor(gm) is False


def test_explain_predicts_the_kernels_after_the_rewrite():
    for config, kernel in ((WEIGHT_ONLY, "int8 weight-only mm"), (PER_TOKEN, "int8 qlinear")):
        gm, _ = converted(LinearPair(), config)
        report = pt2e_quant.explain(gm, X86InductorQuantizer())
        predictions = [r.prediction for r in report.rows if r.op == "linear"]
        assert predictions == [f"{kernel} after rewrite_for_inductor"] * 2
