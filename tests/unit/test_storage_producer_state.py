"""Idempotent producer state, owned by the partition log: duplicates answered with their offsets,
gaps and zombies refused, all in the leader's one validation pass; snapshots written at rolls and
clean shutdown, loaded with only the headers after them, and damaged ones detected and skipped.
(The property that a state rebuilt from any snapshot plus the suffix equals the state of the
whole log is in test_storage_log_property.py; SIGKILL tests in
test_storage_producer_snapshot_crash.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strom.storage.errors import CorruptRecordError
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog
from strom.storage.producer_state import (
    SNAPSHOTS_MAX,
    ProducerState,
    ProducerStateError,
    ProducerStateLoadingError,
    snapshot_offsets,
    snapshot_path,
)
from strom.storage.record_batch import BatchHeader, Record, encode_batch, parse_header

TS = 1_700_000_000_000


def batch(pid: int, epoch: int, seq: int, count: int = 2, base_offset: int = 0) -> bytes:
    records = [Record(None, f"v{seq + i}".encode(), (), TS) for i in range(count)]
    return encode_batch(
        records, producer_id=pid, producer_epoch=epoch, base_sequence=seq, base_offset=base_offset
    )


def header(data: bytes, offset: int = 0) -> BatchHeader:
    return parse_header(data)._replace(base_offset=offset)


def open_log(path: Path, **config: int) -> PartitionLog:
    return PartitionLog.open(str(path), LogConfig(**config), now_ms=TS)


# ---- the rules -----------------------------------------------------------------------------


def test_in_order_batches_and_duplicates() -> None:
    state = ProducerState()
    first, second = batch(7, 0, 0), batch(7, 0, 2)
    assert state.check([header(first)]) == [None]
    state.update(header(first, 10))
    assert state.check([header(second)]) == [None]
    state.update(header(second, 12))
    # A retry of either batch is a duplicate, answered with where it was written.
    (duplicate,) = state.check([header(first)])
    assert duplicate is not None and (duplicate.first_offset, duplicate.last_offset) == (10, 11)
    assert state.check([header(second)])[0] is not None


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (batch(7, 0, 5), "OUT_OF_ORDER_SEQUENCE_NUMBER"),  # a gap after seq 1
        (batch(7, 1, 3), "OUT_OF_ORDER_SEQUENCE_NUMBER"),  # a new epoch not at 0
        (batch(7, 0, 2), None),  # the next one is fine
    ],
)
def test_gaps_are_refused(data: bytes, name: str | None) -> None:
    state = ProducerState()
    state.update(header(batch(7, 0, 0)))
    if name is None:
        assert state.check([header(data)]) == [None]
        return
    with pytest.raises(ProducerStateError) as err:
        state.check([header(data)])
    assert err.value.error_name == name


def test_zombie_epoch_is_fenced() -> None:
    state = ProducerState()
    state.update(header(batch(7, 2, 0)))
    with pytest.raises(ProducerStateError) as err:
        state.check([header(batch(7, 1, 2))])
    assert err.value.error_name == "INVALID_PRODUCER_EPOCH"


def test_unknown_producer_and_plain_batches_pass() -> None:
    state = ProducerState()
    assert state.check([header(batch(9, 0, 40))]) == [None]
    assert state.check([parse_header(encode_batch([Record(None, b"x", (), 1)]))]) == [None]


def test_batches_of_one_request_are_checked_in_order() -> None:
    """Two consecutive batches of one producer in one request: the second follows the first
    (main checked both against the state before the request and refused the second)."""
    state = ProducerState()
    state.update(header(batch(7, 0, 0)))
    assert state.check([header(batch(7, 0, 2)), header(batch(7, 0, 4))]) == [None, None]
    with pytest.raises(ProducerStateError):
        state.check([header(batch(7, 0, 2)), header(batch(7, 0, 2))])


def test_producers_below_the_log_start_are_forgotten() -> None:
    state = ProducerState()
    state.update(header(batch(1, 0, 0), 0))  # [0, 1]
    state.update(header(batch(2, 0, 0), 2))  # [2, 3]
    state.update(header(batch(2, 0, 2), 4))  # [4, 5]
    state.evict_before(4)
    assert [pid for pid, _, _ in state.as_tuples()] == [2]
    assert [b.first_offset for b in state.producers[2].batches] == [4]


def test_snapshot_round_trip_keeps_order_and_detects_damage(tmp_path: Path) -> None:
    state = ProducerState()
    for pid in (5, 3, 9):
        for seq in (0, 2, 4):
            state.update(header(batch(pid, 1, seq), state.end_offset))
    data = state.encode()
    again = ProducerState.decode(data, "x")
    assert again.as_tuples() == state.as_tuples() and again.end_offset == state.end_offset
    for at in (0, 3, len(data) // 2, len(data) - 1):
        damaged = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
        with pytest.raises(Exception, match="snapshot"):
            ProducerState.decode(damaged, "x")
    with pytest.raises(Exception, match="snapshot"):
        ProducerState.decode(data[:-5], "x")


# ---- the leader's one pass -----------------------------------------------------------------


def test_a_damaged_retry_is_corrupt_not_a_duplicate(tmp_path: Path) -> None:
    """Validation (CRC included) comes before the duplicate check: a retried batch damaged in
    transit is CORRUPT_MESSAGE, never acknowledged as the copy the log holds."""
    log = open_log(tmp_path / "t-0")
    original = batch(7, 0, 0)
    log.append(original, 0, now_ms=TS)
    damaged = bytearray(original)
    damaged[-1] ^= 0xFF  # a byte of the last record: the CRC no longer matches
    with pytest.raises(CorruptRecordError) as err:
        log.append(bytes(damaged), 0, now_ms=TS)
    assert err.value.error_name == "CORRUPT_MESSAGE"
    info = log.append(original, 0, now_ms=TS)
    assert (info.first_offset, info.last_offset, info.batch_count) == (0, 1, 0)
    assert log.log_end_offset == 2
    log.close()


def test_a_refused_batch_writes_nothing(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append(batch(7, 0, 0), 0, now_ms=TS)
    with pytest.raises(ProducerStateError):
        log.append(batch(7, 0, 0, count=1) + batch(7, 0, 9), 0, now_ms=TS)
    assert log.log_end_offset == 2
    with pytest.raises(CorruptRecordError, match="mixing"):
        log.append(batch(7, 0, 0) + batch(7, 0, 2), 0, now_ms=TS)
    assert log.log_end_offset == 2
    log.close()


def test_followers_keep_the_same_state(tmp_path: Path) -> None:
    leader, follower = open_log(tmp_path / "l-0"), open_log(tmp_path / "f-0")
    for seq in (0, 2, 4):
        leader.append(batch(7, 0, seq), 3, now_ms=TS)
    follower.append_as_follower(leader.read(0, 1 << 20), now_ms=TS)
    assert follower.producer_state.as_tuples() == leader.producer_state.as_tuples()
    assert follower.producer_state.end_offset == 6
    leader.close()
    follower.close()


# ---- snapshots -----------------------------------------------------------------------------


def fill(log: PartitionLog, batches: int, producers: int = 3) -> None:
    for i in range(batches):
        pid = 100 + i % producers
        entry = log.producer_state.producers.get(pid)
        seq = 0 if entry is None else entry.last_seq + 1
        log.append(batch(pid, 0, seq), 0, now_ms=TS)


def test_a_clean_reopen_scans_no_header(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", segment_bytes=2000)
    fill(log, 200)
    before = log.producer_state.as_tuples()
    assert len(log.segment_base_offsets) > 3
    log.close()
    assert snapshot_offsets(str(tmp_path / "t-0"))[-1] == 400  # written at the clean close
    again = open_log(tmp_path / "t-0", segment_bytes=2000)
    loaded = again.producer_state_load
    assert (loaded.snapshot_offset, loaded.headers_scanned, loaded.corrupt) == (400, 0, ())
    assert again.producer_state.as_tuples() == before
    again.close()


def test_an_unclean_reopen_scans_only_after_the_last_roll(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", segment_bytes=2000)
    fill(log, 200)
    before = log.producer_state.as_tuples()
    active_base = log.segment_base_offsets[-1]
    batches_in_active = (log.log_end_offset - active_base) // 2
    log.close(clean=False)
    again = open_log(tmp_path / "t-0", segment_bytes=2000)
    loaded = again.producer_state_load
    assert (loaded.snapshot_offset, loaded.headers_scanned) == (active_base, batches_in_active)
    assert again.producer_state.as_tuples() == before
    again.close(clean=False)


def test_damaged_snapshots_are_reported_and_skipped(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = open_log(directory, segment_bytes=2000)
    fill(log, 200)
    before = log.producer_state.as_tuples()
    log.close()
    newest, older = snapshot_offsets(str(directory))[-1], snapshot_offsets(str(directory))[-2]
    with open(snapshot_path(str(directory), newest), "r+b") as f:  # a torn write
        f.truncate(30)
    again = open_log(directory, segment_bytes=2000)
    loaded = again.producer_state_load
    assert loaded.snapshot_offset == older and len(loaded.corrupt) == 1
    assert "cut short" in loaded.corrupt[0] or "CRC" in loaded.corrupt[0]
    assert not os.path.exists(snapshot_path(str(directory), newest))  # deleted, not retried
    assert again.producer_state.as_tuples() == before
    again.close(clean=False)
    for offset in snapshot_offsets(str(directory)):  # every one damaged: from the log start
        with open(snapshot_path(str(directory), offset), "r+b") as f:
            f.seek(20)
            f.write(b"\xff\xff")
    third = open_log(directory, segment_bytes=2000)
    assert third.producer_state_load.snapshot_offset is None
    assert third.producer_state_load.headers_scanned == 200
    assert third.producer_state.as_tuples() == before
    third.close()


def test_a_half_written_snapshot_is_ignored(tmp_path: Path) -> None:
    """A crash while writing a snapshot leaves `<name>.tmp` (the rename never happened): the
    next open deletes it and uses the snapshots that are complete."""
    directory = tmp_path / "t-0"
    log = open_log(directory, segment_bytes=2000)
    fill(log, 50)
    log.close()
    newest = snapshot_offsets(str(directory))[-1]
    with open(snapshot_path(str(directory), newest + 99) + ".tmp", "wb") as f:
        f.write(ProducerState(newest + 99).encode()[:7])
    again = open_log(directory, segment_bytes=2000)
    assert again.producer_state_load.snapshot_offset == newest
    assert not any(name.endswith(".tmp") for name in os.listdir(directory))
    again.close()


def test_snapshots_are_bounded_and_follow_the_log_start(tmp_path: Path) -> None:
    directory = str(tmp_path / "t-0")
    log = PartitionLog.open(
        directory, LogConfig(segment_bytes=1000, retention_bytes=3000), now_ms=TS
    )
    fill(log, 300)
    offsets = snapshot_offsets(directory)
    assert 0 < len(offsets) <= SNAPSHOTS_MAX and offsets[-1] == log.segment_base_offsets[-1]
    log.delete_old_segments(log.log_end_offset, now_ms=TS)
    assert all(o >= log.log_start_offset for o in snapshot_offsets(directory))
    assert all(
        b.last_offset >= log.log_start_offset
        for e in log.producer_state.producers.values()
        for b in e.batches
    )
    log.close()


def test_truncation_leaves_a_replay_that_appends_wait_for(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", segment_bytes=2000)
    fill(log, 120)
    log.truncate_to(150, now_ms=TS)
    assert log.producer_state_pending
    with pytest.raises(ProducerStateLoadingError):
        log.append(batch(1, 0, 0), 0, now_ms=TS)
    assert all(o <= 150 for o in snapshot_offsets(str(tmp_path / "t-0")))
    replay = log.plan_producer_state_replay()
    assert replay is not None
    state = replay.run()
    assert state is not None and log.install_producer_state(replay, state)
    assert replay.headers_scanned < 75  # from the snapshot of the last roll, not offset 0
    assert not log.producer_state_pending and log.producer_state.end_offset == 150
    entry = log.producer_state.producers[100 + 74 % 3]  # the last batch kept: offsets 148-149
    assert entry.batches[-1].last_offset == 149
    log.close()
