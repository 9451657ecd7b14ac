"""The pieces of the replication simulation (replication_model.py): the leader-epoch cache, the
controller's partition rules, replicas and messages, the swarm-drawn knobs, and the strom shell
behaviours the simulation found to be wrong (STROM_SHELL_QUIRKS)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from strom.node.replica.leader_state import IsrChange, LeaderState

NO_LEADER = -1
UNDEFINED = -1

# Kafka error names the shell passes around (only their identity matters here).
NONE, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, NOT_LEADER = "NONE", "FENCED", "UNKNOWN", "NOTLDR"
OUT_OF_RANGE, INVALID_UPDATE_VERSION, INELIGIBLE_REPLICA = "OOR", "INVALID_VERSION", "INELIGIBLE"


class InvariantViolation(AssertionError):
    def __init__(self, name: str, detail: str, seed: int, trace: list[str]) -> None:
        self.name = name
        lines = "\n  ".join(trace)
        super().__init__(
            f"{name} violated (seed {seed}; replay: pytest tests/sim/test_replication_sim.py "
            f"--seed {seed}): {detail}\nlast events:\n  {lines}"
        )


# ---- leader-epoch cache ---------------------------------------------------------------------


class EpochCache:
    """(epoch, start offset) entries, both strictly increasing, with Kafka's `endOffsetFor`."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[int, int]] = []

    @property
    def latest_epoch(self) -> int | None:
        return self.entries[-1][0] if self.entries else None

    def assign(self, epoch: int, start_offset: int) -> None:
        if self.entries and self.entries[-1][0] == epoch and self.entries[-1][1] <= start_offset:
            return
        self.entries = [e for e in self.entries if e[0] < epoch and e[1] < start_offset]
        self.entries.append((epoch, start_offset))

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        if requested_epoch == UNDEFINED or not self.entries:
            return UNDEFINED, UNDEFINED
        if self.entries[-1][0] == requested_epoch:
            return requested_epoch, log_end_offset
        higher = next((e for e in self.entries if e[0] > requested_epoch), None)
        if higher is None:
            return UNDEFINED, UNDEFINED
        floor = None
        for e in self.entries:
            if e[0] <= requested_epoch:
                floor = e
        return (requested_epoch if floor is None else floor[0]), higher[1]

    def truncate_from_end(self, end_offset: int) -> None:
        self.entries = [e for e in self.entries if e[1] < end_offset]


# ---- controller -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionState:
    """The controller's committed partition record plus the set of unfenced brokers."""

    replicas: tuple[int, ...]
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    partition_epoch: int
    active: frozenset[int]

    def same_partition(self, other: PartitionState | None) -> bool:
        return other is not None and (
            self.leader,
            self.leader_epoch,
            self.isr,
            self.partition_epoch,
        ) == (other.leader, other.leader_epoch, other.isr, other.partition_epoch)


def choose_leader(
    st: PartitionState, active: frozenset[int], isr: tuple[int, ...], avoid: int
) -> int:
    """Clean election, as node/controller/placement.py: keep an eligible leader, else the first
    replica (in preference order) that is an active ISR member."""
    if st.leader in active and st.leader in isr and st.leader != avoid:
        return st.leader
    for r in st.replicas:
        if r in active and r in isr and r != avoid:
            return r
    return NO_LEADER


class Controller:
    """The partition part of node/controller/logic.py. Every change is a new metadata version."""

    def __init__(self, replicas: tuple[int, ...]) -> None:
        first = PartitionState(replicas, replicas[0], 0, replicas, 0, frozenset(replicas))
        self.versions = [first]

    @property
    def state(self) -> PartitionState:
        return self.versions[-1]

    def _commit(self, st: PartitionState) -> None:
        self.versions.append(st)

    def _change(self, leader: int, isr: tuple[int, ...], active: frozenset[int]) -> None:
        st = self.state
        ordered = tuple(r for r in st.replicas if r in isr)
        moved = leader != st.leader
        changed = moved or ordered != st.isr
        self._commit(
            replace(
                st,
                leader=leader,
                leader_epoch=st.leader_epoch + (1 if moved else 0),
                isr=ordered,
                partition_epoch=st.partition_epoch + (1 if changed else 0),
                active=active,
            )
        )

    def fence(self, broker: int) -> None:
        """Out of the ISR unless it is the last member; its leadership moves within the ISR."""
        st = self.state
        active = st.active - {broker}
        isr = tuple(r for r in st.isr if r != broker) or (broker,)
        leader = choose_leader(st, active, isr, avoid=broker)
        if broker not in st.isr and st.leader != broker:
            leader, isr = st.leader, st.isr
        self._change(leader, isr, active)

    def unfence(self, broker: int) -> None:
        st = self.state
        active = st.active | {broker}
        leader = st.leader
        if leader == NO_LEADER:
            leader = choose_leader(st, active, st.isr, avoid=NO_LEADER)
        self._change(leader, st.isr, active)

    def move_leader(self, new_leader: int) -> None:
        """A preferred-leader election or controlled shutdown: the old leader stays alive."""
        self._change(new_leader, self.state.isr, self.state.active)

    def alter_partition(self, broker: int, change: IsrChange) -> str:
        st = self.state
        if st.leader != broker:
            return NOT_LEADER
        if change.leader_epoch != st.leader_epoch:
            return FENCED_LEADER_EPOCH
        if change.partition_epoch != st.partition_epoch:
            return INVALID_UPDATE_VERSION
        assert broker in change.new_isr and set(change.new_isr) <= set(st.replicas)
        if any(r not in st.active for r in set(change.new_isr) - set(st.isr)):
            return INELIGIBLE_REPLICA
        if tuple(change.new_isr) != st.isr:
            self._change(st.leader, tuple(change.new_isr), st.active)
        return NONE


