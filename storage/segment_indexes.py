"""The two sparse indexes of a segment: `.index` (offset → position) and `.timeindex`
(timestamp → offset). Both are Kafka's file formats; both are derived data, rebuilt from the
`.log` whenever they are missing, malformed or possibly stale (unclean shutdown).

`.index`: 8-byte entries ``relativeOffset i32, position i32`` (big-endian). An entry says "the
batch starting at byte `position` of the `.log` has last offset `baseOffset + relativeOffset`".
Entries are added when at least `index.interval.bytes` of batches were appended since the last
one, so both columns are strictly increasing.

`.timeindex`: 12-byte entries ``timestamp i64, relativeOffset i32``. An entry says "the largest
timestamp among offsets ≤ `baseOffset + relativeOffset` is `timestamp`". Added beside an offset
index entry when the segment's largest timestamp grew; timestamps strictly increase.

Both live in memory as arrays (lookups are a bisect); new entries reach the file on `flush()`.
That is safe: a file that lags its `.log` is only trusted after a clean shutdown, which flushes
first, and recovery rebuilds the indexes of every segment it rescans.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right

from . import durability

_TIME_ENTRY = struct.Struct(">qi")


class IndexCorruptError(Exception):
    """An index file cannot be trusted; the caller rebuilds it from the log."""


def _write_tail(path: str, keep_bytes: int, tail: bytes, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, keep_bytes)
        if tail:
            os.pwrite(fd, tail, keep_bytes)
        if sync:
            durability.fsync(fd)
    finally:
        os.close(fd)


def _big_endian(values: array) -> bytes:  # type: ignore[type-arg]
    copy = array(values.typecode, values)
    if sys.byteorder == "little":
        copy.byteswap()
    return copy.tobytes()


class OffsetIndex:
    """Sparse map from a batch's last offset to the batch's byte position in the segment."""

    ENTRY_SIZE = 8

    def __init__(self, path: str, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self._offsets = array("i")  # relative last offsets
        self._positions = array("i")
        self._written = 0  # entries already in the file

    def __len__(self) -> int:
        return len(self._offsets)

    def load(self, log_size: int) -> None:
        """Read the file; raise IndexCorruptError if it is not a valid index for a log of
        `log_size` bytes. A missing file is corrupt too (it must be rebuilt)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise IndexCorruptError(f"{self.path} is missing") from None
        if len(data) % self.ENTRY_SIZE:
            raise IndexCorruptError(f"{self.path}: size {len(data)} is not a multiple of 8")
        pairs = array("i", data)
        if sys.byteorder == "little":
            pairs.byteswap()
        offsets, positions = pairs[0::2], pairs[1::2]
        for i in range(1, len(offsets)):
            if offsets[i] <= offsets[i - 1] or positions[i] <= positions[i - 1]:
                raise IndexCorruptError(f"{self.path}: entry {i} is not increasing")
        if positions and (positions[0] < 0 or offsets[0] < 0 or positions[-1] >= log_size):
            raise IndexCorruptError(f"{self.path}: entries point outside the log")
        self._offsets, self._positions, self._written = offsets, positions, len(offsets)

    def append(self, offset: int, position: int) -> None:
        relative = offset - self.base_offset
        assert not self._offsets or (
            relative > self._offsets[-1] and position > self._positions[-1]
        ), "offset index entries must increase"
        self._offsets.append(relative)
        self._positions.append(position)

    def lookup(self, offset: int) -> tuple[int, int]:
        """(last offset, position) of the last entry whose offset ≤ `offset`, else (base, 0):
        a scan for the batch containing `offset` may start at that position."""
        i = bisect_right(self._offsets, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._offsets[i], self._positions[i]

    def last_position(self) -> int:
        return self._positions[-1] if self._positions else 0

    def batch_start_at_most(self, position: int) -> int:
        """The largest indexed batch position ≤ `position`, or 0."""
        i = bisect_right(self._positions, position) - 1
        return self._positions[i] if i >= 0 else 0

    def truncate_to(self, offset: int) -> None:
        """Drop entries for batches whose last offset is ≥ `offset` (they are being removed)."""
        keep = bisect_left(self._offsets, offset - self.base_offset)
        del self._offsets[keep:]
        del self._positions[keep:]
        if keep < self._written:
            self._written = keep
            _write_tail(self.path, keep * self.ENTRY_SIZE, b"", sync=False)

    def reset(self) -> None:
        self._offsets, self._positions = array("i"), array("i")
        self._written = 0
        _write_tail(self.path, 0, b"", sync=False)

    def flush(self, sync: bool) -> None:
        if self._written == len(self._offsets) and not sync:
            return
        pairs = array("i", bytes(8 * (len(self._offsets) - self._written)))
        pairs[0::2] = self._offsets[self._written :]
        pairs[1::2] = self._positions[self._written :]
        _write_tail(self.path, self._written * self.ENTRY_SIZE, _big_endian(pairs), sync)
        self._written = len(self._offsets)


class TimeIndex:
    """Sparse map from the largest timestamp so far to the offset that carried it."""

    ENTRY_SIZE = 12

    def __init__(self, path: str, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self._timestamps = array("q")
        self._offsets = array("i")  # relative
        self._written = 0

    def __len__(self) -> int:
        return len(self._timestamps)

    def load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise IndexCorruptError(f"{self.path} is missing") from None
        if len(data) % self.ENTRY_SIZE:
            raise IndexCorruptError(f"{self.path}: size {len(data)} is not a multiple of 12")
        timestamps, offsets = array("q"), array("i")
        for timestamp, relative in _TIME_ENTRY.iter_unpack(data):
            timestamps.append(timestamp)
            offsets.append(relative)
        for i in range(1, len(timestamps)):
            if timestamps[i] <= timestamps[i - 1] or offsets[i] < offsets[i - 1]:
                raise IndexCorruptError(f"{self.path}: entry {i} is not increasing")
        self._timestamps, self._offsets, self._written = timestamps, offsets, len(offsets)

    def last_entry(self) -> tuple[int, int] | None:
        """(timestamp, absolute offset) of the newest entry."""
        if not self._timestamps:
            return None
        return self._timestamps[-1], self.base_offset + self._offsets[-1]

    def maybe_append(self, timestamp: int, offset: int) -> None:
        if not self._timestamps or timestamp > self._timestamps[-1]:
            self._timestamps.append(timestamp)
            self._offsets.append(offset - self.base_offset)

    def lookup_before(self, timestamp: int) -> int | None:
        """The offset of the last entry whose timestamp is < `timestamp`: every record up to it
        is older than `timestamp`, so a search may start after it. None: start at the base."""
        i = bisect_left(self._timestamps, timestamp) - 1
        return self.base_offset + self._offsets[i] if i >= 0 else None

    def truncate_to(self, offset: int) -> None:
        """Drop entries whose offset is ≥ `offset`."""
        relative = offset - self.base_offset
        keep = len(self._offsets)
        while keep and self._offsets[keep - 1] >= relative:
            keep -= 1
        del self._timestamps[keep:]
        del self._offsets[keep:]
        if keep < self._written:
            self._written = keep
            _write_tail(self.path, keep * self.ENTRY_SIZE, b"", sync=False)

    def reset(self) -> None:
        self._timestamps, self._offsets = array("q"), array("i")
        self._written = 0
        _write_tail(self.path, 0, b"", sync=False)

    def flush(self, sync: bool) -> None:
        if self._written == len(self._offsets) and not sync:
            return
        tail = b"".join(
            _TIME_ENTRY.pack(self._timestamps[i], self._offsets[i])
            for i in range(self._written, len(self._offsets))
        )
        _write_tail(self.path, self._written * self.ENTRY_SIZE, tail, sync)
        self._written = len(self._offsets)
