"""RawNode: the driver-facing API of the Raft core and its `Ready` batches (etcd's rawnode.go).

The driver (one asyncio task in the node, or the simulator) loops:

    node.tick() on every tick; node.step(msg) for every message received;
    node.propose(data) / transfer_leadership(to) / compact(index, data) on requests;
    if node.has_ready():
        rd = node.ready()
        1. send rd.messages                (may go before or in parallel with step 2)
        2. persist in order: rd.snapshot (store.install_snapshot, and restore the state machine
           from it), rd.entries (store.append: truncates from rd.entries[0].index), rd.compaction
           (store.compact), rd.hard_state (store.set_hard_state) -- all fsynced;
        3. send rd.persisted_messages     (only after step 2 is durable);
        4. apply rd.committed_entries in order;
        5. node.advance(rd).

Only one Ready is outstanding at a time: `has_ready()` is False until `advance`. Messages and
steps may arrive between `ready()` and `advance()`; they go into the next Ready.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import Config
from .core import Raft
from .errors import RaftError
from .prng import SplitMix64
from .progress import ProgressState
from .storage import Storage
from .types import Entry, HardState, Message, Role, Snapshot, SoftState


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the driver; fields in the order the driver handles them."""

    soft_state: SoftState | None
    """Leader id or role changed (informational, never persisted); None if unchanged."""
    messages: tuple[Message, ...]
    """Send now, before persisting (leader traffic: appends, heartbeats, snapshots, votes
    requested, TimeoutNow, heartbeat responses)."""
    snapshot: Snapshot | None
    """Persist first: a snapshot received from the leader replaces the whole log; the
    application restores its state machine from it."""
    entries: tuple[Entry, ...]
    """Persist second: truncate the stored log from entries[0].index, then append."""
    compaction: Snapshot | None
    """Persist third: the application's own snapshot (from `compact`); drop entries <= index."""
    hard_state: HardState | None
    """Persist last: term, vote and commit; None if unchanged."""
    persisted_messages: tuple[Message, ...]
    """Send only after everything above is durable (votes granted, appends acknowledged)."""
    committed_entries: tuple[Entry, ...]
    """Apply in order after persisting; their indexes follow the last applied index."""

    @property
    def truncate_from_index(self) -> int | None:
        """Where the store must cut a conflicting suffix before appending (None: no entries)."""
        return self.entries[0].index if self.entries else None

    def must_sync(self) -> bool:
        return bool(self.entries or self.hard_state or self.snapshot or self.compaction)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    node_id: int
    match: int
    next: int
    state: str


@dataclass(frozen=True, slots=True)
class Status:
    node_id: int
    role: Role
    term: int
    vote: int
    leader_id: int
    commit: int
    applied: int
    first_index: int
    last_index: int
    lead_transferee: int
    progress: tuple[PeerStatus, ...]
    """Per voter (leaders only)."""


class RawNode:
    def __init__(
        self, config: Config, storage: Storage, rand_int: Callable[[int], int] | None = None
    ) -> None:
        """`rand_int(n)` returns an int in [0, n); it randomizes election timeouts."""
        self.raft = self._make_raft(config, storage, rand_int or SplitMix64(config.node_id))
        self._prev_soft = SoftState(self.raft.leader_id, self.raft.role)
        self._prev_hard = self.raft.hard_state()
        self._outstanding: Ready | None = None
        self._compaction: Snapshot | None = None

    def _make_raft(self, config: Config, storage: Storage, rand_int: Callable[[int], int]) -> Raft:
        """Builds the core; tests override it to inject deliberately broken variants."""
        return Raft(config, storage, rand_int)

    # ---- inputs ----

    def tick(self) -> None:
        self.raft.tick()

    def step(self, message: Message) -> None:
        self.raft.step(message)

    def propose(self, data: bytes) -> int:
        """The index the entry will have if it commits. Raises NotLeader (with the known
        leader) or ProposalDropped; both are retriable."""
        return self.raft.propose(data)

    def campaign(self) -> None:
        self.raft.campaign()

    def transfer_leadership(self, to_id: int) -> None:
        """Controlled shutdown: the leader hands over to `to_id` within an election timeout
        (watch soft_state); proposals are refused meanwhile."""
        self.raft.transfer_leadership(to_id)

    def compact(self, index: int, data: bytes) -> None:
        """The application's snapshot `data` of its state after applying `index`: the next
        Ready carries it as `compaction` so the store drops the entries it covers."""
        log = self.raft.log
        if index > log.applied:
            raise RaftError(f"cannot compact at {index}: only {log.applied} applied")
        term = log.term(index)
        if term is None or index < log.first_index():
            return  # already covered by a newer snapshot
        self._compaction = Snapshot(index, term, data)

    # ---- outputs ----

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        r = self.raft
        log = r.log
        return bool(
            r.msgs
            or r.msgs_after_persist
            or log.unstable_entries
            or log.unstable_snapshot is not None
            or self._compaction is not None
            or log.has_next_committed_entries()
            or SoftState(r.leader_id, r.role) != self._prev_soft
            or r.hard_state() != self._prev_hard
        )

    def ready(self) -> Ready:
        assert self._outstanding is None, "advance() the previous Ready first"
        r = self.raft
        log = r.log
        soft = SoftState(r.leader_id, r.role)
        hard = r.hard_state()
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            messages=tuple(r.msgs),
            snapshot=log.unstable_snapshot,
            entries=tuple(log.unstable_entries),
            compaction=self._compaction,
            hard_state=hard if hard != self._prev_hard else None,
            persisted_messages=tuple(r.msgs_after_persist),
            committed_entries=tuple(
                log.next_committed_entries(r.config.committed_bytes_per_ready_max)
            ),
        )
        r.msgs = []
        r.msgs_after_persist = []
        self._compaction = None
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """Everything in `rd` is persisted, sent and applied."""
        assert rd is self._outstanding, "advance() takes the Ready last returned by ready()"
        self._outstanding = None
        r = self.raft
        log = r.log
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.snapshot is not None:
            log.stable_snapshot_to(rd.snapshot.index)
            log.applied_to(rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
            r.on_persisted_entries(last.index, last.term)
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
            r.on_persisted_hard_state(rd.hard_state)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)

    # ---- observation ----

    @property
    def node_id(self) -> int:
        return self.raft.id

    def status(self) -> Status:
        r = self.raft
        peers = tuple(
            PeerStatus(v, pr.match, pr.next, pr.state.name.lower())
            for v, pr in sorted(r.progress.items())
        )
        return Status(
            node_id=r.id,
            role=r.role,
            term=r.term,
            vote=r.vote,
            leader_id=r.leader_id,
            commit=r.log.committed,
            applied=r.log.applied,
            first_index=r.log.first_index(),
            last_index=r.log.last_index(),
            lead_transferee=r.lead_transferee,
            progress=peers,
        )


__all__ = ["PeerStatus", "ProgressState", "RawNode", "Ready", "Status"]
