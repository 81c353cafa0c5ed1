"""XNNPACK (ExecuTorch): ``quantizer`` (XNNPACKQuantizer and its preset configs), ``rules``
(the rule table), ``fold_index_arithmetic`` (integer values computed before annotation),
``delegation`` (what the XNNPACK partitioner will delegate, for coverage reports) and
``backend`` (the ``"xnnpack"`` entry of the core's backend registry)."""

from quantizers.xnnpack.quantizer import (
    XNNPACKQuantizer,
    get_per_token_quantization_config,
    get_symmetric_quantization_config,
    lift_scalar_operands,
)

__all__ = [
    "XNNPACKQuantizer",
    "get_per_token_quantization_config",
    "get_symmetric_quantization_config",
    "lift_scalar_operands",
]
