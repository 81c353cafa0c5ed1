"""explain()'s x86 prediction against what Inductor actually fuses.

Each model is quantized with our X86InductorQuantizer, explained, and compiled with
``torch.compile`` under ``freezing=True``. Inductor's quantization passes count each conv /
linear they turn into a oneDNN int8 kernel in ``qconv_weight_prepack_matcher_count`` /
``qlinear_weight_prepack_matcher_count``; those must equal the rows predicted ``"int8 qconv"``
/ ``"int8 qlinear"``. As in tests/quantizers/x86_inductor/test_x86_inductor_lowering.py, compiles run with
``pre_grad_custom_pass=None`` so no pass torchao may have installed changes what is counted.

Compiling takes 1-15 s per model, so four models cover the patterns: conv + relu + residual
add (ResNet), depthwise conv + relu6 (MobileNetV2), conv + silu and an SE mul (EfficientNet),
linear + gelu and float matmul (transformer).
"""

from __future__ import annotations

import pytest
import torch

from pt2e_quant.coverage import explain
from quantizers import X86InductorQuantizer, get_default_x86_inductor_quantization_config
from tests.ptq import quantize_once, quantize_zoo_model

pytestmark = pytest.mark.inductor

MODELS = (
    "resnet_basic_block",
    "mobilenet_v2_block",
    "efficientnet_block",
    "transformer_encoder_block",
)


def _fusion_counters(converted, example) -> dict[str, int]:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._inductor.config.patch(freezing=True, pre_grad_custom_pass=None):
        with torch.no_grad():
            torch.compile(converted)(*[t.clone() for t in example])
    counters = dict(torch._dynamo.utils.counters["inductor"])
    torch._dynamo.reset()
    return counters


@pytest.mark.parametrize("name", MODELS)
def test_predicted_int8_kernels_are_the_fused_ones(name: str) -> None:
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    converted, example = quantize_zoo_model(name, quantizer)
    with torch._inductor.config.patch(freezing=True):
        report = explain(converted, quantizer)
    assert report.warnings == []
    counts = report.counts
    counters = _fusion_counters(converted, example)
    assert counts.get("int8 qconv", 0) + counts.get("int8 qlinear", 0) > 0
    assert counts.get("int8 qconv", 0) == counters.get("qconv_weight_prepack_matcher_count", 0)
    assert counts.get("int8 qlinear", 0) == counters.get("qlinear_weight_prepack_matcher_count", 0)


@pytest.mark.parametrize("shape", [(1, 3, 8), (3, 8)], ids=["batched", "unbatched"])
def test_conv1d_prediction_follows_the_input_rank(shape: tuple[int, ...]) -> None:
    """Inductor's prepack pattern wants a 3-D or 4-D activation: an unbatched conv1d (2-D
    input) stays q/dq + float conv. The rank is read behind the activation's dequantize,
    which carries no example value of its own."""
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    example = (torch.randn(*shape),)
    converted = quantize_once(torch.nn.Conv1d(3, 4, 1), example, quantizer)
    with torch._inductor.config.patch(freezing=True):
        (row,) = explain(converted, quantizer).rows
    fused = _fusion_counters(converted, example).get("qconv_weight_prepack_matcher_count", 0)
    assert row.quantized
    assert (row.prediction == "int8 qconv") is (fused == 1) is (len(shape) == 3)
