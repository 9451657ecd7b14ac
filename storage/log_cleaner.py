"""Log compaction (`cleanup.policy=compact`), with the semantics of Kafka's LogCleaner.

What a clean does, given a bound (exclusive; the broker passes min(high watermark, active
segment base offset)):

1. The *cleanable* segments are those lying entirely below the bound; the active segment never
   is. Over them a map key → latest offset is built (records with a null key are not mapped).
   The map holds at most `offset_map_entries_max` keys: when it fills, only the segments fully
   mapped before it filled are cleaned (the rest wait for the next pass), so memory is bounded.
2. Each cleanable segment is rewritten keeping a record when its key is null, or when its offset
   is the latest for its key — except a tombstone (null value), which is dropped once its batch's
   largest timestamp is more than `delete_retention_ms` before `now_ms` (time is passed in).
3. Offsets never change. A batch keeps its header (baseOffset, lastOffsetDelta, leader epoch,
   producer id/epoch/baseSequence, timestamps, attributes) and only its kept records with their
   original offset deltas (`record_batch.encode_retained`): recordCount shrinks, deltas stop
   being contiguous, the CRC is recomputed. A batch with nothing kept disappears; one with
   everything kept is copied byte for byte. Control batches are copied whole.
   Transactions: the bound never passes the last stable offset (the broker's part), so every
   transactional batch cleaned is decided. A batch of an aborted transaction (found in the txn
   indexes, `CleanPlan.aborted`) is neither mapped (its records must not supersede committed
   ones of the same keys: read_committed readers drop them, and the key would vanish) nor
   cleaned: it is copied whole. (Kafka drops aborted data and, later, markers; not done yet.)
4. A segment with nothing kept is deleted, except the first one, which stays empty so that the
   log start offset does not move.

Atomic swap, per segment, in ascending offset order (`LogSegment.replace_with`):

    a. write the cleaned bytes to `<base>.log.cleaned`, fsync it;
    b. delete `<base>.index` and `<base>.timeindex`, fsync the directory;
    c. rename `<base>.log.cleaned` over `<base>.log` (atomic), fsync the directory;
    d. rebuild both indexes from the new `.log` (CRC-checking it) and write them, fsynced.

A crash before (c) leaves the old `.log`; from (c) on, the new one. Both are whole, fsynced
files, and no index file survives that could describe the other one (a missing index is rebuilt
on open). Open deletes leftover `*.cleaned` files (`log_recovery`). Because segments are swapped
lowest first, a crash between two swaps leaves lower segments cleaned and higher ones not, which
is still consistent: a record was only dropped for a later record of its key, and that one (or a
later one still) is in a higher segment that is either untouched or was itself cleaned by the same
rules — so a deleted key never comes back.

Threads: `plan_clean` and `swap_in` run on the log's owner thread (the log is not thread-safe);
`write_cleaned` reads the planned segments through its own file descriptors and writes only
temporary files, so it may run in a worker thread meanwhile. `swap_in` checks each segment is
still a closed segment of the log with the planned size, and stops (discarding the remaining
temporary files) at the first one that is not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c

from . import durability
from .batch_validation import decompress_records
from .errors import LogCorruptionError
from .log_segment import CLEANED_SUFFIX, LogSegment
from .partition_log import PartitionLog
from .record_batch import (
    ATTRIBUTES_OFFSET,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
    encode_retained,
    parse_header,
)
from .txn_index import AbortedTxn

OFFSET_MAP_ENTRIES_MAX = 1_000_000
_READ_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class CleanStats:
    segments_cleaned: int  # segments rewritten (or deleted because nothing in them survived)
    segments_deleted: int
    bytes_before: int  # of the rewritten segments
    bytes_after: int
    records_removed: int


@dataclass(frozen=True, slots=True)
class _Source:
    segment: LogSegment
    log_path: str
    size: int
    fallback_timestamp_ms: int  # for batches without timestamps: the file's modification time


@dataclass(frozen=True, slots=True)
class CleanPlan:
    sources: tuple[_Source, ...]
    now_ms: int
    delete_retention_ms: int
    offset_map_entries_max: int
    aborted: tuple[AbortedTxn, ...] = ()

    def is_aborted(self, header: BatchHeader) -> bool:
        """Is this batch part of an aborted transaction (its records never committed)?"""
        if not header.is_transactional or header.is_control:
            return False
        pid, offset = header.producer_id, header.base_offset
        return any(
            t.producer_id == pid and t.first_offset <= offset <= t.last_offset for t in self.aborted
        )


@dataclass(frozen=True, slots=True)
class CleanedSegment:
    segment: LogSegment
    planned_size: int
    cleaned_path: str | None  # None: nothing survived (or nothing removed: records_removed 0)
    bytes_after: int
    records_removed: int


def plan_clean(
    log: PartitionLog,
    bound: int,
    *,
    now_ms: int,
    delete_retention_ms: int,
    offset_map_entries_max: int = OFFSET_MAP_ENTRIES_MAX,
) -> CleanPlan:
    """What to clean: the segments of `log` entirely below `bound` (cheap; owner thread)."""
    assert delete_retention_ms >= 0 and offset_map_entries_max > 0
    sources = []
    for segment in log.cleanable_segments(bound):
        mtime_ms = int(os.stat(segment.log_path).st_mtime * 1000)
        sources.append(_Source(segment, segment.log_path, segment.size, mtime_ms))
    aborted: tuple[AbortedTxn, ...] = ()
    if sources:
        end = sources[-1].segment.next_offset
        aborted = tuple(log.aborted_transactions(sources[0].segment.base_offset, end))
    return CleanPlan(tuple(sources), now_ms, delete_retention_ms, offset_map_entries_max, aborted)


def clean_log(
    log: PartitionLog,
    bound: int,
    *,
    now_ms: int,
    delete_retention_ms: int,
    offset_map_entries_max: int = OFFSET_MAP_ENTRIES_MAX,
) -> CleanStats:
    """Clean `log` below `bound` in one call (plan, write, swap)."""
    plan = plan_clean(
        log,
        bound,
        now_ms=now_ms,
        delete_retention_ms=delete_retention_ms,
        offset_map_entries_max=offset_map_entries_max,
    )
    return swap_in(log, write_cleaned(plan))


# ---- reading records without building objects ----------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    raw = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if b < 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _records(data: bytes, count: int) -> Iterator[tuple[int, int, int, bytes | None, bool]]:
    """(start, end, offset delta, key, value is null) of each record of an uncompressed records
    section; `data[start:end]` is the record's exact bytes, length prefix included."""
    pos = 0
    for _ in range(count):
        start = pos
        length, pos = _varint(data, pos)
        end = pos + length
        _, pos = _varint(data, pos + 1)  # skip attributes, read the timestamp delta
        delta, pos = _varint(data, pos)
        key_size, pos = _varint(data, pos)
        key = None
        if key_size >= 0:
            key = data[pos : pos + key_size]
            pos += key_size
        value_size, _ = _varint(data, pos)
        if end > len(data) or length < 6:
            raise ValueError(f"record at byte {start} runs past its batch")
        yield start, end, delta, key, value_size < 0
        pos = end