# ---- messages -------------------------------------------------------------------------------


@dataclass(slots=True)
class Message:
    kind: str  # fetch, fetch_resp, alter, alter_resp
    src: int  # broker id; the controller is -1
    dst: int
    req_id: int
    body: dict[str, Any]


@dataclass(slots=True)
class Waiter:
    """An acks=all produce waiting for the HW (Partition.wait_for_isr)."""

    last_offset: int
    records: list[tuple[int, int, int]]  # (offset, epoch, value)


@dataclass(slots=True)
class Replica:
    """A broker's replica of the partition: the Partition object plus its fetchers' state."""

    id: int
    log: list[tuple[int, int]] = field(default_factory=list)  # offset -> (epoch, value)
    cache: EpochCache = field(default_factory=EpochCache)
    hw: int = 0
    checkpointed_hw: int = 0
    alive: bool = True
    paused: bool = False
    view: PartitionState | None = None
    view_version: int = -1
    leader_id: int = NO_LEADER  # Partition.leader_id
    leader_epoch: int = -1  # Partition.leader_epoch
    registered_version: int = 0  # metadata older than its registration is never applied
    verified: int = 0  # log[:verified] is known to equal Simulation.committed[:verified]
    leader_state: LeaderState | None = None
    waiters: list[Waiter] = field(default_factory=list)
    fetching_from: int | None = None  # the fetcher this partition sits in
    fetch_inflight: dict[int, int] = field(default_factory=dict)  # fetcher leader -> req id
    alter_inflight: Message | None = None
    parked: list[Message] = field(default_factory=list)  # long-polling follower fetches

    @property
    def leo(self) -> int:
        return len(self.log)

    @property
    def running(self) -> bool:
        return self.alive and not self.paused


@dataclass(frozen=True, slots=True)
class Knobs:
    """The swarm-drawn fault mix and sizes of one run."""

    replica_count: int
    loss: float
    lag_time_max_ms: int
    min_insync_replicas: int
    fetch_records_max: int
    weights: dict[str, float]

    @staticmethod
    def draw(rng: random.Random) -> Knobs:
        def maybe(weight: float, p_off: float = 0.25) -> float:
            return 0.0 if rng.random() < p_off else weight * rng.uniform(0.2, 1.5)

        weights = {
            "produce": rng.uniform(1, 4),
            "fetch": rng.uniform(2, 6),
            "deliver": rng.uniform(4, 10),
            "unpark": rng.uniform(0.5, 2),
            "fetch_timeout": rng.uniform(0.5, 2),
            "alter_timeout": rng.uniform(0.3, 1),
            "produce_timeout": maybe(0.2),
            "shrink_check": rng.uniform(0.5, 2),
            "tick": rng.uniform(0.5, 2),
            "metadata": rng.uniform(1, 4),
            "crash": maybe(0.15),
            "restart": rng.uniform(0.2, 1),
            "pause": maybe(0.15),
            "resume": rng.uniform(0.2, 1),
            "session_expiry": rng.uniform(0.2, 1),
            "unfence": rng.uniform(0.3, 1.5),
            "move_leader": maybe(0.15),
            "checkpoint": 0.3,
        }
        return Knobs(
            replica_count=5 if rng.random() < 0.25 else 3,
            loss=0.0 if rng.random() < 0.3 else rng.uniform(0.01, 0.25),
            lag_time_max_ms=rng.choice((300, 1_000, 3_000)),
            min_insync_replicas=2,
            fetch_records_max=rng.randint(2, 8),
            weights=weights,
        )


# The broker shell is modelled as Kafka behaves. Each quirk switches one behaviour to what the
# strom shell does as written; each makes the simulation fail (tests/sim/test_replication_sim.py).
# node/replica/partition.py Partition.truncate_to (and PartitionLog.truncate_to) do nothing when
# the offset is at the log end, so an epoch-cache entry this replica wrote as a leader that
# appended nothing survives; the follower keeps sending that epoch and livelocks.
TRUNCATE_KEEPS_EPOCH_AT_LEO = "truncate_keeps_epoch_at_leo"
# node/replica/manager.py submit_isr_change drops a change proposed while another is in flight,
# but LeaderState already holds it as pending: no ISR change ever again in that leader epoch.
DROP_UNSENT_ISR_CHANGE = "drop_unsent_isr_change"
# node/replica/manager.py _alter_partition forgets the pending change on every failure,
# a timeout (ControllerUnavailable) included, though the controller may have committed it; Kafka
# resends until it gets an answer and forgets only on INELIGIBLE_REPLICA/OPERATION_NOT_ATTEMPTED.
FORGET_ON_ANY_ALTER_FAILURE = "forget_on_any_alter_failure"
# node/replica/fetcher.py applies the answer to a request sent before newer metadata re-added
# the partition to the same fetcher (same leader broker, newer leader epoch). A FENCED answer
# then stops fetching for good (until the partition's metadata changes again), and old-epoch
# records appended after an epoch this replica started as leader rewrite its epoch cache.
STALE_FETCH_ANSWER_APPLIED = "stale_fetch_answer_applied"
STROM_SHELL_QUIRKS = frozenset(
    {
        TRUNCATE_KEEPS_EPOCH_AT_LEO,
        DROP_UNSENT_ISR_CHANGE,
        FORGET_ON_ANY_ALTER_FAILURE,
        STALE_FETCH_ANSWER_APPLIED,
    }
)
