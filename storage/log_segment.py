"""One segment of a partition log: a `.log` file of whole record batches plus its two sparse
indexes (see `segment_indexes`).

Files, named by the segment's base offset as 20 zero-padded digits (Kafka's names)::

    00000000000000001200.log        concatenated RecordBatch v2 bytes, exactly as appended;
                                    every batch's offsets are ≥ the base offset and increase
    00000000000000001200.index      sparse last-offset → byte position
    00000000000000001200.timeindex  sparse largest-timestamp → offset
    00000000000000001200.txnindex   aborted transactions whose abort marker is here
                                    (see `txn_index`; absent when there is none)

Rules:
- Only whole batches are ever written or served; a read never decodes records.
- Bytes this process appended are trusted. Bytes that were on disk when the segment was opened
  and not rescanned by recovery (`unverified_end`) have their CRC checked before they are served;
  a bad batch raises `LogCorruptionError` with the file and byte position.
- Not thread-safe: the partition log owns its segments and is used from one thread (the node's
  event loop), except that `flush` may run in a worker while nothing else touches the segment.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Iterator, Sequence

import crc32c

from . import durability
from .errors import LogCorruptionError, StorageError
from .record_batch import (
    ATTRIBUTES_OFFSET,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    NO_TIMESTAMP,
    BatchHeader,
    parse_header,
)
from .record_decode import decode_batch
from .segment_indexes import IndexCorruptError, OffsetIndex, TimeIndex
from .txn_index import TxnIndex

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
TXN_INDEX_SUFFIX = ".txnindex"
CLEANED_SUFFIX = ".cleaned"  # `<base>.log.cleaned`: the log cleaner's temporary copy
_SCAN_CHUNK_BYTES = 64 * 1024
_LENGTH_PREFIX = struct.Struct(">qi")  # baseOffset, batchLength
INT32_MAX = 2**31 - 1


def file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


class _BadBatch(Exception):
    def __init__(self, position: int, reason: str) -> None:
        super().__init__(reason)
        self.position = position
        self.reason = reason


class LogSegment:
    """A `.log` file and its indexes. Offsets are absolute; positions are byte offsets."""

    def __init__(self, directory: str, base_offset: int, index_interval_bytes: int, now_ms: int):
        self.base_offset = base_offset
        self.log_path = os.path.join(directory, file_name(base_offset, LOG_SUFFIX))
        self.offset_index = OffsetIndex(
            os.path.join(directory, file_name(base_offset, INDEX_SUFFIX)), base_offset
        )
        self.time_index = TimeIndex(
            os.path.join(directory, file_name(base_offset, TIME_INDEX_SUFFIX)), base_offset
        )
        self.txn_index = TxnIndex(os.path.join(directory, file_name(base_offset, TXN_INDEX_SUFFIX)))
        # True when the `.txnindex` on disk was unreadable and was dropped: the partition log
        # then rebuilds every txn index with a producer-state replay from the log start
        self.txn_index_damaged = False
        try:
            self.txn_index.load()
        except LogCorruptionError:
            self.txn_index.delete()
            self.txn_index_damaged = True
        self.index_interval_bytes = index_interval_bytes
        self.created_ms = now_ms
        self._fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = os.fstat(self._fd).st_size
        self.next_offset = base_offset
        self.max_timestamp = NO_TIMESTAMP  # the largest batch maxTimestamp in the segment
        self._offset_of_max_timestamp = base_offset
        self.rolling_timestamp = NO_TIMESTAMP  # the first batch's maxTimestamp (segment.ms)
        self._bytes_since_index = 0
        self.unverified_end = self.size  # bytes below this came from disk, not from us
        self._next_read_position = -1  # where the last read ended (see _sequential_hint)

    # ---- opening -------------------------------------------------------------------------

    def load_trusted(self) -> bool:
        """After a clean shutdown: load the indexes and the tail state. False when an index is
        unusable and the caller must rebuild with `recover(truncate=False)`."""
        try:
            self.offset_index.load(self.size)
            self.time_index.load()
        except IndexCorruptError:
            return False
        self._load_tail_state()
        return True

    def _load_tail_state(self) -> None:
        """Recompute next offset, largest timestamp and the first batch's timestamp from the
        indexes plus a scan of the batches after their last entries (bounds only)."""
        self.rolling_timestamp = NO_TIMESTAMP
        self.max_timestamp = NO_TIMESTAMP
        self._offset_of_max_timestamp = self.base_offset
        self.next_offset = self.base_offset
        self._bytes_since_index = 0
        if self.size == 0:
            return
        self.rolling_timestamp = self._header_at(0).max_timestamp
        start = self.offset_index.last_position()
        last_time = self.time_index.last_entry()
        if last_time is not None:
            self.max_timestamp, self._offset_of_max_timestamp = last_time
            start = min(start, self.offset_index.lookup(last_time[1])[1])
        for _, header in self._headers_from(start):
            self.next_offset = header.last_offset + 1
            if header.max_timestamp > self.max_timestamp:
                self.max_timestamp = header.max_timestamp
                self._offset_of_max_timestamp = header.last_offset

    def recover(self, truncate: bool, on_batch: Callable[[BatchHeader], None] | None = None) -> int:
        """Rescan the whole `.log` from byte 0, checking bounds, magic, CRC and offset order,
        and rebuild both indexes. At the first bad byte: truncate there when `truncate`, else
        raise `LogCorruptionError`. Returns the number of bytes truncated."""
        self.offset_index.reset()
        self.time_index.reset()
        self.max_timestamp = NO_TIMESTAMP
        self.rolling_timestamp = NO_TIMESTAMP
        self.next_offset = self.base_offset
        self._bytes_since_index = 0
        valid_end = 0
        try:
            for position, header in self._scan(0, verify=True):
                if header.base_offset < self.next_offset:
                    raise _BadBatch(position, f"offset {header.base_offset} goes backwards")
                if header.last_offset - self.base_offset > INT32_MAX:
                    raise _BadBatch(position, "offset too far above the segment's base")
                if self.rolling_timestamp == NO_TIMESTAMP and valid_end == 0:
                    self.rolling_timestamp = header.max_timestamp
                self._index_batch(
                    position, header.size_in_bytes, header.last_offset, header.max_timestamp
                )
                self.next_offset = header.last_offset + 1
                valid_end = position + header.size_in_bytes
                if on_batch is not None:
                    on_batch(header)
        except _BadBatch as bad:
            if not truncate:
                raise LogCorruptionError(self.log_path, bad.position, bad.reason) from None
            os.ftruncate(self._fd, bad.position)
        truncated = self.size - valid_end
        self.size = valid_end
        self.unverified_end = 0
        self.txn_index.truncate_to(self.next_offset)  # aborts whose marker recovery cut off
        return truncated

    # ---- scanning ------------------------------------------------------------------------

    def _header_at(self, position: int) -> BatchHeader:
        data = os.pread(self._fd, HEADER_SIZE, position)
        if len(data) < HEADER_SIZE:
            raise LogCorruptionError(self.log_path, position, "batch header cut short")
        return parse_header(data)

    def _scan(
        self, position: int, verify: bool, chunk_bytes: int = _SCAN_CHUNK_BYTES
    ) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of each batch from `position` to the end of the file, reading
        `chunk_bytes` at a time. Raises `_BadBatch` at the first batch that does not fit (or
        fails its CRC when `verify`)."""
        end = self.size
        while position < end:
            chunk = os.pread(self._fd, min(chunk_bytes, end - position), position)
            at = 0
            while at < len(chunk):
                if len(chunk) - at < HEADER_SIZE:
                    if at == 0:  # the chunk reaches the end of the file
                        raise _BadBatch(position, "batch header cut short")
                    break
                header = parse_header(chunk, at)
                size = header.batch_length + LOG_OVERHEAD
                if header.magic != MAGIC or size < HEADER_SIZE:
                    raise _BadBatch(position + at, f"magic {header.magic}, length {size}")
                if size > end - position - at:
                    raise _BadBatch(position + at, f"batch of {size} bytes runs past the end")
                if header.last_offset_delta < 0:
                    raise _BadBatch(position + at, "negative lastOffsetDelta")
                if verify:
                    if at + size > len(chunk):
                        body = os.pread(self._fd, size, position + at)
                        crc = crc32c.crc32c(memoryview(body)[ATTRIBUTES_OFFSET:])
                    else:
                        with memoryview(chunk) as view:
                            crc = crc32c.crc32c(view[at + ATTRIBUTES_OFFSET : at + size])
                    if crc != header.crc:
                        raise _BadBatch(position + at, "CRC-32C mismatch")
                yield position + at, header
                at += size
            position += at

    def _headers_from(self, position: int) -> Iterator[tuple[int, BatchHeader]]:
        """Like `_scan` without CRC, for bytes already trusted; damage is an operator error.
        Reads about one index interval at a time: a lookup rarely scans further."""
        chunk_bytes = min(_SCAN_CHUNK_BYTES, self.index_interval_bytes + 2 * HEADER_SIZE)
        try:
            yield from self._scan(position, verify=False, chunk_bytes=chunk_bytes)
        except _BadBatch as bad:
            raise LogCorruptionError(self.log_path, bad.position, bad.reason) from None

    def translate_offset(self, offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the first batch whose last offset is ≥ `offset`, or None."""
        if offset >= self.next_offset:
            return None
        start = self.offset_index.lookup(offset)[1]
        for position, header in self._headers_from(start):
            if header.last_offset >= offset:
                return position, header
        return None

    def duplicate_fd(self) -> int:
        """A descriptor of this segment's file of the caller's own, for reading elsewhere (a
        worker thread) while this segment goes on; it survives truncation and deletion."""
        return os.dup(self._fd)

    def position_of(self, offset: int) -> int:
        """Byte position where the batch containing `offset` starts (the size if beyond)."""
        found = self.translate_offset(offset)
        return self.size if found is None else found[0]

    # ---- writing -------------------------------------------------------------------------

    def _index_batch(self, position: int, size: int, last_offset: int, max_ts: int) -> None:
        if max_ts > self.max_timestamp:
            self.max_timestamp = max_ts
            self._offset_of_max_timestamp = last_offset
        if self._bytes_since_index > self.index_interval_bytes:
            self.offset_index.append(last_offset, position)
            self.time_index.maybe_append(self.max_timestamp, self._offset_of_max_timestamp)
            self._bytes_since_index = 0
        self._bytes_since_index += size

    def append(self, data: bytes | bytearray, batches: Sequence[tuple[int, BatchHeader]]) -> None:
        """Append whole batches; `batches` gives each one's position within `data`."""
        start = self.size
        try:
            written = os.pwrite(self._fd, data, start)
            if written < len(data):  # rare for regular files; finish the write
                with memoryview(data) as view:
                    while written < len(data):
                        written += os.pwrite(self._fd, view[written:], start + written)
        except OSError as err:
            os.ftruncate(self._fd, start)
            raise StorageError(f"{self.log_path}: append failed: {err}") from err
        if self.size == 0:
            self.rolling_timestamp = batches[0][1].max_timestamp
        for relative, header in batches:
            self._index_batch(
                start + relative,
                header.batch_length + LOG_OVERHEAD,
                header.base_offset + header.last_offset_delta,
                header.max_timestamp,
            )
        self.size = start + len(data)
        self.next_offset = batches[-1][1].last_offset + 1

    def truncate_to(self, offset: int) -> int:
        """Remove the batch containing `offset` and everything after it; return bytes removed."""
        found = self.translate_offset(offset)
        if found is None:
            return 0
        position = found[0]
        self.offset_index.truncate_to(offset)
        self.time_index.truncate_to(offset)
        self.txn_index.truncate_to(offset)
        os.ftruncate(self._fd, position)
        self._next_read_position = -1
        removed = self.size - position
        self.size = position
        self.unverified_end = min(self.unverified_end, position)
        self._load_tail_state()
        return removed

    def replace_with(self, cleaned_path: str) -> None:
        """Swap in `cleaned_path`, a fsynced cleaned copy of this segment (see `log_cleaner` for
        the protocol). The old indexes are removed before the rename, so a crash at any moment
        leaves either the old or the new `.log` and no index that could describe the wrong one
        (a missing index is rebuilt on open). Then the indexes are rebuilt and written."""
        directory = os.path.dirname(self.log_path)
        for path in (self.offset_index.path, self.time_index.path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        durability.fsync_dir(directory)
        os.replace(cleaned_path, self.log_path)
        durability.fsync_dir(directory)
        os.close(self._fd)
        self._fd = os.open(self.log_path, os.O_RDWR)
        self.size = os.fstat(self._fd).st_size
        self._next_read_position = -1
        self.recover(truncate=False)
        self.offset_index.flush(sync=True)
        self.time_index.flush(sync=True)

    def flush(self) -> None:
        durability.fsync(self._fd)
        self.offset_index.flush(sync=True)
        self.time_index.flush(sync=True)
        self.txn_index.flush()

    def close(self) -> None:
        if self._fd >= 0:
            self.offset_index.flush(sync=False)
            self.time_index.flush(sync=False)
            os.close(self._fd)
            self._fd = -1

    def close_without_index_flush(self) -> None:
        """Close as a crash would: indexes stay as they are on disk."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def delete(self) -> None:
        self.close_without_index_flush()
        for path in (self.log_path, self.offset_index.path, self.time_index.path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        self.txn_index.delete()

    # ---- reading -------------------------------------------------------------------------

    def _end_of_batches(self, position: int, first_size: int, limit: int, max_bytes: int) -> int:
        """The largest batch boundary in (position, limit] with at most `max_bytes` from
        `position`, but at least the first batch. Uses the index, then reads a few headers."""
        end = position + first_size
        target = min(limit, position + max_bytes)
        if end >= target:
            return end
        end = max(end, self.offset_index.batch_start_at_most(target))
        while end < target:
            prefix = os.pread(self._fd, _LENGTH_PREFIX.size, end)
            if len(prefix) < _LENGTH_PREFIX.size:
                break
            size = _LENGTH_PREFIX.unpack(prefix)[1] + LOG_OVERHEAD
            if end + size > target:
                break
            end += size
        return end

    def read(self, offset: int, max_bytes: int, max_position: int | None = None) -> bytes | None:
        """Whole batches starting with the one containing `offset`: up to `max_bytes`, but at
        least one batch, and none that ends after `max_position`. None if `offset` is beyond
        this segment."""
        found = self._sequential_hint(offset) or self.translate_offset(offset)
        if found is None:
            return None
        position, header = found
        limit = self.size if max_position is None else min(self.size, max_position)
        first_size = header.size_in_bytes
        if position + first_size > limit:
            return b""
        end = self._end_of_batches(position, first_size, limit, max_bytes)
        data = os.pread(self._fd, end - position, position)
        if position < self.unverified_end:
            self._verify(data, position)
        self._next_read_position = end
        return data

    def _sequential_hint(self, offset: int) -> tuple[int, BatchHeader] | None:
        """A consumer reading front to back asks next for the batch right after its last read:
        one header read instead of an index lookup and a scan. Positions stay batch boundaries
        until a truncation, which clears the hint."""
        position = self._next_read_position
        if position < 0 or position + HEADER_SIZE > self.size:
            return None
        header = self._header_at(position)
        if header.base_offset <= offset <= header.base_offset + header.last_offset_delta:
            return position, header
        return None

    def _verify(self, data: bytes, position: int) -> None:
        """CRC-check whole batches read from bytes this process did not write."""
        at = 0
        with memoryview(data) as view:
            while at < len(data) and position + at < self.unverified_end:
                if len(data) - at < HEADER_SIZE:
                    raise LogCorruptionError(self.log_path, position + at, "batch cut short")
                header = parse_header(data, at)
                size = header.batch_length + LOG_OVERHEAD
                if header.magic != MAGIC or size < HEADER_SIZE or at + size > len(data):
                    raise LogCorruptionError(
                        self.log_path, position + at, "batch header is damaged"
                    )
                if crc32c.crc32c(view[at + ATTRIBUTES_OFFSET : at + size]) != header.crc:
                    raise LogCorruptionError(self.log_path, position + at, "CRC-32C mismatch")
                at += size

    def check_integrity(self) -> None:
        """CRC-check every batch; raise `LogCorruptionError` at the first bad one."""
        for _ in self._headers_from_verified():
            pass

    def _headers_from_verified(self) -> Iterator[tuple[int, BatchHeader]]:
        try:
            yield from self._scan(0, verify=True)
        except _BadBatch as bad:
            raise LogCorruptionError(self.log_path, bad.position, bad.reason) from None

    def find_offset_by_timestamp(self, timestamp: int, start_offset: int) -> tuple[int, int] | None:
        """(timestamp, offset) of the first record at or after `start_offset` whose timestamp
        is ≥ `timestamp` (decodes only the batch that holds it)."""
        after = self.time_index.lookup_before(timestamp)
        start = max(start_offset, self.base_offset if after is None else after + 1)
        for position, header in self._headers_from(self.offset_index.lookup(start)[1]):
            if header.last_offset < start or header.max_timestamp < timestamp:
                continue
            data = os.pread(self._fd, header.size_in_bytes, position)
            if position < self.unverified_end:
                self._verify(data, position)
            for record in decode_batch(data)[1]:
                if record.offset >= start and record.timestamp_ms >= timestamp:
                    return record.timestamp_ms, record.offset
        return None
