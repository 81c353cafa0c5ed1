"""X86 / torch.compile Inductor: ``quantizer`` (X86InductorQuantizer), ``rules`` (its fusion
rule table), ``config`` (torchao's presets and the one-mode rule for mixed configs),
``inductor_fusion`` (which ops Inductor fuses into int8 kernels, for coverage reports) and
``backend`` (the ``"x86"`` entry of the core's backend registry)."""

from quantizers.x86_inductor.config import (
    MixedConfigWarning,
    get_default_x86_inductor_quantization_config,
    get_x86_inductor_linear_dynamic_fp16_config,
)
from quantizers.x86_inductor.quantizer import X86InductorQuantizer

__all__ = [
    "MixedConfigWarning",
    "X86InductorQuantizer",
    "get_default_x86_inductor_quantization_config",
    "get_x86_inductor_linear_dynamic_fp16_config",
]
