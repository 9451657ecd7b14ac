"""Availability of a chaos run, read from its history (history.py records; nemesis.py's
`fault-start`, `fault-stop` and `final-heal` records).

    longest outage    the longest stretch with no acknowledged write in the faulty period (from
                      the first fault's start to the final heal), with the fault steps that
                      overlapped it; the stretch is bounded by the period's ends, so a quiet
                      start before the first fault or after the heal never counts here
    during faults     how many writes were acknowledged inside some fault step's span
    first write       time from the final heal to the first acknowledged write after it
    full recovery     time from the final heal until every partition that ever acknowledged a
                      write has acknowledged one again (every partition has a working leader)

A write counts at its acknowledgement (its `ok` record's time). Outage and recovery are
correctness properties of a run, not speed targets: after the final heal the cluster must take
writes again within a generous bound (a stalled controller that stops the whole cluster fails
it), whatever the machine's speed.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from .history import NEMESIS, Op

NS_PER_S = 1e9


@dataclass(frozen=True, slots=True)
class Availability:
    faulty_s: float  # length of the faulty period (first fault start to final heal)
    longest_outage_s: float
    outage_ns: tuple[int, int] | None  # the longest outage's span
    outage_during: tuple[str, ...]  # kinds of the fault steps that overlapped it
    first_write_after_heal_s: float | None  # None: no write was acknowledged after the heal
    full_recovery_after_heal_s: float | None  # None: some partition never took a write again
    partitions: int
    acked_during_faults: int  # acknowledgements inside some fault step's start..stop

    def __str__(self) -> str:
        def seconds(value: float | None) -> str:
            return "never" if value is None else f"{value:.1f} s"

        during = ", ".join(self.outage_during) or "no fault step"
        return "\n".join(
            [
                f"availability: faulty period {self.faulty_s:.1f} s; longest stretch without "
                f"an acknowledged write {self.longest_outage_s:.1f} s (during: {during})",
                f"after the final heal: first acknowledged write in "
                f"{seconds(self.first_write_after_heal_s)}, every one of the "
                f"{self.partitions} partitions writable again in "
                f"{seconds(self.full_recovery_after_heal_s)}",
            ]
        )


def _acks(ops: Sequence[Op]) -> list[tuple[int, Hashable]]:
    """(time, partition) of every acknowledged send, by time."""
    acks = [
        (op.time_ns, op.value["partition"])
        for op in ops
        if op.f == "send" and op.type == "ok" and op.process != NEMESIS
    ]
    return sorted(acks, key=lambda ack: ack[0])


def fault_steps(ops: Sequence[Op]) -> list[tuple[int, int, dict[str, Any]]]:
    """(start, stop, fault-start value) of every fault step, by start; a step never stopped
    ends at the last record."""
    starts: dict[int, Op] = {}
    steps = []
    for op in ops:
        if op.process != NEMESIS:
            continue
        if op.f == "fault-start":
            starts[op.value["step"]] = op
        elif op.f == "fault-stop" and (start := starts.pop(op.value["step"], None)):
            steps.append((start.time_ns, op.time_ns, start.value))
    last = ops[-1].time_ns if ops else 0
    steps.extend((op.time_ns, last, op.value) for op in starts.values())
    return sorted(steps, key=lambda step: step[:2])


def _steps(ops: Sequence[Op]) -> list[tuple[int, int, str]]:
    return [(start, stop, value["kind"]) for start, stop, value in fault_steps(ops)]


def measure(ops: Sequence[Op]) -> Availability:
    """Availability of a history with at least one fault step and a final heal."""
    steps = _steps(ops)
    heals = [op.time_ns for op in ops if op.process == NEMESIS and op.f == "final-heal"]
    if not steps or not heals:
        raise ValueError("the history has no fault step or no final heal")
    begin, heal = steps[0][0], heals[-1]
    acks = _acks(ops)
    times = [t for t, _ in acks]
    inside = times[bisect.bisect_right(times, begin) : bisect.bisect_left(times, heal)]
    points = [begin, *inside, heal]
    longest, span = 0, None
    for a, b in itertools.pairwise(points):
        if b - a > longest:
            longest, span = b - a, (a, b)
    during = tuple(
        kind for start, stop, kind in steps if span and start < span[1] and stop > span[0]
    )

    after = acks[bisect.bisect_right(times, heal) :]
    partitions = {partition for _, partition in acks}
    first_after: dict[Hashable, int] = {}
    for t, partition in after:
        first_after.setdefault(partition, t)
    full = max(first_after.values()) if partitions and len(first_after) == len(partitions) else None
    return Availability(
        faulty_s=(heal - begin) / NS_PER_S,
        longest_outage_s=longest / NS_PER_S,
        outage_ns=span,
        outage_during=during,
        first_write_after_heal_s=(after[0][0] - heal) / NS_PER_S if after else None,
        full_recovery_after_heal_s=None if full is None else (full - heal) / NS_PER_S,
        partitions=len(partitions),
        acked_during_faults=sum(
            1 for t in times if any(start <= t <= stop for start, stop, _ in steps)
        ),
    )
