"""The transactional checker (issue #21): Jepsen's transactional anomalies in Kafka, over
history.py records written by a transactional producer and read_committed readers.

Operations, beside checker.py's `poll`:

    txn     invoke {"txn": id, "writes": [[p, v], ...], "outcome": "commit" | "abort"}
                   the values the transaction sent, in send order (unique across the history),
                   and whether the producer meant to commit or abort it
            ok     the outcome happened: commit_transaction (or abort_transaction) returned
            fail   the transaction certainly did not commit (a send or the commit was refused
                   with an abortable error and abort_transaction then returned)
            info   unknown: it may have committed or not
    poll    ok     {"records": [[p, o, v], ...]} of a read_committed consumer
    lso     ok     {"offsets": [[p, lso], ...]}: the last stable offsets a read_committed
                   consumer was told (ListOffsets latest), between its polls

Anomalies (a transaction is "read" when some poll returned one of its values):

    aborted-read      a value of a transaction that certainly did not commit (an acknowledged
                      abort, or `fail`) was read: read_committed must never show it.
    partial-read      a transaction whose values were read only in part by the end (G1-style:
                      a half-visible transaction), whatever its outcome. Needs a final drain to
                      the last stable offset of every partition, as the workload does.
    lost-commit       an acknowledged commit none of whose values was ever read.
    txn-order         a transaction's values of one partition read at offsets that do not rise
                      in the order they were sent.
    duplicate         one value read at two or more (partition, offset) positions, or in a
                      partition it was not sent to.
    phantom           a value read that no transaction sent.
    lso-regression    a read_committed consumer saw a partition's last stable offset go
                      backwards: a later `lso` below an earlier one, or below an offset it had
                      already read (reading offset o under read_committed means the LSO was
                      past o). Per consumer process, whose operations are sequential.

Not anomalies: an indeterminate transaction read in full or not at all.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .checker import EXAMPLES_MAX, Anomaly, _key, _pair
from .history import NEMESIS, HistoryError, Op

TXN_ANOMALY_KINDS = (
    "aborted-read",
    "partial-read",
    "lost-commit",
    "txn-order",
    "duplicate",
    "phantom",
    "lso-regression",
)


@dataclass(frozen=True, slots=True)
class TxnReport:
    committed: int  # acknowledged commits
    aborted: int  # certainly not committed (acknowledged aborts and failures)
    indeterminate: int
    records_read: int
    faults: dict[str, int]
    anomalies: dict[str, list[Anomaly]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.anomalies.values())

    def count(self, kind: str) -> int:
        assert kind in TXN_ANOMALY_KINDS, kind
        return len(self.anomalies.get(kind, []))

    def __str__(self) -> str:
        faults = " ".join(f"{f}={n}" for f, n in sorted(self.faults.items()))
        lines = [
            f"transactions: {self.committed} committed, {self.aborted} aborted, "
            f"{self.indeterminate} indeterminate; {self.records_read} records read",
            f"faults injected: {sum(self.faults.values())}" + (f" ({faults})" if faults else ""),
            "anomalies:",
        ]
        for kind in TXN_ANOMALY_KINDS:
            found = self.anomalies.get(kind, [])
            lines.append(f"  {kind}: {len(found)}")
            lines.extend(f"    {a}" for a in found[:EXAMPLES_MAX])
        lines.append("result: " + ("ok" if self.ok else "ANOMALIES FOUND"))
        return "\n".join(lines)


@dataclass(slots=True)
class _Txn:
    txn: Hashable
    writes: list[tuple[Hashable, Hashable]]  # (partition, value) in send order
    status: str  # "committed", "aborted" or "unknown"


def _transactions(ops: Sequence[Op]) -> tuple[dict[Hashable, _Txn], dict[Hashable, Hashable]]:
    """Every transaction by id, and which transaction sent each value."""
    txns: dict[Hashable, _Txn] = {}
    owner: dict[Hashable, Hashable] = {}
    for c in _pair(ops):
        if c.invoke.f != "txn":
            continue
        value: dict[str, Any] = c.invoke.value
        txn = _key(value["txn"])
        if txn in txns:
            raise HistoryError(f"transaction {txn!r} invoked twice")
        if value["outcome"] not in ("commit", "abort"):
            raise HistoryError(f"transaction {txn!r}: outcome must be commit or abort")
        writes = [(_key(p), _key(v)) for p, v in value["writes"]]
        for _, v in writes:
            if v in owner:
                raise HistoryError(f"value {v!r} was sent twice: values must be unique")
            owner[v] = txn
        if c.end.type == "ok":
            status = "committed" if value["outcome"] == "commit" else "aborted"
        else:
            status = "aborted" if c.end.type == "fail" else "unknown"
        txns[txn] = _Txn(txn, writes, status)
    return txns, owner


def check_transactions(ops: Sequence[Op]) -> TxnReport:
    """Check a whole history (ordered by index, as recorded or loaded)."""
    txns, owner = _transactions(ops)
    positions: dict[Hashable, set[tuple[Hashable, int]]] = defaultdict(set)
    records_read = 0
    for c in _pair(ops):
        if c.invoke.f == "poll" and c.end.type == "ok":
            for partition, offset, value in c.end.value["records"]:
                positions[_key(value)].add((_key(partition), int(offset)))
                records_read += 1

    anomalies: dict[str, list[Anomaly]] = {kind: [] for kind in TXN_ANOMALY_KINDS}

    def report(kind: str, **detail: Any) -> None:
        anomalies[kind].append(Anomaly(kind, detail))

    for value, at in positions.items():
        if value not in owner:
            report("phantom", value=value, at=sorted(at, key=repr))
    for txn in txns.values():
        read = [(p, v) for p, v in txn.writes if v in positions]
        if read and txn.status == "aborted":
            report("aborted-read", txn=txn.txn, values=[v for _, v in read])
        if read and len(read) < len(txn.writes):
            missing = [v for _, v in txn.writes if v not in positions]
            report("partial-read", txn=txn.txn, status=txn.status, missing=missing)
        if not read and txn.status == "committed":
            report("lost-commit", txn=txn.txn, values=[v for _, v in txn.writes])
        last_offset: dict[Hashable, int] = {}
        for partition, value in txn.writes:
            at = positions.get(value, set())
            if len(at) > 1 or any(p != partition for p, _ in at):
                report("duplicate", txn=txn.txn, value=value, at=sorted(at, key=repr))
                continue
            if not at:
                continue
            ((_, offset),) = at
            before = last_offset.get(partition)
            if before is not None and offset <= before:
                report("txn-order", txn=txn.txn, partition=partition, value=value,
                       offset=offset, after=before)  # fmt: skip
            last_offset[partition] = offset
    for process, partition, lso, floor in _lso_regressions(ops):
        report("lso-regression", process=process, partition=partition, lso=lso, before=floor)
    status = Counter(t.status for t in txns.values())
    return TxnReport(
        committed=status["committed"],
        aborted=status["aborted"],
        indeterminate=status["unknown"],
        records_read=records_read,
        faults=dict(Counter(op.f for op in ops if op.process == NEMESIS)),
        anomalies=anomalies,
    )


def _lso_regressions(ops: Sequence[Op]) -> list[tuple[Hashable, Hashable, int, int]]:
    """(process, partition, lso seen, the floor it fell below) for each time a consumer was told
    a last stable offset lower than what it knew already: an earlier `lso`, or one past an
    offset it had read. A process's operations are sequential, so its completion order is the
    order it saw them in."""
    floors: dict[tuple[Hashable, Hashable], int] = {}
    found = []
    for c in _pair(ops):
        if c.end.type != "ok":
            continue
        if c.invoke.f == "poll":
            for partition, offset, _ in c.end.value["records"]:
                key = (c.invoke.process, _key(partition))
                floors[key] = max(floors.get(key, 0), int(offset) + 1)
        elif c.invoke.f == "lso":
            for partition, lso in c.end.value["offsets"]:
                key = (c.invoke.process, _key(partition))
                floor = floors.get(key, 0)
                if int(lso) < floor:
                    found.append((c.invoke.process, _key(partition), int(lso), floor))
                floors[key] = max(floor, int(lso))
    return found
