"""The core's view of the Raft log: durable `Storage` plus the not-yet-persisted tail.

Layout (etcd-io/raft's raftLog + unstable):

    storage:   [snapshot] first_index ............ last_index
    unstable:                     [snapshot?] offset ............ offset+len-1

Entries at index >= `offset` are unstable (handed to the driver in a Ready, not yet acknowledged
by `advance`); below it they are read from storage. An unstable snapshot (received from the
leader) replaces everything at or below its index. Invariants:
- applied <= committed <= last_index();
- committed entries are never truncated (an attempt is a safety bug and raises AssertionError);
- `offset` <= storage.last_index() + 1 unless an unstable snapshot is pending.
"""

from __future__ import annotations

from .errors import CompactedError, StorageError
from .storage import Storage, limit_size
from .types import Entry, Snapshot


class RaftLog:
    def __init__(self, storage: Storage, applied: int = 0) -> None:
        self.storage = storage
        self.unstable_snapshot: Snapshot | None = None
        self.unstable_entries: list[Entry] = []
        self.offset = storage.last_index() + 1
        first = storage.first_index()
        self.committed = max(first - 1, storage.initial_state().commit)
        assert self.committed <= storage.last_index(), "persisted commit beyond the log"
        self.applied = min(max(first - 1, applied), self.committed)

    # ---- reads ----

    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable_entries:
            return self.offset + len(self.unstable_entries) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index
        return self.storage.last_index()

    def term(self, index: int) -> int | None:
        """The term at `index`, or None when compacted away or beyond the last index."""
        if index >= self.offset and self.unstable_entries:
            pos = index - self.offset
            return self.unstable_entries[pos].term if pos < len(self.unstable_entries) else None
        snap = self.unstable_snapshot
        if snap is not None:
            return snap.term if index == snap.index else None
        try:
            return self.storage.term(index)
        except StorageError:
            return None

    def last_term(self) -> int:
        term = self.term(self.last_index())
        assert term is not None
        return term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log at least as up to date as ours."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (i, term(i)) with i <= index and term(i) <= term; (i, 0) if unknown."""
        while index > 0:
            ours = self.term(index)
            if ours is None:
                return index, 0
            if ours <= term:
                return index, ours
            index -= 1
        return 0, 0

    def slice(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        """Entries [lo, hi), at least one, within bytes_max. Raises CompactedError below the
        first index."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted")
        assert hi <= self.last_index() + 1
        result: list[Entry] = []
        if lo < self.offset:
            result = self.storage.entries(lo, min(hi, self.offset), bytes_max)
            if len(result) < min(hi, self.offset) - lo:
                return result
        if hi > self.offset:
            start = max(lo, self.offset) - self.offset
            tail = self.unstable_entries[start : hi - self.offset]
            if not result:
                return limit_size(tail, bytes_max)
            used = sum(e.size_bytes() for e in result)
            for entry in tail:
                used += entry.size_bytes()
                if used > bytes_max:
                    break
                result.append(entry)
        return result

    def next_committed_entries(self, bytes_max: int) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if lo > self.committed:
            return []
        return self.slice(lo, self.committed + 1, bytes_max)

    def has_next_committed_entries(self) -> bool:
        return max(self.applied + 1, self.first_index()) <= self.committed

    # ---- writes ----

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """Raft §5.3: append after (prev_index, prev_term) if it matches; the last new index."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                assert entry.index > self.committed, (
                    f"entry {entry.index} conflicts with committed entry (commit {self.committed})"
                )
                self.append(list(entries[entry.index - prev_index - 1 :]))
                break
        self.commit_to(min(commit, last_new))
        return last_new

    def append(self, entries: list[Entry]) -> None:
        """Put entries into the unstable tail, truncating any suffix from entries[0].index."""
        if not entries:
            return
        after = entries[0].index
        assert after > self.committed, f"truncating committed index {after}"
        end = self.offset + len(self.unstable_entries)
        if after == end:
            self.unstable_entries.extend(entries)
        elif after <= self.offset:
            # Replaces the whole unstable tail and (once persisted) the stored suffix.
            self.offset = after
            self.unstable_entries = list(entries)
        else:
            del self.unstable_entries[after - self.offset :]
            self.unstable_entries.extend(entries)

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), f"commit {index} beyond last {self.last_index()}"
            self.committed = index

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log by a snapshot from the leader (the driver persists it)."""
        self.committed = snapshot.index
        self.unstable_snapshot = snapshot
        self.unstable_entries = []
        self.offset = snapshot.index + 1

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to (index, term) were persisted; drop them from the unstable tail unless
        they were replaced meanwhile."""
        if index < self.offset or not self.unstable_entries:
            return
        pos = index - self.offset
        if pos < len(self.unstable_entries) and self.unstable_entries[pos].term == term:
            del self.unstable_entries[: pos + 1]
            self.offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.index == index:
            self.unstable_snapshot = None

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            assert index <= self.committed, f"applied {index} beyond commit {self.committed}"
            self.applied = index
