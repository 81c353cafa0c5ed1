"""Compiling the addmm and LLM schemes with Inductor (``freezing=True``, ``no_grad``): which
kernel runs, and that the compiled model computes what the converted one does.

Evidence read from Inductor's generated code (``run_and_get_code``) and its pattern counters:

* GPT-2's quantized ``addmm`` as converted compiles to a float ``addmm`` on a weight
  dequantized every call (no ``qlinear``): hence ``rewrite_for_inductor``; after it, oneDNN
  ``qlinear_pointwise`` (static and dynamic).
* weight-only int8: ``_weight_int8pack_mm`` (float32 and bfloat16).
* dynamic per-token int8: Inductor's ``_int_mm`` freezing pattern turns it into
  ``qlinear_pointwise``; no ``quantized_decomposed`` op is left in the code.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor.utils import run_and_get_code

from quantizers import (
    get_default_x86_inductor_quantization_config,
    get_x86_inductor_dynamic_int8_config,
    get_x86_inductor_weight_only_int8_config,
    rewrite_for_inductor,
)
from tests.quantizers.x86_inductor._x86_llm_models import Conv1D, LinearPair, converted

pytestmark = pytest.mark.inductor


def _compiled(gm, x) -> tuple[torch.Tensor, str]:
    """Output and generated code of ``gm`` compiled with freezing, and the counters."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad(), inductor_config.patch(freezing=True):
        out, code = run_and_get_code(torch.compile(gm), x)
    return out, "\n".join(code)


def _close(out, ref, dtype):
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, ref, rtol=tolerance, atol=tolerance)


def test_converted_addmm_is_not_fused_without_the_rewrite():
    gm, x = converted(Conv1D(), get_default_x86_inductor_quantization_config())
    ref = gm(x)
    out, code = _compiled(gm, x)
    assert "qlinear" not in code and "extern_kernels.addmm" in code
    _close(out, ref, torch.float32)


@pytest.mark.parametrize("dynamic", [False, True])
def test_gpt2_addmm_becomes_onednn_qlinear_after_the_rewrite(dynamic):
    gm, x = converted(Conv1D(), get_default_x86_inductor_quantization_config(is_dynamic=dynamic))
    ref = gm(x)
    assert rewrite_for_inductor(gm) is True
    out, code = _compiled(gm, x)
    assert counters["inductor"]["qlinear_weight_prepack_matcher_count"] == 1
    assert "onednn.qlinear_pointwise" in code and "extern_kernels.addmm" not in code
    _close(out, ref, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weight_only_int8_runs_weight_int8pack_mm(dtype):
    gm, x = converted(LinearPair(), get_x86_inductor_weight_only_int8_config(), dtype)
    ref = gm(x)
    rewrite_for_inductor(gm)
    out, code = _compiled(gm, x)
    assert code.count("extern_kernels._weight_int8pack_mm(") == 2
    assert "dequantize_per_channel" not in code
    _close(out, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dynamic_per_token_int8_runs_onednn_qlinear(dtype):
    gm, x = converted(LinearPair(), get_x86_inductor_dynamic_int8_config(), dtype)
    ref = gm(x)
    rewrite_for_inductor(gm)
    out, code = _compiled(gm, x)
    assert counters["inductor"]["qlinear_weight_prepack_matcher_count"] == 2
    assert code.count("onednn.qlinear_pointwise") >= 2
    assert "quantized_decomposed" not in code
    _close(out, ref, dtype)


def test_gpt2_addmm_with_per_token_activations_runs_onednn_qlinear():
    gm, x = converted(Conv1D(), get_x86_inductor_dynamic_int8_config())
    ref = gm(x)
    rewrite_for_inductor(gm)
    out, code = _compiled(gm, x)
    assert "onednn.qlinear_pointwise" in code and "quantized_decomposed" not in code
    _close(out, ref, torch.float32)
