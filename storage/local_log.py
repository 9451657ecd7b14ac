"""The ordered segments of one partition folder (Kafka's LocalLog + LogSegments).

Invariants:
- At least one segment exists; the last one is the *active* segment, the only one appended to.
- Segments are ordered by base offset, and each segment's offsets lie in
  [base offset, next segment's base offset).
- The log end offset is the active segment's next offset.

This layer moves bytes between segments: roll, read, truncate, delete. Validation, offsets,
leader epochs, checkpoints and retention policy belong to `partition_log`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from . import durability
from .log_segment import LogSegment
from .record_batch import BatchHeader


class LocalLog:
    def __init__(self, directory: str, index_interval_bytes: int, segments: list[LogSegment]):
        assert segments, "a log has at least one segment"
        self.directory = directory
        self.index_interval_bytes = index_interval_bytes
        self._segments = segments
        self._bases = [s.base_offset for s in segments]

    @property
    def segments(self) -> tuple[LogSegment, ...]:
        return tuple(self._segments)

    @property
    def active(self) -> LogSegment:
        return self._segments[-1]

    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].next_offset

    @property
    def size_in_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def index_of(self, offset: int) -> int:
        """Index of the segment whose range holds `offset` (the first one if below)."""
        return max(bisect_right(self._bases, offset) - 1, 0)

    def append(self, data: bytes | bytearray, batches: Sequence[tuple[int, BatchHeader]]) -> None:
        self.active.append(data, batches)

    def roll(self, now_ms: int) -> LogSegment:
        """Start a new active segment at the log end offset; no-op if the active one is empty.
        The old active segment's index entries are written out (fsync is the caller's)."""
        active = self.active
        if active.size == 0:
            return active
        active.offset_index.flush(sync=False)
        active.time_index.flush(sync=False)
        segment = LogSegment(self.directory, self.log_end_offset, self.index_interval_bytes, now_ms)
        self._segments.append(segment)
        self._bases.append(segment.base_offset)
        return segment

    def read(self, offset: int, max_bytes: int, max_offset: int | None) -> bytes:
        """Whole batches from the segment holding `offset` (one segment per read, as Kafka);
        if `offset` is past a segment's last batch the read continues in the next one. The
        caller has checked that `offset` is within [log start, log end]."""
        max_position: int | None = None
        limit_segment: LogSegment | None = None
        if max_offset is not None:
            if offset >= max_offset:
                return b""
            limit_segment = self._segments[self.index_of(max_offset)]
            max_position = limit_segment.position_of(max_offset)
        for segment in self._segments[self.index_of(offset) :]:
            bound = max_position if segment is limit_segment else None
            data = segment.read(offset, max_bytes, bound)
            if data is not None:
                return data
            if segment is limit_segment:
                break
        return b""

    def truncate_to(self, offset: int) -> None:
        """Remove every batch from the one containing `offset` on."""
        while len(self._segments) > 1 and self._bases[-1] > offset:
            self._bases.pop()
            self._segments.pop().delete()
        self.active.truncate_to(offset)

    def truncate_fully(self, offset: int, now_ms: int) -> None:
        """Delete every segment and continue with an empty one at `offset`."""
        for old in self._segments:
            old.delete()
        segment = LogSegment(self.directory, offset, self.index_interval_bytes, now_ms)
        self._segments = [segment]
        self._bases = [offset]

    def delete_segments(self, doomed: Sequence[LogSegment]) -> None:
        """Delete segments from the front; the active segment is never among them."""
        for segment in doomed:
            assert segment is not self.active, "roll before deleting the active segment"
            i = self._segments.index(segment)
            del self._segments[i]
            del self._bases[i]
            segment.delete()

    def flush_from(self, offset: int) -> None:
        """fsync every segment that may hold bytes at or above `offset`."""
        for segment in self._segments[self.index_of(offset) :]:
            segment.flush()
        durability.fsync_dir(self.directory)  # new segment files are directory entries too

    def close(self, clean: bool) -> None:
        for segment in self._segments:
            if clean:
                segment.close()
            else:
                segment.close_without_index_flush()
