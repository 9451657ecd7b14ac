"""Values the Raft core exchanges with its driver: entries, hard state, snapshots and messages.

Every type is a frozen dataclass with slots holding only ints, bools, bytes and tuples, so the
node maps each one field for field to protobuf (one message type per class) and tests compare
them by value. Node ids are positive ints; `NONE` (0) means "no node" (no vote, no leader).

Index and term rules: log indexes start at 1; index 0 with term 0 is the empty log's sentinel.
A snapshot at (index, term) replaces every entry up to and including `index`.

Messages come in Request/Response pairs. Every message carries the sender's `term`, `from_id`
and `to_id`; the core drops a message whose sender is not a voter, whose `to_id` is not the
local node or whose fields are impossible (negative indexes, non-contiguous entries, ...).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

NONE = 0
"""The "no node" id: no vote cast, no leader known."""

ENTRY_OVERHEAD_BYTES = 16
"""Bytes an entry counts for besides its data when batches are bounded (term, index, kind)."""


class EntryKind(enum.IntEnum):
    NORMAL = 0
    """Carries application data; applied by the state machine."""
    NOOP = 1
    """Appended by a new leader to commit its term (Raft §8); its data is empty."""


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size_bytes(self) -> int:
        """What this entry counts for against the `*_bytes_max` bounds."""
        return len(self.data) + ENTRY_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class HardState:
    """The state that must be durable before any message depending on it is sent (Raft §5.1)."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application's state after applying every entry up to `index` (of term `term`)."""

    index: int = 0
    term: int = 0
    data: bytes = b""

    @property
    def meta(self) -> SnapshotMeta:
        return SnapshotMeta(self.index, self.term)


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the driver may want to observe; never persisted."""

    leader_id: int
    role: Role


# ---- messages ----


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """RequestVote (Raft §5.2) or, with `pre_vote`, PreVote (thesis §9.6).

    A pre-vote carries the term the sender would campaign in, without having adopted it.
    `leadership_transfer` marks a campaign started by TimeoutNow: voters then ignore their
    leader lease (thesis §3.10).
    """

    term: int
    from_id: int
    to_id: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    leadership_transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    term: int
    from_id: int
    to_id: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """AppendEntries (Raft §5.3): `entries` follow (prev_log_index, prev_log_term)."""

    term: int
    from_id: int
    to_id: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Answers AppendRequest and InstallSnapshotRequest.

    On success `index` is the highest index known to match the leader's log. On rejection
    `index` is the rejected prev_log_index and (`hint_index`, `hint_term`) name the last entry
    that might match: the largest index <= prev_log_index whose term <= prev_log_term, so the
    leader skips a whole conflicting term per round trip (fast backtracking, Raft §5.3 end).
    """

    term: int
    from_id: int
    to_id: int
    success: bool
    index: int
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    """Leader liveness. `commit` is min(follower's match index, leader commit) so a follower
    never commits past what it is known to share with the leader."""

    term: int
    from_id: int
    to_id: int
    commit: int


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    from_id: int
    to_id: int


@dataclass(frozen=True, slots=True)
class InstallSnapshotRequest:
    """InstallSnapshot (Raft §7), sent whole; answered with an AppendResponse."""

    term: int
    from_id: int
    to_id: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNowRequest:
    """Leadership transfer (thesis §3.10): the target campaigns at once, skipping pre-vote."""

    term: int
    from_id: int
    to_id: int


Message = (
    VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | HeartbeatRequest
    | HeartbeatResponse
    | InstallSnapshotRequest
    | TimeoutNowRequest
)
