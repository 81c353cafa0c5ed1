"""Simulated ranks for the merge tests: one module per rank, merged without collectives.

``merge_observers`` takes the list of every rank's payloads that the collective would have
gathered, so the merge arithmetic can be checked in one process against a single module that
observed the concatenated shards. Programs for the multi-process tests reuse the banks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pt2e_quant.distributed.observer_merge import export_observers, merge_observers

Shards = list[list[torch.Tensor]]


class ObserverBank(nn.Module):
    """Named observers (or fake-quants) that each see every batch.

    ::

        x ─┬─ observers["a"](x)
           ├─ observers["b"](x)
           └─ ...            ─ x
    """

    def __init__(self, observers: dict[str, nn.Module]) -> None:
        super().__init__()
        self.observers = nn.ModuleDict(observers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for observer in self.observers.values():
            observer(x)
        return x


def observed(build: Callable[[], nn.Module], batches: list[torch.Tensor]) -> nn.Module:
    module = build()
    for batch in batches:
        module(batch)
    return module


def merged_ranks(build: Callable[[], nn.Module], shards: Shards) -> list[nn.Module]:
    """One module per shard, each observing its shard, then every one merged with all."""
    ranks = [observed(build, shard) for shard in shards]
    gathered = [export_observers(module) for module in ranks]
    for module in ranks:
        merge_observers(module, gathered)
    return ranks


def single_process(build: Callable[[], nn.Module], shards: Shards) -> nn.Module:
    """One module observing every shard's batches, in rank order."""
    return observed(build, [batch for shard in shards for batch in shard])


def states(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def assert_same_state(left: nn.Module, right: nn.Module) -> None:
    """Every buffer equal bit for bit (NaN-free states), including shapes and dtypes."""
    ours, theirs = states(left), states(right)
    assert ours.keys() == theirs.keys()
    for name in ours:
        a, b = ours[name], theirs[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8)), (
            name,
            a,
            b,
        )
