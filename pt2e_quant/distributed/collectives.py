"""The one place the package talks to torch.distributed: who we are, and one agreement step.

Every multi-process operation here (merging observers after calibration, synchronising
fake-quants during QAT) must end the same way on every rank: either all ranks succeed with the
same result, or all ranks raise. A rank that fails on its own (its batch has the wrong shape,
its shard is empty) and simply raises would leave its peers blocked in the next collective
until the timeout, with an error that says nothing about the cause. So the step that exchanges
data is also the step that exchanges failures: :func:`gather_or_fail` makes exactly one
``all_gather_object`` in which each rank sends either its payload or a description of its
failure, and every rank raises :class:`DistributedQuantizationError` naming each failing rank
when any failed. A peer that died or hangs makes the collective itself raise (gloo reports a
closed connection, or the process group's timeout expires); that is turned into the same error,
naming the step and saying how the timeout is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from pt2e_quant.errors import QuantizationError

__all__ = [
    "DistributedQuantizationError",
    "RankFailure",
    "World",
    "gather_or_fail",
    "world",
]


class DistributedQuantizationError(QuantizationError, RuntimeError):
    """A multi-process quantization step failed; raised on every rank, naming the failing ranks
    (or the step at which a peer was lost) and what to do."""


@dataclass(frozen=True)
class World:
    """This process's place in a process group with more than one rank."""

    rank: int
    size: int
    #: the process group passed in (None means the default group)
    group: Any = None


def world(group: Any = None) -> World | None:
    """This rank and the group's size, or None when there is nothing to synchronise with:
    torch.distributed unavailable or not initialised, or a group of one process. Callers do
    nothing (single-process behaviour) when this is None."""
    if not dist.is_available() or not dist.is_initialized():
        return None
    size = dist.get_world_size(group)
    if size <= 1:
        return None
    return World(rank=dist.get_rank(group), size=size, group=group)


@dataclass(frozen=True)
class RankFailure:
    """What a rank sends instead of its payload when it failed locally (picklable)."""

    rank: int
    error_type: str
    message: str

    def summary(self) -> str:
        first_line = self.message.strip().splitlines()[0] if self.message.strip() else ""
        return f"{self.error_type}: {first_line}"


def _describe_failures(failures: list[RankFailure]) -> str:
    """``rank 1: ValueError: ...; ranks 0, 2: ...``: identical failures (every rank refusing
    the same observer) are listed once with all their ranks."""
    ranks_by_summary: dict[str, list[int]] = {}
    for failure in failures:
        ranks_by_summary.setdefault(failure.summary(), []).append(failure.rank)
    return "; ".join(
        f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}: {summary}"
        for summary, ranks in ranks_by_summary.items()
    )


def _failure_of(rank: int, error: BaseException) -> RankFailure:
    return RankFailure(rank=rank, error_type=type(error).__name__, message=str(error))


_TIMEOUT_HINT = (
    "the wait for a peer is bounded by the process group's timeout, set with "
    "torch.distributed.init_process_group(timeout=datetime.timedelta(seconds=...))"
)


def gather_or_fail(local: Any, what: str, group: Any = None) -> list[Any]:
    """Every rank's payload, in rank order, or :class:`DistributedQuantizationError` on all ranks.

    ``local`` is this rank's payload (anything picklable), or the exception this rank hit
    while producing it: pass the exception instead of raising it, so that the rank still
    reaches the collective and its peers learn why it failed. ``what`` names the step for
    messages (``"sync_observers"``). Exactly one ``all_gather_object`` is made.

    Without a process group (see :func:`world`) the local exception is re-raised as it is,
    and a payload comes back as a one-element list.
    """
    here = world(group)
    if here is None:
        if isinstance(local, BaseException):
            raise local
        return [local]
    sent = _failure_of(here.rank, local) if isinstance(local, BaseException) else local
    gathered: list[Any] = [None] * here.size
    try:
        dist.all_gather_object(gathered, sent, group=group)
    except Exception as error:  # noqa: BLE001 - any backend error means a lost peer
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DistributedQuantizationError(
            f"{what}: rank {here.rank} of {here.size} lost contact with a peer during the "
            f"exchange ({type(error).__name__}: {reason}). A rank exited, crashed or did not "
            f"reach {what} in time; {_TIMEOUT_HINT}. Every rank must call {what} (the same "
            "number of times, on the same prepared program); rerun all ranks."
        ) from error
    failures = [item for item in gathered if isinstance(item, RankFailure)]
    if failures:
        listed = _describe_failures(failures)
        error = DistributedQuantizationError(
            f"{what} failed on {len(failures)} of {here.size} ranks: {listed}. Every rank "
            "stopped before changing any statistics; fix the failing rank(s) and rerun all "
            "ranks."
        )
        if isinstance(local, BaseException):
            raise error from local
        raise error
    return gathered
