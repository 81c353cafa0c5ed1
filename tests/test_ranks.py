"""The multi-process harness the distributed tests stand on (tests/ranks.py): results come
back per rank, and a failing, dying or hanging rank is reported instead of hanging pytest."""

from __future__ import annotations

import time

import pytest

from tests import rank_harness_programs as programs
from tests.ranks import run_ranks, values


def test_every_rank_returns_its_value_after_a_collective():
    assert values(run_ranks(programs.sum_of_ranks, 3)) == [6.0, 6.0, 6.0]


def test_a_raising_rank_is_reported_with_its_exception():
    outcomes = run_ranks(programs.rank_one_raises, 2)
    assert outcomes[0].ok and outcomes[0].value == 0
    assert outcomes[1].error_type == "ValueError"
    assert "planted failure" in outcomes[1].error_message
    with pytest.raises(AssertionError, match="rank 1: ValueError"):
        values(outcomes)


def test_a_dying_rank_fails_its_peer_collective_instead_of_hanging():
    outcomes = run_ranks(programs.rank_one_exits, 2, collective_timeout=5)
    assert outcomes[1].error_type == "Died" and outcomes[1].exitcode == 3
    assert not outcomes[0].ok  # the peer's all_reduce raised, it did not wait forever


def test_a_hanging_rank_is_killed_at_the_deadline():
    start = time.monotonic()
    outcomes = run_ranks(programs.rank_one_sleeps, 2, deadline=3)
    assert time.monotonic() - start < 15
    assert outcomes[0].ok
    assert outcomes[1].error_type == "Hung"
