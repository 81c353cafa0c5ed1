"""Programs for tests/test_ranks.py (children import them by name)."""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def sum_of_ranks(rank: int, world_size: int) -> float:
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    return value.item()


def rank_one_raises(rank: int, world_size: int) -> int:
    if rank == 1:
        raise ValueError("planted failure on rank 1")
    return rank


def rank_one_exits(rank: int, world_size: int) -> float:
    if rank == 1:
        os._exit(3)
    value = torch.tensor([1.0])
    dist.all_reduce(value)
    return value.item()


def rank_one_sleeps(rank: int, world_size: int) -> int:
    if rank == 1:
        time.sleep(3600)
    return rank
