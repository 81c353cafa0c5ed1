"""torchrun plumbing: the shard each rank reads, the one writer, and writes that are all or
nothing (a failure part way leaves the previous file, never a truncated one)."""

from __future__ import annotations

import pytest

from pt2e_quant.distributed.collectives import World
from pt2e_quant.distributed.launch import (
    is_writer,
    joined_from_environment,
    shard,
    write_atomically,
)


def test_ranks_read_disjoint_interleaved_shards_that_cover_the_data():
    items = list(range(7))
    shards = [shard(items, World(rank, 3)) for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard(items, None) == items
    assert shard([0], World(1, 2)) == []  # more ranks than items: an empty shard


def test_only_rank_zero_or_a_lone_process_writes():
    assert is_writer(None) and is_writer(World(0, 2))
    assert not is_writer(World(1, 2))


def test_a_write_that_fails_part_way_leaves_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "model.pt2"
    target.write_bytes(b"previous")

    def failing(path):
        path.write_bytes(b"half a progr")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, failing)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt2"]


def test_a_write_that_succeeds_replaces_the_file_keeping_its_suffix_visible_to_the_writer(tmp_path):
    target = tmp_path / "model.pte"
    seen = []
    write_atomically(target, lambda path: (seen.append(path.suffix), path.write_bytes(b"new")))
    assert target.read_bytes() == b"new" and seen == [".pte"]
    assert [p.name for p in tmp_path.iterdir()] == ["model.pte"]


def test_without_a_launcher_nothing_is_joined(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with joined_from_environment() as here:
        assert here is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    with joined_from_environment() as here:
        assert here is None
