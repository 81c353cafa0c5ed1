"""Operator identities: the quantize / dequantize ops (``qdq_ops``), the aten op families
every layer names, the private-torch compatibility module and the ``quantized_decomposed``
fallback kernels."""
