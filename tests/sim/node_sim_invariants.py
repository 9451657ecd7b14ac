"""The named invariants of the node simulation, checked after every turn of the event loop.

They read the real nodes' state (partitions, logs, controllers, coordinators) and what the
clients were told. `committed[tp]` is the sequence of record identities (batch CRC, offset delta)
that any replica ever held below its high watermark: what consumers may read.

- HighWatermarkBelowLogEnd: on every replica, HW <= log end offset (a truncation lowers the HW).
- HighWatermarkMonotonic: a leader's HW never decreases within its leader epoch.
- OneLeaderPerEpoch: one broker leads a partition in a given leader epoch.
- CommittedPrefixStable: what each replica holds below its HW agrees with `committed`.
- ReplicasAgreeBelowHW: every live member of the committed ISR holds the leader's log below the
  leader's HW (the leader of the committed image, acting in its epoch).
- HighWatermarkCountsCommittedIsr: a leader moves its HW only over the log ends it knows of
  every member of the committed ISR (it counts its own pending additions until the metadata
  ends them).
- NoAckedLoss: an acks=all acknowledgement names a committed record, and the committed ISR and
  leader hold every acknowledged record (crashes lose nothing the page cache held, so "a majority
  of the ISR survives" always holds here).
- ReadCommitted: every record a consumer receives is committed, at its offset.
- ControllerActive: a Raft leader whose no-op committed in its term is the active controller
  (nothing but a lost leadership switches a controller off).
- NodeAlive: no node stops itself (a core task died) and no handler raises.
- GroupExclusivity: no partition is owned by two members of a group with valid leases.
- CommittedOffsetsMonotonic: a coordinator never holds a committed offset below one it already
  acknowledged for that group and partition.
- On a topic with unclean leader election (node_sim.LOSSY_TOPIC) records can be lost by
  design: only HighWatermarkBelowLogEnd, HighWatermarkMonotonic, OneLeaderPerEpoch and
  HighWatermarkCountsCommittedIsr (a rule within one leader epoch) apply.
- Convergence (after the heal): within a bound, every partition has its full ISR, every replica
  holds the leader's log with HW = log end, all brokers are unfenced, one controller is active,
  and every group member owns its share.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from node_sim_workload import batch_identity

from strom.node.metadata.image import MetadataImage
from strom.node.replica.partition import Partition

if TYPE_CHECKING:
    from node_sim import NodeSimulation
    from node_sim_cluster import SimNode

TopicPartition = tuple[str, int]
Ident = tuple[int, int]
READ_BYTES = 1 << 20


class Violation(Exception):
    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


def read_identities(partition: Partition, start: int, end: int) -> list[Ident]:
    """Identities of offsets [start, end) of the replica's log."""
    out: list[Ident] = []
    offset = start
    log = partition.log
    while offset < end:
        data = log.read(offset, READ_BYTES)
        if not data:
            break
        for record_offset, crc, delta in batch_identity(data):
            if offset <= record_offset < end:
                out.append((crc, delta))
                offset = record_offset + 1
            elif record_offset >= end:
                break
        else:
            continue
        break
    return out


