"""The named invariants of the replication simulation, checked after every event (see the
docstring of replication_model.py for what each one states)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from replication_parts import NO_LEADER, Controller, InvariantViolation, PartitionState, Replica


class Invariants:
    """Mixed into Simulation, which owns these attributes."""

    seed: int
    controller: Controller
    replicas: dict[int, Replica]
    committed: list[tuple[int, int]]
    acked: dict[int, tuple[int, int]]
    acked_end: int
    events: int
    heal_events: int
    stats: Counter[str]
    trace: Any
    _new_acks: list[int]
    _hw_seen: dict[int, tuple[int, int]]
    _view_epoch_seen: dict[int, int]
    _controller_seen: tuple[int, int]
    _cache_checked: dict[int, tuple[int, list[tuple[int, int]]]]

    def _fail(self, name: str, detail: str) -> None:
        raise InvariantViolation(name, detail, self.seed, list(self.trace))

    def summary(self) -> Counter[str]:
        c = Counter(self.stats)
        c["events"] = self.events
        c["heal_events"] = self.heal_events
        c["leader_epochs"] = self.controller.state.leader_epoch
        c["isr_versions"] = self.controller.state.partition_epoch
        c["committed"] = len(self.committed)
        return c

    def check(self) -> None:
        """Every named invariant, after every event. Logs change only by appends and by
        truncation, so each replica remembers how long a prefix of its log is known to equal
        `committed` (`verified`, cut back on truncation) and only the rest is compared."""
        st = self.controller.state
        seen = (st.leader_epoch, st.partition_epoch)
        if seen[0] < self._controller_seen[0] or seen[1] < self._controller_seen[1]:
            self._fail("EpochsMonotonic", f"controller epochs {self._controller_seen} -> {seen}")
        self._controller_seen = seen
        leaders = []
        for r in self.replicas.values():
            if r.view is not None and r.leader_epoch < self._view_epoch_seen[r.id]:
                self._fail("EpochsMonotonic", f"{r.id} view epoch went back to {r.leader_epoch}")
            self._view_epoch_seen[r.id] = max(self._view_epoch_seen[r.id], r.leader_epoch)
            self._check_epoch_cache(r)
            if r.leader_state is not None:
                self._check_high_watermark(r)
                leaders.append(r)
        self._check_committed(leaders)
        self._check_acked(st)
        if st.leader != NO_LEADER and not self._agrees(
            self.replicas[st.leader], len(self.committed)
        ):
            self._fail("CommittedPrefixStable", f"controller's leader {st.leader} lacks records "
                       f"committed below {len(self.committed)}")  # fmt: skip
        self._check_isr_agrees(st)

    def _agrees(self, r: Replica, n: int) -> bool:
        """r's log holds committed[:n] (n ≤ len(committed))."""
        if r.verified >= n:
            return True
        if r.leo < n or r.log[r.verified : n] != self.committed[r.verified : n]:
            return False
        r.verified = n
        return True

    def _check_epoch_cache(self, r: Replica) -> None:
        """The cache names exactly where each epoch of the log starts. With epochs checked to
        never decrease at every append, checking both sides of each boundary suffices."""
        key = (r.leo, r.cache.entries)
        if self._cache_checked.get(r.id) == key:
            return
        self._cache_checked[r.id] = (r.leo, list(r.cache.entries))
        entries = [e for e in r.cache.entries if e[1] < r.leo]
        ok = (not r.log and not entries) or (
            bool(entries) and entries[0][1] == 0 and r.log[-1][0] == entries[-1][0]
        )
        for i, (epoch, start) in enumerate(entries):
            ok = ok and r.log[start][0] == epoch
            if i + 1 < len(entries):
                ok = ok and r.log[entries[i + 1][1] - 1][0] == epoch
        if not ok:
            self._fail("EpochsMonotonic", f"{r.id}'s epoch cache {r.cache.entries} does not "
                       f"match its log (leo {r.leo})")  # fmt: skip

    def _check_high_watermark(self, r: Replica) -> None:
        ls = r.leader_state
        assert ls is not None
        if r.hw > r.leo:
            self._fail("HighWatermarkMonotonic", f"leader {r.id} hw {r.hw} > leo {r.leo}")
        before = self._hw_seen.get(r.id)
        if before is not None and before[0] == ls.leader_epoch and r.hw < before[1]:
            self._fail("HighWatermarkMonotonic", f"leader {r.id} hw {before[1]} -> {r.hw} "
                       f"in epoch {ls.leader_epoch}")  # fmt: skip
        self._hw_seen[r.id] = (ls.leader_epoch, r.hw)

    def _check_committed(self, leaders: list[Replica]) -> None:
        """What any acting leader exposes below its HW is what every other one exposed."""
        for r in leaders:
            n = len(self.committed)
            if r.hw > n and self._agrees(r, n):
                self.committed.extend(r.log[n : r.hw])
        for r in leaders:
            if not self._agrees(r, min(r.hw, len(self.committed))):
                self._fail("CommittedPrefixStable", f"leader {r.id} exposes a log below its hw "
                           f"{r.hw} that differs from what was committed")  # fmt: skip

    def _check_acked(self, st: PartitionState) -> None:
        """Acked records lie below some leader's HW, so they are part of `committed`; every
        member of the committed ISR, and the leader, must hold them."""
        for offset in self._new_acks:
            if offset >= len(self.committed) or self.committed[offset] != self.acked[offset]:
                self._fail("NoAckedLoss", f"acked offset {offset} {self.acked[offset]} is not "
                           f"what leaders exposed below their HW")  # fmt: skip
        self._new_acks.clear()
        holders = set(st.isr) | ({st.leader} if st.leader != NO_LEADER else set())
        for rid in sorted(holders):
            log = self.replicas[rid].log
            if self._agrees(self.replicas[rid], self.acked_end):
                continue
            bad = [o for o in sorted(self.acked) if o >= len(log) or log[o] != self.acked[o]]
            if bad:
                o = bad[0]
                self._fail("NoAckedLoss", f"acked offset {o} {self.acked[o]} is "
                           f"{log[o] if o < len(log) else 'missing'} on {rid} "
                           f"({'leader' if rid == st.leader else 'ISR member'}; isr {st.isr})")  # fmt: skip

    def _check_isr_agrees(self, st: PartitionState) -> None:
        if st.leader == NO_LEADER:
            return
        leader = self.replicas[st.leader]
        if leader.leader_state is None or leader.leader_epoch != st.leader_epoch:
            return
        for rid in st.isr:
            if not self._agrees(self.replicas[rid], leader.hw):
                self._fail("ReplicasAgreeBelowHW", f"ISR member {rid} disagrees with leader "
                           f"{leader.id} below hw {leader.hw}")  # fmt: skip
