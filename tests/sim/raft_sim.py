"""A deterministic event simulator for the Raft core (Kafka's RaftEventSimulationTest, TigerBeetle's VOPR).

One `random.Random(seed)` drives everything: the fault mix itself (swarm testing: drop,
duplicate, delay, partition, crash, compaction and transfer rates are drawn per seed), the event
times, and the nodes' election-timeout randomness. A run replays exactly from its seed.

Model:
- virtual time in units; every node ticks each `TICK_UNITS` (staggered per node);
- links delay each message uniformly in [1, delay_max] units (so they reorder), drop and
  duplicate with per-seed probabilities, and honour partitions (each blocked link is one-way;
  a symmetric partition blocks both directions);
- each node has a `MemoryStorage` that plays the disk: it is written only by a "sync" event
  some units after the node handed out a Ready, so a crash loses the Ready in flight, the
  core's unstable entries and all volatile state, exactly what an un-fsynced node loses;
- `messages` leave at `ready()`, `persisted_messages` only after the sync (unless the broken
  `send_persisted_early` mode is on);
- a restart builds a new RawNode from the durable store and restores the application from the
  store's snapshot.

After every event the named invariants of `Checker` run; a violation raises `InvariantViolation`
carrying the seed and the last events. The run ends with a heal phase: faults stop, crashed
nodes restart, a leader must be elected and commit fresh proposals on every node, and every node
must apply them, each within a bound derived from the protocol's timing (raft_heal.py).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raft_heal import HealTiming, apply_ticks_max, commit_ticks_max
from raft_invariants import App, Checker, InvariantViolation, SimNode

from strom.raft import (
    Config,
    HeartbeatRequest,
    HeartbeatResponse,
    MemoryStorage,
    Message,
    RaftError,
    RawNode,
    Ready,
    Role,
)
from strom.raft.types import ENTRY_OVERHEAD_BYTES

TICK_UNITS = 10
TRACE_EVENTS_MAX = 40
EVENTS_MAX_DEFAULT = 2000
DATA_BYTES_MAX = 16
"""The longest payload the simulation proposes (b"v123", b"heal-t45-0"): heal bounds use it."""
ENTRY_BYTES_MAX = DATA_BYTES_MAX + ENTRY_OVERHEAD_BYTES


@dataclass(frozen=True)
class Faults:
    """The fault mix of one seed (swarm testing: each seed explores a different corner)."""

    voters: int
    election_timeout_ticks: int
    drop_p: float
    dup_p: float
    delay_units_max: int
    sync_units_max: int
    chaos_units_mean: int
    weights: dict[str, int]
    entries_per_msg_max: int
    inflight_msgs_max: int
    msg_bytes_max: int
    leader_crash_p: float
    commit_crash_p: float
    crash_loses_msgs_p: float
    uncommitted_bytes_max: int
    leader_isolate_p: float
    pre_vote: bool
    check_quorum: bool

    @staticmethod
    def draw(rng: random.Random) -> Faults:
        weights = {
            "propose": rng.choice([5, 10, 20]),
            "crash": rng.choice([0, 1, 2, 4]),
            "restart": rng.choice([2, 4]),
            "partition": rng.choice([0, 1, 3]),
            "heal": rng.choice([1, 2, 4]),
            "compact": rng.choice([0, 1, 3]),
            "transfer": rng.choice([0, 1]),
        }
        return Faults(
            voters=rng.choice([1, 3, 3, 3, 5, 5]),
            election_timeout_ticks=rng.choice([3, 3, 5, 10]),
            drop_p=rng.choice([0.0, 0.02, 0.1, 0.3]),
            dup_p=rng.choice([0.0, 0.02, 0.1]),
            delay_units_max=rng.choice([1, 5, 15, 40]),
            sync_units_max=rng.choice([1, 3, 10, 10]),
            chaos_units_mean=rng.choice([5, 15, 40]),
            weights=weights,
            entries_per_msg_max=rng.choice([1, 3, 64]),
            inflight_msgs_max=rng.choice([1, 4, 64]),
            msg_bytes_max=rng.choice([40, 1 << 20]),
            leader_crash_p=rng.choice([0.0, 0.1, 0.3, 0.6]),
            commit_crash_p=rng.choice([0.0, 0.1, 0.2, 0.3]),
            crash_loses_msgs_p=rng.choice([0.0, 0.5, 1.0]),
            uncommitted_bytes_max=rng.choice([300, 64 << 20]),
            leader_isolate_p=rng.choice([0.0, 0.1, 0.3]),
            pre_vote=rng.random() < 0.85,
            check_quorum=rng.random() < 0.85,
        )


RawNodeFactory = Callable[[Config, MemoryStorage, Callable[[int], int]], RawNode]


class Simulation:
    def __init__(
        self,
        seed: int,
        events_max: int = EVENTS_MAX_DEFAULT,
        raw_node_factory: RawNodeFactory = RawNode,
        send_persisted_early: bool = False,
        faults: Faults | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults or Faults.draw(self.rng)
        self.events_max = events_max
        self.factory = raw_node_factory
        self.send_persisted_early = send_persisted_early
        self.now = 0
        self.queue: list[tuple[int, int, str, Any]] = []
        self.seq = 0
        self.events = 0
        self.trace: deque[str] = deque(maxlen=TRACE_EVENTS_MAX)
        self.blocked: set[tuple[int, int]] = set()
        self.faults_on = True
        self.delay_units_max = self.faults.delay_units_max
        self.proposals = 0
        self.heal_ticks = (0.0, 0.0)  # after the run: ticks to commit everywhere, then to apply
        self.checker = Checker()
        self.stats: dict[str, int] = dict.fromkeys(
            ("elections", "crashes", "truncations", "snapshots_installed", "compactions"), 0
        )
        self.leader_seen: dict[int, tuple[int, int]] = {}  # node -> (term, incarnation)
        self.leader_commit: dict[int, int] = {}  # node -> commit index last seen as leader
        ids = list(range(1, self.faults.voters + 1))
        self.nodes = {i: SimNode(i) for i in ids}
        for node in self.nodes.values():
            self._start(node)
            node.next_tick = self.rng.randrange(TICK_UNITS)
            self._schedule(node.next_tick, "tick", node.node_id)
        self._schedule(self._chaos_delay(), "chaos", None)

    # ---- plumbing ----

    def _schedule(self, at: int, kind: str, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, payload))

    def _chaos_delay(self) -> int:
        return 1 + int(self.rng.expovariate(1 / self.faults.chaos_units_mean))

    def _config(self, node_id: int, applied: int) -> Config:
        f = self.faults
        return Config(
            node_id=node_id,
            voters=tuple(self.nodes),
            election_timeout_ticks=f.election_timeout_ticks,
            heartbeat_interval_ticks=1,
            pre_vote=f.pre_vote,
            check_quorum=f.check_quorum,
            entries_per_msg_max=f.entries_per_msg_max,
            msg_bytes_max=f.msg_bytes_max,
            inflight_msgs_max=f.inflight_msgs_max,
            committed_bytes_per_ready_max=f.msg_bytes_max,
            uncommitted_bytes_max=f.uncommitted_bytes_max,
            applied=applied,
        )

    def _start(self, node: SimNode) -> None:
        snap = node.storage.snapshot()
        node.app = App(snap)
        node.incarnation += 1
        node.pending = None
        node.raw = self.factory(
            self._config(node.node_id, snap.index), node.storage, self.rng.randrange
        )

    def _note(self, text: str) -> None:
        self.trace.append(f"t={self.now} {text}")

    def describe(self) -> str:
        f = self.faults
        return (
            f"seed={self.seed} voters={f.voters} election={f.election_timeout_ticks} "
            f"drop={f.drop_p} dup={f.dup_p} delay<={f.delay_units_max} sync<={f.sync_units_max} "
            f"pre_vote={f.pre_vote} check_quorum={f.check_quorum} weights={f.weights}"
        )

    def failure_report(self, error: BaseException) -> str:
        lines = [
            f"{type(error).__name__}: {error}",
            self.describe(),
            f"after {self.events} events; replay with: {self.replay_command()}",
            "last events:",
            *self.trace,
        ]
        return "\n".join(lines)

    def replay_command(self) -> str:
        if self.events_max == EVENTS_MAX_DEFAULT:
            return f"pytest tests/sim --seed {self.seed}"
        return (
            f'cd tests/sim && python -c "from raft_sim import Simulation; '
            f'Simulation({self.seed}, events_max={self.events_max}).run()"'
        )

    # ---- the run ----

    def run(self) -> None:
        try:
            while self.events < self.events_max:
                self._step_event()
            self._heal()
        except AssertionError as error:
            raise InvariantViolation(self.failure_report(error)) from error

    def _step_event(self) -> None:
        at, _, kind, payload = heapq.heappop(self.queue)
        self.now = at
        self.events += 1
        touched = getattr(self, f"_on_{kind}")(payload)
        if kind != "tick" and not (
            kind == "deliver" and isinstance(payload[0], HeartbeatRequest | HeartbeatResponse)
        ):
            self.checker.logs_changed = True
        for node_id in touched:
            self._drive(self.nodes[node_id])
        self.checker.after_event(list(self.nodes.values()))
        for node in self.nodes.values():
            raw = node.raw
            if raw is not None and raw.raft.role is Role.LEADER:
                self._watch_leader(node, raw)

    def _watch_leader(self, node: SimNode, raw: RawNode) -> None:
        """Leader Completeness on every new leader, and targeted crashes: a new leader that
        crashes before its no-op spreads, or a leader that crashes right after its commit
        index moves, leaves the multi-term uncommitted suffixes of Raft Figure 8."""
        f = self.faults
        mark = (raw.raft.term, node.incarnation)
        if self.leader_seen.get(node.node_id) != mark:
            self.leader_seen[node.node_id] = mark
            self.leader_commit[node.node_id] = raw.raft.log.committed
            self._note(f"node {node.node_id} leads term {mark[0]}")
            self.stats["elections"] += 1
            self.checker.on_leader(node)
            self._maybe_fault(node, "crash", f.leader_crash_p)
            self._maybe_fault(node, "isolate", f.leader_isolate_p)
        elif raw.raft.log.committed > self.leader_commit[node.node_id]:
            self.leader_commit[node.node_id] = raw.raft.log.committed
            self._maybe_fault(node, "crash", f.commit_crash_p)

    def _maybe_fault(self, node: SimNode, kind: str, probability: float) -> None:
        """Schedule a crash, or an isolation (it keeps running and appending entries nobody
        else gets), of `node` within two message delays."""
        if probability and self.faults_on and self.rng.random() < probability:
            at = self.now + self.rng.randint(1, 2 * self.faults.delay_units_max)
            self._schedule(at, kind, (node.node_id, node.incarnation))

    def _on_tick(self, node_id: int) -> list[int]:
        node = self.nodes[node_id]
        self._schedule(self.now + TICK_UNITS, "tick", node_id)
        if node.raw is None:
            return []
        node.raw.tick()
        return [node_id]

    def _on_deliver(self, payload: tuple[Message, int]) -> list[int]:
        m, fragile_incarnation = payload
        node = self.nodes[m.to_id]
        if node.raw is None or (m.from_id, m.to_id) in self.blocked:
            return []
        if fragile_incarnation and self.nodes[m.from_id].incarnation != fragile_incarnation:
            return []  # still in the sender's buffers when it crashed
        self._note(f"deliver {_fmt(m)}")
        node.raw.step(m)
        return [m.to_id]

    def _on_isolate(self, payload: tuple[int, int]) -> list[int]:
        node_id, incarnation = payload
        if self.faults_on and self.nodes[node_id].incarnation == incarnation:
            for other in self.nodes:
                if other != node_id:
                    self.blocked.update({(node_id, other), (other, node_id)})
            self._note(f"isolate node {node_id}")
        return []

    def _on_crash(self, payload: tuple[int, int]) -> list[int]:
        node_id, incarnation = payload
        node = self.nodes[node_id]
        if node.alive and node.incarnation == incarnation and self.faults_on:
            self._crash(node)
        return []

    def _crash(self, node: SimNode) -> None:
        node.raw = None
        node.incarnation += 1
        node.pending = None
        self.stats["crashes"] += 1
        self._note(f"crash node {node.node_id}")

    def _on_sync(self, payload: tuple[int, int]) -> list[int]:
        node_id, incarnation = payload
        node = self.nodes[node_id]
        if node.incarnation != incarnation or node.pending is None or node.raw is None:
            return []  # the node crashed before this fsync completed
        rd, node.pending = node.pending, None
        self._persist(node, rd)
        if not self.send_persisted_early:
            self._send_all(node, rd.persisted_messages)
        for entry in rd.committed_entries:
            node.app.apply(entry)
            self.checker.on_apply(node, entry)
        node.raw.advance(rd)
        return [node_id]

    def _persist(self, node: SimNode, rd: Ready) -> None:
        store = node.storage
        if rd.snapshot is not None:
            self.stats["snapshots_installed"] += 1
            store.install_snapshot(rd.snapshot)
            node.app = App(rd.snapshot)
            self.checker.on_restore(node, rd.snapshot)
        if rd.entries:
            if rd.entries[0].index <= store.last_index():
                self.stats["truncations"] += 1
            store.append(list(rd.entries))
        if rd.compaction is not None:
            self.stats["compactions"] += 1
            store.compact(rd.compaction)
        if rd.hard_state is not None:
            store.set_hard_state(rd.hard_state)
        self.checker.on_persist(node, rd)

    def _drive(self, node: SimNode) -> None:
        raw = node.raw
        if raw is None or node.pending is not None or not raw.has_ready():
            return
        rd = raw.ready()
        node.pending = rd
        self._send_all(node, rd.messages)
        if self.send_persisted_early:
            self._send_all(node, rd.persisted_messages)
        delay = self.rng.randint(1, min(self.faults.sync_units_max, self.delay_units_max))
        self._schedule(self.now + delay, "sync", (node.node_id, node.incarnation))

    def _send_all(self, sender: SimNode, msgs: tuple[Message, ...]) -> None:
        f = self.faults
        for m in msgs:
            if self.faults_on and self.rng.random() < f.drop_p:
                continue
            copies = 2 if self.faults_on and self.rng.random() < f.dup_p else 1
            # A fragile message is lost if its sender crashes before it is delivered (it
            # was still in a send buffer), so a crash can cut a leader off mid-broadcast.
            fragile = self.faults_on and self.rng.random() < f.crash_loses_msgs_p
            for _ in range(copies):
                delay = self.rng.randint(1, min(f.delay_units_max, self.delay_units_max))
                payload = (m, sender.incarnation if fragile else 0)
                self._schedule(self.now + delay, "deliver", payload)

    # ---- chaos ----

    def _on_chaos(self, _: None) -> list[int]:
        if not self.faults_on:
            return []
        self._schedule(self.now + self._chaos_delay(), "chaos", None)
        weights = self.faults.weights
        action = self.rng.choices(list(weights), list(weights.values()))[0]
        result: list[int] = getattr(self, f"_chaos_{action}")()
        return result

    def _alive(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.alive]

    def _leader(self) -> SimNode | None:
        best: SimNode | None = None
        for node in self._alive():
            assert node.raw is not None
            raft = node.raw.raft
            if raft.role is Role.LEADER and (
                best is None or raft.term > best.raw.raft.term  # type: ignore[union-attr]
            ):
                best = node
        return best

    def _chaos_propose(self) -> list[int]:
        # Clients also reach stale leaders (cut off by a partition, not yet stepped down):
        # their entries are the divergent suffixes that later leaders must overwrite.
        alive = self._alive()
        leaders = [n for n in alive if n.raw is not None and n.raw.raft.role is Role.LEADER]
        target = self.rng.choice(leaders) if leaders and self.rng.random() < 0.9 else None
        if target is None and alive:
            target = self.rng.choice(alive)
        if target is None or target.raw is None:
            return []
        self.proposals += 1
        data = b"v%d" % self.proposals
        assert len(data) <= DATA_BYTES_MAX
        try:
            index = target.raw.propose(data)
            self._note(f"propose {data!r} at node {target.node_id} -> index {index}")
        except RaftError as error:
            self._note(f"propose at node {target.node_id}: {type(error).__name__}")
        return [target.node_id]

    def _chaos_crash(self) -> list[int]:
        alive = self._alive()
        if not alive:
            return []
        self._crash(self.rng.choice(alive))
        return []

    def _chaos_restart(self) -> list[int]:
        dead = [n for n in self.nodes.values() if not n.alive]
        if not dead:
            return []
        node = self.rng.choice(dead)
        self._start(node)
        self.checker.on_restart(node)
        self._note(f"restart node {node.node_id}")
        return [node.node_id]

    def _chaos_partition(self) -> list[int]:
        ids = list(self.nodes)
        if len(ids) < 2:
            return []
        if self.rng.random() < 0.3:
            a, b = self.rng.sample(ids, 2)
            self.blocked.add((a, b))
            self._note(f"one-way partition {a} -/-> {b}")
            return []
        side = set(self.rng.sample(ids, self.rng.randint(1, len(ids) - 1)))
        for a in ids:
            for b in ids:
                if (a in side) != (b in side):
                    self.blocked.add((a, b))
        self._note(f"partition {sorted(side)} | {sorted(set(ids) - side)}")
        return []

    def _chaos_heal(self) -> list[int]:
        self.blocked.clear()
        self._note("heal partitions")
        return []

    def _chaos_compact(self) -> list[int]:
        alive = self._alive()
        if not alive:
            return []
        node = self.rng.choice(alive)
        assert node.raw is not None
        index = node.app.index
        if index < node.raw.raft.log.first_index():
            return []
        node.raw.compact(index, node.app.snapshot_data())
        self._note(f"compact node {node.node_id} at {index}")
        return [node.node_id]

    def _chaos_transfer(self) -> list[int]:
        leader = self._leader()
        if leader is None or leader.raw is None or len(self.nodes) < 2:
            return []
        to = self.rng.choice([i for i in self.nodes if i != leader.node_id])
        leader.raw.transfer_leadership(to)
        self._note(f"transfer leadership {leader.node_id} -> {to}")
        return [leader.node_id]

    # ---- heal and converge ----

    def heal_timing(self) -> HealTiming:
        f = self.faults
        return HealTiming(
            tick_units=TICK_UNITS,
            election_timeout_ticks=f.election_timeout_ticks,
            hop_units_max=self.delay_units_max,
            sync_units_max=min(f.sync_units_max, self.delay_units_max),  # see `_drive`
            inflight_msgs_max=f.inflight_msgs_max,
            entries_per_msg=max(1, min(f.entries_per_msg_max, f.msg_bytes_max // ENTRY_BYTES_MAX)),
        )

    def _heal(self) -> None:
        """Faults stop; a leader must emerge and commit new proposals on every node, then every
        node must apply them, each phase within its bound (raft_heal.py)."""
        self.faults_on = False
        self.blocked.clear()
        # Raft needs broadcast time << election timeout (§5.6): once healed, a round trip
        # plus an fsync must fit well inside the shortest election timeout.
        self.delay_units_max = max(1, self.faults.election_timeout_ticks * TICK_UNITS // 5)
        for node in self.nodes.values():
            if not node.alive:
                self._start(node)
                self.checker.on_restart(node)
                self._drive(node)
        self._note("heal: faults off, all nodes up")
        start = self.now
        timing = self.heal_timing()
        logs = [n.raw.raft.log for n in self.nodes.values() if n.raw is not None]
        index = self._await_commit_everywhere(commit_ticks_max(timing, logs))
        self._note(f"heal: index {index} committed on every node")
        committed = self.now
        behind = max(index - n.app.index for n in self.nodes.values())
        self._await_applied_everywhere(index, apply_ticks_max(timing, behind))
        self.heal_ticks = ((committed - start) / TICK_UNITS, (self.now - committed) / TICK_UNITS)

    def _await_commit_everywhere(self, ticks_max: int) -> int:
        """Proposes a batch to each new leader; returns the index of a proposal that committed
        (with the term it was proposed in) and that every node's commit index covers."""
        deadline = self.now + ticks_max * TICK_UNITS
        proposed: dict[int, list[int]] = {}  # leader term -> indexes of its batch
        while self.queue[0][0] <= deadline:  # ticks keep the queue from ever running dry
            self._step_event()
            leader = self._leader()
            if leader is not None and leader.raw is not None:
                term = leader.raw.raft.term
                if term not in proposed:
                    self._propose_heal_batch(leader.raw, term, proposed)
                    self._drive(leader)
            for term, indexes in proposed.items():
                for index in indexes:
                    if self.checker.committed_term.get(index) == term and all(
                        n.raw is not None and n.raw.raft.log.committed >= index
                        for n in self.nodes.values()
                    ):
                        return index
        raise InvariantViolation(
            f"Liveness: after healing, no proposal was committed on every node within "
            f"{ticks_max} ticks (proposed at term: indexes {proposed}); {self._roles()}"
        )

    def _propose_heal_batch(self, raw: RawNode, term: int, proposed: dict[int, list[int]]) -> None:
        """One batch per leader term: an earlier leader's batch may have been lost."""
        indexes: list[int] = []
        for k in range(3):
            data = b"heal-t%d-%d" % (term, k)
            assert len(data) <= DATA_BYTES_MAX
            try:
                indexes.append(raw.propose(data))
            except RaftError:
                break  # e.g. a transfer still running: retry after the next event
        if indexes:
            proposed[term] = indexes

    def _await_applied_everywhere(self, index: int, ticks_max: int) -> None:
        deadline = self.now + ticks_max * TICK_UNITS
        while not all(n.app.index >= index for n in self.nodes.values()):
            if self.queue[0][0] > deadline:  # an apply at the deadline itself is in time
                raise InvariantViolation(
                    f"Liveness: index {index} was committed on every node but not applied on "
                    f"every node within {ticks_max} ticks; {self._roles()}"
                )
            self._step_event()

    def _roles(self) -> str:
        """Each node's role, term, commit, applied and last index, for liveness reports."""
        parts = []
        for node in self.nodes.values():
            if node.raw is None:
                parts.append(f"node {node.node_id} down")
                continue
            r = node.raw.raft
            transfer = f" transferring to {r.lead_transferee}" if r.lead_transferee else ""
            parts.append(
                f"node {node.node_id} {r.role.name.lower()} term {r.term} commit "
                f"{r.log.committed} applied {node.app.index} last {r.log.last_index()}{transfer}"
            )
        return "; ".join(parts)


def _fmt(m: Message) -> str:
    name = type(m).__name__
    fields = [f"t{m.term}"]
    for attr in ("prev_log_index", "index", "commit", "granted", "success", "pre_vote"):
        value = getattr(m, attr, None)
        if value is not None:
            fields.append(f"{attr}={value}")
    entries = getattr(m, "entries", None)
    if entries:
        fields.append(f"entries={entries[0].index}..{entries[-1].index}")
    return f"{m.from_id}->{m.to_id} {name} {' '.join(fields)}"