class Checker:
    def __init__(self, sim: NodeSimulation) -> None:
        self.sim = sim
        self.committed: dict[TopicPartition, list[Ident]] = defaultdict(list)
        self.acked: dict[TopicPartition, dict[int, Ident]] = defaultdict(dict)
        self.acked_end: dict[TopicPartition, int] = defaultdict(int)
        self.offsets_acked: dict[tuple[str, TopicPartition], int] = {}
        # (node, incarnation, tp) -> (Partition object id, offsets known to equal committed)
        self._verified: dict[tuple[int, int, TopicPartition], tuple[int, int]] = {}
        self._epoch_leader: dict[tuple[TopicPartition, int], int] = {}
        self._hw_seen: dict[tuple[int, int, TopicPartition], tuple[int, int]] = {}
        # The HW each leader had when this checker first saw it lead an epoch.
        self._epoch_first_hw: dict[tuple[int, int, TopicPartition], tuple[int, int]] = {}
        self._pending: list[Violation] = []
        self._fingerprints: dict[TopicPartition, Any] = {}
        self._dirty: set[TopicPartition] = set()  # acknowledged since the last turn
        self._offsets_dirty = False
        self._members_dirty = False
        self._generation = -1
        self._lives: tuple[tuple[int, int], ...] = ()
        self._image = MetadataImage()
        self._image_index = -1
        self.checks = 0

    # ---- events from clients and the network ----------------------------------------------

    def fail_later(self, name: str, detail: str) -> None:
        self._pending.append(Violation(name, detail))

    def on_acked(
        self, tp: TopicPartition, offset: int, ident: Ident, value: int, leader: int
    ) -> None:
        committed = self.committed[tp]
        if offset >= len(committed) or committed[offset] != ident:
            self.fail_later("NoAckedLoss", f"{tp} offset {offset} (value {value}) was "
                            f"acknowledged by node {leader} but no leader exposed it below its "
                            f"HW ({len(committed)} committed); {self.replicas_of(tp)}")  # fmt: skip
        self.acked[tp][offset] = ident
        self.acked_end[tp] = max(self.acked_end[tp], offset + 1)
        self._dirty.add(tp)

    def on_consumed(self, tp: TopicPartition, offset: int, ident: Ident, client: int) -> None:
        committed = self.committed[tp]
        if offset >= len(committed) or committed[offset] != ident:
            self.fail_later("ReadCommitted", f"client {client} read {tp} offset {offset}, "
                            f"which is not the committed record there")  # fmt: skip

    def on_offset_committed(self, group: str, tp: TopicPartition, offset: int) -> None:
        key = (group, tp)
        self.offsets_acked[key] = max(self.offsets_acked.get(key, -1), offset)
        self._offsets_dirty = True

    # ---- after every turn ---------------------------------------------------------------

    def after_turn(self) -> None:
        """Checks what this turn may have changed: the partitions of nodes that ran a callback
        (their state changes only then) and of acknowledged records, or everything when the
        committed image or the set of live nodes changed."""
        if self._pending:
            raise self._pending[0]
        self.checks += 1
        cluster = self.sim.cluster
        ran = [s for s in cluster.node_list if s.owner is not None and s.owner.ran]
        if self._members_dirty:
            self._members_dirty = False
            self._check_exclusivity()
        quiet = not ran and not self._dirty and not self._offsets_dirty
        if quiet and cluster.generation == self._generation:
            return  # no node ran and none started or stopped: nothing of theirs changed
        self._generation = cluster.generation
        for s in ran:
            s.owner.ran = False  # type: ignore[union-attr]
        live = [s for s in cluster.node_list if s.up]
        image = self.latest_image(live)
        lives = tuple((s.node_id, s.owner.number) for s in live)  # type: ignore[union-attr]
        everything = lives != self._lives or image.last_index != self._image_index
        self._lives, self._image_index = lives, image.last_index
        dirty: dict[TopicPartition, bytes] = {}
        for sim_node in live if everything else ran:
            node = sim_node.node
            assert node is not None
            if node.stopped.is_set() and not sim_node.stopping:
                raise Violation("NodeAlive", f"node {sim_node.node_id} stopped itself")
            self._check_controller(sim_node)
            if node.manager is not None:
                for p in node.manager.partitions.values():
                    dirty[(p.topic, p.partition)] = p.topic_id
        for tp in self._dirty:
            topic = image.topic_by_name(tp[0])
            if topic is not None:
                dirty.setdefault(tp, topic.topic_id)
        self._dirty.clear()
        for tp, topic_id in dirty.items():
            key = (topic_id, tp[1])
            hosted = []
            for s in live:
                manager = s.node.manager if s.node is not None else None
                p = None if manager is None else manager.partitions.get(key)
                if p is not None:
                    hosted.append((s, p))
            topic = image.topic_by_name(tp[0])
            info = None if topic is None else topic.partitions.get(tp[1])
            # Nothing these checks read has changed since they last ran: skip them.
            fingerprint = (
                info,
                self.acked_end.get(tp, 0),
                len(self.committed[tp]),
                [
                    (s.node_id, id(p), p.log.log_end_offset, p.high_watermark, p.leader_epoch,
                     p.leader_state is None)
                    for s, p in hosted
                ],
            )  # fmt: skip
            if self._fingerprints.get(tp) != fingerprint:
                self._check_partition(tp, hosted, info)
                self._fingerprints[tp] = fingerprint
        self._check_groups(live if everything or self._offsets_dirty else ran)
        self._offsets_dirty = False

    def latest_image(self, live: list[SimNode]) -> MetadataImage:
        """The newest committed metadata any node ever applied. Every image is a prefix of the
        one committed log, and committed entries are never lost, so this never goes back, even
        when the nodes that applied it crashed and only a stale one is left."""
        best = self._image
        for sim_node in live:
            node = sim_node.node
            if node is not None and node.metadata is not None:
                image = node.metadata.image
                if image.last_index > best.last_index:
                    best = image
        self._image = best
        return best

    def _check_controller(self, sim_node: SimNode) -> None:
        node = sim_node.node
        assert node is not None
        driver, service = node.driver, node.controller_service
        if driver is None or service is None or sim_node.stopping:
            return
        if driver.is_leader and driver.leader_ready_term == driver.term and not service.active:
            raise Violation("ControllerActive", f"node {sim_node.node_id} leads term "
                            f"{driver.term} with its no-op committed but is not the active "
                            "controller")  # fmt: skip

    def _key(self, sim_node: SimNode, tp: TopicPartition) -> tuple[int, int, TopicPartition]:
        assert sim_node.owner is not None
        return (sim_node.node_id, sim_node.owner.number, tp)

    def agrees(self, sim_node: SimNode, partition: Partition, n: int) -> bool:
        """The replica's log holds committed[:n] (n <= len(committed))."""
        tp = (partition.topic, partition.partition)
        key = self._key(sim_node, tp)
        known = self._verified.get(key)
        verified = known[1] if known is not None and known[0] == id(partition) else 0
        leo = partition.log.log_end_offset
        verified = min(verified, leo)  # a truncation cut it back
        if verified >= n:
            self._verified[key] = (id(partition), verified)
            return True
        if leo < n:
            self._verified[key] = (id(partition), verified)
            return False
        committed = self.committed[tp]
        ok = read_identities(partition, verified, n) == committed[verified:n]
        self._verified[key] = (id(partition), n if ok else verified)
        return ok

    def _check_partition(
        self, tp: TopicPartition, hosted: list[tuple[SimNode, Partition]], info: Any
    ) -> None:
        committed = self.committed[tp]
        leaders = []
        for sim_node, p in hosted:
            leo = p.log.log_end_offset
            if p.high_watermark > leo:
                raise Violation("HighWatermarkBelowLogEnd", f"{tp} on node {sim_node.node_id}: "
                                f"HW {p.high_watermark} > log end {leo}")  # fmt: skip
            if p.leader_state is None:
                continue
            leaders.append((sim_node, p))
            owner = self._epoch_leader.setdefault((tp, p.leader_epoch), sim_node.node_id)
            if owner != sim_node.node_id:
                raise Violation("OneLeaderPerEpoch", f"{tp} epoch {p.leader_epoch} led by "
                                f"{owner} and {sim_node.node_id}")  # fmt: skip
            key = self._key(sim_node, tp)
            seen = self._hw_seen.get(key)
            if seen is not None and seen[0] == p.leader_epoch and p.high_watermark < seen[1]:
                raise Violation("HighWatermarkMonotonic", f"{tp} leader {sim_node.node_id} "
                                f"epoch {p.leader_epoch}: HW {seen[1]} -> {p.high_watermark}")  # fmt: skip
            self._hw_seen[key] = (p.leader_epoch, p.high_watermark)
            first = self._epoch_first_hw.get(key)
            if first is None or first[0] != p.leader_epoch:
                self._epoch_first_hw[key] = (p.leader_epoch, p.high_watermark)
        if info is not None:
            by_node = {s.node_id: (s, p) for s, p in hosted}
            leader = by_node.get(info.leader)
            if leader is not None and leader[1].leader_epoch == info.leader_epoch:
                self._check_hw_counts_committed_isr(tp, leader[0], leader[1], info)
        if tp[0] in self.sim.lossy_topics:
            return  # unclean election may cut committed records: only the checks above hold
        # Followers count too: a follower's HW came from a leader's, and it is what the
        # follower serves if it leads next; a leader may also have moved its HW and lost its
        # leadership within one turn, leaving the follower's HW as the only trace.
        for sim_node, p in hosted:
            n = len(committed)
            if p.high_watermark > n and self.agrees(sim_node, p, n):
                committed.extend(read_identities(p, n, p.high_watermark))
        for sim_node, p in hosted:
            if not self.agrees(sim_node, p, min(p.high_watermark, len(committed))):
                raise Violation("CommittedPrefixStable", f"{tp}: node {sim_node.node_id} "
                                f"({self._describe(p)}) holds below its HW a log that differs "
                                "from what was committed")  # fmt: skip
        if info is None:
            return
        by_node = {s.node_id: (s, p) for s, p in hosted}
        acked_end = self.acked_end.get(tp, 0)
        holders = set(info.isr) | ({info.leader} if info.leader >= 0 else set())
        for member in sorted(holders):
            if member in by_node and acked_end and not self.agrees(*by_node[member], acked_end):
                raise Violation("NoAckedLoss", f"{tp}: {self._describe(by_node[member][1])} "
                                f"on node {member} lacks acknowledged records below "
                                f"{acked_end} (committed ISR {list(info.isr)}, leader "
                                f"{info.leader})")  # fmt: skip
        leader = by_node.get(info.leader)
        if leader is None:
            return
        lp = leader[1]
        if lp.leader_state is None or lp.leader_epoch != info.leader_epoch:
            return
        below = min(lp.high_watermark, len(committed))
        for member in info.isr:
            if member in by_node and not self.agrees(*by_node[member], below):
                raise Violation("ReplicasAgreeBelowHW", f"{tp}: ISR member {member} "
                                f"({self._describe(by_node[member][1])}) lacks the leader "
                                f"{info.leader}'s log below its HW {lp.high_watermark} "
                                f"(committed ISR {list(info.isr)}, leader's "
                                f"{self._describe(lp)})")  # fmt: skip

    def _check_hw_counts_committed_isr(
        self, tp: TopicPartition, sim_node: SimNode, lp: Partition, info: Any
    ) -> None:
        """HighWatermarkCountsCommittedIsr: the leader moves its HW only over the log ends it
        knows of every member of the committed ISR. In one leader epoch only this leader adds
        ISR members, and it counts an addition from the moment it asks for it until the
        metadata ends the request, so its maximal ISR always covers the committed one. A
        leader that forgot a committed addition (issue #14 defect 1) breaks this at its next
        HW move, whether or not the member happens to hold the records already, which
        ReplicasAgreeBelowHW needs to see a loss."""
        state = lp.leader_state
        if state is None:
            return
        first = self._epoch_first_hw.get(self._key(sim_node, tp))
        if first is None or first[0] != lp.leader_epoch or lp.high_watermark <= first[1]:
            return  # not moved in this epoch as far as seen: inherited, not computed here
        for member in info.isr:
            progress = state.followers.get(member)
            if member == info.leader or progress is None or progress.log_end_offset < 0:
                continue
            if lp.high_watermark > progress.log_end_offset:
                raise Violation("HighWatermarkCountsCommittedIsr", f"{tp}: leader "
                                f"{info.leader}'s HW {lp.high_watermark} passed ISR member "
                                f"{member}'s log end {progress.log_end_offset} as it knows it "
                                f"(committed ISR {list(info.isr)}, its own view "
                                f"{list(state.isr)}, pending {state.pending})")  # fmt: skip

    def replicas_of(self, tp: TopicPartition) -> str:
        out = []
        for s in self.sim.cluster.nodes.values():
            manager = None if s.node is None else s.node.manager
            for p in [] if manager is None else manager.partitions.values():
                if (p.topic, p.partition) == tp:
                    role = "leader" if p.leader_state is not None else "follower"
                    out.append(f"n{s.node_id} {role} {self._describe(p)}")
        return "; ".join(out)

    @staticmethod
    def _describe(p: Partition) -> str:
        state = p.leader_state
        pending = "" if state is None or state.pending is None else f" pending {state.pending}"
        return (f"leo {p.log.log_end_offset} hw {p.high_watermark} epoch {p.leader_epoch} "
                f"isr {list(p.isr)}{pending}")  # fmt: skip

    def members_changed(self) -> None:
        """A member took partitions or renewed its lease: the only ways two can come to own one."""
        self._members_dirty = True

    def _check_exclusivity(self) -> None:
        now = self.sim.loop.time()
        owners: dict[tuple[str, TopicPartition], int] = {}
        for member in self.sim.members:
            if not member.lease_valid(now):
                continue
            for tp in member.owned:
                other = owners.setdefault((member.group, tp), member.client_id)
                if other != member.client_id:
                    raise Violation("GroupExclusivity", f"group {member.group}: {tp} owned by "
                                    f"members c{other} and c{member.client_id}")  # fmt: skip

    def _check_groups(self, coordinators: list[SimNode]) -> None:
        if not self.offsets_acked:
            return
        for sim_node in coordinators:
            node = sim_node.node
            coordinator = None if node is None else node.coordinator
            if coordinator is None or node is None or node.manager is None:
                continue
            for group in coordinator.groups.values():
                if group.partition not in coordinator.loaded:
                    continue
                for tp, entry in group.offsets.items():
                    acked = self.offsets_acked.get((group.group_id, tp), -1)
                    if entry.offset < acked:
                        raise Violation("CommittedOffsetsMonotonic", f"group {group.group_id} "
                                        f"{tp}: coordinator {sim_node.node_id} holds offset "
                                        f"{entry.offset} after {acked} was acknowledged")  # fmt: skip

    # ---- convergence ----------------------------------------------------------------------

    def unconverged(self) -> str | None:
        """Why the healed cluster has not converged yet, or None once it has."""
        cluster = self.sim.cluster
        live = [s for s in cluster.nodes.values() if s.running]
        if len(live) != len(cluster.nodes):
            return "not every node runs"
        image = self.latest_image(live)
        actives = [
            s.node_id
            for s in live
            if s.node is not None
            and s.node.controller_service is not None
            and s.node.controller_service.active
        ]
        if len(actives) != 1:
            return f"active controllers: {actives}"
        for broker_id in cluster.nodes:
            reg = image.brokers.get(broker_id)
            if reg is None or reg.fenced:
                return f"broker {broker_id} is fenced or unregistered"
        for topic in image.topics.values():
            for index, info in topic.partitions.items():
                why = self._partition_unconverged(topic.name, index, info, live)
                if why is not None:
                    return why
        for member in self.sim.members:
            if member.member_epoch <= 0:
                return f"member c{member.client_id} has no member epoch"
        for group in {m.group for m in self.sim.members}:
            owned: set[Any] = set()
            for m in self.sim.members:
                if m.group == group:
                    owned |= m.owned
            wanted = {
                (t, i)
                for m in self.sim.members
                if m.group == group
                for t in m.topics
                if (topic := image.topic_by_name(t)) is not None
                for i in topic.partitions
            }
            if owned != wanted:
                return f"group {group} owns {sorted(owned)} of {sorted(wanted)}"
        return None

    def _partition_unconverged(
        self, topic: str, index: int, info: Any, live: list[SimNode]
    ) -> str | None:
        name = f"{topic}-{index}"
        if info.leader < 0 or set(info.isr) != set(info.replicas):
            return f"{name}: leader {info.leader}, ISR {list(info.isr)} of {list(info.replicas)}"
        partitions = {}
        for s in live:
            if s.node_id in info.replicas:
                manager = None if s.node is None else s.node.manager
                p = (
                    None
                    if manager is None
                    else manager.partitions.get((info_topic_id(s, topic), index))
                )
                if p is None:
                    return f"{name}: node {s.node_id} hosts no replica"
                partitions[s.node_id] = p
        leader = partitions[info.leader]
        if leader.leader_state is None or leader.leader_epoch != info.leader_epoch:
            return f"{name}: leader {info.leader} does not act in epoch {info.leader_epoch}"
        leo = leader.log.log_end_offset
        for node_id, p in partitions.items():
            if p.log.log_end_offset != leo or p.high_watermark != leo:
                return (f"{name}: node {node_id} at leo {p.log.log_end_offset} hw "
                        f"{p.high_watermark}, leader leo {leo}")  # fmt: skip
        return None


def info_topic_id(sim_node: SimNode, topic: str) -> bytes:
    node = sim_node.node
    assert node is not None and node.metadata is not None
    found = node.metadata.image.topic_by_name(topic)
    return b"" if found is None else found.topic_id
