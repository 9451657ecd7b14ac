"""The transactional invariants of the node simulation (issue #21), beside node_sim_invariants.py.

What the workload (node_sim_txn.py) tells this checker: every value a transaction sends and
with which producer id and epoch, when an instance's InitProducerId answered (so which later
sends are a fenced instance's, a zombie's), when a producer asked to commit or abort and what
it was answered, and which transaction committed which group offset. Checked:

At every read_committed read (`on_read`):
- ReadBelowLastStableOffset: a record taken lies below the LSO of the same answer.
- VisibleOnlyIfCommitted: a record taken belongs to a transaction whose producer asked to
  commit it (an undecided or aborted transaction's record is never served; the LSO holds
  back what is undecided).
- AbortedNeverVisible: ... and whose producer was not told it aborted.
- ZombieFenced: never a record a fenced instance sent after a newer instance of its
  transactional id had its InitProducerId answered.
- Every value read was sent by some transaction (a phantom is reported as VisibleOnlyIfCommitted).

After every turn (`after_turn`), on the real nodes:
- LastStableOffsetBelowHighWatermark: on every replica of x0, LSO <= HW.
- LastStableOffsetMonotonic: a leader's LSO never decreases within its leader epoch, on the
  node and as each reader is served it (a new leader may start lower, as its HW may, so
  readers' positions are never held to it — Kafka promises no more).
- TxnOffsetsOnlyIfCommitted: a group coordinator's committed offset of a transactional id's
  group is one a transaction sent whose producer asked to commit and was not told it aborted
  (offsets of an open or aborted transaction stay pending, never visible).

At the end, after every transaction was ended and every reader drained to the LSO:
- TransactionsComplete: every x0 and __consumer_offsets partition's LSO reaches its HW (no
  transaction is left hanging, e.g. a marker never written), within a bound.
- TxnHistory: the fault suite's transactional checker (tests/faults/txn_checker.py): no
  aborted read, no partial read (all of a committed transaction's records or none, the
  G1-style anomaly), no lost commit, a transaction's records in send order in each partition,
  no duplicate, no phantom.
- TxnOffsetsLost: each group's committed offset is at least the newest one whose transaction's
  commit was acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faults.txn_checker import check_transactions
from node_sim_invariants import Violation
from node_sim_txn import TRANSACTIONAL_IDS, TXN_TOPIC, group_of

from strom.node.internal_topics import OFFSETS_TOPIC

if TYPE_CHECKING:
    from node_sim import NodeSimulation
    from node_sim_txn import TxnReader

    from strom.node.replica.partition import Partition


@dataclass(slots=True)
class SentTxn:
    name: str
    tid: str
    ids: tuple[int, int]  # producer id, epoch
    values: list[int]
    number: int | None  # the offset it commits for its group, if any
    commit_requested: bool = False
    commit_acked: bool = False
    abort_acked: bool = False


class TxnChecker:
    def __init__(self, sim: NodeSimulation) -> None:
        self.sim = sim
        self.txns: dict[str, SentTxn] = {}
        self.owner: dict[int, str] = {}
        self.by_number: dict[int, str] = {}
        self.zombie_values: set[int] = set()
        self.latest: dict[str, tuple[int, int]] = {}
        self._lso_seen: dict[tuple[int, int, tuple[str, int]], tuple[int, int]] = {}
        # (reader, leader, its incarnation, leader epoch) -> the LSO it served last
        self._lso_read: dict[tuple[int, int, int, int], int] = {}
        self.reads = 0

    def _fail(self, name: str, detail: str) -> None:
        self.sim.checker.fail_later(name, detail)

    # ---- what the workload tells -----------------------------------------------------------

    def on_init(self, tid: str, producer_id: int, epoch: int) -> None:
        known = self.latest.get(tid)
        if known is None or known[0] != producer_id or epoch > known[1]:
            self.latest[tid] = (producer_id, epoch)

    def on_begin(self, name: str, values: list[int], number: int | None, tid: str,
                 ids: tuple[int, int]) -> None:  # fmt: skip
        self.txns[name] = SentTxn(name, tid, ids, values, number)
        for value in values:
            self.owner[value] = name
        if number is not None:
            self.by_number[number] = name

    def on_send(self, tid: str, producer_id: int, epoch: int, value: int) -> None:
        if self.latest.get(tid) != (producer_id, epoch):
            self.zombie_values.add(value)

    def on_end_requested(self, name: str, commit: bool) -> None:
        if commit:
            self.txns[name].commit_requested = True

    def on_end_answered(self, name: str, commit: bool) -> None:
        txn = self.txns[name]
        if commit:
            txn.commit_acked = True
        else:
            txn.abort_acked = True

    def on_read(
        self, reader: TxnReader, leader: tuple[int, int], taken: list[tuple[int, int, int]],
        result: Any,
    ) -> None:  # fmt: skip
        lso = int(result.last_stable_offset)
        where = f"reader c{reader.client_id} of {reader.tp} from n{leader[0]} (epoch {leader[1]})"
        # A node restarted within one leader epoch reloads an older HW: a new incarnation
        # (as HighWatermarkMonotonic keys its leaders).
        owner = self.sim.cluster.nodes[leader[0]].owner
        key = (reader.client_id, leader[0], -1 if owner is None else owner.number, leader[1])
        if lso < self._lso_read.get(key, -1):
            self._fail("LastStableOffsetMonotonic", f"{where} was served LSO {lso} after "
                       f"{self._lso_read[key]} in the same leader epoch")  # fmt: skip
        self._lso_read[key] = max(lso, self._lso_read.get(key, -1))
        for offset, value, producer_id in taken:
            self.reads += 1
            if offset >= lso:
                self._fail("ReadBelowLastStableOffset", f"{where} took offset {offset} (value "
                           f"{value}) at or above the LSO {lso} it was served with")  # fmt: skip
            name = self.owner.get(value)
            txn = None if name is None else self.txns[name]
            if value in self.zombie_values:
                self._fail("ZombieFenced", f"{where} read value {value} at offset {offset}, sent "
                           f"by fenced producer {producer_id} of {name} after a newer instance "
                           "initialized")  # fmt: skip
            elif txn is None or not txn.commit_requested:
                self._fail("VisibleOnlyIfCommitted", f"{where} read value {value} at offset "
                           f"{offset} of transaction {name}, whose producer never asked to "
                           "commit it")  # fmt: skip
            elif txn.abort_acked:
                self._fail("AbortedNeverVisible", f"{where} read value {value} at offset "
                           f"{offset} of {name}, whose abort was acknowledged")  # fmt: skip

    # ---- after every turn ------------------------------------------------------------------

    def after_turn(self) -> None:
        for sim_node in self.sim.cluster.node_list:
            node = sim_node.node if sim_node.up else None
            manager = None if node is None else node.manager
            if manager is None or sim_node.owner is None:
                continue
            for p in list(manager.partitions.values()):
                if p.topic == TXN_TOPIC:
                    self._check_lso(sim_node.node_id, sim_node.owner.number, p)
            coordinator = node.coordinator if node is not None else None
            if coordinator is not None:
                self._check_offsets(sim_node.node_id, coordinator)

    def _check_lso(self, node_id: int, incarnation: int, p: Partition) -> None:
        lso, hw = p.last_stable_offset, p.high_watermark
        if lso > hw:
            raise Violation("LastStableOffsetBelowHighWatermark", f"{p.name} on n{node_id}: "
                            f"LSO {lso} > HW {hw}")  # fmt: skip
        if p.leader_state is None:
            return
        key = (node_id, incarnation, (p.topic, p.partition))
        seen = self._lso_seen.get(key)
        if seen is not None and seen[0] == p.leader_epoch and lso < seen[1]:
            raise Violation("LastStableOffsetMonotonic", f"{p.name} leader n{node_id} epoch "
                            f"{p.leader_epoch}: LSO {seen[1]} -> {lso}")  # fmt: skip
        self._lso_seen[key] = (p.leader_epoch, lso)

    def _check_offsets(self, node_id: int, coordinator: Any) -> None:
        for tid in TRANSACTIONAL_IDS:
            group = coordinator.groups.get(group_of(tid))
            if group is None or group.partition not in coordinator.loaded:
                continue
            entry = group.offsets.get((TXN_TOPIC, 0))
            if entry is None:
                continue
            name = self.by_number.get(entry.offset)
            txn = None if name is None else self.txns[name]
            if txn is None or not txn.commit_requested or txn.abort_acked:
                raise Violation("TxnOffsetsOnlyIfCommitted", f"coordinator n{node_id} shows "
                                f"group {group.group_id} offset {entry.offset}, of transaction "
                                f"{name} ({txn}), which did not commit")  # fmt: skip

    # ---- the end ---------------------------------------------------------------------------

    def unstable(self) -> str | None:
        """Why some leader of x0 or __consumer_offsets has an LSO below its HW, or None."""
        live = [s for s in self.sim.cluster.node_list if s.running]
        image = self.sim.checker.latest_image(live)
        by_node = {s.node_id: s for s in live}
        for topic_name in (TXN_TOPIC, OFFSETS_TOPIC):
            topic = image.topic_by_name(topic_name)
            if topic is None:
                continue
            for index, info in sorted(topic.partitions.items()):
                sim_node = by_node.get(info.leader)
                manager = None if sim_node is None or sim_node.node is None else (
                    sim_node.node.manager)  # fmt: skip
                p = None if manager is None else manager.partitions.get((topic.topic_id, index))
                if p is None or p.leader_state is None:
                    return f"{topic_name}-{index} has no acting leader"
                if p.last_stable_offset != p.high_watermark:
                    open_at = p._log.first_unstable_offset()
                    return (f"{topic_name}-{index}: LSO {p.last_stable_offset} < HW "
                            f"{p.high_watermark} (a transaction open at {open_at})")  # fmt: skip
        return None

    def check_end(self, ops: list[Any]) -> None:
        report = check_transactions(ops)
        stats = self.sim.stats
        stats["txn committed"] += report.committed
        stats["txn aborted"] += report.aborted
        stats["txn indeterminate"] += report.indeterminate
        stats["txn records read"] += report.records_read
        if not report.ok:
            raise Violation("TxnHistory", str(report))
        self._check_offsets_kept()

    def _check_offsets_kept(self) -> None:
        for tid in TRANSACTIONAL_IDS:
            acked = [t.number for t in self.txns.values()
                     if t.tid == tid and t.commit_acked and t.number is not None]  # fmt: skip
            if not acked:
                continue
            shown = self._group_offset(group_of(tid))
            if shown is None or shown < max(acked):
                raise Violation("TxnOffsetsLost", f"group {group_of(tid)} shows offset {shown} "
                                f"after the commit of offset {max(acked)} was acknowledged")  # fmt: skip
            self.sim.stats["txn offsets checked"] += 1

    def groups_unloaded(self) -> str | None:
        """A transactional group that committed offsets and no running coordinator has
        loaded, or None."""
        for tid in TRANSACTIONAL_IDS:
            if any(t.tid == tid and t.commit_acked and t.number is not None
                   for t in self.txns.values()) and self._loaded(group_of(tid)) is None:  # fmt: skip
                return group_of(tid)
        return None

    def _loaded(self, group_id: str) -> Any:
        for sim_node in self.sim.cluster.node_list:
            node = sim_node.node if sim_node.running else None
            coordinator = None if node is None else node.coordinator
            group = None if coordinator is None else coordinator.groups.get(group_id)
            if (
                group is not None
                and coordinator is not None
                and (group.partition in coordinator.loaded)
            ):
                return group
        return None

    def _group_offset(self, group_id: str) -> int | None:
        group = self._loaded(group_id)
        entry = None if group is None else group.offsets.get((TXN_TOPIC, 0))
        return None if entry is None else int(entry.offset)
