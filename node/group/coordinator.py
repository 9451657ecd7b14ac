"""The group coordinator: consumer groups whose offsets partition this broker leads (DESIGN.md §8).

Group G lives on partition `coordinator_partition(G, N)` of `__consumer_offsets` (N: the partitions
that topic has); whichever broker leads that partition coordinates G. Becoming leader loads the
partition (every committed offset record, in order) before answering; until then requests get
COORDINATOR_LOAD_IN_PROGRESS, and after losing leadership NOT_COORDINATOR, so clients find the new
coordinator.

Membership follows KIP-848 (membership.py): members heartbeat their subscriptions and owned
partitions and get their current assignment; the coordinator recomputes the group's target with
the group's assignor (assignors.py) whenever members, subscriptions or partition counts change.
Membership is kept in memory. A coordinator that takes a group over from another broker does not
know who owned what, so it hands out no partition for one session timeout: by then every member
of the old coordinator has either rejoined here (having dropped its partitions) or stopped
consuming (a consumer that cannot heartbeat for a session timeout drops its partitions), so no
partition is ever owned by two members at once.

Offset commits are records in the offsets partition and are acknowledged only once the ISR has
them (acks=all), so they survive the loss of the coordinator.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from strom.node import metrics
from strom.node.clock import SYSTEM_CLOCK, Clock
from strom.node.config import NodeConfig
from strom.node.errors import CodedError
from strom.node.metadata.image import MetadataDelta, MetadataImage
from strom.node.replica.manager import ReplicaManager
from strom.node.replica.partition import Partition, PartitionError
from strom.storage.control_records import TxnMarker
from strom.v1 import common_pb2

from .assignors import MemberSubscription, UnsupportedAssignorError, assign, get_assignor
from .classic import ClassicGroup, ClassicGroupError, JoinResult
from .coordinator_key import coordinator_partition
from .membership import (
    FencedMemberEpochError,
    GroupReconciler,
    StaleMemberEpochError,
    UnknownMemberIdError,
)
from .offsets_log import (
    OFFSETS_TOPIC,
    MarkerRecord,
    OffsetEntry,
    TxnProducer,
    decode_log,
    encode_records,
    last_offset_of,
)

log = logging.getLogger("strom.group")

INCONSISTENT_GROUP_PROTOCOL = 23  # Kafka's code; not an ErrorCode of strom's gRPC API
LOAD_CHUNK_BYTES = 1 << 20
# How long one wait for a new leader's HW to cover its log end lasts before looking again.
LOAD_HW_WAIT_S = 1.0
LAG_REFRESH_S = 5.0
MEMBERS_MAX = 1_000


# Kafka bounds group ids only by its request size; a group id is part of every offset key and
# of every group's memory here, so it is bounded like a topic name (249), in UTF-8 bytes.
GROUP_ID_BYTES_MAX = 255


class GroupError(CodedError):
    """A group request the coordinator refuses."""


def check_group_id(group_id: str) -> None:
    """INVALID_GROUP_ID for an empty or over-long group id."""
    if not group_id:
        raise GroupError(common_pb2.INVALID_GROUP_ID, "the group id must not be empty")
    size = len(group_id.encode())
    if size > GROUP_ID_BYTES_MAX:
        raise GroupError(
            common_pb2.INVALID_GROUP_ID,
            f"the group id is {size} bytes; the maximum is {GROUP_ID_BYTES_MAX}",
        )


@dataclass(slots=True)
class MemberInfo:
    member_id: str
    client_id: str
    instance_id: str
    host: str
    topics: frozenset[str]


@dataclass(slots=True)
class Group:
    group_id: str
    partition: int
    reconciler: GroupReconciler
    assignor: str = "range"
    members: dict[str, MemberInfo] = field(default_factory=dict)
    offsets: dict[tuple[str, int], OffsetEntry] = field(default_factory=dict)
    # Where in the offsets partition each entry of `offsets` was written: a commit replicated
    # late never replaces one written after it.
    offset_positions: dict[tuple[str, int], int] = field(default_factory=dict)
    frozen_until_ms: int = 0
    partition_counts: dict[str, int] = field(default_factory=dict)
    empty_since_ms: int = 0
    # Members of Kafka's classic protocol (JoinGroup/SyncGroup), node/group/classic.py; a group
    # has members of one protocol at a time.
    classic: ClassicGroup | None = None
    # Offsets committed inside transactions (TxnOffsetCommit) not yet decided: producer id ->
    # (topic, partition) -> (entry, its position in the offsets partition). Its commit marker
    # makes them `offsets`; its abort marker drops them.
    pending_txn: dict[int, dict[tuple[str, int], tuple[OffsetEntry, int]]] = field(
        default_factory=dict
    )

    @property
    def classic_members(self) -> int:
        return len(self.classic.members) if self.classic is not None else 0

    @property
    def member_count(self) -> int:
        return len(self.members) + self.classic_members

    def state_at(self, now_ms: int) -> str:
        if self.classic_members:
            assert self.classic is not None
            return self.classic.state
        if not self.members:
            return "Empty"
        if self.frozen_until_ms > now_ms:
            return "Assigning"
        return "Stable" if self.reconciler.is_converged() else "Reconciling"


EndOffsetLookup = Callable[[str, int], Awaitable[int]]


def _random_member_id() -> str:
    return uuid.uuid4().hex


def _always() -> bool:
    return True


class GroupCoordinator:
    def __init__(
        self,
        config: NodeConfig,
        manager: ReplicaManager,
        end_offset: EndOffsetLookup,
        clock: Clock = SYSTEM_CLOCK,
        new_member_id: Callable[[], str] = _random_member_id,
        has_lease: Callable[[], bool] = _always,
    ) -> None:
        self.config = config
        self.clock = clock
        self.new_member_id = new_member_id
        # False once the controller may have fenced this broker (BrokerLifecycle.has_lease):
        # another broker may then coordinate our groups, so we must stop answering for them.
        self.has_lease = has_lease
        self._lease_lost = False
        self.manager = manager
        self.end_offset = end_offset
        self.num_partitions = config["offsets.topic.num.partitions"]
        self.metadata_max_bytes = config["offset.metadata.max.bytes"]
        self.session_timeout_ms = config["group.consumer.session.timeout.ms"]
        self.heartbeat_interval_ms = config["group.consumer.heartbeat.interval.ms"]
        self.initial_delay_ms = config["group.initial.rebalance.delay.ms"]
        self.groups: dict[str, Group] = {}
        self.loaded: set[int] = set()  # offsets partitions whose groups are in memory
        self.loading: dict[int, asyncio.Task[None]] = {}
        # offsets partition -> until when groups there get no partitions (taken over)
        self.frozen_until_ms: dict[int, int] = {}
        # (group, topic, partition) -> log end offset minus committed offset, for metrics
        self.lag: dict[tuple[str, str, int], int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # The replica manager opens new logs in background slices: leadership of an offsets
        # partition can be known before its log is open, and that first load finds nothing.
        # Once more logs are open, look again (a partition neither loaded nor loading loads).
        manager.on_replicas_opened.append(
            lambda: self.on_metadata(self.manager.image, MetadataDelta())
        )

    # ---- partitions of __consumer_offsets ------------------------------------------------

    def on_metadata(self, image: MetadataImage, delta: MetadataDelta) -> None:
        if not self.manager.caught_up:
            return  # a stale image: see ReplicaManager.start_acting
        topic = image.topic_by_name(OFFSETS_TOPIC)
        led: set[int] = set()
        if topic is not None:
            led = {
                p for p, info in topic.partitions.items() if info.leader == self.manager.broker_id
            }
        if not self.has_lease():
            # _maintenance reloads once the lease is back, whether or not anything was loaded
            # when it went: a broker that first acts on its image while its lease is already
            # over (a heartbeat answered late) must load its partitions all the same.
            self._lease_lost = True
            return
        for partition in sorted(led - self.loaded - set(self.loading)):
            info = topic.partitions[partition] if topic else None
            # After a lost lease another broker may have served these groups meanwhile: load
            # them as a takeover too (no partition handed out for a session timeout).
            took_over = self._lease_lost or (info is not None and info.leader_epoch > 0)
            self.loading[partition] = asyncio.get_running_loop().create_task(
                self._load(partition, took_over), name=f"load-offsets-{partition}"
            )
        for partition in sorted((self.loaded | set(self.loading)) - led):
            self._unload(partition)
        # Partition counts changed: targets must follow (e.g. a topic grew).
        counts = {t.name: len(t.partitions) for t in image.topics.values()}
        for group in self.groups.values():
            subscribed = {n: counts.get(n, 0) for m in group.members.values() for n in m.topics}
            if subscribed != {n: group.partition_counts.get(n, 0) for n in subscribed}:
                self._recompute_target(group)

    async def _load(self, partition: int, took_over: bool) -> None:
        started = self.clock.now_ms()
        try:
            replica = self.manager.partition_by_name(OFFSETS_TOPIC, partition)
            # Only committed offsets are served: a new leader's log may end in commits its
            # predecessor wrote but never committed, which the next leader may lack (an offset
            # served and then gone would move a consumer back). So the HW must cover the log end
            # first, as for the transaction coordinator (node/txn/host.py).
            end = replica.log.log_end_offset
            while replica.high_watermark < end:
                await replica.hw_waiters.wait_for(end, LOAD_HW_WAIT_S)
            offset = replica.log.log_start_offset
            groups: dict[str, Group] = {}
            skipped: list[tuple[int, str]] = []
            while offset < replica.log.log_end_offset:
                data = replica.log.read(offset, LOAD_CHUNK_BYTES)
                if not data:
                    break
                # Continue after the last batch read, not its last record: compaction may
                # have removed a batch's last records.
                offset = max(offset, last_offset_of(data) + 1)
                items = decode_log(data, lambda at, why: skipped.append((at, why)))
                for item in items:
                    if isinstance(item, MarkerRecord):
                        for group in groups.values():
                            self._end_txn_offsets(group, item.producer_id, item.commit)
                        continue
                    group = groups.get(item.group) or self._new_group(item.group, partition)
                    groups[item.group] = group
                    key = (item.topic, item.partition)
                    if item.producer_id >= 0 and item.entry is not None:
                        pending = group.pending_txn.setdefault(item.producer_id, {})
                        pending[key] = (item.entry, item.offset)
                        continue
                    group.offset_positions[key] = item.offset
                    if item.entry is None:
                        group.offsets.pop(key, None)
                    else:
                        group.offsets[key] = item.entry
                await asyncio.sleep(0)  # let other requests run between chunks
            freeze = self.clock.now_ms() + self.session_timeout_ms if took_over else 0
            self.frozen_until_ms[partition] = freeze
            for group in groups.values():
                group.frozen_until_ms = freeze
                self.groups[group.group_id] = group
            self.loaded.add(partition)
            if skipped:
                metrics.OFFSETS_RECORDS_SKIPPED.inc(len(skipped))
                log.warning(
                    "%s-%d: passed over %d record(s) that are not offset commits (first at "
                    "offset %d: %s); the partition's groups loaded without them",
                    OFFSETS_TOPIC, partition, len(skipped), *skipped[0],
                )  # fmt: skip
            log.info(
                "loaded %d group(s) of %s-%d in %d ms", len(groups), OFFSETS_TOPIC, partition,
                self.clock.now_ms() - started,
            )  # fmt: skip
        except PartitionError as exc:
            log.info("cannot load %s-%d: %s", OFFSETS_TOPIC, partition, exc.message)
        finally:
            self.loading.pop(partition, None)

    def _unload(self, partition: int) -> None:
        task = self.loading.pop(partition, None)
        if task is not None:
            task.cancel()
        self.loaded.discard(partition)
        for group_id in [g for g, group in self.groups.items() if group.partition == partition]:
            classic = self.groups.pop(group_id).classic
            if classic is not None:
                classic.close(
                    common_pb2.NOT_COORDINATOR,
                    f"broker {self.manager.broker_id} no longer coordinates {group_id!r}",
                )
        log.info("no longer coordinating groups of %s-%d", OFFSETS_TOPIC, partition)

    def _new_group(self, group_id: str, partition: int) -> Group:
        return Group(
            group_id,
            partition,
            GroupReconciler(self.session_timeout_ms),
            frozen_until_ms=self.frozen_until_ms.get(partition, 0),
            empty_since_ms=self.clock.now_ms(),
        )

    def partition_for(self, group_id: str) -> int:
        """Hashed over the partitions `__consumer_offsets` really has once it exists (it may
        have been created with another count than offsets.topic.num.partitions, e.g. by a
        client of an older version); the configured count only before."""
        topic = self.manager.image.topic_by_name(OFFSETS_TOPIC)
        count = len(topic.partitions) if topic is not None and topic.partitions else 0
        return coordinator_partition(group_id, count or self.num_partitions)

    def _group(self, group_id: str, create: bool) -> Group | None:
        """The group if this broker coordinates it; raises NOT_COORDINATOR or LOAD_IN_PROGRESS."""
        check_group_id(group_id)
        if not self.has_lease():
            raise GroupError(
                common_pb2.COORDINATOR_NOT_AVAILABLE,
                f"broker {self.manager.broker_id} has lost contact with the controller and "
                "may have been replaced as coordinator; find the coordinator again",
            )
        partition = self.partition_for(group_id)
        if partition in self.loading:
            raise GroupError(
                common_pb2.COORDINATOR_LOAD_IN_PROGRESS,
                f"loading {OFFSETS_TOPIC}-{partition}; retry shortly",
            )
        if partition not in self.loaded:
            raise GroupError(
                common_pb2.NOT_COORDINATOR,
                f"broker {self.manager.broker_id} is not the coordinator of group {group_id!r}",
            )
        group = self.groups.get(group_id)
        if group is None and create:
            group = self.groups[group_id] = self._new_group(group_id, partition)
        return group

    # ---- membership --------------------------------------------------------------------

    def heartbeat(
        self,
        group_id: str,
        member_id: str,
        member_epoch: int,
        client_id: str,
        instance_id: str,
        host: str,
        topics: list[str] | None,
        assignor: str,
        owned: Mapping[str, list[int]] | None,
    ) -> tuple[str, int, dict[str, tuple[int, ...]]]:
        """Returns (member id, member epoch, current assignment)."""
        group = self._group(group_id, create=member_epoch == 0)
        assert group is not None or member_epoch != 0
        now = self.clock.now_ms()
        if group is None:
            raise GroupError(common_pb2.UNKNOWN_MEMBER_ID, f"group {group_id!r} has no members")
        if group.classic_members:
            raise GroupError(
                INCONSISTENT_GROUP_PROTOCOL,
                f"group {group_id!r} has members of Kafka's classic protocol (JoinGroup); a "
                "group serves one protocol at a time",
            )
        if member_epoch == -1:
            if member_id in group.members:
                group.reconciler.leave(member_id)
                del group.members[member_id]
                log.info("group %s: member %s left", group_id, member_id)
                self._membership_changed(group)
            return member_id, -1, {}
        if assignor:
            try:
                get_assignor(assignor)
            except UnsupportedAssignorError as exc:
                raise GroupError(common_pb2.UNSUPPORTED_ASSIGNOR, str(exc)) from exc
        current = group.reconciler.members.get(member_id) if member_id else None
        # A member still waiting for its first assignment (the group is frozen) heartbeats with
        # epoch 0 again: that is a heartbeat, not a new join.
        waiting = member_epoch == 0 and current is not None and current.member_epoch == 0
        if waiting:
            owned = {}
        elif member_epoch == 0:
            if len(group.members) >= MEMBERS_MAX:
                raise GroupError(
                    common_pb2.UNKNOWN_SERVER_ERROR, f"group {group_id!r} is full ({MEMBERS_MAX})"
                )
            member_id = member_id or self.new_member_id()
            if member_id in group.members:
                group.reconciler.leave(member_id)  # a rejoin after a fence: start over
            if not group.members and self.initial_delay_ms:
                # Kafka's group.initial.rebalance.delay.ms: consumers started together are
                # assigned together, instead of the first taking everything for a moment.
                group.frozen_until_ms = max(group.frozen_until_ms, now + self.initial_delay_ms)
            group.reconciler.join(member_id, now)
            group.members[member_id] = MemberInfo(
                member_id, client_id, instance_id, host, frozenset(topics or ())
            )
            if assignor:
                group.assignor = assignor
            log.info("group %s: member %s (%s) joined", group_id, member_id, client_id)
            self._membership_changed(group)
            owned = {}
        else:
            info = group.members.get(member_id)
            if info is None:
                raise GroupError(
                    common_pb2.UNKNOWN_MEMBER_ID,
                    f"member {member_id!r} is not in group {group_id!r}: rejoin with epoch 0",
                )
            if topics is not None and frozenset(topics) != info.topics:
                info.topics = frozenset(topics)
                self._recompute_target(group)
        try:
            response = group.reconciler.heartbeat(member_id, member_epoch, owned, now)
        except UnknownMemberIdError as exc:
            raise GroupError(common_pb2.UNKNOWN_MEMBER_ID, str(exc)) from exc
        except FencedMemberEpochError as exc:
            raise GroupError(common_pb2.FENCED_MEMBER_EPOCH, str(exc)) from exc
        return member_id, response.member_epoch, dict(response.assignment)

    def _membership_changed(self, group: Group) -> None:
        group.empty_since_ms = 0 if group.members else self.clock.now_ms()
        self._recompute_target(group)

    def _recompute_target(self, group: Group) -> None:
        if group.frozen_until_ms > self.clock.now_ms():
            return  # taken over: nothing is handed out until old owners are surely gone
        image = self.manager.image
        counts: dict[str, int] = {}
        for info in group.members.values():
            for name in info.topics:
                topic = image.topic_by_name(name)
                counts[name] = len(topic.partitions) if topic is not None else 0
        group.partition_counts = counts
        subscriptions = [
            MemberSubscription(
                member_id=m.member_id,
                topics=m.topics,
                client_id=m.client_id,
                group_instance_id=m.instance_id or None,
                owned={t: ps for t, ps in group.reconciler.target_of(m.member_id).items()},
            )
            for m in group.members.values()
        ]
        target = assign(group.assignor, subscriptions, counts) if subscriptions else {}
        epoch = group.reconciler.set_target(target)
        log.info(
            "group %s: epoch %d target %s", group.group_id, epoch,
            {m: dict(a) for m, a in target.items()},
        )  # fmt: skip

    # ---- timers ------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._maintenance(), name="group-maintenance"))
        self._tasks.append(asyncio.create_task(self._refresh_lag(), name="group-lag"))

    async def _refresh_lag(self) -> None:
        """Recompute consumer lag of coordinated groups every few seconds (for metrics)."""
        while True:
            await asyncio.sleep(LAG_REFRESH_S)
            lag: dict[tuple[str, str, int], int] = {}
            for group in list(self.groups.values()):
                for (topic, partition), entry in list(group.offsets.items()):
                    try:
                        end = await self.end_offset(topic, partition)
                    except GroupError:
                        continue  # no leader right now: no number rather than a wrong one
                    lag[(group.group_id, topic, partition)] = max(0, end - entry.offset)
            self.lag = lag

    async def stop(self) -> None:
        for task in [*self._tasks, *self.loading.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self.loading.values(), return_exceptions=True)

    def _check_lease(self) -> None:
        """Drop every group when the lease ends; reload them, as taken over, when it returns."""
        if not self.has_lease():
            if self.loaded or self.loading:
                log.warning(
                    "lost contact with the controller: no longer coordinating groups of %d "
                    "partition(s) of %s", len(self.loaded | set(self.loading)), OFFSETS_TOPIC,
                )  # fmt: skip
                for partition in sorted(self.loaded | set(self.loading)):
                    self._unload(partition)
                self._lease_lost = True
            return
        if self._lease_lost:
            self.on_metadata(self.manager.image, MetadataDelta())
            self._lease_lost = False

    async def _maintenance(self) -> None:
        retention_ms = self.config["offsets.retention.minutes"] * 60_000
        while True:
            await asyncio.sleep(min(0.5, self.session_timeout_ms / 4000))
            self._check_lease()
            now = self.clock.now_ms()
            for group in list(self.groups.values()):
                if group.classic is not None and group.classic.expire():
                    group.empty_since_ms = 0 if group.member_count else now
                expired = group.reconciler.expire_sessions(now)
                for member_id in expired:
                    group.members.pop(member_id, None)
                    log.info("group %s: member %s expired", group.group_id, member_id)
                thawed = group.frozen_until_ms and group.frozen_until_ms <= now
                if thawed:
                    group.frozen_until_ms = 0
                if expired or thawed:
                    self._membership_changed(group)
                if (
                    not group.member_count
                    and group.offsets
                    and group.empty_since_ms
                    and now - group.empty_since_ms > retention_ms
                ):
                    log.info("group %s: offsets expired after %d min empty", group.group_id,
                             retention_ms // 60_000)  # fmt: skip
                    await self._delete_offsets(group)

    # ---- offsets -----------------------------------------------------------------------

    async def commit(
        self,
        group_id: str,
        member_id: str,
        member_epoch: int,
        offsets: list[tuple[str, int, int, str]],
    ) -> dict[tuple[str, int], tuple[int, str]]:
        """Commit (topic, partition, offset, metadata) items; returns per-item (code, message).

        Everything is checked without awaiting, right before the records are appended, so the
        member's ownership is checked where the commit is ordered in the offsets log: a member
        fenced meanwhile can never have its commit land after the new owner's. As in Kafka, an
        offset is not checked against the partition's high watermark (a commit right after a
        leader change may be ahead of the new leader's HW); only its sign and the partition's
        existence are."""
        group = self._group(group_id, create=not member_id)
        if group is None:
            # A member of a group this coordinator does not know (it took the group over, or
            # the group expired meanwhile): the member must rejoin, as a heartbeat would tell it.
            raise GroupError(
                common_pb2.UNKNOWN_MEMBER_ID,
                f"group {group_id!r} has no member {member_id!r} here: rejoin the group",
            )
        self._check_committer(group, member_id, member_epoch)
        results: dict[tuple[str, int], tuple[int, str]] = {}
        accepted = []
        now = self.clock.now_ms()
        for topic, partition, offset, metadata in offsets:
            problem = self._check_offset(topic, partition, offset, metadata)
            if problem is not None:
                results[(topic, partition)] = problem
            else:
                accepted.append((topic, partition, OffsetEntry(offset, metadata, now)))
        if accepted:
            written = await self._append(
                group, [(group_id, t, p, e, member_epoch) for t, p, e in accepted]
            )
            for (topic, partition, entry), position in zip(accepted, written, strict=True):
                self._remember(group, (topic, partition), entry, position)
                results[(topic, partition)] = (common_pb2.NONE, "")
        return results

    def _check_offset(
        self, topic: str, partition: int, offset: int, metadata: str
    ) -> tuple[int, str] | None:
        """Why one committed offset is refused, as (code, message); None when it is fine."""
        meta = self.manager.image.topic_by_name(topic)
        if meta is None or partition not in meta.partitions:
            return common_pb2.UNKNOWN_TOPIC_OR_PARTITION, f"{topic}-{partition} does not exist"
        if offset < 0:
            return (
                common_pb2.OFFSET_OUT_OF_RANGE,
                f"offset {offset} for {topic}-{partition} is negative",
            )
        if len(metadata.encode()) > self.metadata_max_bytes:
            return (
                common_pb2.OFFSET_METADATA_TOO_LARGE,
                f"the metadata of the commit for {topic}-{partition} is "
                f"{len(metadata.encode())} bytes; offset.metadata.max.bytes is "
                f"{self.metadata_max_bytes}",
            )
        return None

    def _check_committer(self, group: Group, member_id: str, member_epoch: int) -> None:
        if group.classic is not None and (member_id in group.classic.members or (
            member_id and not group.members
        )):  # fmt: skip
            try:  # a classic member: member_epoch is its generation
                group.classic.validate_commit(member_id, member_epoch)
            except ClassicGroupError as exc:
                raise GroupError(exc.code, exc.message) from exc
            return
        if member_id:
            try:
                group.reconciler.validate_offset_commit(member_id, member_epoch)
            except UnknownMemberIdError as exc:
                raise GroupError(common_pb2.UNKNOWN_MEMBER_ID, str(exc)) from exc
            except StaleMemberEpochError as exc:
                raise GroupError(common_pb2.STALE_MEMBER_EPOCH, str(exc)) from exc
        elif group.member_count:
            raise GroupError(
                common_pb2.NON_EMPTY_GROUP,
                f"group {group.group_id!r} has {group.member_count} active member(s); offsets "
                "can be reset only while the group is empty (stop its consumers first)",
            )

    @staticmethod
    def _remember(
        group: Group, key: tuple[str, int], entry: OffsetEntry | None, position: int
    ) -> None:
        """Apply a replicated commit (or tombstone) unless one written later is already in."""
        if position <= group.offset_positions.get(key, -1):
            return
        group.offset_positions[key] = position
        if entry is None:
            group.offsets.pop(key, None)
        else:
            group.offsets[key] = entry

    async def _append(
        self,
        group: Group,
        items: list[tuple[str, str, int, OffsetEntry | None, int]],
        txn: TxnProducer | None = None,
    ) -> list[int]:
        """Append records (synchronously, so in the order of the caller's checks), then wait
        until the ISR holds them; returns each record's offset in the offsets partition."""
        replica = self._offsets_replica(group.partition)
        min_isr = self.manager.min_insync_replicas(OFFSETS_TOPIC)
        data = encode_records(items, self.clock.now_ms(), txn)
        try:
            info = replica.append_as_leader(data, -1, min_isr, self.clock.now_ms())
            await replica.wait_for_isr(
                info.last_offset, min_isr, self.config["request.timeout.ms"] / 1000
            )
        except PartitionError as exc:
            raise GroupError(exc.code, exc.message) from exc
        return list(range(info.first_offset, info.first_offset + len(items)))

    def _offsets_replica(self, partition: int) -> Partition:
        try:
            return self.manager.partition_by_name(OFFSETS_TOPIC, partition)
        except PartitionError as exc:
            raise GroupError(common_pb2.NOT_COORDINATOR, exc.message) from exc

    # ---- offsets of transactions (KIP-98 / KIP-447) ---------------------------------------

    async def txn_commit(
        self,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        member_id: str,
        generation: int,
        offsets: list[tuple[str, int, int, str]],
    ) -> dict[tuple[str, int], tuple[int, str]]:
        """TxnOffsetCommit: (topic, partition, offset, metadata) items written as transactional
        records of the producer (who must have added this group's offsets partition to its
        transaction: AddOffsetsToTxn registered it, else the log refuses with
        INVALID_TXN_STATE), pending until the transaction's marker. A member id is checked as
        for a commit; an empty one with generation -1 (a consumer using assign()) is not."""
        if producer_id < 0 or producer_epoch < 0:
            raise GroupError(
                common_pb2.INVALID_PRODUCER_ID_MAPPING,
                "a transactional offset commit needs the producer's id and epoch",
            )
        group = self._group(group_id, create=True)
        assert group is not None
        if member_id:
            self._check_committer(group, member_id, generation)
        results: dict[tuple[str, int], tuple[int, str]] = {}
        accepted = []
        now = self.clock.now_ms()
        for topic, partition, offset, metadata in offsets:
            problem = self._check_offset(topic, partition, offset, metadata)
            if problem is not None:
                results[(topic, partition)] = problem
            else:
                accepted.append((topic, partition, OffsetEntry(offset, metadata, now)))
        if not accepted:
            return results
        replica = self._offsets_replica(group.partition)
        txn = TxnProducer(
            producer_id, producer_epoch, replica.next_sequence(producer_id, producer_epoch)
        )
        written = await self._append(
            group, [(group_id, t, p, e, generation) for t, p, e in accepted], txn
        )
        pending = group.pending_txn.setdefault(producer_id, {})
        for (topic, partition, entry), position in zip(accepted, written, strict=True):
            pending[(topic, partition)] = (entry, position)
            results[(topic, partition)] = (common_pb2.NONE, "")
        return results

    def on_txn_marker(self, topic: str, partition: int, marker: TxnMarker) -> None:
        """A transaction marker is replicated in an offsets partition this broker leads: the
        producer's pending commits there become visible (commit) or are dropped (abort)."""
        if topic != OFFSETS_TOPIC or partition not in self.loaded:
            return
        for group in list(self.groups.values()):
            if group.partition == partition:
                self._end_txn_offsets(group, marker.producer_id, marker.commit)

    def _end_txn_offsets(self, group: Group, producer_id: int, commit: bool) -> None:
        pending = group.pending_txn.pop(producer_id, None)
        if pending is None or not commit:
            return
        for key, (entry, position) in pending.items():
            self._remember(group, key, entry, position)

    def fetch_offsets(
        self, group_id: str, wanted: list[tuple[str, int]] | None
    ) -> dict[tuple[str, int], OffsetEntry | None]:
        group = self._group(group_id, create=False)
        if group is None:
            return dict.fromkeys(wanted or [])
        if wanted is None:
            return dict(group.offsets)
        return {tp: group.offsets.get(tp) for tp in wanted}

    def pending_offsets(self, group_id: str) -> set[tuple[str, int]]:
        """The partitions with an offset committed in a transaction not yet ended by its
        marker (KIP-447: OffsetFetch with require_stable answers them UNSTABLE_OFFSET_COMMIT,
        so a consumer taking one over does not start from the offset before it)."""
        group = self._group(group_id, create=False)
        if group is None:
            return set()
        return {key for pending in group.pending_txn.values() for key in pending}

    async def delete_group(self, group_id: str) -> None:
        group = self._group(group_id, create=False)
        if group is None:
            raise GroupError(common_pb2.GROUP_ID_NOT_FOUND, f"group {group_id!r} does not exist")
        if group.member_count:
            raise GroupError(
                common_pb2.NON_EMPTY_GROUP,
                f"group {group_id!r} has {group.member_count} active member(s); stop them first",
            )
        await self._delete_offsets(group)
        self.groups.pop(group_id, None)

    async def _delete_offsets(self, group: Group) -> None:
        keys = sorted(group.offsets)
        if keys:
            written = await self._append(group, [(group.group_id, t, p, None, -1) for t, p in keys])
            for key, position in zip(keys, written, strict=True):
                self._remember(group, key, None, position)

    def group_state(self, group: Group) -> str:
        return group.state_at(self.clock.now_ms())

    def describe(self, group_id: str) -> Group:
        group = self._group(group_id, create=False)
        if group is None:
            raise GroupError(common_pb2.GROUP_ID_NOT_FOUND, f"group {group_id!r} does not exist")
        return group

    # ---- Kafka's classic protocol (node/group/classic.py) --------------------------------

    def _classic_group(self, group_id: str, protocol_type: str | None) -> ClassicGroup:
        """The group's classic state; with `protocol_type`, created for a join."""
        group = self._group(group_id, create=protocol_type is not None)
        if group is None or (group.classic is None and protocol_type is None):
            raise GroupError(
                common_pb2.UNKNOWN_MEMBER_ID, f"group {group_id!r} has no classic members"
            )
        if protocol_type is None:
            assert group.classic is not None
            return group.classic
        if group.members:
            raise GroupError(
                INCONSISTENT_GROUP_PROTOCOL,
                f"group {group_id!r} has members of strom's consumer protocol "
                "(ConsumerGroupHeartbeat); a group serves one protocol at a time",
            )
        # Replaced only when no member is in it or on its way (KIP-394 ids handed out), unless
        # its last member left and a join of another protocol type arrives.
        classic = group.classic
        if classic is None or (
            not classic.members and (classic.is_unused() or classic.protocol_type != protocol_type)
        ):
            if classic is not None:
                classic.close(common_pb2.UNKNOWN_MEMBER_ID, "the group was reset")
            classic = group.classic = ClassicGroup(
                group_id, protocol_type, self.clock.now_ms, self.initial_delay_ms,
                self.new_member_id,
            )  # fmt: skip
        return classic

    async def classic_join(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        client_id: str,
        host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        require_known_member_id: bool = False,
    ) -> JoinResult:
        if session_timeout_ms <= 0 or rebalance_timeout_ms < 0:
            raise GroupError(
                common_pb2.INVALID_SESSION_TIMEOUT,
                f"session timeout {session_timeout_ms} ms must be positive",
            )
        classic = self._classic_group(group_id, protocol_type)
        try:
            pending = classic.join(
                member_id, instance_id, client_id, host, session_timeout_ms,
                rebalance_timeout_ms, protocol_type, protocols, require_known_member_id,
            )  # fmt: skip
            result = await pending
        except ClassicGroupError as exc:
            raise GroupError(exc.code, exc.message) from exc
        group = self.groups.get(group_id)
        if group is not None:
            group.empty_since_ms = 0 if group.member_count else self.clock.now_ms()
        return result

    async def classic_sync(
        self, group_id: str, member_id: str, generation: int, assignments: dict[str, bytes]
    ) -> tuple[str, bytes]:
        try:
            return await self._classic_group(group_id, None).sync(
                member_id, generation, assignments
            )
        except ClassicGroupError as exc:
            raise GroupError(exc.code, exc.message) from exc

    def classic_heartbeat(self, group_id: str, member_id: str, generation: int) -> None:
        try:
            self._classic_group(group_id, None).heartbeat(member_id, generation)
        except ClassicGroupError as exc:
            raise GroupError(exc.code, exc.message) from exc

    def classic_leave(self, group_id: str, member_id: str) -> None:
        try:
            self._classic_group(group_id, None).leave(member_id)
        except ClassicGroupError as exc:
            raise GroupError(exc.code, exc.message) from exc
        group = self.groups.get(group_id)
        if group is not None and not group.member_count:
            group.empty_since_ms = self.clock.now_ms()

    def protocol_type(self, group_id: str) -> str:
        group = self.groups.get(group_id)
        if group is not None and group.classic is not None and not group.members:
            return group.classic.protocol_type
        return "consumer"

    def describe_kafka(self, group_id: str) -> dict[str, Any]:
        """A group as Kafka's DescribeGroups shows it (either protocol)."""
        group = self.describe(group_id)
        state = self.group_state(group)
        classic = group.classic
        if classic is not None and classic.members:
            members = [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.instance_id,
                    "client_id": m.client_id,
                    "client_host": m.host,
                    "member_metadata": m.metadata_for(classic.protocol_name),
                    "member_assignment": m.assignment,
                }
                for m in classic.members.values()
            ]
            kind, data = classic.protocol_type, classic.protocol_name
        else:
            members = [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.instance_id or None,
                    "client_id": m.client_id,
                    "client_host": m.host,
                    "member_metadata": b"",
                    "member_assignment": b"",
                }
                for m in group.members.values()
            ]
            kind, data = "consumer", group.assignor
        return {
            "error_code": 0,
            "group_id": group_id,
            "group_state": state,
            "protocol_type": kind,
            "protocol_data": data,
            "members": members,
        }
