"""Backend quantizers built on the pt2e_quant core.

The names match torchao's and ExecuTorch's, so migrating is an import change::

    from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
"""

from quantizers.composable import ComposableQuantizer
from quantizers.config import QuantizationConfig
from quantizers.embedding import EmbeddingQuantizer, get_embedding_quantization_config
from quantizers.x86_inductor import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from quantizers.xnnpack import XNNPACKQuantizer, get_symmetric_quantization_config

__all__ = [
    "ComposableQuantizer",
    "EmbeddingQuantizer",
    "QuantizationConfig",
    "X86InductorQuantizer",
    "XNNPACKQuantizer",
    "get_default_x86_inductor_quantization_config",
    "get_embedding_quantization_config",
    "get_symmetric_quantization_config",
]
