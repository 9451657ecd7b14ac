"""Log compaction (storage/log_cleaner.py) against a model: after random appends over a small key
space (with null keys, tombstones, compression and rolls) and a clean below a random bound, the
cleaned range holds exactly the latest record per key (null keys kept, tombstones dropped only
once older than delete.retention.ms), everything above is untouched, offsets are preserved, every
batch decodes with our decoder and kafka-python's (CRC valid), and reopening keeps the result.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch

from strom.storage import log_cleaner
from strom.storage.batch_validation import split_batches
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import Compression, Record, encode_batch, parse_header
from strom.storage.record_decode import decode_batch

NOW_MS = 1_700_000_000_000
RETENTION_MS = 60_000
CONFIG = LogConfig(segment_bytes=600, index_interval_bytes=64)

KEYS = st.one_of(st.none(), st.sampled_from([b"a", b"b", b"c", b"d", b"e"]))
RECORD = st.tuples(KEYS, st.one_of(st.none(), st.binary(min_size=0, max_size=12)))
BATCH = st.tuples(
    st.lists(RECORD, min_size=1, max_size=5),
    st.booleans(),  # gzip
    st.booleans(),  # old: tombstones in it have expired
    st.booleans(),  # roll after it
)


@dataclass(frozen=True)
class Row:
    offset: int
    key: bytes | None
    value: bytes | None
    expired: bool


def _write(directory: str, batches: list) -> tuple[PartitionLog, list[Row]]:
    log = PartitionLog.open(directory, CONFIG, now_ms=NOW_MS)
    rows: list[Row] = []
    for records, gzip, old, roll in batches:
        ts = NOW_MS - 2 * RETENTION_MS if old else NOW_MS
        encoded = [Record(k, v, (("h", b"x"),) if v == b"" else (), ts) for k, v in records]
        compression = Compression.GZIP if gzip else Compression.NONE
        info = log.append(encode_batch(encoded, compression=compression), 3, now_ms=NOW_MS)
        rows += [Row(info.first_offset + i, k, v, old) for i, (k, v) in enumerate(records)]
        if roll:
            log.roll(now_ms=NOW_MS)
    return log, rows


def _expected(rows: list[Row], cleaned_end: int) -> list[Row]:
    latest = {r.key: r.offset for r in rows if r.offset < cleaned_end and r.key is not None}

    def keep(r: Row) -> bool:
        if r.offset >= cleaned_end or r.key is None:
            return True
        return latest[r.key] == r.offset and not (r.value is None and r.expired)

    return [r for r in rows if keep(r)]


def _read_all(log: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every record, reading front to back by batch next offsets; each batch is also parsed
    by kafka-python's DefaultRecordBatch with a valid CRC and the same records."""
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        if not data:
            # Cleaning removed every record from `offset` to the end of the log (no later
            # record exists yet): a reader has nothing to skip to, as in Kafka. Any later
            # segment holding records would have been read instead.
            assert not any(log.read(b, 1 << 20) for b in log.segment_base_offsets if b > offset)
            break
        for position, size in split_batches(data):
            header = parse_header(data, position)
            _, records = decode_batch(data, position)
            assert 1 <= len(records) == header.record_count <= header.last_offset_delta + 1
            oracle = DefaultRecordBatch(data[position : position + size])
            assert oracle.validate_crc()
            assert oracle.base_offset == header.base_offset
            theirs = [(r.offset, r.key, r.value) for r in oracle]
            ours = [(r.offset, r.key, r.value) for r in records]
            assert theirs == ours
            assert all(header.base_offset <= o <= header.last_offset for o, _, _ in ours)
            out += [o for o in ours if o[0] >= offset]
            offset = header.next_offset
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(BATCH, min_size=1, max_size=40), st.floats(0, 1.2), st.booleans())
def test_clean_keeps_latest_per_key_and_preserves_offsets(
    batches: list, bound_fraction: float, clean_reopen: bool
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        log, rows = _write(directory, batches)
        end_before = log.log_end_offset
        bound = int(end_before * bound_fraction)
        cleanable = log.cleanable_segments(bound)
        bases = log.segment_base_offsets
        cleaned_end = bases[len(cleanable)] if cleanable else 0
        stats = log_cleaner.clean_log(log, bound, now_ms=NOW_MS, delete_retention_ms=RETENTION_MS)
        expected = [(r.offset, r.key, r.value) for r in _expected(rows, cleaned_end)]
        assert stats.records_removed == len(rows) - len(expected)
        assert stats.bytes_after <= stats.bytes_before
        assert log.log_end_offset == end_before and log.log_start_offset == 0
        assert log.segment_base_offsets[0] == 0
        assert _read_all(log) == expected
        log.check_integrity()
        # Cleaning again below the same bound changes nothing.
        again = log_cleaner.clean_log(log, bound, now_ms=NOW_MS, delete_retention_ms=RETENTION_MS)
        assert again.records_removed == 0 and _read_all(log) == expected
        log.close(clean=clean_reopen)
        assert not [n for n in os.listdir(directory) if n.endswith(".cleaned")]
        reopened = PartitionLog.open(directory, CONFIG, now_ms=NOW_MS)
        assert reopened.log_end_offset == end_before
        assert _read_all(reopened) == expected
        # The log keeps working: appends after a clean land at the old log end.
        info = reopened.append(encode_batch([Record(b"a", b"z", (), NOW_MS)]), 4, now_ms=NOW_MS)
        assert info.first_offset == end_before
        reopened.close()


def test_tombstones_wait_for_delete_retention(tmp_path: object) -> None:
    directory = str(tmp_path)
    log, _ = _write(
        directory,
        [([(b"a", b"1"), (b"a", None)], False, False, True), ([(b"b", b"2")], False, False, True)],
    )
    log_cleaner.clean_log(log, 10, now_ms=NOW_MS, delete_retention_ms=RETENTION_MS)
    assert _read_all(log) == [(1, b"a", None), (2, b"b", b"2")]
    later = NOW_MS + RETENTION_MS + 1
    stats = log_cleaner.clean_log(log, 10, now_ms=later, delete_retention_ms=RETENTION_MS)
    assert stats.records_removed == 1
    assert _read_all(log) == [(2, b"b", b"2")]
    # The first segment stays (emptied) so the log start offset does not move.
    assert log.segment_base_offsets[0] == 0 and log.log_start_offset == 0
    log.close()


def test_full_offset_map_cleans_only_the_mapped_prefix(tmp_path: object) -> None:
    directory = str(tmp_path)
    batches = [([(k, b"v")], False, False, True) for k in (b"a", b"b", b"a", b"c", b"a", b"b")]
    log, _ = _write(directory, batches)
    stats = log_cleaner.clean_log(
        log, 6, now_ms=NOW_MS, delete_retention_ms=RETENTION_MS, offset_map_entries_max=2
    )
    # Keys a, b fill the map; segment 3 (key c) is not mapped whole, so segments 0..2 are the
    # only ones cleaned: offset 0 (a, superseded by 2) is the only record removed.
    assert stats.records_removed == 1
    assert [o for o, _, _ in _read_all(log)] == [1, 2, 3, 4, 5]
    log.close()


def test_open_removes_leftover_cleaned_files(tmp_path: object) -> None:
    directory = str(tmp_path)
    rolled = [
        ([(b"a", b"1"), (b"c", b"9")], False, False, True),
        ([(b"a", b"2")], False, False, True),
    ]
    log, _ = _write(directory, [*rolled, ([(b"b", b"3")], False, False, False)])
    plan = log_cleaner.plan_clean(log, 4, now_ms=NOW_MS, delete_retention_ms=RETENTION_MS)
    cleaned = log_cleaner.write_cleaned(plan)  # written, never swapped in: a crash here
    assert cleaned[0].records_removed == 1 and cleaned[0].cleaned_path is not None
    assert os.path.exists(cleaned[0].cleaned_path)
    log.close(clean=False)
    reopened = PartitionLog.open(directory, CONFIG, now_ms=NOW_MS)
    assert not [n for n in os.listdir(directory) if n.endswith((".cleaned", ".tmp"))]
    assert _read_all(reopened) == [
        (0, b"a", b"1"),
        (1, b"c", b"9"),
        (2, b"a", b"2"),
        (3, b"b", b"3"),
    ]
    reopened.close()


def test_swap_is_refused_when_the_segment_changed(tmp_path: object) -> None:
    directory = str(tmp_path)
    log, _ = _write(
        directory, [([(b"a", b"1")], False, False, True), ([(b"a", b"2")], False, False, True)]
    )
    plan = log_cleaner.plan_clean(log, 2, now_ms=NOW_MS, delete_retention_ms=RETENTION_MS)
    cleaned = log_cleaner.write_cleaned(plan)
    log.truncate_to(0, now_ms=NOW_MS)  # a follower truncation meanwhile
    stats = log_cleaner.swap_in(log, cleaned)
    assert stats.segments_cleaned == 0
    assert not [n for n in os.listdir(directory) if n.endswith(".cleaned")]
    assert log.log_end_offset == 0
    log.close()
