"""The simulator's nodes and the named invariants checked after every event (raft_sim.py).

Invariants (Raft paper sections): ElectionSafety (§5.2, at most one leader per term),
TermMonotonic and CommitMonotonic (durable term and commit never go back; volatile ones only
back to the durable ones after a crash), LogMatching (§5.3, checked as a hash chain: every
(index, term) has one data and one predecessor term across all nodes), CommittedNeverChanges
and StateMachineSafety (§5.4.3, applied sequences are prefixes of one another, snapshots
included), NoDuplicates, LeaderCompleteness (§5.4, every new leader holds every committed
entry), and, from the proof of §5.4.3, CommittedIsDurable and CommittedCannotBeLost.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from strom.raft import EntryKind, MemoryStorage, RaftError, RawNode, Ready, Role, Snapshot
from strom.raft.types import Entry


class InvariantViolation(AssertionError):
    pass


class App:
    """The replicated state machine: a CRC-32 chain over applied data, plus what it applied."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.index = snapshot.index
        self.digest = int(snapshot.data.split(b":")[1]) if snapshot.data else 0

    def apply(self, entry: Entry) -> None:
        assert entry.index == self.index + 1, f"applied {entry.index} after {self.index}"
        self.index = entry.index
        self.digest = zlib.crc32(entry.data, self.digest)

    def snapshot_data(self) -> bytes:
        return f"{self.index}:{self.digest}".encode()


@dataclass
class SimNode:
    node_id: int
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    raw: RawNode | None = None
    app: App = field(default_factory=lambda: App(Snapshot()))
    pending: Ready | None = None
    incarnation: int = 0
    next_tick: int = 0

    @property
    def alive(self) -> bool:
        return self.raw is not None


