"""Embedding tables, weight-only: ``quantizer`` (EmbeddingQuantizer and its config)."""

from quantizers.embedding.quantizer import EmbeddingQuantizer, get_embedding_quantization_config

__all__ = ["EmbeddingQuantizer", "get_embedding_quantization_config"]
