"""Transactions in storage (KIP-98): markers in Kafka's control-batch format, open transactions in
the producer state and its snapshots, the last stable offset, and the per-segment aborted-
transaction index (`.txnindex`) written with abort markers, cut with truncation and rebuilt after
a crash or when damaged."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import crc32c
import pytest

from strom.storage.batch_validation import validate_batches
from strom.storage.control_records import (
    TxnMarker,
    control_type,
    decode_marker,
    encode_marker,
)
from strom.storage.errors import CorruptRecordError, LogCorruptionError
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog
from strom.storage.producer_state import (
    ProducerState,
    ProducerStateError,
    snapshot_offsets,
)
from strom.storage.record_batch import (
    CONTROL_MASK,
    TRANSACTIONAL_MASK,
    BatchHeader,
    Record,
    encode_batch,
    parse_header,
)
from strom.storage.txn_index import AbortedTxn, TxnIndex

TS = 1_700_000_000_000
EPOCH = 0  # leader epoch


def txn_batch(pid: int, epoch: int, seq: int, count: int = 2) -> bytes:
    records = [Record(None, f"t{pid}-{seq + i}".encode(), (), TS) for i in range(count)]
    return encode_batch(
        records, producer_id=pid, producer_epoch=epoch, base_sequence=seq, is_transactional=True
    )


def plain_batch(count: int = 1) -> bytes:
    return encode_batch([Record(None, b"p", (), TS)] * count)


def open_log(path: Path, **config: int) -> PartitionLog:
    return PartitionLog.open(str(path), LogConfig(**config), now_ms=TS)


def abort(pid: int, epoch: int = 0) -> TxnMarker:
    return TxnMarker(pid, epoch, commit=False, coordinator_epoch=3)


def commit(pid: int, epoch: int = 0) -> TxnMarker:
    return TxnMarker(pid, epoch, commit=True, coordinator_epoch=3)


def txn_index_entries(log: PartitionLog) -> list[AbortedTxn]:
    return log.aborted_transactions(log.log_start_offset, log.log_end_offset + 1)


# ---- control records ------------------------------------------------------------------------


def test_a_marker_is_a_kafka_control_batch_and_decodes_back() -> None:
    data = encode_marker(abort(7, 2), TS)
    header = parse_header(data)
    assert header.attributes & CONTROL_MASK and header.attributes & TRANSACTIONAL_MASK
    assert (header.producer_id, header.producer_epoch, header.record_count) == (7, 2, 1)
    assert decode_marker(data) == abort(7, 2)
    assert decode_marker(encode_marker(commit(7, 2), TS)).commit
    # key: version 0, type 1 (COMMIT) as Kafka's ControlRecordType
    assert control_type(b"\x00\x00\x00\x01") == 1
    with pytest.raises(CorruptRecordError):
        control_type(b"\x00\x00\x00\x05")  # not a transaction marker type
    with pytest.raises(CorruptRecordError):
        decode_marker(plain_batch())


def test_clients_cannot_write_markers() -> None:
    with pytest.raises(CorruptRecordError, match="control"):
        validate_batches(
            encode_marker(commit(1), TS),
            max_message_bytes=1 << 20,
            now_ms=TS,
            timestamp_before_max_ms=1 << 62,
            timestamp_after_max_ms=1 << 62,
        )


# ---- producer state -------------------------------------------------------------------------


def header_at(data: bytes, offset: int) -> BatchHeader:
    return parse_header(data)._replace(base_offset=offset)


def test_open_transactions_bound_the_first_unstable_offset_and_markers_close_them() -> None:
    state = ProducerState()
    state.update(header_at(plain_batch(), 0))
    assert state.first_unstable_offset() is None
    state.update(header_at(txn_batch(1, 0, 0), 1))  # offsets 1-2
    state.update(header_at(txn_batch(2, 0, 0), 3))  # offsets 3-4
    state.update(header_at(txn_batch(1, 0, 2), 5))  # same transaction, no new start
    assert state.ongoing == {1: 1, 2: 3}
    assert state.first_unstable_offset() == 1
    done = state.update(header_at(encode_marker(abort(1), TS), 7), 0)
    # pid 2's transaction is still open: the LSO after this abort is its first offset
    assert done is not None and done.aborted
    assert (done.first_offset, done.last_offset, done.last_stable_offset) == (1, 7, 3)
    assert state.first_unstable_offset() == 3
    done = state.update(header_at(encode_marker(commit(2), TS), 8), 1)
    assert done is not None and not done.aborted and done.last_stable_offset == 9
    assert state.first_unstable_offset() is None and state.end_offset == 9


def test_a_non_transactional_batch_inside_an_open_transaction_is_refused() -> None:
    state = ProducerState()
    state.update(header_at(txn_batch(1, 0, 0), 0))
    idempotent = encode_batch(
        [Record(None, b"x", (), TS)], producer_id=1, producer_epoch=0, base_sequence=2
    )
    with pytest.raises(ProducerStateError, match="INVALID_TXN_STATE"):
        state.check([parse_header(idempotent)])


def test_a_marker_from_an_older_epoch_is_refused_and_a_newer_one_fences_the_zombie() -> None:
    state = ProducerState()
    state.update(header_at(txn_batch(1, 4, 0), 0))
    with pytest.raises(ProducerStateError, match="INVALID_PRODUCER_EPOCH"):
        state.check([parse_header(encode_marker(abort(1, 3), TS))])
    # the coordinator aborts with a bumped epoch (the producer was fenced)
    state.update(header_at(encode_marker(abort(1, 5), TS), 2), 0)
    assert state.producers[1].epoch == 5 and state.first_unstable_offset() is None
    with pytest.raises(ProducerStateError, match="INVALID_PRODUCER_EPOCH"):
        state.check([parse_header(txn_batch(1, 4, 2))])  # the zombie's next batch
    assert state.check([parse_header(txn_batch(1, 5, 0))]) == [None]  # the new instance


def test_snapshots_carry_open_transactions_and_version_1_snapshots_still_load() -> None:
    state = ProducerState()
    state.update(header_at(txn_batch(1, 0, 0), 0))
    state.update(header_at(txn_batch(2, 0, 0), 2))
    state.update(header_at(encode_marker(commit(2), TS), 4), 1)
    decoded = ProducerState.decode(state.encode(), "x")
    assert decoded.ongoing == {1: 0}
    assert decoded.as_tuples() == state.as_tuples() and decoded.end_offset == 5
    # a version-1 snapshot: the same body without the ongoing array
    old = ProducerState()
    old.update(header_at(plain_batch(), 0))
    old.update(header_at(txn_batch(3, 0, 0), 1))
    old.ongoing.clear()
    body = old.encode()[6:-4]  # strip version+crc prefix and the empty ongoing count
    v1 = struct.pack(">hI", 1, crc32c.crc32c(body)) + body
    assert ProducerState.decode(v1, "x").as_tuples() == old.as_tuples()
    with pytest.raises(LogCorruptionError):
        ProducerState.decode(state.encode()[:-3], "x")


# ---- partition log --------------------------------------------------------------------------


def test_the_leader_refuses_transactional_batches_of_unregistered_producers(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    with pytest.raises(ProducerStateError, match="INVALID_TXN_STATE"):
        log.append(txn_batch(1, 0, 0), EPOCH, now_ms=TS)
    assert log.log_end_offset == 0
    log.append(txn_batch(1, 0, 0), EPOCH, now_ms=TS, transactional_producers={(1, 0)})
    assert log.log_end_offset == 2
    log.close()


def test_lso_index_and_aborted_transactions_through_the_log(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(plain_batch(), EPOCH, now_ms=TS)  # 0
    log.append(txn_batch(1, 0, 0), EPOCH, now_ms=TS, transactional_producers={(1, 0)})  # 1-2
    log.append(txn_batch(2, 0, 0), EPOCH, now_ms=TS, transactional_producers={(2, 0)})  # 3-4
    assert log.last_stable_offset(high_watermark=5) == 1
    assert log.last_stable_offset(high_watermark=0) == 0  # never above the HW
    log.append_markers([abort(1)], EPOCH, now_ms=TS)  # 5
    assert log.last_stable_offset(high_watermark=6) == 3
    log.append_markers([commit(2)], EPOCH, now_ms=TS)  # 6
    assert log.last_stable_offset(high_watermark=7) == 7
    assert txn_index_entries(log) == [AbortedTxn(1, 1, 5, 3)]
    assert log.aborted_transactions(6, 7) == []  # wholly before the fetch
    assert log.aborted_transactions(0, 1) == []  # begins at or after the fetch's end
    index_path = tmp_path / f"{0:020d}.txnindex"
    assert index_path.stat().st_size == 34
    log.append(txn_batch(1, 0, 2), EPOCH, now_ms=TS, transactional_producers={(1, 0)})  # 7-8
    assert log.first_unstable_offset() == 7  # the producer's next transaction
    log.append_markers([abort(1, 1)], EPOCH, now_ms=TS)  # 9: the coordinator fenced epoch 0
    assert txn_index_entries(log)[-1] == AbortedTxn(1, 7, 9, 10)
    with pytest.raises(ProducerStateError, match="INVALID_PRODUCER_EPOCH"):
        log.append_markers([abort(1, 0)], EPOCH, now_ms=TS)  # from a fenced coordinator's view
    assert log.log_end_offset == 10
    log.close()


def test_an_abort_in_a_later_segment_is_found_from_the_first_one(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=400)
    log.append(txn_batch(1, 0, 0), EPOCH, now_ms=TS, transactional_producers={(1, 0)})
    for _ in range(8):
        log.append(plain_batch(), EPOCH, now_ms=TS)
    assert len(log.segment_base_offsets) > 1
    log.append_markers([abort(1)], EPOCH, now_ms=TS)
    marker = log.log_end_offset - 1
    assert log.aborted_transactions(0, 1) == [AbortedTxn(1, 0, marker, marker + 1)]
    assert not (tmp_path / f"{0:020d}.txnindex").exists()  # the entry lives with the marker
    log.close()


def test_truncation_removes_aborts_and_reopens_the_transaction(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(txn_batch(1, 0, 0), EPOCH, now_ms=TS, transactional_producers={(1, 0)})  # 0-1
    log.append_markers([abort(1)], EPOCH, now_ms=TS)  # 2
    assert len(txn_index_entries(log)) == 1
    log.truncate_to(2, now_ms=TS)
    log.load_producer_state()
    assert txn_index_entries(log) == []
    assert not (tmp_path / f"{0:020d}.txnindex").exists()
    assert log.first_unstable_offset() == 0  # the transaction is open again
    log.close()


@pytest.mark.parametrize("clean", [True, False])
def test_open_transactions_and_aborts_survive_reopening(tmp_path: Path, clean: bool) -> None:
    log = open_log(tmp_path, segment_bytes=500)
    log.append(txn_batch(1, 0, 0), EPOCH, now_ms=TS, transactional_producers={(1, 0)})
    log.append(txn_batch(2, 0, 0), EPOCH, now_ms=TS, transactional_producers={(2, 0)})
    for _ in range(6):
        log.append(plain_batch(), EPOCH, now_ms=TS)
    log.append_markers([abort(1)], EPOCH, now_ms=TS)
    log.append(txn_batch(3, 0, 0), EPOCH, now_ms=TS, transactional_producers={(3, 0)})
    log.append_markers([abort(3)], EPOCH, now_ms=TS)
    expected = txn_index_entries(log)
    assert len(expected) == 2 and snapshot_offsets(str(tmp_path))
    log.close(clean=clean)
    again = open_log(tmp_path, segment_bytes=500)
    assert again.first_unstable_offset() == 2  # pid 2's transaction is still open
    assert txn_index_entries(again) == expected
    again.close()


def test_a_crash_that_lost_txn_index_entries_is_repaired_by_the_replay(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(txn_batch(1, 0, 0), EPOCH, now_ms=TS, transactional_producers={(1, 0)})
    log.append_markers([abort(1)], EPOCH, now_ms=TS)
    expected = txn_index_entries(log)
    log.close(clean=False)
    os.remove(tmp_path / f"{0:020d}.txnindex")  # the write never reached the disk
    again = open_log(tmp_path)
    assert txn_index_entries(again) == expected
    assert (tmp_path / f"{0:020d}.txnindex").stat().st_size == 34
    again.close()


def test_a_damaged_txn_index_is_rebuilt_from_the_log_start(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=400)
    log.append(txn_batch(1, 0, 0), EPOCH, now_ms=TS, transactional_producers={(1, 0)})
    log.append_markers([abort(1)], EPOCH, now_ms=TS)
    for _ in range(8):
        log.append(plain_batch(), EPOCH, now_ms=TS)
    assert len(log.segment_base_offsets) > 1
    expected = txn_index_entries(log)
    log.close()  # clean: a snapshot at the end, newer than the abort
    with open(tmp_path / f"{0:020d}.txnindex", "ab") as f:
        f.write(b"\x01\x02")  # no longer a multiple of 34 bytes
    again = open_log(tmp_path, segment_bytes=400)
    assert txn_index_entries(again) == expected
    assert again.producer_state_load.snapshot_offset is None  # replayed from the log start
    again.close()


def test_txn_index_file_round_trip_and_damage(tmp_path: Path) -> None:
    index = TxnIndex(str(tmp_path / "x.txnindex"))
    index.append(AbortedTxn(1, 0, 5, 3))
    index.append(AbortedTxn(2, 4, 9, 10))
    with pytest.raises(ValueError):
        index.append(AbortedTxn(3, 0, 9, 10))  # not after the last marker
    loaded = TxnIndex(index.path)
    loaded.load()
    assert loaded.entries == index.entries
    loaded.truncate_to(9)
    reloaded = TxnIndex(index.path)
    reloaded.load()
    assert reloaded.entries == [AbortedTxn(1, 0, 5, 3)]
    with open(index.path, "r+b") as f:
        f.write(b"\x00\x07")  # version 7
    with pytest.raises(LogCorruptionError):
        reloaded.load()


def test_compaction_never_lets_an_aborted_record_supersede_a_committed_one(
    tmp_path: Path,
) -> None:
    from strom.storage.log_cleaner import clean_log
    from strom.storage.record_decode import decode_batches

    log = open_log(tmp_path, segment_bytes=300)
    log.append(encode_batch([Record(b"k", b"committed", (), TS)]), EPOCH, now_ms=TS)  # 0
    aborted = encode_batch(
        [Record(b"k", b"aborted", (), TS)], producer_id=1, producer_epoch=0, base_sequence=0,
        is_transactional=True,
    )  # fmt: skip
    log.append(aborted, EPOCH, now_ms=TS, transactional_producers={(1, 0)})  # 1
    log.append_markers([abort(1)], EPOCH, now_ms=TS)  # 2
    for i in range(6):
        log.append(encode_batch([Record(b"other", b"%d" % i, (), TS)]), EPOCH, now_ms=TS)
    assert len(log.segment_base_offsets) > 2
    clean_log(log, log.log_end_offset, now_ms=TS, delete_retention_ms=0)
    values = [
        (r.offset, r.value)
        for r in decode_batches(log.read(0, 1 << 20, max_offset=log.log_end_offset))
    ]
    assert (0, b"committed") in values  # on main: removed for the aborted offset-1 record
    assert (1, b"aborted") in values  # kept, still named by the txn index for readers
    log.close()


def test_a_follower_builds_the_same_transaction_state_from_the_leaders_bytes(
    tmp_path: Path,
) -> None:
    leader = open_log(tmp_path / "leader")
    leader.append(txn_batch(1, 0, 0), EPOCH, now_ms=TS, transactional_producers={(1, 0)})
    leader.append(txn_batch(2, 0, 0), EPOCH, now_ms=TS, transactional_producers={(2, 0)})
    leader.append_markers([abort(1)], EPOCH, now_ms=TS)
    follower = open_log(tmp_path / "follower")
    follower.append_as_follower(leader.read(0, 1 << 20), now_ms=TS)
    assert txn_index_entries(follower) == txn_index_entries(leader) == [AbortedTxn(1, 0, 4, 2)]
    assert follower.first_unstable_offset() == leader.first_unstable_offset() == 2
    leader.close()
    follower.close()


def test_a_torn_abort_marker_is_cut_by_recovery_with_its_index_entry(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(txn_batch(1, 0, 0), EPOCH, now_ms=TS, transactional_producers={(1, 0)})  # 0-1
    log.append_markers([abort(1)], EPOCH, now_ms=TS)  # 2
    assert len(txn_index_entries(log)) == 1
    log.close(clean=False)
    segment = tmp_path / f"{0:020d}.log"
    os.truncate(segment, segment.stat().st_size - 5)  # the marker's last bytes never landed
    again = open_log(tmp_path)
    assert again.log_end_offset == 2
    assert txn_index_entries(again) == []
    assert again.first_unstable_offset() == 0  # the transaction is undecided again
    again.close()


def test_a_follower_refuses_an_unreadable_marker_before_writing_anything(tmp_path: Path) -> None:
    leader = open_log(tmp_path / "leader")
    leader.append(txn_batch(1, 0, 0), EPOCH, now_ms=TS, transactional_producers={(1, 0)})
    good = leader.read(0, 1 << 20)
    # a control batch whose record is not a transaction marker (key type 5)
    bad = encode_batch(
        [Record(b"\x00\x00\x00\x05", b"\x00\x00\x00\x00\x00\x00", (), TS)],
        producer_id=1, producer_epoch=0, is_transactional=True, is_control=True, base_offset=2,
    )  # fmt: skip
    follower = open_log(tmp_path / "follower")
    with pytest.raises(CorruptRecordError):
        follower.append_as_follower(good + bad, now_ms=TS)
    assert follower.log_end_offset == 0
    follower.append_as_follower(good, now_ms=TS)
    assert follower.first_unstable_offset() == 0
    leader.close()
    follower.close()
