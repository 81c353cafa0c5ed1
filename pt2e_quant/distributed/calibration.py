"""Data-parallel calibration: each rank calibrates on its shard, then every observer is merged.

Under ``torchrun`` every rank prepares the same model, runs its own share of the calibration
data through it, and calls :func:`sync_observers` (or does both with
:func:`calibrate_distributed`). Afterwards every rank holds the same observer state and
``convert_pt2e`` produces the same program everywhere. The merge rule of each observer kind
and how it relates to one process over all the data are in
:mod:`pt2e_quant.distributed.observer_kinds` and :mod:`pt2e_quant.distributed.histogram_merge`.

Do not rely on DistributedDataParallel for this: with ``broadcast_buffers=True`` (its default)
DDP copies rank 0's buffers over every other rank's before each forward, so the other ranks'
statistics are dropped. Calibrate the prepared model itself (unwrapped) and merge.

Failures are collective: a rank whose batch raises, whose shard is empty, or whose model holds
an observer that cannot be merged sends its error in the one exchange, and every rank raises
:class:`~pt2e_quant.distributed.collectives.DistributedQuantizationError` naming it before any
state changes; a rank that died or hangs makes its peers raise once the process group's
timeout expires.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from pt2e_quant.distributed.collectives import gather_or_fail, world
from pt2e_quant.distributed.observer_merge import (
    check_mergeable,
    export_observers,
    find_observers,
    merge_observers,
    payload_bytes,
)
from pt2e_quant.pipeline.calibration import CalibrationError, calibrate

__all__ = ["SyncReport", "calibrate_distributed", "sync_observers"]


@dataclass(frozen=True)
class SyncReport:
    """What a merge did on this rank."""

    rank: int
    #: 1 when no process group is initialised (nothing was merged)
    world_size: int
    #: observers and fake-quants found in the model
    observers: int
    #: per observer merged, the ranks whose state went into it (empty: unchanged since the
    #: last merge, so nothing was rewritten)
    contributors: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: calibration batches each rank ran (calibrate_distributed only), in rank order
    batches: tuple[int, ...] = ()
    #: bytes of statistics this rank sent
    payload_bytes: int = 0
    #: seconds spent exporting, exchanging and merging
    merge_seconds: float = 0.0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (names then match the prepared model's)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module
    return model


def _exchange_and_merge(
    model: nn.Module, local: Any, what: str, group: Any, rank: int, size: int, started: float
) -> SyncReport:
    """Exchange this rank's ``(batches, payloads)`` (or its failure), merge, report."""
    gathered = gather_or_fail(local, what, group)
    contributors = merge_observers(model, [payloads for _, payloads in gathered])
    return SyncReport(
        rank=rank,
        world_size=size,
        observers=len(contributors),
        contributors=contributors,
        batches=tuple(batches for batches, _ in gathered if batches is not None),
        payload_bytes=payload_bytes(local[1]),
        merge_seconds=time.perf_counter() - started,
    )


def sync_observers(model: nn.Module, group: Any = None) -> SyncReport:
    """Merge every observer (and fake-quant observer) of ``model`` across the ranks of
    ``group`` (default: the default process group), in one ``all_gather_object``.

    Every rank must call it. Without a process group of more than one rank it does nothing
    and reports ``world_size=1``. Calling it again without observing in between changes
    nothing. Raises ``DistributedQuantizationError`` on every rank (changing nothing) when a
    rank fails, holds different observers or settings, or was lost.
    """
    model = _unwrapped(model)
    here = world(group)
    if here is None:
        return SyncReport(rank=0, world_size=1, observers=len(find_observers(model)))
    started = time.perf_counter()
    try:
        local: Any = (None, export_observers(model))
    except Exception as error:  # noqa: BLE001 - sent to every rank by gather_or_fail
        local = error
    return _exchange_and_merge(model, local, "sync_observers", group, here.rank, here.size, started)


class _Counted:
    """An iterable that counts what it yielded (and keeps ``len()`` for the progress bar)."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items
        self.yielded = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.items:
            self.yielded += 1
            yield item

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]


def _example_inputs_of(model: nn.Module) -> tuple[Any, ...]:
    """The shapes the model was exported with (placeholder metadata), for error messages."""
    graph = getattr(model, "graph", None)
    if graph is None:
        return ()
    return tuple(
        node.meta["val"] for node in graph.nodes if node.op == "placeholder" and "val" in node.meta
    )


def _empty_shard(rank: int, size: int) -> CalibrationError:
    return CalibrationError(
        f"rank {rank} of {size} has no calibration data: its shard yielded no batch. Give "
        "every rank a non-empty shard, e.g. DataLoader(dataset, sampler=DistributedSampler("
        "dataset)), which splits the dataset across ranks (padding so every rank gets "
        "len(dataset) / world_size items), with at least as many items as ranks"
    )


def calibrate_distributed(
    prepared: nn.Module,
    shard: Iterable[Any],
    example_inputs: tuple[Any, ...] | None = None,
    *,
    group: Any = None,
    max_batches: int | None = None,
    progress: bool = False,
) -> SyncReport:
    """Calibrate ``prepared`` on this rank's ``shard``, then merge every observer across ranks.

    ``shard`` is what :func:`pt2e_quant.pipeline.calibration.calibrate` takes (input tuples,
    tensors, a DataLoader), this rank's share only; ``example_inputs`` only shapes error
    messages (default: the shapes the model was exported with). Every observer is checked to
    be mergeable before the first batch runs. A failing batch, an empty shard (an error: every
    rank must contribute) or an unmergeable observer on any rank makes every rank raise
    ``DistributedQuantizationError`` naming the rank, with no statistics merged. Without a
    process group this is ``calibrate`` (its errors unchanged) and reports ``world_size=1``.
    """
    model = _unwrapped(prepared)
    inputs = _example_inputs_of(model) if example_inputs is None else example_inputs
    here = world(group)
    if here is None:
        count = calibrate(model, shard, inputs, progress=progress, max_batches=max_batches)
        return SyncReport(
            rank=0, world_size=1, observers=len(find_observers(model)), batches=(count,)
        )
    counted = _Counted(shard)
    started = time.perf_counter()
    try:
        check_mergeable(model)
        count = calibrate(model, counted, inputs, progress=progress, max_batches=max_batches)
        started = time.perf_counter()  # the merge's cost starts here
        local: Any = (count, export_observers(model))
    except CalibrationError as error:
        local = _empty_shard(here.rank, here.size) if counted.yielded == 0 else error
    except Exception as error:  # noqa: BLE001 - sent to every rank by gather_or_fail
        local = error
    return _exchange_and_merge(
        model,
        local,
        "calibrate_distributed",
        group,
        here.rank,
        here.size,
        started,
    )
