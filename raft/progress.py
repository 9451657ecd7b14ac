"""What the leader knows about each follower's log (etcd-io/raft's tracker.Progress).

States and transitions:

    PROBE      --append accepted--------------------> REPLICATE
    PROBE      --next below the first log index-----> SNAPSHOT
    REPLICATE  --append rejected / inflights stuck--> PROBE
    SNAPSHOT   --follower acknowledged the snapshot-> PROBE (then REPLICATE on the next ack)
    SNAPSHOT   --no ack within an election timeout--> PROBE (the snapshot is re-sent)

In PROBE the leader sends one AppendRequest per heartbeat round trip and waits; in REPLICATE it
streams optimistically (next = last sent + 1) with at most `inflight_msgs_max` unacknowledged
messages; in SNAPSHOT it sends nothing but heartbeats until the snapshot is acknowledged.
Invariant: match < next.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    __slots__ = (
        "inflights",
        "inflights_max",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_elapsed_ticks",
        "state",
    )

    def __init__(self, next_index: int, inflights_max: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_elapsed_ticks = 0
        self.recent_active = False
        self.inflights: deque[int] = deque()
        self.inflights_max = inflights_max

    def __repr__(self) -> str:
        return f"Progress({self.state.name} match={self.match} next={self.next})"

    def become_probe(self) -> None:
        # After a snapshot, probe from just past it: the follower holds at least that.
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_elapsed_ticks = 0
        self.inflights.clear()

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflights) >= self.inflights_max
        return True

    def sent_append(self, last_index: int, entry_count: int) -> None:
        """Record an AppendRequest whose last entry is `last_index`."""
        if self.state is ProgressState.REPLICATE:
            if entry_count:
                self.next = last_index + 1
                self.inflights.append(last_index)
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to `index`; False if it was stale."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        while self.inflights and self.inflights[0] <= index:
            self.inflights.popleft()
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of prev index `rejected`; False if it was stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True
