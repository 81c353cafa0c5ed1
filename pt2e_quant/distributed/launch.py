"""Running under ``torchrun``: join the process group it describes, split the data, pick the writer.

``torchrun --nproc-per-node N -m pt2e_quant quantize ...`` starts N copies of the command line
with ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT`` set. Each copy must join the
group before calibrating (so ``quantize()`` merges the observers), read only its share of the
calibration data, and leave the files to one rank: N ranks writing the same path race, and a
rank that fails half-way must not leave a half-written file behind.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from pt2e_quant.distributed.collectives import World, world

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "is_writer",
    "joined_from_environment",
    "shard",
    "write_atomically",
]

#: how long a rank waits for its peers in one collective before failing (torch's default is
#: 30 minutes, far longer than any merge needs; a lost rank should surface quickly)
DEFAULT_TIMEOUT_SECONDS = 300.0

_Item = TypeVar("_Item")


def _launched_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


@contextmanager
def joined_from_environment(timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Iterator[Any]:
    """Join the process group a launcher (``torchrun``) describes in the environment, for
    the duration of the block, and yield this rank's :class:`World` (None when not launched
    with more than one process, or when the caller already initialised a group: then that
    group is used and left alone).

    gloo is used on CPU; NCCL when every rank has a CUDA device (the rank's device is set from
    ``LOCAL_RANK``, as NCCL requires).
    """
    if _launched_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        yield world()
        return
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds))
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def shard(items: Sequence[_Item], here: World | None) -> list[_Item]:
    """This rank's share of ``items``: every ``size``-th item starting at its rank, as
    ``DistributedSampler(shuffle=False)`` splits a dataset but without padding (a shard
    may be empty; calibration then reports that rank)."""
    if here is None:
        return list(items)
    return list(items[here.rank :: here.size])


def is_writer(here: World | None) -> bool:
    """Whether this rank writes the artifacts: rank 0, or the only process."""
    return here is None or here.rank == 0


def write_atomically(path: Path, write: Any) -> None:
    """``write(temporary_path)``, then rename it over ``path``: a failure (or a crash) part way
    leaves ``path`` as it was, never a truncated file."""
    path = Path(path)
    temporary = path.with_name(
        f".{path.stem}.{os.getpid()}.partial{path.suffix}"
    )  # writers may read the suffix
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
