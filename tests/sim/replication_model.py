"""A deterministic simulation of partition replication (DESIGN.md §7), driving the real decisions.

What is real: `LeaderState` (follower progress, maximal-ISR high watermark, ISR shrink/expand),
`diverging_epoch` and `truncation_offset` from strom.node.replica.leader_state. What is modelled,
in memory and after the code that calls them: the broker shell (node/replica/partition.py,
fetcher.py, manager.py, the Fetch and Produce handlers), the controller's partition rules
(node/controller/logic.py: fencing, clean election from the ISR, AlterPartition checks), the
leader-epoch cache (Kafka's `endOffsetFor`), and the network.

One partition, 3 or 5 replicas. A replica's log is a list indexed by offset of (leader_epoch,
value); values are unique, so a rewritten record is visible. Time is a virtual clock in ms.
`Simulation.step` draws one event from a seeded `random.Random`; the fault mix (loss, crash,
pause, leader moves, ...) is itself drawn from the seed (swarm testing). After every event the
named invariants are checked:

- EpochsMonotonic: the controller's leader and partition epochs, and each replica's view of the
  leader epoch, never decrease; each log's epochs never decrease along offsets and its epoch
  cache says where each epoch starts.
- HighWatermarkMonotonic: a leader's HW never decreases within its leader epoch and never passes
  its own log end.
- CommittedPrefixStable: whatever any acting leader exposes below its HW (what consumers read)
  agrees with what every other leader ever exposed, and the controller's leader holds all of it.
- NoAckedLoss: every acknowledged (acks=all) record stays at its offset, with its value, on the
  controller's leader and on every member of the committed ISR; no offset is acked twice with
  different values.
- ReplicasAgreeBelowHW: every member of the committed ISR agrees with the leader below its HW.

`heal` then stops all faults (no loss, no crashes; everyone restarted, resumed and unfenced) and
must converge within a bounded number of events: every replica holds the leader's log, in the
ISR, with HW = LEO everywhere.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from replication_invariants import Invariants
from replication_parts import (
    DROP_UNSENT_ISR_CHANGE,
    FENCED_LEADER_EPOCH,
    FORGET_ON_ANY_ALTER_FAILURE,
    INELIGIBLE_REPLICA,
    NO_LEADER,
    NONE,
    NOT_LEADER,
    OUT_OF_RANGE,
    STALE_FETCH_ANSWER_APPLIED,
    STROM_SHELL_QUIRKS,
    TRUNCATE_KEEPS_EPOCH_AT_LEO,
    UNKNOWN_LEADER_EPOCH,
    Controller,
    InvariantViolation,
    Knobs,
    Message,
    PartitionState,
    Replica,
    Waiter,
)

from strom.node.replica import leader_state as ls_mod
from strom.node.replica.leader_state import IsrChange, LeaderState

__all__ = [
    "DROP_UNSENT_ISR_CHANGE",
    "FORGET_ON_ANY_ALTER_FAILURE",
    "STALE_FETCH_ANSWER_APPLIED",
    "STROM_SHELL_QUIRKS",
    "TRUNCATE_KEEPS_EPOCH_AT_LEO",
    "InvariantViolation",
    "Simulation",
]

TRACE_EVENTS_MAX = 40
HEAL_EVENTS_MAX = 10_000  # the 200 CI seeds need at most ~2,700
HEAL_KINDS = (
    "fetch", "deliver", "unpark", "shrink_check", "tick", "metadata", "unfence",
    "fetch_timeout", "alter_timeout",
)  # fmt: skip


class Simulation(Invariants):
    def __init__(
        self,
        seed: int,
        leader_state_cls: type[LeaderState] = LeaderState,
        diverging_epoch: Callable[..., tuple[int, int] | None] = ls_mod.diverging_epoch,
        truncation_offset: Callable[..., int] = ls_mod.truncation_offset,
        quirks: frozenset[str] = frozenset(),
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.knobs = Knobs.draw(self.rng)
        assert quirks <= STROM_SHELL_QUIRKS, quirks
        self.quirks = quirks
        self.leader_state_cls = leader_state_cls
        self.diverging_epoch = diverging_epoch
        self.truncation_offset = truncation_offset
        ids = tuple(range(1, self.knobs.replica_count + 1))
        self.controller = Controller(ids)
        self.replicas = {i: Replica(i) for i in ids}
        self.now_ms = 0
        self.network: list[Message] = []
        self.next_id = 0
        self.next_value = 0
        self.acked: dict[int, tuple[int, int]] = {}
        self.acked_end = 0  # 1 + the largest acked offset
        self._new_acks: list[int] = []
        self.committed: list[tuple[int, int]] = []
        self.events = 0
        self.heal_events = 0
        self.acks = 0
        self.stats: Counter[str] = Counter()  # what happened, so tests can see coverage
        self.trace: deque[str] = deque(maxlen=TRACE_EVENTS_MAX)
        self.healing = False
        self._menus: dict[tuple[str, ...] | None, Any] = {}
        self._cache_checked: dict[int, tuple[int, list[tuple[int, int]]]] = {}
        # invariant memory
        self._hw_seen: dict[int, tuple[int, int]] = {}  # replica -> (leader epoch, hw)
        self._view_epoch_seen = dict.fromkeys(ids, -1)
        self._controller_seen = (0, 0)
        for r in self.replicas.values():
            self._apply_metadata(r, len(self.controller.versions) - 1)

    # ---- driving ----------------------------------------------------------------------------

    def run(self, events: int) -> None:
        for _ in range(events):
            self.step()
        self.heal()

    def _menu(
        self, kinds: tuple[str, ...] | None
    ) -> tuple[list[Callable[[], str | None]], list[float]]:
        menu = self._menus.get(kinds)
        if menu is None:
            weights = self.knobs.weights
            names = list(kinds) if kinds is not None else list(weights)
            w = [weights[n] if kinds is None else max(weights[n], 0.5) for n in names]
            cumulative = [sum(w[: i + 1]) for i in range(len(w))]
            menu = self._menus[kinds] = ([getattr(self, "_ev_" + n) for n in names], cumulative)
        return menu

    def step(self, kinds: tuple[str, ...] | None = None) -> None:
        handlers, cumulative = self._menu(kinds)
        choices = self.rng.choices
        for _ in range(20):
            desc = choices(handlers, cum_weights=cumulative)[0]()
            if desc is not None:
                break
        else:
            desc = self._ev_tick()
        self.events += 1
        self.trace.append(f"#{self.events} t={self.now_ms} {desc}")
        self.check()

    def heal(self) -> None:
        self.healing = True
        for r in self.replicas.values():
            if r.paused:
                self._resume(r)
            if not r.alive:
                self._restart(r)
            self.trace.append(f"heal: {r.id} running")
        self.check()
        for _ in range(HEAL_EVENTS_MAX):
            if self.converged():
                return
            self.step(HEAL_KINDS)
            self.heal_events += 1
        self._fail("Convergence", f"no convergence within {HEAL_EVENTS_MAX} heal events: "
                   f"{self.describe()}")  # fmt: skip

    def converged(self) -> bool:
        st = self.controller.state
        if st.leader == NO_LEADER or set(st.isr) != set(st.replicas):
            return False
        leader = self.replicas[st.leader]
        if leader.leader_state is None or leader.view_version != len(self.controller.versions) - 1:
            return False
        if leader.hw != leader.leo:
            return False
        return all(r.log == leader.log and r.hw == leader.leo for r in self.replicas.values())

    def describe(self) -> str:
        st = self.controller.state
        parts = [f"controller leader={st.leader} epoch={st.leader_epoch} isr={st.isr} "
                 f"pepoch={st.partition_epoch} active={sorted(st.active)}"]  # fmt: skip
        for r in self.replicas.values():
            ls = r.leader_state
            parts.append(
                f"r{r.id}: alive={r.alive} paused={r.paused} leo={r.leo} hw={r.hw} "
                f"epochs={r.cache.entries} view_epoch={r.leader_epoch} "
                f"leader_state={None if ls is None else (ls.isr, ls.pending, ls.high_watermark)}"
                f" fetching_from={r.fetching_from}"
            )
        return "\n  ".join(parts)

    def _send(self, kind: str, src: int, dst: int, req_id: int, **body: Any) -> None:
        if not self.healing and self.rng.random() < self.knobs.loss:
            return  # lost on the wire; the sender times out
        self.network.append(Message(kind, src, dst, req_id, body))

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _pick(self, predicate: Callable[[Replica], bool]) -> Replica | None:
        candidates = [r for r in self.replicas.values() if predicate(r)]
        return self.rng.choice(candidates) if candidates else None

    # ---- events: producer ---------------------------------------------------------------------

    def _ev_produce(self) -> str | None:
        r = self._pick(lambda r: r.running and r.leader_state is not None)
        if r is None:
            return None
        assert r.view is not None and r.leader_state is not None
        if len(r.view.isr) < self.knobs.min_insync_replicas:
            return f"produce to {r.id}: NOT_ENOUGH_REPLICAS (isr {r.view.isr})"
        if r.log and r.log[-1][0] > r.leader_epoch:
            self._fail("EpochsMonotonic", f"leader {r.id} in epoch {r.leader_epoch} holds "
                       f"records of epoch {r.log[-1][0]}")  # fmt: skip
        records = []
        for _ in range(self.rng.randint(1, 3)):
            self.next_value += 1
            records.append((r.leo, r.leader_epoch, self.next_value))
            r.log.append((r.leader_epoch, self.next_value))
        r.waiters.append(Waiter(r.leo - 1, records))
        self._leader_maybe_advance_hw(r)
        return (
            f"produce to {r.id}: offsets {records[0][0]}..{records[-1][0]} epoch {r.leader_epoch}"
        )

    def _ev_produce_timeout(self) -> str | None:
        r = self._pick(lambda r: bool(r.waiters))
        if r is None:
            return None
        w = r.waiters.pop(self.rng.randrange(len(r.waiters)))
        return f"produce to {r.id} up to {w.last_offset}: REQUEST_TIMED_OUT"

    def _complete_waiters(self, r: Replica) -> None:
        assert r.view is not None
        done = [w for w in r.waiters if r.hw >= w.last_offset + 1]
        if not done:
            return
        r.waiters = [w for w in r.waiters if r.hw < w.last_offset + 1]
        if len(r.view.isr) < self.knobs.min_insync_replicas:
            return  # NOT_ENOUGH_REPLICAS_AFTER_APPEND: written, not acknowledged
        for w in done:
            for offset, epoch, value in w.records:
                previous = self.acked.get(offset)
                if previous is not None and previous != (epoch, value):
                    self._fail("NoAckedLoss", f"offset {offset} acked as {previous} and again "
                               f"as {(epoch, value)} by {r.id}")  # fmt: skip
                self.acked[offset] = (epoch, value)
                self._new_acks.append(offset)
                self.acked_end = max(self.acked_end, offset + 1)
            self.acks += 1
            self.stats["acks"] += 1
            self.trace.append(f"  ack by {r.id} up to offset {w.last_offset}")

    # ---- events: follower fetch ---------------------------------------------------------------

    def _ev_fetch(self) -> str | None:
        r = self._pick(
            lambda r: (
                r.running
                and r.fetching_from is not None
                and r.fetching_from not in r.fetch_inflight
            )
        )
        if r is None:
            return None
        leader = r.fetching_from
        assert leader is not None
        req = self._new_id()
        r.fetch_inflight[leader] = req
        latest = r.cache.latest_epoch
        self._send(
            "fetch", r.id, leader, req,
            fetch_offset=r.leo, current_leader_epoch=r.leader_epoch,
            last_fetched_epoch=-1 if latest is None else latest,
            records_max=self.rng.randint(1, self.knobs.fetch_records_max),
        )  # fmt: skip
        return f"{r.id} fetches from {leader} at {r.leo} (epoch {r.leader_epoch}, last {latest})"

    def _in_flight(self, req_id: int) -> bool:
        """The request or its answer is still on the wire or parked at a leader."""
        return any(m.req_id == req_id for m in self.network) or any(
            m.req_id == req_id for r in self.replicas.values() for m in r.parked
        )

    def _ev_fetch_timeout(self) -> str | None:
        """The RPC deadline: for a lost message, or (not while healing) a slow one."""
        timed_out = [
            (r, leader)
            for r in self.replicas.values()
            if r.running
            for leader, req in sorted(r.fetch_inflight.items())
            if not (self.healing and self._in_flight(req))
        ]
        if not timed_out:
            return None
        r, leader = self.rng.choice(timed_out)
        del r.fetch_inflight[leader]
        return f"{r.id}'s fetch from {leader} times out"

    def _serve_fetch(self, leader: Replica, msg: Message) -> dict[str, Any] | None:
        """The Fetch handler + Partition.fetch_for_follower; None parks a long poll."""
        b = msg.body
        ls = leader.leader_state
        if ls is None:
            return {"error": NOT_LEADER}
        if b["current_leader_epoch"] >= 0 and b["current_leader_epoch"] != leader.leader_epoch:
            older = b["current_leader_epoch"] < leader.leader_epoch
            return {"error": FENCED_LEADER_EPOCH if older else UNKNOWN_LEADER_EPOCH}
        leo = leader.leo
        if b["last_fetched_epoch"] >= 0:
            end = leader.cache.end_offset_for(b["last_fetched_epoch"], leo)
            diverging = self.diverging_epoch(end, b["fetch_offset"], b["last_fetched_epoch"])
            if diverging is not None:
                return {"error": NONE, "diverging": diverging, "hw": leader.hw}
        offset = b["fetch_offset"]
        if offset > leo:
            return {"error": OUT_OF_RANGE}
        ls.on_follower_fetch(msg.src, offset, leo, self.now_ms)
        self._leader_maybe_advance_hw(leader)
        change = ls.maybe_expand_isr(msg.src, leader.view.active if leader.view else ())
        if change is not None:
            self._submit_isr_change(leader, change)
        records = leader.log[offset : offset + b["records_max"]]
        if not records and not self.healing and self.rng.random() < 0.5:
            return None
        return {"error": NONE, "base": offset, "records": records, "hw": leader.hw}

    def _handle_fetch(self, leader: Replica, msg: Message) -> str:
        resp = self._serve_fetch(leader, msg)
        if resp is None:
            leader.parked.append(msg)
            return f"{leader.id} parks {msg.src}'s fetch at {msg.body['fetch_offset']}"
        resp["request_epoch"] = msg.body["current_leader_epoch"]
        self._send("fetch_resp", leader.id, msg.src, msg.req_id, **resp)
        what = resp.get("diverging") or (len(resp.get("records", ())), resp.get("hw"))
        return f"{leader.id} answers {msg.src}'s fetch at {msg.body['fetch_offset']}: " \
               f"{resp['error']} {what}"  # fmt: skip

    def _ev_unpark(self) -> str | None:
        r = self._pick(lambda r: r.running and bool(r.parked))
        if r is None:
            return None
        msg = r.parked.pop(0)
        return "long poll: " + self._handle_fetch(r, msg)

    def _handle_fetch_response(self, f: Replica, msg: Message) -> str:
        leader = msg.src
        if f.fetch_inflight.get(leader) != msg.req_id:
            return f"{f.id} ignores a stale fetch answer from {leader}"
        del f.fetch_inflight[leader]
        if f.fetching_from != leader:
            return f"{f.id} drops an answer from {leader}: no longer fetching there"
        b = msg.body
        if b["request_epoch"] != f.leader_epoch and STALE_FETCH_ANSWER_APPLIED not in self.quirks:
            # The partition was re-added to this fetcher under a newer leader epoch while the
            # request was in flight: its answer belongs to the old one (Kafka likewise acts on
            # FENCED_LEADER_EPOCH only for the epoch it still fetches in, onPartitionFenced).
            return f"{f.id} drops an answer to its epoch {b['request_epoch']} request"
        if b["error"] == FENCED_LEADER_EPOCH:
            f.fetching_from = None
            return f"{f.id} fenced by {leader}; waits for metadata"
        if b["error"] != NONE:
            return f"{f.id} refused by {leader}: {b['error']}"
        if "diverging" in b:
            leo = f.leo
            local = f.cache.end_offset_for(b["diverging"][0], leo)
            offset = self.truncation_offset(b["diverging"], local, leo)
            if offset < 0:
                self._fail("TruncationInRange", f"{f.id} told to truncate to {offset}")
            if offset < leo:
                del f.log[offset:]
                f.cache.truncate_from_end(offset)
                f.verified = min(f.verified, offset)
                self.stats["truncations"] += 1
            elif TRUNCATE_KEEPS_EPOCH_AT_LEO not in self.quirks:
                # Kafka's UnifiedLog.truncateTo: a no-op truncation still drops cache entries
                # at or past the log end (an epoch this replica started as leader but wrote
                # nothing in); otherwise the follower keeps naming that epoch and livelocks.
                f.cache.truncate_from_end(leo)
            self.stats["divergences"] += 1
            return f"{f.id} diverges {b['diverging']} (local {local}): truncates {leo} -> {offset}"
        if b["records"]:
            if b["base"] != f.leo:
                return f"{f.id} refuses records at {b['base']}: its log ends at {f.leo}"
            for i, (epoch, value) in enumerate(b["records"]):
                if f.log and epoch < f.log[-1][0]:
                    self._fail("EpochsMonotonic", f"{f.id} appends epoch {epoch} after "
                               f"{f.log[-1][0]}")  # fmt: skip
                # PartitionLog._append assigns every batch's epoch; an entry the follower wrote
                # as a leader that appended nothing is dropped when an older epoch arrives.
                f.cache.assign(epoch, b["base"] + i)
                f.log.append((epoch, value))
        f.hw = max(f.hw, min(b["hw"], f.leo))
        return f"{f.id} appends {len(b['records'])} at {b['base']} from {leader}, hw {f.hw}"

    # ---- events: ISR changes -------------------------------------------------------------------

    def _submit_isr_change(self, r: Replica, change: IsrChange) -> None:
        if r.alter_inflight is not None:
            # One request per partition in flight. Kafka's AlterPartitionManager fails the new
            # one at once (OPERATION_NOT_ATTEMPTED) and Partition forgets it, to propose again
            # later; manager.submit_isr_change drops it silently, leaving it pending.
            if DROP_UNSENT_ISR_CHANGE not in self.quirks and r.leader_state is not None:
                r.leader_state.on_isr_change_failed()
            return
        msg = Message("alter", r.id, -1, self._new_id(), {"change": change})
        r.alter_inflight = msg
        self._send("alter", r.id, -1, msg.req_id, change=change)
        self.trace.append(f"  {r.id} asks ISR {r.view.isr if r.view else ()} -> {change.new_isr}")

    def _ev_shrink_check(self) -> str | None:
        r = self._pick(lambda r: r.running and r.leader_state is not None)
        if r is None or r.leader_state is None:
            return None
        change = r.leader_state.maybe_shrink_isr(self.now_ms, self.knobs.lag_time_max_ms)
        if change is not None:
            self._submit_isr_change(r, change)
        return f"{r.id} checks its ISR: {change}"

    def _handle_alter(self, msg: Message) -> str:
        change = msg.body["change"]
        error = self.controller.alter_partition(msg.src, change)
        self._send("alter_resp", -1, msg.src, msg.req_id, error=error)
        self.stats["alter_" + error] += 1
        return f"controller: AlterPartition from {msg.src} {change.new_isr}: {error}"

    def _handle_alter_response(self, r: Replica, msg: Message) -> str:
        if r.alter_inflight is None or r.alter_inflight.req_id != msg.req_id:
            return f"{r.id} ignores a stale AlterPartition answer"
        r.alter_inflight = None
        error = msg.body["error"]
        # On success the committed ISR arrives as metadata. INELIGIBLE_REPLICA says the request
        # was checked against the current partition epoch and not applied: safe to forget. Other
        # refusals may answer a resend of a change that was applied; metadata is on its way.
        forget = error != NONE and (
            FORGET_ON_ANY_ALTER_FAILURE in self.quirks or error == INELIGIBLE_REPLICA
        )
        if forget and r.leader_state is not None:
            r.leader_state.on_isr_change_failed()
        return f"{r.id} gets AlterPartition answer {error}"

    def _ev_alter_timeout(self) -> str | None:
        r = self._pick(
            lambda r: (
                r.running
                and r.alter_inflight is not None
                and not (self.healing and self._in_flight(r.alter_inflight.req_id))
            )
        )
        if r is None or r.alter_inflight is None:
            return None
        msg = r.alter_inflight
        if FORGET_ON_ANY_ALTER_FAILURE in self.quirks:
            # manager.py: ControllerUnavailable -> on_isr_change_failed, though the controller
            # may have committed the change.
            r.alter_inflight = None
            if r.leader_state is not None:
                r.leader_state.on_isr_change_failed()
            return f"{r.id}'s AlterPartition times out: pending change forgotten"
        # Kafka keeps the pending state and resends the same request until it gets an answer.
        self._send("alter", r.id, -1, msg.req_id, **msg.body)
        return f"{r.id}'s AlterPartition times out: resent"

    # ---- events: network and time --------------------------------------------------------------

    def _deliverable(self, m: Message) -> bool:
        return m.dst == -1 or self.replicas[m.dst].running

    def _ev_deliver(self) -> str | None:
        ready = [i for i, m in enumerate(self.network) if self._deliverable(m)]
        if not ready:
            return None
        msg = self.network.pop(self.rng.choice(ready))
        if msg.kind == "alter":
            return self._handle_alter(msg)
        r = self.replicas[msg.dst]
        if msg.kind == "fetch":
            return self._handle_fetch(r, msg)
        if msg.kind == "fetch_resp":
            return self._handle_fetch_response(r, msg)
        return self._handle_alter_response(r, msg)

    def _ev_tick(self) -> str:
        self.now_ms += self.rng.randint(1, self.knobs.lag_time_max_ms // 8)
        return "tick"

    def _ev_checkpoint(self) -> str | None:
        r = self._pick(lambda r: r.running)
        if r is None:
            return None
        r.checkpointed_hw = r.hw
        return f"{r.id} checkpoints hw {r.hw}"

    # ---- events: brokers and controller --------------------------------------------------------

    def _ev_crash(self) -> str | None:
        r = self._pick(lambda r: r.alive)
        if r is None:
            return None
        r.alive = r.paused = False
        self.stats["crashes"] += 1
        r.leader_state, r.view, r.view_version, r.leader_epoch = None, None, -1, -1
        r.leader_id = NO_LEADER
        r.waiters, r.parked, r.fetch_inflight, r.alter_inflight = [], [], {}, None
        r.fetching_from = None
        self.network = [m for m in self.network if r.id not in (m.src, m.dst)]
        return f"{r.id} crashes"

    def _restart(self, r: Replica) -> None:
        r.alive = True
        r.hw = min(r.checkpointed_hw, r.leo)
        if r.id in self.controller.state.active:
            self.controller.fence(r.id)  # registering fences the broker until it catches up
        r.registered_version = len(self.controller.versions) - 1

    def _ev_restart(self) -> str | None:
        r = self._pick(lambda r: not r.alive)
        if r is None:
            return None
        self._restart(r)
        return f"{r.id} restarts with hw {r.hw} leo {r.leo}"

    def _ev_pause(self) -> str | None:
        r = self._pick(lambda r: r.running)
        if r is None:
            return None
        r.paused = True
        return f"{r.id} pauses"

    def _resume(self, r: Replica) -> None:
        r.paused = False

    def _ev_resume(self) -> str | None:
        r = self._pick(lambda r: r.paused)
        if r is None:
            return None
        self._resume(r)
        return f"{r.id} resumes"

    def _ev_session_expiry(self) -> str | None:
        active = self.controller.state.active
        r = self._pick(lambda r: not r.running and r.id in active)
        if r is None:
            return None
        self.controller.fence(r.id)
        return f"controller fences {r.id}: {self._controller_summary()}"

    def _ev_unfence(self) -> str | None:
        st = self.controller.state
        latest = len(self.controller.versions) - 1
        r = self._pick(lambda r: r.running and r.id not in st.active and r.view_version == latest)
        if r is None:
            return None
        self.controller.unfence(r.id)
        return f"controller unfences {r.id}: {self._controller_summary()}"

    def _ev_move_leader(self) -> str | None:
        st = self.controller.state
        choices = [r for r in st.isr if r in st.active and r != st.leader]
        if st.leader == NO_LEADER or not choices:
            return None
        self.controller.move_leader(self.rng.choice(choices))
        return f"controller moves leadership: {self._controller_summary()}"

    def _controller_summary(self) -> str:
        st = self.controller.state
        return (
            f"leader {st.leader} epoch {st.leader_epoch} isr {st.isr} pepoch {st.partition_epoch}"
        )

    def _ev_metadata(self) -> str | None:
        latest = len(self.controller.versions) - 1
        r = self._pick(lambda r: r.running and r.view_version < latest)
        if r is None:
            return None
        first = max(r.view_version + 1, r.registered_version)
        version = latest if self.rng.random() < 0.6 else self.rng.randint(first, latest)
        return self._apply_metadata(r, version)

    def _apply_metadata(self, r: Replica, version: int) -> str:
        """ReplicaManager.on_metadata -> Partition.make_leader / make_follower."""
        st = self.controller.versions[version]
        changed = not st.same_partition(r.view)
        r.view, r.view_version = st, version
        if not changed:
            return f"{r.id} learns metadata v{version} (brokers only)"
        if st.leader == r.id:
            self._make_leader(r, st)
            return f"{r.id} learns v{version}: leader in epoch {st.leader_epoch}, isr {st.isr}"
        moved = st.leader != r.leader_id or st.leader_epoch != r.leader_epoch
        was_leader = r.leader_state is not None
        r.leader_id, r.leader_epoch = st.leader, st.leader_epoch
        r.leader_state = None
        if was_leader or moved:
            r.waiters = []  # NOT_LEADER_OR_FOLLOWER to every waiting produce
        if was_leader or moved or r.fetching_from != st.leader:
            r.fetching_from = st.leader if st.leader != NO_LEADER else None
        return f"{r.id} learns v{version}: follows {st.leader} in epoch {st.leader_epoch}"

    def _make_leader(self, r: Replica, st: PartitionState) -> None:
        r.fetching_from = None
        r.leader_id = r.id
        if st.leader_epoch == r.leader_epoch and r.leader_state is not None:
            r.leader_state.update_assignment(st.replicas, st.isr, st.partition_epoch, self.now_ms)
            self._leader_maybe_advance_hw(r)
            return
        r.leader_epoch = st.leader_epoch
        r.cache.assign(st.leader_epoch, r.leo)
        r.leader_state = self.leader_state_cls(
            r.id, st.replicas, st.isr, st.leader_epoch, st.partition_epoch,
            epoch_start_offset=r.leo, high_watermark=r.hw, now_ms=self.now_ms,
        )  # fmt: skip
        self._leader_maybe_advance_hw(r)

    def _leader_maybe_advance_hw(self, r: Replica) -> None:
        ls = r.leader_state
        assert ls is not None
        if ls.maybe_advance_high_watermark(r.leo) and ls.high_watermark > r.hw:
            r.hw = ls.high_watermark
        self._complete_waiters(r)
