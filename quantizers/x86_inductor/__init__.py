"""X86 / torch.compile Inductor: ``quantizer`` (X86InductorQuantizer), ``rules`` (its fusion
rule table), ``config`` (torchao's presets and the one-mode rule for mixed configs),
``llm_config`` (int8 weight-only and int8 dynamic per-token presets for LLM linears),
``kernel_constraints`` (what the kernels accept, for ``validate``), ``inductor_rewrites``
(``rewrite_for_inductor``: the forms Inductor's kernels take, run before ``torch.compile``),
``inductor_fusion`` (which ops Inductor fuses into int8 kernels, for coverage reports) and
``backend`` (the ``"x86"`` entry of the core's backend registry)."""

from quantizers.x86_inductor.config import (
    MixedConfigWarning,
    get_default_x86_inductor_quantization_config,
    get_x86_inductor_linear_dynamic_fp16_config,
)
from quantizers.x86_inductor.inductor_rewrites import rewrite_for_inductor
from quantizers.x86_inductor.llm_config import (
    get_x86_inductor_dynamic_int8_config,
    get_x86_inductor_weight_only_int8_config,
)
from quantizers.x86_inductor.quantizer import X86InductorQuantizer

__all__ = [
    "MixedConfigWarning",
    "X86InductorQuantizer",
    "get_default_x86_inductor_quantization_config",
    "get_x86_inductor_dynamic_int8_config",
    "get_x86_inductor_linear_dynamic_fp16_config",
    "get_x86_inductor_weight_only_int8_config",
    "rewrite_for_inductor",
]
