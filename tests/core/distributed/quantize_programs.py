"""Rank programs for tests/core/test_quantize_model_distributed.py: ``quantize()`` called the
way a torchrun script calls it, each rank with its own shard."""

from __future__ import annotations

from typing import Any

import torch

from pt2e_quant import quantize
from tests.cli_models import tiny


def data(count: int, seed: int = 7) -> list[tuple[torch.Tensor]]:
    """The whole calibration set; rank r calibrates on items r, r + size, ..."""
    generator = torch.Generator().manual_seed(seed)
    shape = tiny()[1][0].shape
    return [(torch.randn(shape, generator=generator) * (1 + i),) for i in range(count)]


def probe() -> torch.Tensor:
    return torch.randn(tiny()[1][0].shape, generator=torch.Generator().manual_seed(99))


def quantize_shard(rank: int, size: int, count: int, knobs: dict[str, Any]) -> dict[str, Any]:
    model, example_inputs = tiny()
    shard = data(count)[rank::size]
    result = quantize(model, example_inputs, calibration=shard, progress=False, **knobs)
    return {
        "output": result.module(probe()),
        "merged_batches": result.merge.batches if result.merge is not None else None,
    }
