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


def qat_train_fn(rank: int, size: int, steps: int = 3):
    """``train_fn`` for quantize(qat=True): DDP over the prepared model, SGD on this rank's
    share of each global batch (with one rank: the whole batch, the same averaged gradient)."""
    from torch import nn

    from tests.core.distributed.qat_programs import _global_batch

    def train(prepared: torch.fx.GraphModule) -> None:
        model = nn.parallel.DistributedDataParallel(prepared) if size > 1 else prepared
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        for step in range(steps):
            x, target = _global_batch(step)
            share = x.shape[0] // size
            rows = slice(rank * share, (rank + 1) * share)
            loss = nn.functional.mse_loss(model(x[rows]), target[rows])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    return train


def quantize_qat(rank: int, size: int, sync_batch_norm_module: bool) -> torch.Tensor:
    """quantize(qat=True) of QatNet (with nn.SyncBatchNorm when asked); the converted output."""
    from tests.core.distributed.qat_programs import SHAPE, QatNet, QatNetSyncBatchNorm

    torch.manual_seed(0)
    model = QatNetSyncBatchNorm() if sync_batch_norm_module else QatNet()
    example = (torch.randn(4, *SHAPE),)
    batch = ({0: torch.export.Dim.AUTO},)  # a rank's share and the whole batch differ
    result = quantize(
        model,
        example,
        qat=True,
        train_fn=qat_train_fn(rank, size),
        progress=False,
        dynamic_shapes=batch,
    )
    probe = torch.linspace(-2, 2, 4 * 3 * 6 * 6).reshape(4, *SHAPE)
    return result.module(probe)
