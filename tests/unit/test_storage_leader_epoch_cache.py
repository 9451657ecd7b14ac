"""LeaderEpochCache: Kafka's assign / endOffsetFor / truncation rules and its checkpoint file."""

from __future__ import annotations

from pathlib import Path

import pytest

from strom.storage.leader_epoch_cache import LeaderEpochCache


def cache(tmp_path: Path, *entries: tuple[int, int]) -> LeaderEpochCache:
    c = LeaderEpochCache(str(tmp_path / "leader-epoch-checkpoint"))
    for epoch, start in entries:
        c.assign(epoch, start)
    return c


def test_assign_ignores_repeats_and_drops_entries_it_contradicts(tmp_path: Path) -> None:
    c = cache(tmp_path, (0, 0), (0, 5), (2, 10), (3, 20))
    assert c.entries == ((0, 0), (2, 10), (3, 20))
    assert c.assign(2, 15)  # a lower epoch: everything from epoch 2 on is replaced
    assert c.entries == ((0, 0), (2, 15))
    assert c.assign(4, 12)  # start offset below an existing one: that entry goes
    assert c.entries == ((0, 0), (4, 12))
    with pytest.raises(ValueError):
        c.assign(-1, 0)


def test_end_offset_for_follows_kafka(tmp_path: Path) -> None:
    c = cache(tmp_path, (1, 0), (3, 10), (5, 20))
    assert c.end_offset_for(5, 30) == (5, 30)  # latest epoch: the log end offset
    assert c.end_offset_for(3, 30) == (3, 20)
    assert c.end_offset_for(4, 30) == (3, 20)  # unknown epoch between: floor epoch, next start
    assert c.end_offset_for(0, 30) == (0, 0)  # below every epoch
    assert c.end_offset_for(6, 30) == (-1, -1)  # above every epoch
    assert c.end_offset_for(-1, 30) == (-1, -1)
    empty = LeaderEpochCache(str(tmp_path / "empty-checkpoint"))
    assert empty.end_offset_for(0, 5) == (-1, -1)
    assert c.epoch_for_offset(15) == 3 and c.epoch_for_offset(0) == 1


def test_truncation_from_both_ends(tmp_path: Path) -> None:
    c = cache(tmp_path, (1, 0), (3, 10), (5, 20))
    c.truncate_from_end(20)
    assert c.entries == ((1, 0), (3, 10))
    c.truncate_from_end(25)
    assert c.entries == ((1, 0), (3, 10))
    c.truncate_from_start(12)
    assert c.entries == ((3, 12),)
    c.truncate_from_start(5)
    assert c.entries == ((3, 12),)
    c.clear()
    assert c.entries == () and c.latest_epoch is None


def test_checkpoint_file_survives_reopen(tmp_path: Path) -> None:
    cache(tmp_path, (1, 0), (3, 10))
    text = (tmp_path / "leader-epoch-checkpoint").read_text()
    assert text == "0\n2\n1 0\n3 10\n"  # Kafka's checkpoint format
    assert cache(tmp_path).entries == ((1, 0), (3, 10))
