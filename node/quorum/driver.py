"""The Raft driver: the one asyncio task that owns the Raft core (DESIGN.md §3, §5).

It feeds the core ticks (from the loop's clock), messages (from the Raft gRPC service) and
proposals (from the controller), and handles each `Ready` exactly in the order the core demands:

    1. send `messages` (they may go before the disk write)
    2. persist snapshot, entries, compaction and hard state, fsynced, in a worker thread
       (the core is not touched meanwhile: inputs queue up)
    3. send `persisted_messages` (votes and acknowledgements that depend on step 2)
    4. apply `committed_entries` to the state machine, resolving the proposals they carry
    5. `advance`

Proposals resolve when their entry is applied; an entry applied at the proposal's index but with
another term means the proposal was lost to a leader change, and the proposer hears NotLeader.
After applying, the driver asks the state machine for a snapshot once enough bytes have been
applied since the last one, and hands it to the core, which compacts the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from strom.node.clock import SYSTEM_CLOCK, Clock
from strom.node.delayed import OffsetWaiters
from strom.raft.errors import NotLeader, ProposalDropped, RaftError
from strom.raft.rawnode import RawNode, Ready
from strom.raft.storage import LogStore
from strom.raft.types import (
    AppendResponse,
    Entry,
    EntryKind,
    HeartbeatResponse,
    Message,
    Role,
    Snapshot,
)

log = logging.getLogger("strom.raft")

INBOX_MAX = 10_000
RECENT_ENTRIES_MAX = 20_000
PROPOSALS_MAX = 10_000


class RecentEntries:
    """The driver's committed entries, bounded, for observers."""

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque(maxlen=RECENT_ENTRIES_MAX)

    def add(self, entry: Entry) -> None:
        if self.entries and entry.index != self.entries[-1].index + 1:
            self.entries.clear()  # a gap (snapshot installed): start over
        self.entries.append(entry)

    def clear(self) -> None:
        self.entries.clear()

    def since(self, index: int, bytes_max: int) -> list[Entry] | None:
        """Entries from `index` on, or None if `index` is older than what is kept."""
        if not self.entries or index > self.entries[-1].index:
            return []
        first = self.entries[0].index
        if index < first:
            return None
        out: list[Entry] = []
        size = 0
        for i in range(index - first, len(self.entries)):
            entry = self.entries[i]
            size += len(entry.data) + 16
            if out and size > bytes_max:
                break
            out.append(entry)
        return out


class StateMachine(Protocol):
    def apply(self, entry: Entry) -> None:
        """Apply one committed normal entry (no-ops are not passed)."""

    def restore(self, snapshot: Snapshot) -> None:
        """Replace all state by a snapshot (from the leader, or loaded at start)."""

    def snapshot(self) -> bytes:
        """The state as of the last applied entry."""


class NotLeaderError(Exception):
    """This node cannot propose: `leader_id` (0 when unknown) can. Raised only when this node
    is not (or no longer) the Raft leader, never for back-pressure."""

    def __init__(self, leader_id: int, message: str = "") -> None:
        super().__init__(message or f"not the leader; leader is {leader_id or 'unknown'}")
        self.leader_id = leader_id


class ProposalRefused(Exception):
    """The leader has too many proposals in flight: nothing was proposed; retry shortly."""


@dataclass(slots=True)
class _Proposal:
    data: bytes
    future: asyncio.Future[int]
    index: int = 0
    term: int = 0


