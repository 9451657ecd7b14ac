"""The replica manager: which partitions this broker hosts, in which role, kept in step with the
metadata image (DESIGN.md §6, §7).

On every metadata delta it creates logs for new replicas (refusing a folder whose topic id is an
older incarnation's: that folder is deleted, never served), makes each replica leader or follower
as the image says, hands followers to one fetcher per leader broker, and deletes logs of replicas
and topics that are gone. Timers owned here: ISR shrink checks, retention (of `delete` topics),
log compaction (of `compact` topics), and the high-watermark checkpoint. ISR changes go to the
controller as AlterPartition requests; the committed result comes back through the metadata
image like every other change.

Creating a log costs a few fsyncs (about 10 ms on a slow disk), so one change that adds
thousands of replicas (a topic of 10,000 partitions) would hold the event loop for minutes and
get the broker fenced (#15 defect 5). A change creates at most `NEW_LOGS_INLINE_MAX` new logs at
once; the files of the rest are created by a background task in a worker thread,
`NEW_LOGS_PER_BATCH_MAX` at a time, and each is then adopted here against the image current at
that moment (or deleted, if its replica went away meanwhile), `NEW_LOGS_ADOPTED_PER_TURN_MAX`
per loop turn (becoming leader fsyncs the leader-epoch checkpoint). No other code opens a folder
being created (`_creating`). Until then requests for them get the retriable
NOT_LEADER_OR_FOLLOWER. Logs that already exist on disk (a restart) always open at once.

Failures stay with their partition (#14 defect 4). Applying a metadata change, and each timer's
pass, handle one partition at a time; an error in one is logged and never skips the others nor
stops the node. A replica whose log cannot be used (it failed to open, an I/O error, damage met
while replaying producer state, a fetcher that keeps failing on it) goes **offline on this
broker** (`take_offline`, the one mechanism for every cause): it is no longer served or fetched,
requests for it get KAFKA_STORAGE_ERROR, `offline_replicas()` lists it, and the broker's next
heartbeat reports it to the controller, which takes this broker's replica out of the ISR and
leadership of that partition, as Kafka's controller does for a failed log directory (KIP-858,
per partition here). It shows in the metric `strom_server_replicamanager_offlinereplicacount`,
in the node's log, and in `strom cluster describe`. A storage failure lasts until the broker
restarts (the log is closed; a restart opens it again); an offline replica whose cause goes
away (`bring_online`) is reported online again and rejoins the ISR by fetching.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strom.node.clock import SYSTEM_CLOCK, Clock
from strom.node.config import NodeConfig
from strom.node.dynamic_config import broker_configs_changed
from strom.node.metadata.image import TOPIC, MetadataDelta, MetadataImage, PartitionInfo
from strom.node.metadata.state import full_delta
from strom.node.peers import ControllerClient, ControllerUnavailable, Peers
from strom.node.tls import inter_broker_security
from strom.node.topic_config import InvalidTopicConfig, policies, resolve
from strom.storage import log_cleaner
from strom.storage.control_records import TxnMarker
from strom.storage.errors import InconsistentTopicIdError
from strom.storage.log_config import LogConfig
from strom.storage.log_manager import LogManager
from strom.storage.partition_log import PartitionLog
from strom.v1 import common_pb2, controller_pb2

from .fetcher import ReplicaFetcher
from .hw_checkpoint import read_hw_checkpoint, write_hw_checkpoint
from .leader_state import IsrChange
from .partition import Partition, PartitionError, is_storage_failure
from .read_replica import FollowerView, preferred_read_replica
from .throttle import ReplicationThrottle

log = logging.getLogger("strom.replica")

Key = tuple[bytes, int]
HW_CHECKPOINT_FILE = "replication-offset-checkpoint"
NEW_LOGS_INLINE_MAX = 16
NEW_LOGS_PER_BATCH_MAX = 64
NEW_LOGS_ADOPTED_PER_TURN_MAX = 8

# AlterPartition refusals the controller gives only after the partition epoch matched: proof
# that neither this request nor an earlier copy of it was applied.
ALTER_PARTITION_NOT_APPLIED = frozenset({common_pb2.INELIGIBLE_REPLICA, common_pb2.INVALID_REQUEST})
# Refusals that say the leader's view is stale: newer metadata will end the pending change.
ALTER_PARTITION_STALE = frozenset(
    {
        common_pb2.INVALID_UPDATE_VERSION,
        common_pb2.FENCED_LEADER_EPOCH,
        common_pb2.NOT_LEADER_OR_FOLLOWER,
        common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
    }
)


@dataclass(frozen=True, slots=True)
class OfflineReplica:
    """A replica this broker hosts but cannot serve, and why (see the module docstring)."""

    topic: str
    partition: int
    reason: str
    storage: bool  # its log failed: offline until a restart


class ReplicaManager:
    def __init__(
        self,
        config: NodeConfig,
        logs: LogManager,
        controller: ControllerClient,
        broker_epoch: Callable[[], int],
        peers: Peers,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.peers = peers
        self.clock = clock
        self.broker_id = config.node_id
        self.logs = logs
        self.controller = controller
        self.broker_epoch = broker_epoch
        self.image = MetadataImage()
        self.partitions: dict[Key, Partition] = {}
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self._fetch_sequences = itertools.count(1)  # every fetcher's fetch_sequence
        self._hw_path = os.path.join(logs.data_dir, HW_CHECKPOINT_FILE)
        self._checkpointed_hw = read_hw_checkpoint(self._hw_path)
        self._tasks: list[asyncio.Task[None]] = []
        self._alter_in_flight: set[Key] = set()
        self.offline: dict[Key, OfflineReplica] = {}
        self.caught_up = False
        # Shared by every fetcher: partition moves fetch at most this many bytes per second.
        self.move_throttle = ReplicationThrottle(
            config["follower.replication.throttled.rate"], clock.now_ms()
        )
        # Shared by every partition this broker leads: what it sends to replicas being added.
        self.leader_throttle = ReplicationThrottle(
            config["leader.replication.throttled.rate"], clock.now_ms()
        )
        self._pending_opens: dict[Key, None] = {}  # new logs not opened yet, in order
        self._creating: set[tuple[str, int]] = set()  # folders a worker thread is creating
        self._opener: asyncio.Task[None] | None = None
        # Called after deferred logs opened: who reads replicas (the group coordinator loading
        # __consumer_offsets) looks again at what it could not find before.
        self.on_replicas_opened: list[Callable[[], None]] = []
        # Called once a transaction marker this broker wrote as leader is replicated to the
        # ISR: the group coordinator makes a transaction's offset commits visible (or drops
        # them) when its marker reaches their __consumer_offsets partition.
        self.on_txn_marker: list[Callable[[str, int, TxnMarker], None]] = []

    # ---- lookups -----------------------------------------------------------------------

    def partition_by_name(self, topic: str, index: int) -> Partition:
        topic_meta = self.image.topic_by_name(topic)
        partition = None
        if topic_meta is not None:
            partition = self.partitions.get((topic_meta.topic_id, index))
        if partition is None:
            if topic_meta is None or index not in topic_meta.partitions:
                raise PartitionError(
                    common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
                    f"topic {topic!r} partition {index} does not exist",
                )
            self._refuse_if_offline((topic_meta.topic_id, index))
            info = topic_meta.partitions[index]
            raise PartitionError(
                common_pb2.NOT_LEADER_OR_FOLLOWER,
                f"broker {self.broker_id} does not host {topic}-{index} (leader: {info.leader})",
            )
        return partition

    def partition_by_id(self, topic_id: bytes, index: int) -> Partition:
        partition = self.partitions.get((topic_id, index))
        if partition is None:
            self._refuse_if_offline((topic_id, index))
            raise PartitionError(
                common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
                f"broker {self.broker_id} hosts no replica of topic id {topic_id.hex()} "
                f"partition {index}",
            )
        return partition

    def preferred_read_replica(
        self, partition: Partition, client_rack: str, fetch_offset: int
    ) -> int | None:
        """KIP-392 on the leader: the follower a consumer in `client_rack` should fetch
        `partition` from instead of this broker, or None (node/replica/read_replica.py)."""
        state = partition.leader_state
        selector: str = self.config["replica.selector.class"]
        if state is None or not client_rack or not selector:
            return None
        brokers = self.image.brokers
        me = brokers.get(self.broker_id)
        topic_meta = self.image.topic_by_name(partition.topic)
        offline_replicas: tuple[int, ...] = ()
        if topic_meta is not None and partition.partition in topic_meta.partitions:
            offline_replicas = topic_meta.partitions[partition.partition].offline_replicas
        followers = (
            FollowerView(
                broker_id,
                brokers[broker_id].rack,
                progress.log_end_offset,
                broker_id in state.isr and broker_id not in offline_replicas,
                brokers[broker_id].active,
            )
            for broker_id, progress in state.followers.items()
            if broker_id in brokers
        )
        return preferred_read_replica(
            selector, client_rack, me.rack if me else "", followers, fetch_offset
        )

    def _refuse_if_offline(self, key: Key) -> None:
        offline = self.offline.get(key)
        if offline is not None:
            raise PartitionError(
                common_pb2.KAFKA_STORAGE_ERROR,
                f"{offline.topic}-{offline.partition} is offline on broker {self.broker_id}: "
                f"{offline.reason}",
            )

    def topic_config(self, topic: str) -> dict[str, Any]:
        """The topic's effective configs, typed and checked by the one table
        (node/topic_config.py). Raises InvalidTopicConfig for a value this broker cannot apply;
        `_apply` then takes the topic's replicas offline, so a served replica's topic always
        resolves."""
        return resolve(self.config.topic_defaults(), self.image.topic_configs(topic))

    def min_insync_replicas(self, topic: str) -> int:
        value: int = self.topic_config(topic)["min.insync.replicas"]
        return value

    def log_config(self, topic: str) -> LogConfig:
        """The storage side of the topic's configs; checks every key of the topic, so a bad
        value of any key stops its replicas from opening or taking the config."""
        values = self.topic_config(topic)
        known = LogConfig.keys()
        return LogConfig.from_kafka({k: v for k, v in values.items() if k in known})

    # ---- metadata ----------------------------------------------------------------------

    def on_metadata(self, image: MetadataImage, delta: MetadataDelta) -> None:
        self.image = image
        if broker_configs_changed(delta):  # dynamic broker configs, already in self.config
            self.move_throttle.set_rate(
                self.config["follower.replication.throttled.rate"], self.clock.now_ms()
            )
            self.leader_throttle.set_rate(
                self.config["leader.replication.throttled.rate"], self.clock.now_ms()
            )
        if self.caught_up:
            self._apply(image, delta)

    def start_acting(self) -> None:
        """The broker has caught up with the metadata log (the controller unfenced it): from now
        on the image is current, so act on all of it. Before this, a restarted broker's image is
        the stale one it replayed from disk, and acting on it would make it lead partitions that
        moved away while it was down (a zombie leader)."""
        if self.caught_up:
            return
        self.caught_up = True
        self._apply(self.image, full_delta(MetadataImage(), self.image))
        self.delete_stray_logs()

    def _apply(self, image: MetadataImage, delta: MetadataDelta) -> None:
        """Act on one metadata change, one partition at a time: an error in one (a log that
        cannot be opened, a config it cannot take) takes that replica offline and the rest of
        the change still applies."""
        now = self.clock.now_ms()
        new_logs_inline = NEW_LOGS_INLINE_MAX
        for topic_id, topic in delta.removed_topics.items():
            for index in topic.partitions:
                self._isolated(topic.name, (topic_id, index), self._drop, topic.name, topic_id,
                               index, True)  # fmt: skip
        for topic_id, index in sorted(delta.changed_partitions):
            changed = image.topics.get(topic_id)
            if changed is None:
                continue
            info = changed.partitions[index]
            key = (topic_id, index)
            if self.broker_id in info.replicas:
                if (changed.name, index) in self._creating:
                    self._pending_opens[key] = None  # decided once its files exist
                    continue
                if self._needs_new_log(changed.name, key):
                    if new_logs_inline == 0 and self._defer_open(key):
                        continue
                    new_logs_inline = max(0, new_logs_inline - 1)
                self._isolated(changed.name, key, self._become_replica, changed.name, topic_id,
                               index, info, now)  # fmt: skip
            elif key in self.partitions or key in self.offline:
                self._isolated(changed.name, key, self._drop, changed.name, topic_id, index, True)
        reconfigured = {name for kind, name in delta.changed_configs if kind == TOPIC}
        if broker_configs_changed(delta):  # topic defaults may have changed: every topic
            reconfigured = {topic.name for topic in image.topics.values()}
        for name in sorted(reconfigured):
            configured = image.topic_by_name(name)
            if configured is None:
                continue
            try:
                config = self.log_config(name)
            except Exception as exc:  # a config this broker cannot apply: every replica of it
                for index in configured.partitions:
                    if (configured.topic_id, index) in self.partitions:
                        self.take_offline(name, (configured.topic_id, index), exc, storage=False)
                continue
            for index, info in sorted(configured.partitions.items()):
                key = (configured.topic_id, index)
                if self.bring_online(key) and self.broker_id in info.replicas:
                    self._isolated(name, key, self._become_replica, name, key[0], index, info, now)
                partition = self.partitions.get(key)
                if partition is not None:
                    partition.set_log_config(config)

    def _needs_new_log(self, topic: str, key: Key) -> bool:
        return (
            key not in self.partitions
            and key not in self.offline
            and self.logs.get_log(topic, key[1]) is None
        )

    def _defer_open(self, key: Key) -> bool:
        """Open this new replica's log later, in the background; False when there is no loop
        to do it on (then the caller opens it now)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._pending_opens[key] = None
        if self._opener is None or self._opener.done():
            self._opener = loop.create_task(self._open_pending(), name="open-new-replicas")
        return True

    async def _open_pending(self) -> None:
        log.info("creating %d new replica log(s) in the background", len(self._pending_opens))
        while self._pending_opens:
            batch = []
            for key in list(self._pending_opens)[:NEW_LOGS_PER_BATCH_MAX]:
                del self._pending_opens[key]
                wanted = self._still_wanted(key)
                if wanted is None:
                    continue
                topic, info = wanted
                if not self._needs_new_log(topic, key):
                    self._isolated(topic, key, self._become_replica, topic, key[0], key[1], info,
                                   self.clock.now_ms())  # fmt: skip
                    continue
                try:
                    config = self.log_config(topic)
                except Exception as exc:  # a config this broker cannot apply
                    self.take_offline(topic, key, exc, storage=False)
                    continue
                lead_epoch = info.leader_epoch if info.leader == self.broker_id else None
                batch.append((key, topic, config, lead_epoch))
            if batch:
                await self._create_in_thread(batch)
            for callback in self.on_replicas_opened:
                callback()
            await asyncio.sleep(0)

    def _still_wanted(self, key: Key) -> tuple[str, PartitionInfo] | None:
        """(topic name, partition info) if the current image still places a replica of `key`
        here and nothing has handled it meanwhile."""
        topic = self.image.topics.get(key[0])
        info = None if topic is None else topic.partitions.get(key[1])
        if topic is None or info is None or self.broker_id not in info.replicas:
            return None
        if key in self.partitions or key in self.offline:
            return None
        return topic.name, info

    async def _create_in_thread(self, batch: list[tuple[Key, str, LogConfig, int | None]]) -> None:
        """Create the logs of `batch` in a worker thread; a replica this broker leads gets its
        leader epoch recorded there too (an fsync), so becoming leader on the loop writes
        nothing unless the epoch moved on meanwhile."""
        names = {(topic, key[1]) for key, topic, _, _ in batch}
        self._creating |= names
        now = self.clock.now_ms()

        def create() -> list[tuple[Key, str, PartitionLog | BaseException]]:
            made: list[tuple[Key, str, PartitionLog | BaseException]] = []
            for key, topic, config, lead_epoch in batch:
                try:
                    log_ = self.logs.create_log_files(
                        topic, key[1], topic_id=key[0].hex(), now_ms=now, config=config
                    )
                    if lead_epoch is not None:
                        log_.leader_epoch_cache.assign(lead_epoch, log_.log_end_offset)
                    made.append((key, topic, log_))
                except Exception as exc:  # its own failure: that replica goes offline
                    made.append((key, topic, exc))
            return made  # fmt: skip

        work = asyncio.ensure_future(asyncio.to_thread(create))
        try:
            created = await asyncio.shield(work)
        except asyncio.CancelledError:
            self._creating -= names
            for _, _, made in await work:  # shutting down: close what the thread made
                if not isinstance(made, BaseException):
                    made.close(clean=False)
            raise
        try:
            # A few per turn: becoming a replica still costs some work on the loop.
            for done, (key, topic, made) in enumerate(created, 1):
                self._adopt_created(key, topic, made)
                self._creating.discard((topic, key[1]))
                if done % NEW_LOGS_ADOPTED_PER_TURN_MAX == 0:
                    await asyncio.sleep(0)
        finally:
            self._creating -= names

    def _adopt_created(self, key: Key, topic: str, made: PartitionLog | BaseException) -> None:
        if isinstance(made, BaseException):
            if self._still_wanted(key) is not None:
                self.take_offline(topic, key, made, storage=is_storage_failure(made))
            return
        if not self.logs.adopt(topic, key[1], made):
            made.close(clean=False)
        wanted = self._still_wanted(key)
        if wanted is None:
            if self.logs.get_log(topic, key[1]) is made:
                self.logs.delete_log(topic, key[1])  # its replica went away meanwhile
            return
        self._isolated(topic, key, self._become_replica, topic, key[0], key[1], wanted[1],
                       self.clock.now_ms())  # fmt: skip

    def _isolated(self, topic: str, key: Key, action: Callable[..., None], *args: object) -> None:
        """Run one partition's part of a metadata change; its failure is its own."""
        try:
            action(*args)
        except Exception as exc:
            self.take_offline(topic, key, exc, storage=is_storage_failure(exc))

    # ---- offline replicas --------------------------------------------------------------

    def take_offline(
        self, topic: str, key: Key, cause: BaseException | str, *, storage: bool
    ) -> None:
        """Stop serving and fetching one replica here, and say so (logs, metric, controller).
        `storage`: its log failed, so it is closed and stays offline until a restart. Callers:
        metadata application, the fetchers, the partition itself, topic-config checks."""
        reason = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        if key in self.offline:
            return
        log.error(
            "%s-%d: OFFLINE on this broker (%s): %s; the controller is told, and moves this "
            "replica out of the ISR and leadership%s",
            topic, key[1], "storage failure" if storage else "cannot apply", reason,
            "; it stays offline until the broker restarts" if storage else "",
            # A config refused by the table is explained by its message; anything else is a
            # surprise worth its traceback.
            exc_info=cause if isinstance(cause, BaseException) and not is_storage_failure(cause)
            and not isinstance(cause, InvalidTopicConfig) else None,
        )  # fmt: skip
        self._stop_fetching(key)
        partition = self.partitions.pop(key, None)
        if partition is not None:
            self._checkpointed_hw[(topic, key[1])] = partition.high_watermark
            partition.make_follower(
                PartitionInfo(
                    replicas=(), isr=(), leader=-1, leader_epoch=1 << 30, partition_epoch=0
                )
            )
        if storage:
            self.logs.mark_failed(topic, key[1], reason)
        self.offline[key] = OfflineReplica(topic, key[1], reason, storage)

    def bring_online(self, key: Key) -> bool:
        """Forget an offline replica whose cause went away (never a storage failure); the next
        metadata change that names it makes it a replica again."""
        offline = self.offline.get(key)
        if offline is None or offline.storage:
            return False
        del self.offline[key]
        log.info("%s-%d: back online on this broker", offline.topic, offline.partition)
        return True

    def _on_partition_failure(self, partition: Partition, exc: BaseException) -> None:
        key = (partition.topic_id, partition.partition)
        if self.partitions.get(key) is partition:
            self.take_offline(partition.topic, key, exc, storage=True)

    def offline_replicas(self) -> list[Key]:
        """Every replica this broker hosts and cannot serve, by topic id, for the controller:
        those taken offline, and logs that failed to open at start (named by the image)."""
        keys = set(self.offline)
        for topic, index in self.logs.failed:
            topic_meta = self.image.topic_by_name(topic)
            if topic_meta is not None and index in topic_meta.partitions:
                keys.add((topic_meta.topic_id, index))
        return sorted(keys)

    def delete_stray_logs(self) -> None:
        """Delete local logs the metadata assigns to no replica here: partitions of deleted
        topics (possibly re-created since) that this broker missed while it was down. Called
        once the broker has caught up with the metadata log (when it is first unfenced)."""
        hosted = {(p.topic, p.partition) for p in self.partitions.values()}
        for topic_id, index in self._pending_opens:
            topic_meta = self.image.topics.get(topic_id)
            if topic_meta is not None:
                hosted.add((topic_meta.name, index))
        for topic, index in list(self.logs.logs()):
            if (topic, index) not in hosted:
                log.info("%s-%d: deleting stray log (no replica assigned here)", topic, index)
                self.logs.delete_log(topic, index)

    def _become_replica(
        self, topic: str, topic_id: bytes, index: int, info: PartitionInfo, now: int
    ) -> None:
        key = (topic_id, index)
        if key in self.offline:
            return  # reported to the controller; it moves this replica out of the way
        partition = self.partitions.get(key)
        if partition is None:
            partition = self._open(topic, topic_id, index, now)
            partition.on_failure = self._on_partition_failure
            self.partitions[key] = partition
        if info.leader == self.broker_id:
            self._stop_fetching(key)
            partition.make_leader(info, now)
        else:
            if partition.make_follower(info) or not self._is_fetching(key, info.leader):
                self._stop_fetching(key)
                if info.leader >= 0:
                    self._fetcher_for(info.leader).add(partition)

    def _open(self, topic: str, topic_id: bytes, index: int, now: int) -> Partition:
        config = self.log_config(topic)
        try:
            log_ = self.logs.get_or_create_log(
                topic, index, topic_id=topic_id.hex(), now_ms=now, config=config
            )
        except InconsistentTopicIdError:
            # The folder belongs to a deleted topic of the same name: never serve it.
            log.info("%s-%d: deleting data of an older topic incarnation", topic, index)
            self.logs.delete_log(topic, index)
            log_ = self.logs.get_or_create_log(
                topic, index, topic_id=topic_id.hex(), now_ms=now, config=config
            )
        hw = self._checkpointed_hw.get((topic, index), 0)
        return Partition(topic, index, topic_id, log_, self.broker_id, hw)

    def _drop(self, topic: str, topic_id: bytes, index: int, delete: bool) -> None:
        key = (topic_id, index)
        self._pending_opens.pop(key, None)
        self.offline.pop(key, None)
        self._stop_fetching(key)
        partition = self.partitions.pop(key, None)
        if partition is not None:
            partition.make_follower(
                PartitionInfo(
                    replicas=(), isr=(), leader=-1, leader_epoch=1 << 30, partition_epoch=0
                )
            )
        if delete and (
            self.logs.get_log(topic, index) is not None or (topic, index) in self.logs.failed
        ):
            log.info("%s-%d: deleting replica", topic, index)
            self.logs.delete_log(topic, index)

    def _is_being_added(self, key: Key) -> bool:
        """Is this broker's replica of `key` one a reassignment is adding (throttled)?"""
        info = self.image.partition(*key)
        return info is not None and self.broker_id in info.adding_replicas

    def leader_throttles(self, partition: Partition, replica_id: int) -> bool:
        """Does this leader throttle what it sends `replica_id` of `partition`? Only a replica a
        reassignment is adding and not yet in the ISR (Kafka's leader-side throttle)."""
        info = self.image.partition(partition.topic_id, partition.partition)
        return (
            self.leader_throttle.limited
            and info is not None
            and replica_id in info.adding_replicas
            and replica_id not in partition.isr
        )

    def _is_fetching(self, key: Key, leader: int) -> bool:
        fetcher = self.fetchers.get(leader)
        return fetcher is not None and key in fetcher.partitions

    def _stop_fetching(self, key: Key) -> None:
        for fetcher in self.fetchers.values():
            fetcher.remove(key)

    def _fetcher_for(self, leader: int) -> ReplicaFetcher:
        broker = self.image.brokers.get(leader)
        endpoint = (
            None if broker is None else broker.endpoint(self.config.inter_broker_listener_name)
        )
        address = f"{endpoint.host}:{endpoint.port}" if endpoint else ""
        fetcher = self.fetchers.get(leader)
        moved: list[Partition] = []
        if fetcher is not None and (fetcher.address != address or not fetcher.alive):
            # A new address, or (never expected: its loop catches everything) a dead task:
            # a new fetcher takes over every partition of the old one.
            old = fetcher
            self.fetchers.pop(leader)
            moved = list(old.partitions.values())
            asyncio.get_running_loop().create_task(old.stop())
            fetcher = None
        if fetcher is None:
            fetcher = ReplicaFetcher(
                self.broker_id,
                self.broker_epoch,
                leader,
                address,
                max_wait_ms=self.config["replica.fetch.wait.max.ms"],
                partition_bytes_max=self.config["replica.fetch.max.bytes"],
                response_bytes_max=self.config["replica.fetch.response.max.bytes"],
                request_timeout_s=self.config["controller.quorum.request.timeout.ms"] / 1000,
                peers=self.peers,
                security=inter_broker_security(self.config),
                clock=self.clock,
                on_partition_failed=self._on_partition_failure,
                throttle=self.move_throttle,
                throttled=self._is_being_added,
                next_fetch_sequence=self._fetch_sequences.__next__,
            )
            self.fetchers[leader] = fetcher
            fetcher.start()
        for partition in moved:
            fetcher.add(partition)
        return fetcher

    # ---- ISR changes -------------------------------------------------------------------

    def submit_isr_change(self, partition: Partition, change: IsrChange) -> None:
        key = (partition.topic_id, partition.partition)
        if key in self._alter_in_flight:
            # An earlier request is still being answered; LeaderState already counts this one
            # as pending, so release it to be proposed again, or the ISR would freeze.
            partition.on_isr_change_failed()
            return
        self._alter_in_flight.add(key)
        log.info(
            "%s: asking the controller to change ISR %s -> %s",
            partition.name, list(partition.isr), list(change.new_isr),
        )  # fmt: skip
        asyncio.get_running_loop().create_task(self._alter_partition(partition, change))

    async def _alter_partition(self, partition: Partition, change: IsrChange) -> None:
        """Send one ISR change until the controller gives a definitive answer.

        Kafka's rules (Partition.handleAlterPartitionError): a timeout, a controller change or
        back-pressure is not an answer, since the change may have committed: it stays pending
        (the HW keeps counting the maximal ISR) and the same request is sent again; a resend of
        a change that did commit is answered with success by the controller. Only a refusal
        that proves nothing was applied (INELIGIBLE_REPLICA, INVALID_REQUEST) forgets it. A
        refusal as stale (INVALID_UPDATE_VERSION, FENCED_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER,
        UNKNOWN_TOPIC_OR_PARTITION) stops the resends but keeps the change pending: newer
        metadata is on its way and ends it. Stops when this leadership ends or the change was
        superseded.
        """
        key = (partition.topic_id, partition.partition)
        state = partition.leader_state
        epochs = change.broker_epochs or (-1,) * len(change.new_isr)
        request = controller_pb2.AlterPartitionRequest(
            broker_id=self.broker_id,
            partitions=[
                controller_pb2.AlterPartitionItem(
                    topic_id=partition.topic_id,
                    partition=partition.partition,
                    leader_epoch=change.leader_epoch,
                    new_isr=change.new_isr,
                    partition_epoch=change.partition_epoch,
                    new_isr_with_epochs=[
                        controller_pb2.IsrMember(broker_id=r, broker_epoch=e)
                        for r, e in zip(change.new_isr, epochs, strict=True)
                    ],
                )
            ],
        )
        delay_s = 0.1
        try:
            while partition.leader_state is state and state is not None and state.pending == change:
                request.broker_epoch = self.broker_epoch()
                try:
                    response = await self.controller.call(
                        lambda s: s.AlterPartition, request, deadline_s=5.0
                    )
                except ControllerUnavailable as exc:
                    log.info("%s: ISR change not delivered yet: %s", partition.name, exc)
                    await asyncio.sleep(delay_s)
                    delay_s = min(2.0, delay_s * 2)
                    continue
                code = response.status.error_code
                if code == common_pb2.NONE and response.partitions:
                    code = response.partitions[0].error_code
                if code == common_pb2.NONE:
                    return  # committed: the new ISR arrives through the metadata image
                if code in ALTER_PARTITION_NOT_APPLIED:
                    log.info("%s: ISR change refused: %s", partition.name, response)
                    partition.on_isr_change_failed()
                    return
                if code in ALTER_PARTITION_STALE:
                    log.info(
                        "%s: ISR change refused as stale (%s); waiting for newer metadata",
                        partition.name, common_pb2.ErrorCode.Name(code),
                    )  # fmt: skip
                    return
                # Not an answer (NOT_CONTROLLER, REQUEST_TIMED_OUT, STALE_BROKER_EPOCH while
                # this broker re-registers, ...): the change may yet commit; send it again.
                await asyncio.sleep(delay_s)
                delay_s = min(2.0, delay_s * 2)
        finally:
            self._alter_in_flight.discard(key)

    # ---- timers ------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._isr_checks(), name="isr-shrink"),
            asyncio.create_task(self._retention(), name="retention"),
            asyncio.create_task(self._compaction(), name="log-cleaner"),
            asyncio.create_task(self._hw_checkpoints(), name="hw-checkpoint"),
        ]

    async def stop(self) -> None:
        tasks = self._tasks + ([self._opener] if self._opener is not None else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(f.stop() for f in self.fetchers.values()), return_exceptions=True)
        self.write_hw_checkpoint()

    async def _isr_checks(self) -> None:
        lag_ms = self.config["replica.lag.time.max.ms"]
        while True:
            await asyncio.sleep(lag_ms / 2000)
            now = self.clock.now_ms()
            for partition in list(self.partitions.values()):
                change = partition.maybe_shrink_isr(now, lag_ms)
                if change is not None:
                    self.submit_isr_change(partition, change)

    def _each_partition(self, what: str, action: Callable[[Partition], None]) -> None:
        """One timer pass over the hosted partitions; one partition's error stays its own (a
        storage failure takes it offline, anything else is logged and retried next pass)."""
        for partition in list(self.partitions.values()):
            if self.partitions.get((partition.topic_id, partition.partition)) is not partition:
                continue  # dropped or taken offline earlier in this pass
            try:
                action(partition)
            except Exception as exc:
                if is_storage_failure(exc):
                    key = (partition.topic_id, partition.partition)
                    self.take_offline(partition.topic, key, exc, storage=True)
                else:
                    log.exception("%s: %s failed", partition.name, what)

    async def _retention(self) -> None:
        period_s = self.config["log.retention.check.interval.ms"] / 1000
        while True:
            await asyncio.sleep(period_s)
            self._each_partition("retention", self._apply_retention)

    def _apply_retention(self, partition: Partition) -> None:
        if "delete" not in policies(self.topic_config(partition.topic)["cleanup.policy"]):
            return  # compacted-only topics are bounded by the cleaner, not by age
        deleted = partition.delete_old_segments(now_ms=self.clock.now_ms())
        if deleted:
            log.info("%s: retention deleted %d segment(s)", partition.name, deleted)

    async def _compaction(self) -> None:
        """Every `log.cleaner.backoff.ms`, clean each hosted partition of a compacted topic below
        min(high watermark, active segment base). The scan and the writing of cleaned copies run
        in a worker thread; the swap runs here, on the loop that owns the log."""
        while True:
            # Read every round: a dynamic broker config (node/dynamic_config.py).
            await asyncio.sleep(self.config["log.cleaner.backoff.ms"] / 1000)
            for partition in list(self.partitions.values()):
                try:
                    await self._clean(partition)
                except Exception as exc:
                    if is_storage_failure(exc):
                        key = (partition.topic_id, partition.partition)
                        if self.partitions.get(key) is partition:
                            self.take_offline(partition.topic, key, exc, storage=True)
                    else:
                        log.exception("%s: log cleaning failed", partition.name)
                await asyncio.sleep(0)

    async def _clean(self, partition: Partition) -> None:
        config = self.topic_config(partition.topic)
        if "compact" not in policies(config["cleanup.policy"]):
            return
        plan = partition.plan_clean(
            self.clock.now_ms(), delete_retention_ms=config["delete.retention.ms"]
        )
        if not plan.sources:
            return
        cleaned = await asyncio.to_thread(log_cleaner.write_cleaned, plan)
        key = (partition.topic_id, partition.partition)
        if self.partitions.get(key) is not partition:
            log_cleaner.discard(cleaned)  # dropped while we were cleaning
            return
        stats = partition.swap_in_cleaned(cleaned)
        if stats.segments_cleaned:
            log.info(
                "%s: cleaned %d segment(s), %d -> %d bytes, %d record(s) removed",
                partition.name, stats.segments_cleaned, stats.bytes_before,
                stats.bytes_after, stats.records_removed,
            )  # fmt: skip

    async def _hw_checkpoints(self) -> None:
        while True:
            await asyncio.sleep(5)
            # Snapshot on the loop (the only writer), write in a worker thread.
            await asyncio.to_thread(write_hw_checkpoint, self._hw_path, self._hw_snapshot())

    def _hw_snapshot(self) -> dict[tuple[str, int], int]:
        return {(p.topic, p.partition): p.high_watermark for p in self.partitions.values()}

    def write_hw_checkpoint(self) -> None:
        write_hw_checkpoint(self._hw_path, self._hw_snapshot())

    def active_brokers(self) -> set[int]:
        return set(self.image.active_broker_ids())
