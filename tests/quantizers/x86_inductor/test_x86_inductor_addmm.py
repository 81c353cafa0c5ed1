"""addmm(bias, x, w) on X86: GPT-2's ``Conv1D`` quantized like a linear, and the rewrite that
lets Inductor fuse it (``rewrite_addmm_as_linear``).

torchao's recipe has no addmm rule, so a GPT-2 gets no int8 matmul there. Ours quantizes the
activation and the (in, out) weight per column (axis 1), static and dynamic. Compiled as
converted, Inductor does not fuse it (its qlinear pattern wants the linear form; see
test_x86_inductor_llm_lowering.py), so the coverage prediction says it needs the rewrite.
"""

from __future__ import annotations

import pytest
import torch

import pt2e_quant
from pt2e_quant.ops import qdq_ops
from quantizers import X86InductorQuantizer, get_default_x86_inductor_quantization_config
from quantizers.x86_inductor.inductor_rewrites import rewrite_addmm_as_linear
from quantizers.x86_inductor.rules import FUSION_RULES
from tests.quantizers.x86_inductor._x86_llm_models import Conv1D, converted

aten = torch.ops.aten


def _calls(gm, target):
    return [n for n in gm.graph.nodes if n.target == target]


@pytest.mark.parametrize("dynamic", [False, True])
def test_addmm_is_quantized_like_a_linear_with_output_channels_on_axis_1(dynamic):
    config = get_default_x86_inductor_quantization_config(is_dynamic=dynamic)
    gm, _ = converted(Conv1D(), config)
    (addmm,) = _calls(gm, aten.addmm.default)
    bias, activation, weight = addmm.args[:3]
    assert weight.target == qdq_ops.DEQUANTIZE_PER_CHANNEL and weight.args[3] == 1
    assert activation.target in (
        qdq_ops.DEQUANTIZE_PER_TENSOR,
        qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC,
    )
    assert qdq_ops.is_dynamic_dequantize(activation) == dynamic
    assert bias.op == "get_attr"  # float bias, as for linear
    assert not any(qdq_ops.is_quantize(u) for u in addmm.users)  # output left float


def test_addmm_is_the_last_rule_after_the_linear_rows():
    names = [rule.name for rule in FUSION_RULES]
    assert names[-2:] == ["linear", "addmm"]


class _ScaledAddmm(Conv1D):
    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.shape[-1]), self.weight, beta=0.5)


class _ActivationTimesActivation(Conv1D):
    def forward(self, x):
        rows = x.view(-1, x.shape[-1])
        return torch.addmm(self.bias[:10], rows, rows.t())


@pytest.mark.filterwarnings("ignore::pt2e_quant.pipeline.model_checks.NothingToConvertWarning")
@pytest.mark.parametrize("model", [_ScaledAddmm(), _ActivationTimesActivation()])
def test_addmm_that_is_not_a_linear_stays_float(model):
    """beta != 1 is not what a linear computes; a non-constant right operand is a matmul."""
    gm, _ = converted(model, get_default_x86_inductor_quantization_config())
    assert not any(qdq_ops.is_dequantize(n) for n in gm.graph.nodes)


def test_addmm_can_be_scoped_by_function():
    quantizer = X86InductorQuantizer().set_function_type_qconfig(
        torch.addmm, get_default_x86_inductor_quantization_config()
    )
    torch.manual_seed(0)
    x = torch.randn(2, 5, 32)
    prepared = pt2e_quant.prepare_pt2e(torch.export.export(Conv1D(), (x,)).module(), quantizer)
    prepared(x)
    gm = pt2e_quant.convert_pt2e(prepared)
    assert len(_calls(gm, qdq_ops.DEQUANTIZE_PER_CHANNEL)) == 1


@pytest.mark.parametrize("dynamic", [False, True])
def test_rewrite_addmm_as_linear_transposes_the_int8_weight_and_keeps_every_value(dynamic):
    gm, x = converted(Conv1D(), get_default_x86_inductor_quantization_config(is_dynamic=dynamic))
    before = gm(x)
    (old_dq,) = _calls(gm, qdq_ops.DEQUANTIZE_PER_CHANNEL)
    old_name = str(old_dq.args[0].target)
    old_weight = getattr(gm, old_name).clone()

    assert pt2e_quant.passes.driver.run_pass(gm, rewrite_addmm_as_linear) is True

    assert not _calls(gm, aten.addmm.default)
    (linear,) = _calls(gm, aten.linear.default)
    x_dq, w_dq, bias = linear.args
    assert w_dq.target == qdq_ops.DEQUANTIZE_PER_CHANNEL and w_dq.args[3] == 0
    assert torch.equal(getattr(gm, w_dq.args[0].target), old_weight.t())
    assert not hasattr(gm, old_name)  # the (in, out) copy is gone
    assert qdq_ops.is_dequantize(x_dq) and bias.op == "get_attr"
    torch.testing.assert_close(gm(x), before, rtol=0, atol=1e-6)
    assert rewrite_addmm_as_linear(gm) is False


def test_explain_says_addmm_needs_the_rewrite_to_become_qlinear():
    gm, _ = converted(Conv1D(), get_default_x86_inductor_quantization_config())
    report = pt2e_quant.explain(gm, X86InductorQuantizer())
    (row,) = [r for r in report.rows if r.node == "addmm"]
    assert row.quantized and row.prediction == "int8 qlinear after rewrite_for_inductor"
    pt2e_quant.passes.driver.run_pass(gm, rewrite_addmm_as_linear)
    report = pt2e_quant.explain(gm, X86InductorQuantizer())
    assert [r.prediction for r in report.rows if r.quantized] == ["int8 qlinear"]
