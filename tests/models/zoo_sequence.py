"""The sequence half of the zoo: a hand-written transformer encoder (explicit matmul + softmax
attention, so annotators see both matmuls), an embedding-bag recommender and an LSTM."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------------------- Transformer


class TransformerEncoderBlock(nn.Module):
    """Pre-norm encoder layer written out by hand (nn.TransformerEncoderLayer's fast path
    exports as a fused op that no quantizer pattern matches).

    Attention is explicit matmul + softmax so both matmuls are visible to annotators.

    ::

        x ─┬─ LayerNorm ─ q,k,v Linear ─ split heads ─ softmax(q @ kᵀ · s) @ v ─ merge heads
           │    ─ Linear(out) ─┐
           └─────────────────── add ─┬─ LayerNorm ─ Linear(×2) ─ GELU ─ Linear ─┐
                                     └─────────────────────────────────────── add ─ out
    """

    def __init__(self, dim: int = 16, num_heads: int = 2, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def _heads(self, x: Tensor) -> Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)

    def attention(self, x: Tensor) -> Tensor:
        batch, seq, _ = x.shape
        q, k, v = (
            self._heads(self.q_proj(x)),
            self._heads(self.k_proj(x)),
            self._heads(self.v_proj(x)),
        )
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        context = torch.matmul(F.softmax(scores, dim=-1), v)
        return self.out_proj(context.transpose(1, 2).reshape(batch, seq, self.dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 8, self.dim),)


class TransformerEncoder(nn.Module):
    """``num_layers`` encoder blocks and a final LayerNorm; benchmarks scale ``num_layers``.

    ::

        x (2,8,16) ─ Block ─ ... ─ Block ─ LayerNorm ─ out (2,8,16)
    """

    def __init__(self, num_layers: int = 2, dim: int = 16, num_heads: int = 2) -> None:
        super().__init__()
        self.dim = dim
        self.layers = nn.Sequential(
            *(TransformerEncoderBlock(dim, num_heads) for _ in range(num_layers))
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.layers(x))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 8, self.dim),)


class EmbeddingBagModel(nn.Module):
    """Recommendation-style pooled lookup then a dense layer.

    ::

        indices (4,5) long ─ EmbeddingBag(20, 8, mode="mean") ─ (4,8) ─ Linear(8→4) ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(20, 8, mode="mean")
        self.linear = nn.Linear(8, 4)

    def forward(self, indices: Tensor) -> Tensor:
        return self.linear(self.bag(indices))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randint(0, 20, (4, 5)),)


class LSTMModel(nn.Module):
    """A recurrent layer (exports as one fused ``aten.lstm``) and a linear head.

    ::

        x (seq=4, batch=2, 8) ─ LSTM(8→16) ─ output (4,2,16) ─ Linear(16→4) ─ out (4,2,4)
    """

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16)
        self.linear = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        output, _ = self.lstm(x)
        return self.linear(output)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(4, 2, 8),)
