"""A Llama-style decoder at test size: what LLM quantization schemes are exercised on.

Written here (no download, no transformers dependency) with the parts that make LLM graphs
different from the encoder in :mod:`tests.models.zoo_sequence`: RMSNorm instead of LayerNorm,
rotary position embeddings applied to q and k, grouped-query attention (fewer key/value heads
than query heads) through ``scaled_dot_product_attention``, a SwiGLU MLP, and an lm_head that
shares its weight with the token embedding, so one tensor feeds an ``embedding`` and a
``linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LlamaStyleDecoder", "RMSNorm"]


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) * weight`` over the last dim (no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate_halves(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class _Attention(nn.Module):
    """Causal self-attention with ``kv_heads`` key/value heads shared by groups of query heads."""

    def __init__(self, dim: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q_proj = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        batch, tokens, _ = x.shape

        def split(t: Tensor, heads: int) -> Tensor:
            return t.view(batch, tokens, heads, self.head_dim).transpose(1, 2)

        q = split(self.q_proj(x), self.heads)
        k = split(self.k_proj(x), self.kv_heads)
        v = split(self.v_proj(x), self.kv_heads)
        q = q * cos + _rotate_halves(q) * sin
        k = k * cos + _rotate_halves(k) * sin
        repeat = self.heads // self.kv_heads
        k = k.repeat_interleave(repeat, dim=1)
        v = v.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class _SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, hidden: int) -> None:
        super().__init__()
        self.input_norm = RMSNorm(dim)
        self.attention = _Attention(dim, heads, kv_heads)
        self.post_attention_norm = RMSNorm(dim)
        self.mlp = _SwiGLU(dim, hidden)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attention(self.input_norm(x), cos, sin)
        return x + self.mlp(self.post_attention_norm(x))


class LlamaStyleDecoder(nn.Module):
    """Token ids -> logits through ``layers`` decoder layers; lm_head tied to the embedding.

    ::

        ids ─ Embedding ─ [RMSNorm ─ GQA attention (rotary q/k, SDPA causal) ─ add
                           ─ RMSNorm ─ SwiGLU ─ add] × layers ─ RMSNorm ─ lm_head (= Embeddingᵀ)
    """

    def __init__(
        self,
        vocab: int = 128,
        dim: int = 64,
        layers: int = 2,
        heads: int = 4,
        kv_heads: int = 2,
        hidden: int = 128,
        max_tokens: int = 16,
        tokens: int = 8,
    ) -> None:
        super().__init__()
        if heads % kv_heads or dim % heads or (dim // heads) % 2:
            raise ValueError(
                f"heads ({heads}) must be a multiple of kv_heads ({kv_heads}) and dim ({dim}) "
                "split into heads of an even size"
            )
        self.vocab, self.tokens = vocab, tokens
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(
            _DecoderLayer(dim, heads, kv_heads, hidden) for _ in range(layers)
        )
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.embed_tokens.weight
        head_dim = dim // heads
        inverse_frequency = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
        angles = torch.outer(torch.arange(max_tokens).float(), inverse_frequency)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed_tokens(ids)
        tokens = ids.shape[1]
        cos, sin = self.cos_cached[:tokens], self.sin_cached[:tokens]
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))

    def example_inputs(self) -> tuple[Tensor, ...]:
        generator = torch.Generator().manual_seed(0)
        return (torch.randint(0, self.vocab, (1, self.tokens), generator=generator),)