def _batches(fd: int, size: int, path: str) -> Iterator[tuple[BatchHeader, bytes]]:
    """Every batch of a segment file, CRC-checked (the bytes may never have been verified)."""
    position = 0
    buffered = b""
    buffered_at = 0
    while position < size:
        at = position - buffered_at
        if len(buffered) - at < HEADER_SIZE:
            buffered = os.pread(fd, max(_READ_CHUNK_BYTES, HEADER_SIZE), position)
            buffered_at, at = position, 0
        if len(buffered) - at < HEADER_SIZE:
            raise LogCorruptionError(path, position, "batch header cut short")
        header = parse_header(buffered, at)
        batch_size = header.batch_length + LOG_OVERHEAD
        if header.magic != MAGIC or batch_size < HEADER_SIZE or position + batch_size > size:
            raise LogCorruptionError(path, position, "batch header is damaged")
        if len(buffered) - at < batch_size:
            buffered = os.pread(fd, max(_READ_CHUNK_BYTES, batch_size), position)
            buffered_at, at = position, 0
        batch = buffered[at : at + batch_size]
        if crc32c.crc32c(memoryview(batch)[ATTRIBUTES_OFFSET:]) != header.crc:
            raise LogCorruptionError(path, position, "CRC-32C mismatch")
        yield header, batch
        position += batch_size


def _records_of(header: BatchHeader, batch: bytes) -> bytes:
    return decompress_records(header, memoryview(batch)[HEADER_SIZE:])


# ---- the two passes --------------------------------------------------------------------------


