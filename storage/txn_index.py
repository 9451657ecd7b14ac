"""A segment's aborted-transaction index, `<base>.txnindex` (Kafka's TransactionIndex and file
format), so that a read_committed fetch learns which records to drop without scanning.

One 34-byte big-endian entry per abort marker in the segment, in the marker's offset order::

    version              int16  0
    producer_id          int64
    first_offset         int64  the transaction's first offset in this partition
    last_offset          int64  the abort marker's offset
    last_stable_offset   int64  the partition's LSO once this transaction was complete

The entry lives in the segment holding the marker; the transaction's records may lie in earlier
segments, so a fetch collects from the segment holding its start offset onward (see
`PartitionLog.aborted_transactions`).

Derived data, like the offset indexes: entries are written through to the file when the marker
is appended (not fsynced until the segment is flushed), removed with truncation, and the part
after the producer-state snapshot a replay starts from is rebuilt by that replay (a crash may
have lost it); see `PartitionLog.install_producer_state`.
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import NamedTuple

from . import durability
from .errors import LogCorruptionError

_ENTRY = struct.Struct(">hqqqq")
ENTRY_SIZE = _ENTRY.size
TXN_INDEX_VERSION = 0


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


class TxnIndex:
    """The entries of one segment's `.txnindex`, kept in memory and written through."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: list[AbortedTxn] = []

    def load(self) -> None:
        """Read the file (a missing one is empty: most segments have no aborts). Raises
        LogCorruptionError for a file that cannot be a txn index."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self.entries = []
            return
        if len(data) % ENTRY_SIZE:
            raise LogCorruptionError(self.path, 0, f"size {len(data)} is not a multiple of 34")
        entries: list[AbortedTxn] = []
        for version, pid, first, last, stable in _ENTRY.iter_unpack(data):
            if version != TXN_INDEX_VERSION or first > last:
                raise LogCorruptionError(self.path, len(entries) * ENTRY_SIZE, "bad entry")
            if entries and last <= entries[-1].last_offset:
                raise LogCorruptionError(self.path, len(entries) * ENTRY_SIZE, "not increasing")
            entries.append(AbortedTxn(pid, first, last, stable))
        self.entries = entries

    def append(self, entry: AbortedTxn) -> None:
        if self.entries and entry.last_offset <= self.entries[-1].last_offset:
            raise ValueError(
                f"{self.path}: abort at {entry.last_offset} is not after "
                f"{self.entries[-1].last_offset}"
            )
        self.entries.append(entry)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, _ENTRY.pack(TXN_INDEX_VERSION, *entry))
        finally:
            os.close(fd)

    def truncate_to(self, offset: int) -> None:
        """Drop the entries of aborts at or after `offset` (those markers are gone)."""
        keep = len(self.entries)
        while keep and self.entries[keep - 1].last_offset >= offset:
            keep -= 1
        if keep == len(self.entries):
            return
        del self.entries[keep:]
        self._rewrite(sync=False)

    def _rewrite(self, sync: bool) -> None:
        if not self.entries:
            self.delete()
            return
        data = b"".join(_ENTRY.pack(TXN_INDEX_VERSION, *e) for e in self.entries)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            if sync:
                durability.fsync(fd)
        finally:
            os.close(fd)

    def flush(self) -> None:
        if not self.entries:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            durability.fsync(fd)
        finally:
            os.close(fd)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)

    def overlapping(self, start_offset: int, end_offset: int) -> list[AbortedTxn]:
        """Entries of transactions that may hold records in [start_offset, end_offset): their
        abort is at or after the start and they began before the end."""
        return [
            e for e in self.entries if e.last_offset >= start_offset and e.first_offset < end_offset
        ]
