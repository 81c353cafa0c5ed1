"""Backend quantizers built on the pt2e_quant core.

The names match torchao's and ExecuTorch's, so migrating is an import change::

    from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config

One folder per backend (``xnnpack/``, ``x86_inductor/``, ``embedding/``), each with its
quantizer, rule table and, for backends users pick by name, a ``backend`` module registered
with the core through the ``pt2e_quant.backends`` entry points in ``pyproject.toml``. Shared:
``config`` (QuantizationConfig), ``scoping`` (the setters' precedence), ``composable``.
"""

from quantizers.composable import ComposableQuantizer
from quantizers.config import (
    QuantizationConfig,
    get_bias_qspec,
    get_input_act_qspec,
    get_output_act_qspec,
    get_weight_qspec,
)
from quantizers.embedding import EmbeddingQuantizer, get_embedding_quantization_config
from quantizers.x86_inductor import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
    get_x86_inductor_dynamic_int8_config,
    get_x86_inductor_linear_dynamic_fp16_config,
    get_x86_inductor_weight_only_int8_config,
    rewrite_for_inductor,
)
from quantizers.xnnpack import (
    XNNPACKQuantizer,
    get_per_token_quantization_config,
    get_symmetric_quantization_config,
    get_weight_only_embedding_config,
    get_weight_only_quantization_config,
)

__all__ = [
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
    "get_symmetric_quantization_config",
    "get_weight_only_embedding_config",
    "get_weight_only_quantization_config",
    "get_weight_qspec",
    "get_x86_inductor_dynamic_int8_config",
    "get_x86_inductor_linear_dynamic_fp16_config",
    "get_x86_inductor_weight_only_int8_config",
    "rewrite_for_inductor",
]
