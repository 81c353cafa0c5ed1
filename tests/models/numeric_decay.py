"""Models whose quantized SQNR decays gradually, for the numeric debugger's accumulation
summary (``tests/core/debug/test_accumulation*.py``).

``LinearChain``::

    x (64, 32) ─ layers.0 ─ layers.1 ─ ... ─ layers.15 ─ out      (Linear(32, 32) each)

Orthogonal weights and zero biases keep the signal's size along the chain, so each int8 layer
adds a little noise and no single one dominates unless its quantization is made coarser.

``tiny_gpt2`` / ``tiny_bert``: a 4-layer GPT-2 / BERT built from a ``transformers`` config
with random weights (no download), wrapped to take token ids and return the last hidden state.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LinearChain", "TokensToHidden", "tiny_bert", "tiny_gpt2"]

VOCAB, SEQUENCE = 100, 16


class LinearChain(nn.Module):
    def __init__(self, depth: int = 16, width: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(nn.Linear(width, width) for _ in range(depth)))
        with torch.no_grad():
            for layer in self.layers:
                nn.init.orthogonal_(layer.weight)
                layer.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(64, 32),)


class TokensToHidden(nn.Module):
    """A ``transformers`` base model as ``ids -> last_hidden_state``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor) -> Tensor:
        return self.model(input_ids=ids).last_hidden_state

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randint(0, VOCAB, (2, SEQUENCE)),)


def tiny_gpt2() -> TokensToHidden:
    import transformers

    config = transformers.GPT2Config(
        n_layer=4, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=32,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return TokensToHidden(transformers.GPT2Model(config)).eval()


def tiny_bert() -> TokensToHidden:
    import transformers

    config = transformers.BertConfig(
        num_hidden_layers=4, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        vocab_size=VOCAB, max_position_embeddings=32,
    )  # fmt: skip
    return TokensToHidden(transformers.BertModel(config)).eval()
