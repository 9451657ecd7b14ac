"""The leader-epoch cache of a partition: which leader epoch started at which offset.

Replication needs it for KIP-101/279: a replica that becomes follower asks the leader for the
end offset of its latest epoch (`end_offset_for`, Kafka's `endOffsetFor`) and truncates its
divergent suffix. Entries are (epoch, start offset), both strictly increasing. The cache is
kept consistent with the log: truncating the log's end truncates entries from the end, moving
the log start offset truncates them from the start.

File `leader-epoch-checkpoint` (Kafka's name and format, see `checkpoint_file`)::

    0
    2
    0 0
    3 1200

It is rewritten atomically (and fsynced) on every change; changes happen only when leadership
changes or the log is truncated, never per append.
"""

from __future__ import annotations

from typing import NamedTuple

from .checkpoint_file import read_checkpoint, write_checkpoint

FILE_NAME = "leader-epoch-checkpoint"
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


class EpochEntry(NamedTuple):
    epoch: int
    start_offset: int


class LeaderEpochCache:
    def __init__(self, path: str, sync: bool = True) -> None:
        self.path = path
        self._sync = sync
        self._entries: list[EpochEntry] = [
            EpochEntry(a, b) for a, b in (read_checkpoint(path) or [])
        ]

    @property
    def entries(self) -> tuple[EpochEntry, ...]:
        return tuple(self._entries)

    @property
    def latest_epoch(self) -> int | None:
        return self._entries[-1].epoch if self._entries else None

    @property
    def latest_entry(self) -> EpochEntry | None:
        return self._entries[-1] if self._entries else None

    def _flush(self) -> None:
        write_checkpoint(self.path, list(self._entries), self._sync)

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that `epoch` starts at `start_offset`. No-op when the latest epoch is already
        `epoch` and starts no later. Entries with epoch ≥ `epoch` or start ≥ `start_offset` are
        dropped first (they cannot be right any more). Returns whether the cache changed."""
        if epoch < 0 or start_offset < 0:
            raise ValueError(f"epoch {epoch} and start offset {start_offset} must be ≥ 0")
        latest = self.latest_entry
        if latest is not None and latest.epoch == epoch and latest.start_offset <= start_offset:
            return False
        self._entries = [
            e for e in self._entries if e.epoch < epoch and e.start_offset < start_offset
        ]
        self._entries.append(EpochEntry(epoch, start_offset))
        self._flush()
        return True

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(epoch, end offset) as Kafka's `endOffsetFor`: the end offset of `requested_epoch` is
        the start offset of the first larger epoch, or the log end offset if it is the latest.
        An epoch below every known one answers (requested, first start offset); an unknown
        epoch that is higher than every known one answers (-1, -1)."""
        if requested_epoch == UNDEFINED_EPOCH or not self._entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if self._entries[-1].epoch == requested_epoch:
            return requested_epoch, log_end_offset
        higher = next((e for e in self._entries if e.epoch > requested_epoch), None)
        if higher is None:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        floor = None
        for e in self._entries:
            if e.epoch <= requested_epoch:
                floor = e
        if floor is None:
            return requested_epoch, higher.start_offset
        return floor.epoch, higher.start_offset

    def epoch_for_offset(self, offset: int) -> int | None:
        """The epoch whose range holds `offset`, or None below the first entry."""
        found = None
        for e in self._entries:
            if e.start_offset <= offset:
                found = e.epoch
        return found

    def truncate_from_end(self, end_offset: int) -> None:
        """Drop entries starting at or after `end_offset` (the log was truncated there)."""
        kept = [e for e in self._entries if e.start_offset < end_offset]
        if len(kept) != len(self._entries):
            self._entries = kept
            self._flush()

    def truncate_from_start(self, start_offset: int) -> None:
        """The log now starts at `start_offset`: drop entries that start at or before it, but
        keep the last of them, moved up to `start_offset`, since its epoch still covers it."""
        below = [e for e in self._entries if e.start_offset <= start_offset]
        if not below or below == [EpochEntry(below[-1].epoch, start_offset)]:
            return
        rest = self._entries[len(below) :]
        self._entries = [EpochEntry(below[-1].epoch, start_offset), *rest]
        self._flush()

    def clear(self) -> None:
        self._entries = []
        self._flush()
