"""PartitionLog: appends as leader and follower, reads, truncation, rolls, indexes, retention,
recovery and the topic id (DESIGN.md §4)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from kafka.record.default_records import DefaultRecordBatch

from strom.storage.errors import (
    CorruptRecordError,
    InconsistentTopicIdError,
    LogCorruptionError,
    OffsetOutOfRangeError,
    UnexpectedAppendOffsetError,
)
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import Record, encode_batch, parse_header
from strom.storage.record_decode import decode_batches

TS = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000


def batch(n: int = 3, ts: int = TS, tag: str = "v", compression: int = 0) -> bytes:
    return encode_batch(
        [Record(None, f"{tag}-{i}".encode(), (), ts + i) for i in range(n)],
        compression=compression,
    )


def open_log(path: Path, **config: int) -> PartitionLog:
    return PartitionLog.open(str(path), LogConfig(**config), now_ms=TS)


def values(data: bytes) -> list[bytes | None]:
    return [r.value for r in decode_batches(data)]


def test_leader_append_assigns_offsets_and_epoch_and_reads_back(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    first = log.append(batch(3, tag="a"), leader_epoch=5, now_ms=TS)
    second = log.append(batch(2, tag="b", compression=1) + batch(1, tag="c"), 5, now_ms=TS)
    assert (first.first_offset, first.last_offset, first.record_count) == (0, 2, 3)
    assert (second.first_offset, second.last_offset, second.batch_count) == (3, 5, 2)
    assert first.max_timestamp == TS + 2
    data = log.read(0, 1 << 20)
    offsets = []
    pos = 0
    while pos < len(data):
        kafka = DefaultRecordBatch(data[pos : pos + parse_header(data, pos).size_in_bytes])
        assert kafka.validate_crc() and kafka.leader_epoch == 5
        offsets += [r.offset for r in kafka]
        pos += parse_header(data, pos).size_in_bytes
    assert offsets == list(range(6))
    assert values(data) == [b"a-0", b"a-1", b"a-2", b"b-0", b"b-1", b"c-0"]
    assert log.log_end_offset == 6 and log.log_start_offset == 0
    assert log.leader_epoch_cache.entries == ((5, 0),)


def test_read_starts_at_the_batch_containing_the_offset_and_returns_whole_batches(
    tmp_path: Path,
) -> None:
    log = open_log(tmp_path / "t-0", index_interval_bytes=1)
    sizes = [len(batch(4, tag=str(i))) for i in range(10)]
    for i in range(10):
        log.append(batch(4, tag=str(i)), 0, now_ms=TS)
    data = log.read(6, 1)  # inside batch 1; at least one batch even if max_bytes is tiny
    assert parse_header(data).base_offset == 4 and len(data) == sizes[1]
    data = log.read(6, sizes[1] + sizes[2] + 5)
    assert len(data) == sizes[1] + sizes[2]
    assert decode_batches(data)[0].offset == 4 and decode_batches(data)[-1].offset == 11
    assert log.read(40, 100) == b""
    # max_offset (the high watermark) excludes any batch not wholly below it
    assert decode_batches(log.read(0, 1 << 20, max_offset=9))[-1].offset == 7
    assert log.read(8, 1 << 20, max_offset=9) == b""
    assert log.read(8, 1 << 20, max_offset=8) == b""
    with pytest.raises(OffsetOutOfRangeError) as info:
        log.read(41, 100)
    assert info.value.error_name == "OFFSET_OUT_OF_RANGE"


def test_bad_batches_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append(batch(), 0, now_ms=TS)
    good = bytearray(batch())
    bad = bytearray(batch())
    bad[-1] ^= 0xFF
    size_before = log.size_in_bytes
    with pytest.raises(CorruptRecordError) as info:
        log.append(bytes(good + bad), 0, now_ms=TS)
    assert info.value.error_name == "CORRUPT_MESSAGE"
    with pytest.raises(CorruptRecordError) as info:
        PartitionLog.append(log, batch(ts=TS + 2 * 3600 * 1000), 0, now_ms=TS)
    assert info.value.error_name == "INVALID_TIMESTAMP"
    assert log.size_in_bytes == size_before and log.log_end_offset == 3
    small = open_log(tmp_path / "t-1", max_message_bytes=100)
    with pytest.raises(CorruptRecordError) as info:
        small.append(batch(20), 0, now_ms=TS)
    assert info.value.error_name == "MESSAGE_TOO_LARGE"


def test_follower_append_keeps_offsets_and_never_goes_backwards(tmp_path: Path) -> None:
    leader = open_log(tmp_path / "leader")
    for epoch in (1, 1, 3):
        leader.append(batch(2), epoch, now_ms=TS)
    follower = open_log(tmp_path / "follower")
    info = follower.append_as_follower(leader.read(0, 1 << 20), now_ms=TS)
    assert (info.first_offset, info.last_offset) == (0, 5)
    assert follower.read(0, 1 << 20) == leader.read(0, 1 << 20)
    assert follower.leader_epoch_cache.entries == ((1, 0), (3, 4))
    with pytest.raises(UnexpectedAppendOffsetError):
        follower.append_as_follower(leader.read(2, 1 << 20), now_ms=TS)
    leader.append(batch(1), 3, now_ms=TS)
    tail = leader.read(6, 1 << 20)
    with pytest.raises(CorruptRecordError):
        follower.append_as_follower(tail[:-1], now_ms=TS)
    assert follower.log_end_offset == 6
    follower.append_as_follower(tail, now_ms=TS)
    assert follower.log_end_offset == 7
    # A gap is allowed (compaction removed whole batches on the leader); going back is not.
    gap = bytearray(tail)
    struct.pack_into(">q", gap, 0, 9)
    follower.append_as_follower(bytes(gap), now_ms=TS)
    assert follower.log_end_offset == 10
    back = bytearray(tail)
    struct.pack_into(">q", back, 0, 8)
    with pytest.raises(UnexpectedAppendOffsetError):
        follower.append_as_follower(bytes(back), now_ms=TS)


def test_truncate_to_removes_whole_batches_and_epochs(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", segment_bytes=400)
    for epoch in range(6):
        log.append(batch(3, tag=f"e{epoch}"), epoch, now_ms=TS)
    assert len(log.segment_base_offsets) > 1
    assert log.truncate_to(10, now_ms=TS) == 9  # offset 10 is inside batch [9, 11]
    assert log.log_end_offset == 9
    assert [e.epoch for e in log.leader_epoch_cache.entries] == [0, 1, 2]
    assert log.read(9, 100) == b""
    assert values(log.read(6, 100)) == [b"e2-0", b"e2-1", b"e2-2"]
    assert log.truncate_to(3, now_ms=TS) == 3 and log.segment_base_offsets[-1] <= 3
    log.load_producer_state()  # appends wait for the producer state of the shorter log
    assert log.append(batch(1), 7, now_ms=TS).first_offset == 3
    assert log.leader_epoch_cache.entries[-1] == (7, 3)
    log.truncate_fully_and_start_at(100, now_ms=TS)
    assert (log.log_start_offset, log.log_end_offset, log.segment_base_offsets) == (
        100,
        100,
        (100,),
    )
    assert log.leader_epoch_cache.entries == ()
    with pytest.raises(OffsetOutOfRangeError):
        log.read(99, 100)
    assert log.append(batch(1), 8, now_ms=TS).first_offset == 100


def test_segments_roll_by_size_and_age_with_kafka_file_names(tmp_path: Path) -> None:
    one = len(batch())
    log = open_log(tmp_path / "t-0", segment_bytes=3 * one, segment_ms=DAY_MS)
    for _ in range(7):
        log.append(batch(), 0, now_ms=TS)
    assert log.segment_base_offsets == (0, 9, 18)
    names = sorted(os.listdir(tmp_path / "t-0"))
    assert "00000000000000000009.log" in names and "00000000000000000009.index" in names
    assert "00000000000000000009.timeindex" in names
    # segment.ms: by record timestamps, the first batch of the segment vs. the incoming one
    log.append(batch(ts=TS + DAY_MS + 1), 0, now_ms=TS + DAY_MS)
    assert log.segment_base_offsets == (0, 9, 18, 21)
    assert log.recovery_point == 21  # finished segments are fsynced on roll


def test_index_files_use_kafka_formats(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", index_interval_bytes=100)
    for i in range(20):
        log.append(batch(5, ts=TS + 10 * i), 0, now_ms=TS)
    log.close()
    index = (tmp_path / "t-0" / "00000000000000000000.index").read_bytes()
    time_index = (tmp_path / "t-0" / "00000000000000000000.timeindex").read_bytes()
    assert index and len(index) % 8 == 0 and time_index and len(time_index) % 12 == 0
    log_bytes = (tmp_path / "t-0" / "00000000000000000000.log").read_bytes()
    for rel, pos in struct.iter_unpack(">ii", index):
        header = parse_header(log_bytes, pos)  # each entry points at a batch ...
        assert header.last_offset == rel  # ... keyed by its last offset (Kafka's rule)
    last_ts = -1
    for ts, rel in struct.iter_unpack(">qi", time_index):
        assert ts > last_ts and ts == TS + 10 * (rel // 5) + 4
        last_ts = ts


def test_offset_for_timestamp_finds_the_first_record_at_or_after(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", segment_bytes=500, index_interval_bytes=50)
    stamps = [TS + 100, TS + 50, TS + 300, TS + 200, TS + 300, TS + 900]
    for i, ts in enumerate(stamps):
        log.append(
            encode_batch([Record(None, b"x", (), ts), Record(None, b"y", (), ts + 1)]),
            0,
            now_ms=TS + 1000,
        )
        assert log.log_end_offset == 2 * i + 2
    assert log.offset_for_timestamp(TS) == (TS + 100, 0)
    assert log.offset_for_timestamp(TS + 101) == (TS + 101, 1)
    assert log.offset_for_timestamp(TS + 150) == (TS + 300, 4)
    assert log.offset_for_timestamp(TS + 301) == (TS + 301, 5)
    assert log.offset_for_timestamp(TS + 302) == (TS + 900, 10)
    assert log.offset_for_timestamp(TS + 902) is None
    log.close()
    assert open_log(tmp_path / "t-0").offset_for_timestamp(TS + 150) == (TS + 300, 4)


def test_retention_by_time_deletes_whole_segments_below_the_high_watermark(
    tmp_path: Path,
) -> None:
    one = len(batch())
    log = open_log(tmp_path / "t-0", segment_bytes=2 * one, retention_ms=DAY_MS)
    for day in range(5):  # two batches per segment, one segment per day
        for _ in range(2):
            log.append(batch(ts=TS + day * DAY_MS), 0, now_ms=TS + day * DAY_MS)
    assert log.segment_base_offsets == (0, 6, 12, 18, 24)
    now = TS + 2 * DAY_MS + 10  # segments of days 0, 1 expired
    assert log.delete_old_segments(high_watermark=6, now_ms=now) == 1  # HW holds day 1 back
    assert log.segment_base_offsets == (6, 12, 18, 24) and log.log_start_offset == 6
    assert log.delete_old_segments(high_watermark=30, now_ms=now) == 1
    assert log.log_start_offset == 12
    with pytest.raises(OffsetOutOfRangeError):
        log.read(11, 100)
    # the active segment expires too: it is rolled first, so the log stays appendable
    assert log.delete_old_segments(high_watermark=30, now_ms=TS + 10 * DAY_MS) == 3
    assert log.segment_base_offsets == (30,) and log.log_start_offset == 30
    assert log.log_end_offset == 30 and log.read(30, 100) == b""
    assert log.append(batch(), 0, now_ms=TS).first_offset == 30
    log.close()
    assert open_log(tmp_path / "t-0").log_start_offset == 30


def test_retention_by_bytes(tmp_path: Path) -> None:
    one = len(batch())
    log = open_log(
        tmp_path / "t-0", segment_bytes=2 * one, retention_bytes=3 * one, retention_ms=-1
    )
    for _ in range(7):
        log.append(batch(), 0, now_ms=TS)
    assert log.size_in_bytes == 7 * one
    assert log.delete_old_segments(high_watermark=21, now_ms=TS) == 2
    assert log.size_in_bytes == 3 * one and log.log_start_offset == 12


def test_log_start_offset_moves_and_persists(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append(batch(), 1, now_ms=TS)
    log.append(batch(), 2, now_ms=TS)
    assert log.maybe_increment_log_start_offset(4)
    assert log.leader_epoch_cache.entries == ((2, 4),)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(3, 100)
    assert decode_batches(log.read(4, 100))[0].offset == 3  # the whole batch holding 4
    log.close()
    assert open_log(tmp_path / "t-0").log_start_offset == 4


def test_clean_reopen_keeps_everything(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", segment_bytes=300, index_interval_bytes=64)
    for i in range(30):
        log.append(batch(2, tag=str(i)), i // 10, now_ms=TS)
    before = [log.read(o, 1 << 20) for o in range(60)]
    segments, epochs = log.segment_base_offsets, log.leader_epoch_cache.entries
    log.close()
    again = open_log(tmp_path / "t-0", segment_bytes=300, index_interval_bytes=64)
    assert again.open_info.clean_shutdown and again.open_info.recovered_segments == 0
    assert [again.read(o, 1 << 20) for o in range(60)] == before
    assert again.segment_base_offsets == segments
    assert again.leader_epoch_cache.entries == epochs
    assert not (tmp_path / "t-0" / ".clean-shutdown").exists()  # a later crash is seen


def test_unclean_reopen_truncates_garbage_tail_and_rebuilds_indexes(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", index_interval_bytes=64)
    for i in range(20):
        log.append(batch(2, tag=str(i)), 0, now_ms=TS)
    expected = log.read(0, 1 << 20)
    log.close(clean=False)
    seg = tmp_path / "t-0" / "00000000000000000000.log"
    with seg.open("ab") as f:
        f.write(b"\x00\x00\x00\x00\x00\x00\x00\x28garbage-garbage")
    (tmp_path / "t-0" / "00000000000000000000.index").write_bytes(b"\x00\x00\x00\x07" * 5)
    again = open_log(tmp_path / "t-0", index_interval_bytes=64)
    assert not again.open_info.clean_shutdown and again.open_info.truncated_bytes == 23
    assert again.log_end_offset == 40
    assert again.read(0, 1 << 20) == expected
    assert [again.read(o, 1)[:8] for o in range(0, 40, 2)] == [
        struct.pack(">q", o) for o in range(0, 40, 2)
    ]
    assert seg.stat().st_size == len(expected)


def test_corruption_below_the_recovery_point_is_reported_not_served(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", segment_bytes=500)
    for i in range(20):
        log.append(batch(2, tag=str(i)), 0, now_ms=TS)
    log.flush()
    log.close(clean=False)
    seg = tmp_path / "t-0" / "00000000000000000000.log"
    raw = bytearray(seg.read_bytes())
    second = parse_header(raw, 0).size_in_bytes
    raw[second + 70] ^= 0x10  # inside the second batch's records
    seg.write_bytes(bytes(raw))
    again = open_log(tmp_path / "t-0", segment_bytes=500)
    assert again.read(0, 1) == bytes(raw[:second])  # the first batch is intact
    with pytest.raises(LogCorruptionError) as info:
        again.read(2, 1 << 20)
    assert info.value.path == str(seg) and info.value.position == second
    assert str(seg) in str(info.value) and f"byte {second}" in str(info.value)
    with pytest.raises(LogCorruptionError):
        again.check_integrity()


def test_topic_id_mismatch_is_detected(tmp_path: Path) -> None:
    log = PartitionLog.open(str(tmp_path / "t-0"), now_ms=TS, topic_id="old-id")
    log.close()
    with pytest.raises(InconsistentTopicIdError) as info:
        PartitionLog.open(str(tmp_path / "t-0"), now_ms=TS, topic_id="new-id")
    assert info.value.error_name == "INCONSISTENT_TOPIC_ID"
    assert PartitionLog.open(str(tmp_path / "t-0"), now_ms=TS, topic_id="old-id").topic_id == (
        "old-id"
    )
