"""The read side of the durable Raft state, as the core needs it (etcd-io/raft's Storage).

The core only reads storage; the driver writes it from each Ready (persist snapshot, entries,
hard state in that order) and then calls `advance`. Implementations: `MemoryStorage` (tests,
the simulator) and `strom.storage.raft_store.FileRaftStore` (the node).

Index rules every implementation keeps:
- the snapshot covers indexes <= snapshot.index; `first_index()` is snapshot.index + 1;
- `last_index()` >= snapshot.index (equal when no entry follows the snapshot);
- `term(i)` answers for snapshot.index <= i <= last_index() (term(0) == 0 on an empty store),
  raises CompactedError below and UnavailableError above;
- `entries(lo, hi, bytes_max)` returns the contiguous entries [lo, hi), stopping early once
  `bytes_max` is exceeded but always returning at least one entry when lo < hi; it raises
  CompactedError if lo < first_index() and UnavailableError if hi > last_index() + 1.
The same calls serve observers: committed entries by index, and the latest snapshot.
"""

from __future__ import annotations

from typing import Protocol

from .types import Entry, HardState, Snapshot, SnapshotMeta


class Storage(Protocol):
    def initial_state(self) -> HardState:
        """The last persisted term, vote and commit index."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, index: int) -> int: ...

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]: ...

    def snapshot_meta(self) -> SnapshotMeta:
        """Index and term of the latest snapshot, cheaply (no data)."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot with its data (index 0 when there is none)."""
        ...


def limit_size(entries: list[Entry], bytes_max: int) -> list[Entry]:
    """The longest prefix of `entries` within `bytes_max`, but at least one entry."""
    total = 0
    for i, entry in enumerate(entries):
        total += entry.size_bytes()
        if total > bytes_max and i > 0:
            return entries[:i]
    return entries


class LogStore(Storage, Protocol):
    """Storage plus the write side the driver uses to persist a Ready (in this order).

    Every write is durable when it returns (the file store fsyncs).
    """

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader (Ready.snapshot).
        A snapshot not newer than the current one is ignored."""
        ...

    def append(self, entries: list[Entry]) -> None:
        """Drop every entry at or after entries[0].index (a conflicting suffix), then append.
        Entries at or below the snapshot index are skipped."""
        ...

    def compact(self, snapshot: Snapshot) -> None:
        """Save a snapshot the application made of its own log (Ready.compaction) and drop
        the entries it covers. A snapshot not newer than the current one is ignored."""
        ...

    def set_hard_state(self, hard_state: HardState) -> None: ...
