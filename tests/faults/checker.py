"""The history checker: the anomalies Jepsen's Kafka checker reports, over history.py records.

An observation is (partition, offset, value): every acknowledged send gives one, every record a
poll returned gives one. Values are unique per send, so a value names its send. Anomalies:

    lost-write           an acknowledged value that no poll ever returned, although some poll
                         returned a higher offset of its partition: the log moved past it.
    unseen               an acknowledged value that no poll returned by the end, at or above the
                         highest offset read in its partition (a final drain makes these real).
    duplicate            one value observed at two or more (partition, offset) positions.
    inconsistent-offset  one (partition, offset) observed holding two or more values, across
                         acknowledgements and readers.
    poll-nonmonotonic    one consumer process read offset o and later, in the same partition
                         and with no assign, seek or indeterminate poll in between, o' <= o.
    poll-skip            the same, but o' > o jumped over offsets that some reader or
                         acknowledgement showed to exist (so the consumer missed records).
    group-exclusivity    two members of one group owned one partition at the same time: their
                         definite ownership windows overlap, or they claimed it in one
                         generation. A member certainly owns an assignment from the completion
                         of the assign that gave it until the invocation of its next assign (or
                         its last completed operation); counting only that window never blames
                         a correct revoke-before-assign handover.

Not anomalies: an indeterminate (`info`, or never completed) send, whether its value shows up
or not; a failed send is counted and otherwise ignored (a client that calls an ambiguous
error `fail` would make "it showed up anyway" a false alarm).

`check(ops)` returns a `Report`; `report.ok` is false on any anomaly, `str(report)` prints the
counts of operations, acknowledgements, faults and every anomaly (with a few examples).
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .history import NEMESIS, HistoryError, Op, Process

ANOMALY_KINDS = (
    "lost-write",
    "unseen",
    "duplicate",
    "inconsistent-offset",
    "poll-nonmonotonic",
    "poll-skip",
    "group-exclusivity",
)
EXAMPLES_MAX = 3


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str
    detail: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.kind}: " + ", ".join(f"{k}={v}" for k, v in self.detail.items())


@dataclass(frozen=True, slots=True)
class Report:
    records: int
    invoked: dict[str, int]
    acknowledged: int
    failed: int
    indeterminate: int
    polls: int
    records_read: int
    faults: dict[str, int]
    anomalies: dict[str, list[Anomaly]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.anomalies.values())

    def count(self, kind: str) -> int:
        assert kind in ANOMALY_KINDS, kind
        return len(self.anomalies.get(kind, []))

    def __str__(self) -> str:
        invoked = " ".join(f"{f}={n}" for f, n in sorted(self.invoked.items())) or "none"
        faults = " ".join(f"{f}={n}" for f, n in sorted(self.faults.items()))
        lines = [
            f"history: {self.records} records; invoked {invoked}",
            f"sends: {self.acknowledged} acknowledged, {self.failed} failed, "
            f"{self.indeterminate} indeterminate",
            f"polls: {self.polls} ok, {self.records_read} records read",
            f"faults injected: {sum(self.faults.values())}" + (f" ({faults})" if faults else ""),
            "anomalies:",
        ]
        for kind in ANOMALY_KINDS:
            found = self.anomalies.get(kind, [])
            lines.append(f"  {kind}: {len(found)}")
            lines.extend(f"    {a}" for a in found[:EXAMPLES_MAX])
        lines.append("result: " + ("ok" if self.ok else "ANOMALIES FOUND"))
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Completed:
    invoke: Op
    end: Op  # ok, fail or info; a synthetic info for an invoke never completed


def _pair(ops: Sequence[Op]) -> list[_Completed]:
    """Each invoke with its completion, in completion order (open invokes last, as info)."""
    open_ops: dict[Process, Op] = {}
    done: list[_Completed] = []
    for op in ops:
        if op.process == NEMESIS:
            continue
        if op.type == "invoke":
            if op.process in open_ops:
                raise HistoryError(f"process {op.process} invoked {op.f} with one in flight")
            open_ops[op.process] = op
            continue
        start = open_ops.pop(op.process, None)
        if start is None or start.f != op.f:
            raise HistoryError(f"completion without its invoke: {op}")
        done.append(_Completed(start, op))
    last_ns = ops[-1].time_ns if ops else 0
    for start in open_ops.values():
        done.append(_Completed(start, Op(-1, last_ns, start.process, "info", start.f, start.value)))
    return done


def _key(value: Any) -> Hashable:
    """Values and partitions come from JSON: lists become tuples so they can be keys."""
    return tuple(_key(v) for v in value) if isinstance(value, list) else value


@dataclass(slots=True)
class _Observations:
    positions: dict[Hashable, set[tuple[Hashable, int]]] = field(
        default_factory=lambda: defaultdict(set)
    )
    values_at: dict[tuple[Hashable, int], set[Hashable]] = field(
        default_factory=lambda: defaultdict(set)
    )
    read: set[Hashable] = field(default_factory=set)
    highest_read: dict[Hashable, int] = field(default_factory=dict)
    known: dict[Hashable, list[int]] = field(default_factory=dict)  # sorted offsets per partition

    def add(self, partition: Hashable, offset: int, value: Hashable, *, by_read: bool) -> None:
        self.positions[value].add((partition, offset))
        self.values_at[(partition, offset)].add(value)
        if by_read:
            self.read.add(value)
            self.highest_read[partition] = max(self.highest_read.get(partition, offset), offset)

    def index_offsets(self) -> None:
        per_partition: dict[Hashable, set[int]] = defaultdict(set)
        for partition, offset in self.values_at:
            per_partition[partition].add(offset)
        self.known = {p: sorted(offsets) for p, offsets in per_partition.items()}

    def between(self, partition: Hashable, low: int, high: int) -> list[int]:
        offsets = self.known.get(partition, [])
        return offsets[bisect.bisect_right(offsets, low) : bisect.bisect_left(offsets, high)]


def check(ops: Sequence[Op]) -> Report:
    """Check a whole history (ordered by index, as recorded or loaded)."""
    completed = _pair(ops)
    sends = [c for c in completed if c.invoke.f == "send"]
    acked: dict[Hashable, tuple[Hashable, int]] = {}
    seen_values: set[Hashable] = set()
    obs = _Observations()
    for c in sends:
        value = _key(c.invoke.value["value"])
        if value in seen_values:
            raise HistoryError(f"value {value!r} was sent twice: values must be unique")
        seen_values.add(value)
        if c.end.type == "ok":
            position = (_key(c.end.value["partition"]), int(c.end.value["offset"]))
            acked[value] = position
            obs.add(*position, value, by_read=False)
    polls = [c for c in completed if c.invoke.f == "poll" and c.end.type == "ok"]
    records_read = 0
    for c in polls:
        for partition, offset, value in c.end.value["records"]:
            obs.add(_key(partition), int(offset), _key(value), by_read=True)
            records_read += 1
    obs.index_offsets()

    anomalies: dict[str, list[Anomaly]] = {kind: [] for kind in ANOMALY_KINDS}
    _check_sends(acked, obs, anomalies)
    _check_positions(obs, anomalies)
    _check_polls(completed, obs, anomalies)
    _check_groups(completed, anomalies)
    invoked = Counter(op.f for op in ops if op.type == "invoke")
    ends = Counter(c.end.type for c in sends)
    return Report(
        records=len(ops),
        invoked=dict(invoked),
        acknowledged=ends["ok"],
        failed=ends["fail"],
        indeterminate=ends["info"],
        polls=len(polls),
        records_read=records_read,
        faults=dict(Counter(op.f for op in ops if op.process == NEMESIS)),
        anomalies=anomalies,
    )


def _check_sends(
    acked: dict[Hashable, tuple[Hashable, int]],
    obs: _Observations,
    anomalies: dict[str, list[Anomaly]],
) -> None:
    for value, (partition, offset) in acked.items():
        if value in obs.read:
            continue
        highest = obs.highest_read.get(partition)
        detail = {"value": value, "partition": partition, "offset": offset}
        if highest is not None and offset < highest:
            anomalies["lost-write"].append(Anomaly("lost-write", {**detail, "read_up_to": highest}))
        else:
            anomalies["unseen"].append(Anomaly("unseen", detail))


def _check_positions(obs: _Observations, anomalies: dict[str, list[Anomaly]]) -> None:
    for value, positions in obs.positions.items():
        if len(positions) > 1:
            detail = {"value": value, "at": sorted(positions, key=repr)}
            anomalies["duplicate"].append(Anomaly("duplicate", detail))
    for (partition, offset), values in obs.values_at.items():
        if len(values) > 1:
            detail = {"partition": partition, "offset": offset, "values": sorted(values, key=repr)}
            anomalies["inconsistent-offset"].append(Anomaly("inconsistent-offset", detail))


def _check_polls(
    completed: Sequence[_Completed], obs: _Observations, anomalies: dict[str, list[Anomaly]]
) -> None:
    """Per consumer process: offsets of one partition rise one known offset at a time."""
    last: dict[Process, dict[Hashable, int]] = defaultdict(dict)
    for c in completed:
        process, f, end = c.invoke.process, c.invoke.f, c.end
        if f == "assign" or (f == "poll" and end.type == "info"):
            last[process].clear()  # a new assignment, or a poll that may have moved us
        elif f == "seek":
            last[process].pop(_key(c.invoke.value["partition"]), None)
        elif f == "poll" and end.type == "ok":
            position = last[process]
            for raw_partition, raw_offset, _ in end.value["records"]:
                partition, offset = _key(raw_partition), int(raw_offset)
                before = position.get(partition)
                position[partition] = offset
                if before is None:
                    continue
                detail = {"process": process, "partition": partition, "after": before}
                if offset <= before:
                    anomalies["poll-nonmonotonic"].append(
                        Anomaly("poll-nonmonotonic", {**detail, "read": offset})
                    )
                elif skipped := obs.between(partition, before, offset):
                    anomalies["poll-skip"].append(
                        Anomaly("poll-skip", {**detail, "read": offset, "skipped": skipped})
                    )


@dataclass(frozen=True, slots=True)
class _Window:
    member: Hashable
    start_ns: int
    end_ns: int
    generation: int | None


def _ownership_windows(
    completed: Sequence[_Completed],
) -> dict[tuple[Hashable, Hashable], list[_Window]]:
    """(group, partition) -> every member's definite ownership windows (see module doc)."""
    by_process: dict[Process, list[_Completed]] = defaultdict(list)
    for c in completed:
        by_process[c.invoke.process].append(c)
    windows: dict[tuple[Hashable, Hashable], list[_Window]] = defaultdict(list)
    for history in by_process.values():
        history.sort(key=lambda c: c.invoke.index)
        assigns = [i for i, c in enumerate(history) if c.invoke.f == "assign"]
        for n, i in enumerate(assigns):
            end = history[i].end
            if end.type != "ok":
                continue
            if n + 1 < len(assigns):
                until = history[assigns[n + 1]].invoke.time_ns
            else:
                until = max(c.end.time_ns for c in history[i:])
            value = end.value
            group, member = _key(value["group"]), _key(value["member"])
            generation = value.get("generation")
            for partition in value["partitions"]:
                windows[(group, _key(partition))].append(
                    _Window(member, end.time_ns, until, generation)
                )
    return windows


def _check_groups(completed: Sequence[_Completed], anomalies: dict[str, list[Anomaly]]) -> None:
    for (group, partition), windows in _ownership_windows(completed).items():
        windows.sort(key=lambda w: w.start_ns)
        for i, a in enumerate(windows):
            for b in windows[i + 1 :]:
                if a.member == b.member:
                    continue
                overlap = b.start_ns < a.end_ns
                same_generation = a.generation is not None and a.generation == b.generation
                if overlap or same_generation:
                    detail = {
                        "group": group,
                        "partition": partition,
                        "members": [a.member, b.member],
                        "windows_ns": [(a.start_ns, a.end_ns), (b.start_ns, b.end_ns)],
                    }
                    if same_generation:
                        detail["generation"] = a.generation
                    anomalies["group-exclusivity"].append(Anomaly("group-exclusivity", detail))