def _retrieve(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()


class RaftDriver:
    def __init__(
        self,
        raw: RawNode,
        store: LogStore,
        state_machine: StateMachine,
        send: Callable[[int, list[Message]], None],
        tick_s: float,
        snapshot_bytes_threshold: int,
        on_role_change: Callable[[Role, int, int], None] | None = None,
        on_leader_ready: Callable[[int], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.raw = raw
        self.clock = clock
        self.store = store
        self.state_machine = state_machine
        self.send = send
        self.tick_s = tick_s
        self.snapshot_bytes_threshold = snapshot_bytes_threshold
        self.on_role_change = on_role_change
        self.on_leader_ready = on_leader_ready
        # The core's status as of the last Ready, for readers outside the driver task (the
        # store may be mid-write in a worker thread; the core must not be touched then).
        self.status = raw.status()
        self.applied = OffsetWaiters(self.status.applied)
        self.committed_index = raw.status().commit
        self._inbox: list[Message] = []
        self._proposals: list[_Proposal] = []
        self._commands: list[Callable[[], None]] = []
        self._pending: dict[int, _Proposal] = {}
        self._wake = asyncio.Event()
        self._bytes_since_snapshot = 0
        self._role = Role.FOLLOWER
        self._leader_id = 0
        self.term = raw.status().term
        self.peer_last_heard_ms: dict[int, int] = {}
        # observer id -> (last index it holds, when it last fetched), for DescribeQuorum
        self.observer_progress: dict[int, tuple[int, int]] = {}
        self.leader_ready_term = -1
        self.recent = RecentEntries()  # committed entries served to observers

    # ---- inputs (any task) -------------------------------------------------------------

    def step(self, messages: list[Message]) -> None:
        """Queue messages for the core; over INBOX_MAX they are dropped (Raft tolerates loss)."""
        room = INBOX_MAX - len(self._inbox)
        if room > 0:
            self._inbox.extend(messages[:room])
        now_ms = self.clock.now_ms()
        for m in messages:
            if isinstance(m, AppendResponse | HeartbeatResponse):
                self.peer_last_heard_ms[m.from_id] = now_ms
        self._wake.set()

    @property
    def proposals_full(self) -> bool:
        """True when `propose` would refuse for back-pressure (check before deciding)."""
        return len(self._proposals) + len(self._pending) >= PROPOSALS_MAX

    async def propose(self, data: bytes, timeout_s: float) -> int:
        """Propose `data`; return its index once applied.

        Raises NotLeaderError (this node does not lead, or lost leadership before the entry
        committed), ProposalRefused (back-pressure: nothing was proposed) or TimeoutError (the
        entry may still commit). A proposal the core cannot take yet (a leadership transfer in
        progress, the uncommitted-bytes bound) waits in order for the next loop turn instead of
        failing: only a lost leadership fails it."""
        future = self.submit(data)
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(future)

    def submit(self, data: bytes) -> asyncio.Future[int]:
        """Propose `data` without waiting: the future resolves to its index once applied, or
        fails with NotLeaderError; it never times out. Raises as `propose` does."""
        if self._role != Role.LEADER:
            raise NotLeaderError(self._leader_id)
        if self.proposals_full:
            raise ProposalRefused(f"{PROPOSALS_MAX} metadata proposals in flight; retry")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # A caller that timed out no longer awaits the outcome (asyncio.shield drops it), so an
        # exception set later would be logged as "never retrieved": mark it retrieved here.
        future.add_done_callback(_retrieve)
        self._proposals.append(_Proposal(data, future))
        self._wake.set()
        return future

    def transfer_leadership(self, to_id: int) -> None:
        """Ask the core (on the driver's task) to hand leadership to `to_id`."""
        self._commands.append(lambda: self.raw.transfer_leadership(to_id))
        self._wake.set()

    @property
    def leader_id(self) -> int:
        return self._leader_id

    @property
    def is_leader(self) -> bool:
        return self._role == Role.LEADER

    # ---- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.tick_s
        while True:
            timeout = max(0.0, next_tick - loop.time())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            now = loop.time()
            while now >= next_tick:
                self.raw.tick()
                next_tick += self.tick_s
                if now - next_tick > 10 * self.tick_s:
                    next_tick = now + self.tick_s  # the loop was stalled: do not burst ticks
            self._drain_inputs()
            while self.raw.has_ready():
                await self._handle(self.raw.ready())
                # A Ready with nothing to persist never awaits: replaying a long log after a
                # restart would otherwise apply it all in one turn of the loop, starving
                # heartbeats and requests (the node could be fenced meanwhile).
                await asyncio.sleep(0)

    def _drain_inputs(self) -> None:
        commands, self._commands = self._commands, []
        for command in commands:
            try:
                command()
            except RaftError as exc:
                log.info("raft command refused: %s", exc)
        inbox, self._inbox = self._inbox, []
        for message in inbox:
            try:
                self.raw.step(message)
            except RaftError as exc:
                log.debug("dropped Raft message %s: %s", type(message).__name__, exc)
        proposals, self._proposals = self._proposals, []
        for position, proposal in enumerate(proposals):
            if proposal.future.done():
                continue
            try:
                proposal.index = self.raw.propose(proposal.data)
            except NotLeader as exc:
                proposal.future.set_exception(NotLeaderError(exc.leader_id))
                continue
            except ProposalDropped as exc:
                # Not now (leadership moving, too many uncommitted bytes): keep this and every
                # later proposal, in order, for the next turn. The controller decided them on a
                # speculative image that includes them, so they must not be dropped.
                log.debug("proposals wait: %s", exc)
                self._proposals[:0] = proposals[position:]
                break
            proposal.term = self.raw.status().term
            self._pending[proposal.index] = proposal

    async def _handle(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.role, rd.soft_state.leader_id)
        self._send(rd.messages)
        if rd.must_sync():
            await asyncio.to_thread(self._persist, rd)
        if rd.hard_state is not None:
            self.term = rd.hard_state.term
            self.committed_index = rd.hard_state.commit
        if rd.snapshot is not None:
            self.state_machine.restore(rd.snapshot)
            self.recent.clear()
            self._bytes_since_snapshot = 0
            self.applied.advance(rd.snapshot.index)
        self._send(rd.persisted_messages)
        for entry in rd.committed_entries:
            self._apply(entry)
        self.raw.advance(rd)
        self._maybe_snapshot()
        self.status = self.raw.status()

    def _persist(self, rd: Ready) -> None:
        """Runs in a worker thread; the order is the core's (see strom.raft.rawnode)."""
        if rd.snapshot is not None:
            self.store.install_snapshot(rd.snapshot)
        if rd.entries:
            self.store.append(list(rd.entries))
        if rd.compaction is not None:
            self.store.compact(rd.compaction)
        if rd.hard_state is not None:
            self.store.set_hard_state(rd.hard_state)

    def _send(self, messages: tuple[Message, ...]) -> None:
        by_peer: dict[int, list[Message]] = {}
        for message in messages:
            by_peer.setdefault(message.to_id, []).append(message)
        for peer, batch in by_peer.items():
            self.send(peer, batch)

    def _apply(self, entry: Entry) -> None:
        if entry.kind == EntryKind.NORMAL:
            self.state_machine.apply(entry)
            self._bytes_since_snapshot += len(entry.data)
        elif self._role == Role.LEADER and entry.term == self.term:
            # Our own no-op committed: we have applied the whole log of earlier terms, so the
            # controller may start deciding (DESIGN.md §6).
            self.leader_ready_term = entry.term
            if self.on_leader_ready is not None:
                self.on_leader_ready(entry.term)
        proposal = self._pending.pop(entry.index, None)
        if proposal is not None and not proposal.future.done():
            if proposal.term == entry.term:
                proposal.future.set_result(entry.index)
            else:
                proposal.future.set_exception(
                    NotLeaderError(self._leader_id, "proposal lost to a leader change")
                )
        self.recent.add(entry)
        self.applied.advance(entry.index)

    def _maybe_snapshot(self) -> None:
        if self._bytes_since_snapshot < self.snapshot_bytes_threshold:
            return
        index = self.applied.value
        self.raw.compact(index, self.state_machine.snapshot())
        self._bytes_since_snapshot = 0
        log.info("metadata snapshot at index %d", index)

    def _on_soft_state(self, role: Role, leader_id: int) -> None:
        was_leader = self._role == Role.LEADER
        self._role, self._leader_id = role, leader_id
        if was_leader and role != Role.LEADER:
            pending, self._pending = self._pending, {}
            for proposal in pending.values():
                if not proposal.future.done():
                    proposal.future.set_exception(NotLeaderError(leader_id, "leadership lost"))
            self.leader_ready_term = -1
        log.info("raft role %s, leader %s, term %d", role.name, leader_id or "unknown", self.term)
        if self.on_role_change is not None:
            self.on_role_change(role, leader_id, self.raw.status().term)
