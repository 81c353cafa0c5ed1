"""Run one program on N local processes joined by a gloo process group, with a deadline.

The distributed tests need real collectives between real processes, and a broken collective
must fail the test instead of hanging the suite. ``run_ranks`` starts ``world_size`` children
from a forkserver (torch is imported once in the server; each child is a fork of it, so a
rank starts in well under a second), gives every rank a process group with a short collective
timeout, and waits for all of them until ``deadline`` seconds have passed; a rank still alive
then is killed and reported as hung.

``program(rank, world_size, *args)`` must be a module-level function (children import it by
name), e.g. one of ``tests/core/distributed/rank_programs.py``. Its return value (picklable)
or the exception it raised comes back in a :class:`RankOutcome` per rank.
"""

from __future__ import annotations

import datetime
import multiprocessing
import os
import pickle
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: seconds a collective may wait for a peer before gloo raises (kept short: a missing rank
#: must turn into an error quickly, well inside the deadline)
COLLECTIVE_TIMEOUT = 20.0


@dataclass
class RankOutcome:
    """What one rank ended with: its return value, or the exception it raised."""

    rank: int
    value: Any = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    exitcode: int | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None and self.exitcode == 0


def _context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "torch.distributed"])
    return context


def _child(
    program: Callable[..., Any],
    rank: int,
    world_size: int,
    store_path: str,
    result_path: str,
    collective_timeout: float,
    args: tuple[Any, ...],
) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    outcome = RankOutcome(rank)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{store_path}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=collective_timeout),
        )
        outcome.value = program(rank, world_size, *args)
    except BaseException as error:  # noqa: BLE001 - reported to the parent, whatever it is
        outcome.error_type = type(error).__name__
        outcome.error_message = str(error)
        outcome.error_traceback = traceback.format_exc()
    finally:
        Path(result_path).write_bytes(pickle.dumps(outcome))
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a broken group cannot be torn down cleanly
                pass
    # skip interpreter teardown: a peer may have died mid-collective, and gloo's threads
    # can block a normal exit
    os._exit(0)


def run_ranks(
    program: Callable[..., Any],
    world_size: int,
    *args: Any,
    deadline: float = 90.0,
    collective_timeout: float = COLLECTIVE_TIMEOUT,
) -> list[RankOutcome]:
    """Run ``program(rank, world_size, *args)`` on ``world_size`` gloo ranks (module doc)."""
    context = _context()
    with tempfile.TemporaryDirectory(prefix="pt2e-ranks-") as directory:
        store = os.path.join(directory, "store")
        results = [os.path.join(directory, f"rank{rank}.pkl") for rank in range(world_size)]
        processes = [
            context.Process(
                target=_child,
                args=(program, rank, world_size, store, results[rank], collective_timeout, args),
                daemon=True,
            )
            for rank in range(world_size)
        ]
        for process in processes:
            process.start()
        hung = _wait_all(processes, deadline)
        outcomes = []
        for rank, process in enumerate(processes):
            path = Path(results[rank])
            outcome = pickle.loads(path.read_bytes()) if path.exists() else RankOutcome(rank)
            outcome.exitcode = process.exitcode
            if rank in hung:
                outcome.error_type = "Hung"
                outcome.error_message = f"rank {rank} still running after {deadline:.0f} s"
            elif not path.exists():
                outcome.error_type = "Died"
                outcome.error_message = f"rank {rank} exited with code {process.exitcode}"
            outcomes.append(outcome)
        return outcomes


def _wait_all(processes: list[Any], deadline: float) -> set[int]:
    """Join every process within ``deadline`` seconds in total; kill and name the rest."""
    import time

    end = time.monotonic() + deadline
    for process in processes:
        process.join(max(0.0, end - time.monotonic()))
    hung = {rank for rank, process in enumerate(processes) if process.is_alive()}
    for rank in hung:
        processes[rank].kill()
        processes[rank].join(5)
    return hung


def values(outcomes: list[RankOutcome]) -> list[Any]:
    """Every rank's return value; fails with each failing rank's traceback otherwise."""
    failures = [o for o in outcomes if not o.ok]
    if failures:
        details = "\n".join(
            f"rank {o.rank}: {o.error_type}: {o.error_message}\n{o.error_traceback or ''}"
            for o in failures
        )
        raise AssertionError(f"{len(failures)} rank(s) failed:\n{details}")
    return [o.value for o in outcomes]
