"""XNNPACK (ExecuTorch): ``quantizer`` (XNNPACKQuantizer and its preset configs), ``weight_only``
(weight-only linear and embedding presets for ExecuTorch's portable kernels), ``rules``
(the rule table), ``fold_index_arithmetic`` (integer values computed before annotation),
``delegation`` (what the XNNPACK partitioner will delegate, for coverage reports) and
``backend`` (the ``"xnnpack"`` entry of the core's backend registry)."""

from quantizers.xnnpack.quantizer import (
    XNNPACKQuantizer,
    get_per_token_quantization_config,
    get_symmetric_quantization_config,
    lift_scalar_operands,
)
from quantizers.xnnpack.weight_only import (
    get_weight_only_embedding_config,
    get_weight_only_quantization_config,
    needs_non_static_float_weights,
)

__all__ = [
    "XNNPACKQuantizer",
    "get_per_token_quantization_config",
    "get_symmetric_quantization_config",
    "get_weight_only_embedding_config",
    "get_weight_only_quantization_config",
    "lift_scalar_operands",
    "needs_non_static_float_weights",
]
