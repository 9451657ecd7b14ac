"""The transaction coordinator on a broker: the seams of node/txn/coordinator.py over the
replica manager and the other brokers, the loading of `__transaction_state` partitions as this
broker comes to lead them, and the timers.

- Ownership follows the group coordinator's rule (node/group/coordinator.py): this broker
  coordinates the transactional ids of the `__transaction_state` partitions it leads, while it
  holds its lease with the controller. Becoming leader loads the partition (every record, in
  order) and finishes the PREPARE_* transactions the previous coordinator decided; losing it
  (or the lease) forgets them, so requests get NOT_COORDINATOR and clients find the new one.
- `persist` appends to the leader's replica and waits for the ISR (acks=all), so a decision
  survives the loss of this broker.
- Markers (WriteTxnMarkers) and registrations (RegisterTxnPartitions) go to each partition's
  leader over the inter-broker listener, this broker included, with the coordinator epoch =
  the leader epoch of the state partition: a deposed coordinator's late markers are refused
  (TRANSACTION_COORDINATOR_FENCED). A partition whose topic was deleted needs no marker.
- Every `transaction.abort.timed.out.transaction.cleanup.interval.ms` the timer aborts the
  transactions past their timeout (fencing their producers) and retries the markers of any
  transaction left PREPARE_* without a completion task (the coordinator's own tasks retry
  markers an unreachable leader refused, with backoff).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from strom.node.clock import SYSTEM_CLOCK, Clock
from strom.node.config import NodeConfig
from strom.node.group.offsets_log import last_offset_of
from strom.node.internal_topics import TRANSACTION_STATE_TOPIC
from strom.node.metadata.image import MetadataDelta, MetadataImage
from strom.node.peers import Peers
from strom.node.replica.manager import ReplicaManager
from strom.node.replica.partition import PartitionError
from strom.node.tls import inter_broker_security
from strom.v1 import common_pb2, replica_pb2, replica_pb2_grpc

from .coordinator import TxnCoordinator
from .state import TxnError, TxnMetadata

log = logging.getLogger("strom.txn")

LOAD_CHUNK_BYTES = 1 << 20
# A leader that lost its leadership answers these: the coordinator moved.
_MOVED = frozenset(
    {common_pb2.NOT_LEADER_OR_FOLLOWER, common_pb2.FENCED_LEADER_EPOCH, common_pb2.NOT_COORDINATOR}
)


# How long one wait for a new leader's HW to cover its log end lasts before looking again.
LOAD_HW_WAIT_S = 1.0


def _always() -> bool:
    return True


def answered(image: MetadataImage, result: replica_pb2.TxnPartitionResult) -> bool:
    """A leader's answer for one partition ends that partition's step: NONE, or
    UNKNOWN_TOPIC_OR_PARTITION for a partition the metadata no longer has (its topic was
    deleted: nothing there to end). A broker that does not host the partition *yet* (restarted
    and still opening its logs, while the metadata still names it leader) answers the same
    code: that is retried, or the transaction would complete without this partition's marker
    and stay open there for ever (found by the node simulation, transactional seed 50)."""
    if result.error_code == common_pb2.NONE:
        return True
    return (
        result.error_code == common_pb2.UNKNOWN_TOPIC_OR_PARTITION
        and image.partition(result.topic_id, result.partition) is None
    )


class TxnCoordinatorHost:
    def __init__(
        self,
        config: NodeConfig,
        manager: ReplicaManager,
        peers: Peers,
        clock: Clock = SYSTEM_CLOCK,
        has_lease: Callable[[], bool] = _always,
    ) -> None:
        self.config = config
        self.manager = manager
        self.peers = peers
        self.clock = clock
        self.has_lease = has_lease
        self.timeout_s = config["request.timeout.ms"] / 1000
        self.coordinator = TxnCoordinator(
            config["transaction.state.log.num.partitions"],
            self._persist,
            self._send_markers,
            self._register,
            clock.now_ms,
        )
        self.loading: dict[int, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        manager.on_replicas_opened.append(
            lambda: self.on_metadata(self.manager.image, MetadataDelta())
        )

    # ---- leadership of __transaction_state ---------------------------------------------

    def _led(self, image: MetadataImage) -> set[int]:
        topic = image.topic_by_name(TRANSACTION_STATE_TOPIC)
        if topic is None:
            return set()
        me = self.manager.broker_id
        return {p for p, info in topic.partitions.items() if info.leader == me}

    def _owned(self) -> set[int]:
        count = self.coordinator.num_partitions
        return {p for p in range(count) if self.coordinator.owns(p)}

    def on_metadata(self, image: MetadataImage, delta: MetadataDelta) -> None:
        if not self.manager.caught_up:
            return  # a stale image: see ReplicaManager.start_acting
        led = self._led(image) if self.has_lease() else set()
        held = self._owned() | set(self.loading)
        for partition in sorted(led - held):
            self.loading[partition] = asyncio.get_running_loop().create_task(
                self._load(partition), name=f"load-txn-state-{partition}"
            )
        for partition in sorted(held - led):
            self._unload(partition)

    async def _load(self, partition: int) -> None:
        try:
            replica = self.manager.partition_by_name(TRANSACTION_STATE_TOPIC, partition)
            # Only what is committed is the coordinator's state. A new leader's log may end in
            # records its predecessor wrote but never committed (a PREPARE_COMMIT, say) that the
            # next leader may lack: finishing one (its markers) would commit part of a
            # transaction a later coordinator aborts. So the HW must cover the log end first;
            # producers are told COORDINATOR_LOAD_IN_PROGRESS meanwhile. (Found by the node
            # simulation: seed 66 of the transactional runs.)
            end = replica.log.log_end_offset
            while replica.high_watermark < end:
                await replica.hw_waiters.wait_for(end, LOAD_HW_WAIT_S)
            offset = replica.log.log_start_offset
            chunks = []
            while offset < replica.log.log_end_offset:
                data = replica.log.read(offset, LOAD_CHUNK_BYTES)
                if not data:
                    break
                offset = max(offset, last_offset_of(data) + 1)
                chunks.append(data)
                await asyncio.sleep(0)
            # Registered as owned before the PREPARE_* transactions are finished: their
            # markers may take a while, and the producers' requests are answered meanwhile.
            self.loading.pop(partition, None)
            await self.coordinator.load(partition, b"".join(chunks))
            log.info(
                "coordinating the transactional ids of %s-%d", TRANSACTION_STATE_TOPIC, partition
            )
        except PartitionError as exc:
            log.info("cannot load %s-%d: %s", TRANSACTION_STATE_TOPIC, partition, exc.message)
        finally:
            self.loading.pop(partition, None)

    def _unload(self, partition: int) -> None:
        task = self.loading.pop(partition, None)
        if task is not None:
            task.cancel()
        if self.coordinator.owns(partition):
            self.coordinator.unload(partition)
            log.info(
                "no longer coordinating transactions of %s-%d", TRANSACTION_STATE_TOPIC, partition
            )

    def check_coordinator(self, transactional_id: str) -> None:
        """COORDINATOR_LOAD_IN_PROGRESS while the id's partition loads; COORDINATOR_NOT_AVAILABLE
        without the lease (another broker may coordinate it by now)."""
        if not self.has_lease():
            raise TxnError(
                common_pb2.COORDINATOR_NOT_AVAILABLE,
                f"broker {self.manager.broker_id} has lost contact with the controller; find "
                "the coordinator again",
            )
        partition = self.coordinator.partition_of(transactional_id)
        if partition in self.loading:
            raise TxnError(
                common_pb2.COORDINATOR_LOAD_IN_PROGRESS,
                f"loading {TRANSACTION_STATE_TOPIC}-{partition}; retry shortly",
            )

    # ---- timers ------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._timer(), name="txn-timeouts"))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self.loading.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.coordinator.stop()

    async def _timer(self) -> None:
        interval_s = self.config["transaction.abort.timed.out.transaction.cleanup.interval.ms"]
        while True:
            await asyncio.sleep(interval_s / 1000)
            if not self.has_lease():
                for partition in sorted(self._owned() | set(self.loading)):
                    self._unload(partition)
                continue
            self.on_metadata(self.manager.image, MetadataDelta())  # lease back: reload
            try:
                await self.tick()
            except TxnError as exc:  # e.g. the state partition lost its leader meanwhile
                log.info("transaction timer: %s", exc)

    async def tick(self) -> None:
        """Abort the expired transactions, then retry the markers not yet written."""
        aborted = await self.coordinator.abort_expired()
        if aborted:
            log.info("aborted %d transaction(s) past their timeout: %s", len(aborted), aborted)
        await self.coordinator.complete_pending()

    # ---- the seams ---------------------------------------------------------------------

    async def _persist(self, partition: int, records: bytes) -> None:
        try:
            replica = self.manager.partition_by_name(TRANSACTION_STATE_TOPIC, partition)
            min_isr = self.manager.min_insync_replicas(TRANSACTION_STATE_TOPIC)
            info = replica.append_as_leader(records, -1, min_isr, self.clock.now_ms())
            await replica.wait_for_isr(info.last_offset, min_isr, self.timeout_s)
        except PartitionError as exc:
            code = common_pb2.NOT_COORDINATOR if exc.code in _MOVED else exc.code
            raise TxnError(code, exc.message) from exc

    def _coordinator_epoch(self, transactional_id: str) -> int:
        topic = self.manager.image.topic_by_name(TRANSACTION_STATE_TOPIC)
        partition = self.coordinator.partition_of(transactional_id)
        info = topic.partitions.get(partition) if topic is not None else None
        if info is None or info.leader != self.manager.broker_id:
            raise TxnError(
                common_pb2.NOT_COORDINATOR,
                f"broker {self.manager.broker_id} no longer leads "
                f"{TRANSACTION_STATE_TOPIC}-{partition}",
            )
        return info.leader_epoch

    def _by_leader(
        self, partitions: frozenset[tuple[str, int]]
    ) -> dict[str, list[replica_pb2.TxnPartition]]:
        """The partitions' inter-broker addresses of their leaders; a partition of a deleted
        topic is left out (nothing there to end). LEADER_NOT_AVAILABLE when one has none."""
        image = self.manager.image
        listener = self.config.inter_broker_listener_name
        grouped: dict[str, list[replica_pb2.TxnPartition]] = {}
        for topic_name, index in sorted(partitions):
            topic = image.topic_by_name(topic_name)
            if topic is None or index not in topic.partitions:
                continue
            broker = image.brokers.get(topic.partitions[index].leader)
            endpoint = broker.endpoint(listener) if broker is not None else None
            if endpoint is None:
                raise TxnError(
                    common_pb2.LEADER_NOT_AVAILABLE, f"{topic_name}-{index} has no leader now"
                )
            grouped.setdefault(f"{endpoint.host}:{endpoint.port}", []).append(
                replica_pb2.TxnPartition(topic_id=topic.topic_id, partition=index)
            )
        return grouped

    async def _each_leader(self, partitions: frozenset[tuple[str, int]], call: Callable) -> None:  # type: ignore[type-arg]
        """`call(stub, partitions)` on every leader at once; the first refusal is raised (the
        whole step is retried: both RPCs are idempotent)."""
        security = inter_broker_security(self.config)
        grouped = self._by_leader(partitions)

        async def one(address: str, wanted: list[replica_pb2.TxnPartition]) -> None:
            stub = self.peers.stub(replica_pb2_grpc.ReplicaStub, address, security)
            try:
                response = await call(stub, wanted)
            except grpc.aio.AioRpcError as exc:
                raise TxnError(common_pb2.NETWORK_EXCEPTION, f"{address}: {exc.details()}") from exc
            for result in response.partitions:
                if not answered(self.manager.image, result):
                    raise TxnError(result.error_code, f"{address}: {result.error_message}")

        await asyncio.gather(*(one(a, ps) for a, ps in grouped.items()))

    async def _send_markers(self, metadata: TxnMetadata, commit: bool) -> None:
        epoch = self._coordinator_epoch(metadata.transactional_id)

        async def write(
            stub: replica_pb2_grpc.ReplicaStub, wanted: list[replica_pb2.TxnPartition]
        ) -> replica_pb2.TxnPartitionsResponse:
            request = replica_pb2.WriteTxnMarkersRequest(
                producer_id=metadata.producer_id, producer_epoch=metadata.producer_epoch,
                coordinator_epoch=epoch, commit=commit, partitions=wanted,
            )  # fmt: skip
            response: replica_pb2.TxnPartitionsResponse = await stub.WriteTxnMarkers(
                request, timeout=self.timeout_s + 5
            )
            return response

        await self._each_leader(metadata.partitions, write)

    async def _register(
        self, metadata: TxnMetadata, partitions: frozenset[tuple[str, int]]
    ) -> None:
        epoch = self._coordinator_epoch(metadata.transactional_id)

        async def register(
            stub: replica_pb2_grpc.ReplicaStub, wanted: list[replica_pb2.TxnPartition]
        ) -> replica_pb2.TxnPartitionsResponse:
            request = replica_pb2.TxnPartitionsRequest(
                producer_id=metadata.producer_id, producer_epoch=metadata.producer_epoch,
                coordinator_epoch=epoch, partitions=wanted,
            )  # fmt: skip
            response: replica_pb2.TxnPartitionsResponse = await stub.RegisterTxnPartitions(
                request, timeout=self.timeout_s
            )
            return response

        await self._each_leader(partitions, register)