class Checker:
    """Named invariants (Raft §5.2 Election Safety, §5.3 Log Matching, §5.4.3 State Machine
    Safety, monotonic terms and commits), each checked incrementally after every event."""

    def __init__(self) -> None:
        self.leader_of_term: dict[int, int] = {}
        self.committed: dict[int, tuple[int, bytes, int]] = {}  # index -> (term, data, digest)
        self.committed_term: dict[int, int] = {}  # index -> term, as soon as any node commits
        self.commit_max = (0, 0)  # (index, term) of the highest committed entry
        self.checked_max = (0, 0)
        # Set by the simulator when a log may have changed (persist, append, crash, restart);
        # the commit-safety check is skipped for events that cannot change its outcome.
        self.logs_changed = True
        self.index_of_data: dict[bytes, int] = {}
        self.entry_at: dict[
            tuple[int, int], tuple[bytes, int]
        ] = {}  # (index, term) -> (data, prev term)
        self.max_term: dict[int, int] = {}
        self.durable_term: dict[int, int] = {}
        self.durable_commit: dict[int, int] = {}
        self.volatile_commit: dict[int, int] = {}

    def fail(self, name: str, detail: str) -> None:
        raise InvariantViolation(f"{name}: {detail}")

    def after_event(self, nodes: list[SimNode]) -> None:
        for node in nodes:
            if node.raw is None:
                continue
            raft = node.raw.raft
            if raft.term < self.max_term.get(node.node_id, 0):
                self.fail("TermMonotonic", f"node {node.node_id} term went back to {raft.term}")
            self.max_term[node.node_id] = raft.term
            commit = raft.log.committed
            previous = self.volatile_commit.get(node.node_id, 0)
            if commit < previous:
                self.fail("CommitMonotonic", f"node {node.node_id} commit back to {commit}")
            if commit > previous:
                self._on_commit(node, previous, commit)
                self.volatile_commit[node.node_id] = commit
            if raft.role is Role.LEADER:
                other = self.leader_of_term.setdefault(raft.term, node.node_id)
                if other != node.node_id:
                    self.fail(
                        "ElectionSafety",
                        f"nodes {other} and {node.node_id} both lead term {raft.term}",
                    )
        if self.commit_max[0] and (self.logs_changed or self.commit_max != self.checked_max):
            self.logs_changed = False
            self.checked_max = self.commit_max
            self._check_committed_is_safe(nodes)

    def _check_committed_is_safe(self, nodes: list[SimNode]) -> None:
        """The latest committed entry (c, t), per the proof of Raft §5.4.3:
        - CommittedIsDurable: a majority hold it in their durable stores;
        - CommittedCannotBeLost: no node lacking it has a log at least as up to date (§5.4.1)
          as the durable logs of a majority, so no such node can ever be elected.
        Both hold in every reachable state of correct Raft; they fail the moment a leader
        commits unsafely (Figure 8), not only once another leader overwrites the entry."""
        index, term = self.commit_max
        durable = [(_last(n.storage), _holds(n.storage, index, term)) for n in nodes]
        holders = sum(1 for _, holds in durable if holds)
        need = len(nodes) // 2 + 1
        if holders < need:
            self.fail(
                "CommittedIsDurable",
                f"committed entry {index} (term {term}) is durable on {holders} of {len(nodes)}",
            )
        for n, (durable_last, holds) in zip(nodes, durable, strict=True):
            logs: list[tuple[int, int]] = [] if holds else [durable_last]
            if n.raw is not None:
                log = n.raw.raft.log
                if log.first_index() <= index and log.term(index) != term:
                    logs.append((log.last_term(), log.last_index()))
            for last in logs:
                voters = sum(1 for other, _ in durable if last >= other)
                if voters >= need:
                    self.fail(
                        "CommittedCannotBeLost",
                        f"node {n.node_id} lacks committed entry {index} (term {term}) but its "
                        f"log (last term, index) {last} is as up to date as {voters} voters'",
                    )

    def _on_commit(self, node: SimNode, previous: int, commit: int) -> None:
        """A committed entry never changes: the first node to commit an index fixes its term."""
        assert node.raw is not None
        log = node.raw.raft.log
        for index in range(max(previous + 1, log.first_index()), commit + 1):
            term = log.term(index)
            assert term is not None
            seen = self.committed_term.setdefault(index, term)
            if index > self.commit_max[0]:
                self.commit_max = (index, term)
            if seen != term:
                self.fail(
                    "CommittedNeverChanges",
                    f"node {node.node_id} committed index {index} with term {term}, "
                    f"committed elsewhere with term {seen}",
                )

    def on_restart(self, node: SimNode) -> None:
        # Volatile state restarts from the durable state: an unsynced term bump or commit may
        # be lost, but nothing durable may go back.
        self.volatile_commit[node.node_id] = self.durable_commit.get(node.node_id, 0)
        self.max_term[node.node_id] = self.durable_term.get(node.node_id, 0)

    def on_persist(self, node: SimNode, rd: Ready) -> None:
        nid = node.node_id
        if rd.hard_state is not None:
            hs = rd.hard_state
            if hs.term < self.durable_term.get(nid, 0):
                self.fail("TermMonotonic", f"node {nid} persisted term {hs.term} going back")
            if hs.commit < self.durable_commit.get(nid, 0):
                self.fail("CommitMonotonic", f"node {nid} persisted commit {hs.commit} going back")
            self.durable_term[nid] = hs.term
            self.durable_commit[nid] = hs.commit
        for entry in rd.entries:
            try:
                prev_term = node.storage.term(entry.index - 1)
            except RaftError:
                continue  # below this node's snapshot
            key = (entry.index, entry.term)
            seen = self.entry_at.setdefault(key, (entry.data, prev_term))
            if seen != (entry.data, prev_term):
                self.fail(
                    "LogMatching",
                    f"node {nid} holds entry {key} = {entry.data!r} after term {prev_term}, "
                    f"elsewhere {seen[0]!r} after term {seen[1]}",
                )

    def on_apply(self, node: SimNode, entry: Entry) -> None:
        record = (entry.term, entry.data, node.app.digest)
        seen = self.committed.setdefault(entry.index, record)
        if seen != record:
            self.fail(
                "StateMachineSafety",
                f"node {node.node_id} applied {record[:2]} at {entry.index}, "
                f"another node applied {seen[:2]}",
            )
        if entry.kind is EntryKind.NORMAL:
            at = self.index_of_data.setdefault(entry.data, entry.index)
            if at != entry.index:
                self.fail("NoDuplicates", f"{entry.data!r} applied at {at} and {entry.index}")

    def on_restore(self, node: SimNode, snap: Snapshot) -> None:
        seen = self.committed.get(snap.index)
        if seen is not None and seen[2] != node.app.digest:
            self.fail("StateMachineSafety", f"node {node.node_id} snapshot {snap.index} differs")

    def on_leader(self, node: SimNode) -> None:
        """Raft §5.4 Leader Completeness: a new leader holds every entry committed anywhere."""
        assert node.raw is not None
        log = node.raw.raft.log
        first = log.first_index()
        for index, term in self.committed_term.items():
            if index >= first and log.term(index) != term:
                self.fail(
                    "LeaderCompleteness",
                    f"leader {node.node_id} of term {node.raw.raft.term} lacks committed "
                    f"entry {index} (term {term}), has term {log.term(index)}",
                )


def _last(store: MemoryStorage) -> tuple[int, int]:
    """(last term, last index): the order of Raft §5.4.1's up-to-date comparison."""
    last = store.last_index()
    return store.term(last), last


def _holds(store: MemoryStorage, index: int, term: int) -> bool:
    if store.snapshot_meta().index >= index:
        return True  # the snapshot covers it (its content is checked on restore)
    return index <= store.last_index() and store.term(index) == term
