"""An in-memory `LogStore`: the simulator's "durable" half and the unit tests' storage.

Nothing here is lost by a simulated crash: the simulator writes it only when a Ready is
persisted, so it plays the disk while the core's unstable entries play the page cache.

Layout: `_entries[0]` is a sentinel at (snapshot.index, snapshot.term) and `_entries[k]` is the
entry at index snapshot.index + k, as etcd-io/raft's MemoryStorage.
"""

from __future__ import annotations

import itertools

from .errors import CompactedError, UnavailableError
from .storage import limit_size
from .types import Entry, HardState, Snapshot, SnapshotMeta


class MemoryStorage:
    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._entries: list[Entry] = [Entry(term=0, index=0)]

    # ---- read side (Storage) ----

    def initial_state(self) -> HardState:
        return self._hard_state

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise CompactedError(f"index {index} is below the snapshot at {offset}")
        if index - offset >= len(self._entries):
            raise UnavailableError(f"index {index} is above the last index {self.last_index()}")
        return self._entries[index - offset].term

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (snapshot at {offset})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"index {hi - 1} is above the last index {self.last_index()}")
        return limit_size(self._entries[lo - offset : hi - offset], bytes_max)

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot.meta

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # ---- write side (LogStore) ----

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def install_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.index <= self._snapshot.index:
            return
        self._snapshot = snapshot
        self._entries = [Entry(term=snapshot.term, index=snapshot.index)]

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        offset = self._entries[0].index
        assert all(b.index == a.index + 1 for a, b in itertools.pairwise(entries))
        if entries[-1].index <= offset:
            return
        if entries[0].index <= offset:
            entries = entries[offset + 1 - entries[0].index :]
        first = entries[0].index
        assert first <= self.last_index() + 1, f"gap: append at {first} after {self.last_index()}"
        del self._entries[first - offset :]
        self._entries.extend(entries)

    def compact(self, snapshot: Snapshot) -> None:
        offset = self._entries[0].index
        if snapshot.index <= offset:
            return
        assert snapshot.index <= self.last_index(), "compaction beyond the last index"
        assert self.term(snapshot.index) == snapshot.term, "compaction snapshot term mismatch"
        self._snapshot = snapshot
        self._entries = [
            Entry(term=snapshot.term, index=snapshot.index),
            *self._entries[snapshot.index - offset + 1 :],
        ]