def _build_offset_map(fds: list[int], plan: CleanPlan) -> tuple[dict[bytes, int], int]:
    """key → latest offset over the planned segments; and how many segments were mapped whole
    before the map reached its bound."""
    latest: dict[bytes, int] = {}
    for i, (fd, source) in enumerate(zip(fds, plan.sources, strict=True)):
        for header, batch in _batches(fd, source.size, source.log_path):
            if header.is_control or plan.is_aborted(header):
                continue
            data = _records_of(header, batch)
            for _, _, delta, key, _ in _records(data, header.record_count):
                if key is None:
                    continue
                if key not in latest and len(latest) >= plan.offset_map_entries_max:
                    return latest, i
                latest[key] = header.base_offset + delta
    return latest, len(plan.sources)


def _clean_one(
    fd: int, source: _Source, latest: dict[bytes, int], plan: CleanPlan
) -> CleanedSegment:
    out: list[bytes] = []
    removed = 0
    for header, batch in _batches(fd, source.size, source.log_path):
        if header.is_control or plan.is_aborted(header):
            out.append(batch)
            continue
        timestamp = (
            header.max_timestamp if header.max_timestamp >= 0 else source.fallback_timestamp_ms
        )
        tombstones_expire = plan.now_ms - timestamp > plan.delete_retention_ms
        data = _records_of(header, batch)
        kept = []
        for start, end, delta, key, null_value in _records(data, header.record_count):
            if key is None or (
                latest.get(key) == header.base_offset + delta
                and not (null_value and tombstones_expire)
            ):
                kept.append(data[start:end])
        removed += header.record_count - len(kept)
        if len(kept) == header.record_count:
            out.append(batch)
        elif kept:
            out.append(encode_retained(header, kept))
    if removed == 0:
        return CleanedSegment(source.segment, source.size, None, source.size, 0)
    if not out:
        return CleanedSegment(source.segment, source.size, None, 0, removed)
    cleaned_path = source.log_path + CLEANED_SUFFIX
    body = b"".join(out)
    out_fd = os.open(cleaned_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(out_fd, view) :]
        durability.fsync(out_fd)
    finally:
        os.close(out_fd)
    return CleanedSegment(source.segment, source.size, cleaned_path, len(body), removed)


def write_cleaned(plan: CleanPlan) -> list[CleanedSegment]:
    """Build the offset map and write each changed segment's cleaned copy to a fsynced
    `<base>.log.cleaned`. Touches no state of the log: safe in a worker thread. A segment with
    nothing to remove comes back with `records_removed` 0 (nothing written)."""
    fds: list[int] = []
    try:
        for source in plan.sources:
            try:
                fds.append(os.open(source.log_path, os.O_RDONLY))
            except FileNotFoundError:
                break  # deleted meanwhile: clean only the segments below it
        sources = plan.sources[: len(fds)]
        plan = CleanPlan(
            sources, plan.now_ms, plan.delete_retention_ms, plan.offset_map_entries_max,
            plan.aborted,
        )  # fmt: skip
        latest, mapped = _build_offset_map(fds, plan)
        cleaned: list[CleanedSegment] = []
        try:
            for fd, source in zip(fds[:mapped], sources[:mapped], strict=True):
                cleaned.append(_clean_one(fd, source, latest, plan))
        except BaseException:
            discard(cleaned)
            raise
        return cleaned
    finally:
        for fd in fds:
            os.close(fd)


def discard(cleaned: list[CleanedSegment]) -> None:
    """Remove the temporary files of cleaned copies that will not be swapped in."""
    for item in cleaned:
        if item.records_removed and item.cleaned_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(item.cleaned_path)


def swap_in(log: PartitionLog, cleaned: list[CleanedSegment]) -> CleanStats:
    """Swap the cleaned copies into `log`, lowest offset first (owner thread). Stops at the
    first segment that changed since it was planned, discarding the rest."""
    segments_cleaned = deleted = before = after = removed = 0
    for i, item in enumerate(cleaned):
        if not item.records_removed:
            continue
        if item.segment.size != item.planned_size:
            discard(cleaned[i:])
            break
        first = item.segment.base_offset == log.segment_base_offsets[0]
        if not log.replace_cleaned_segment(item.segment, item.cleaned_path):
            discard(cleaned[i + 1 :])
            break
        segments_cleaned += 1
        deleted += item.cleaned_path is None and not first
        before += item.planned_size
        after += item.bytes_after
        removed += item.records_removed
    return CleanStats(segments_cleaned, deleted, before, after, removed)
