"""The client-facing data plane over gRPC: the Broker service (produce, fetch, list offsets,
metadata, producer ids). Replication between brokers is node/replica/service.py.

Handlers validate the request (a malformed request is a gRPC INVALID_ARGUMENT with a message),
then work per partition through the replica manager; every per-partition outcome is an
ErrorCode in that partition's result, as Kafka answers. Records stay bytes end to end: produce
hands the batch bytes to the log, fetch returns slices of segment files (DESIGN.md §11).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from strom.node import metrics
from strom.node.broker.producer_ids import ProducerIdAllocator
from strom.node.broker.streams import InvalidRequest, answer_unary, serve_stream
from strom.node.clock import SYSTEM_CLOCK, Clock
from strom.node.delayed import FETCH_WAIT_MS_MAX, wait_any
from strom.node.errors import answer_refusal
from strom.node.internal_topics import is_internal
from strom.node.loop_turns import TurnBudget
from strom.node.peers import ControllerClient, ControllerUnavailable
from strom.node.replica.manager import ReplicaManager
from strom.node.replica.partition import PartitionError, refusal
from strom.storage.errors import StorageError
from strom.storage.txn_index import AbortedTxn
from strom.v1 import (
    admin_pb2,
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
)

log = logging.getLogger("strom.broker")

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2


async def _invalid(context: grpc.aio.ServicerContext, message: str) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


class BrokerServicer(broker_pb2_grpc.BrokerServicer):
    def __init__(
        self,
        manager: ReplicaManager,
        controller: ControllerClient,
        cluster_id: str,
        listener: str,
        producer_ids: ProducerIdAllocator,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.clock = clock
        self.manager = manager
        self.controller = controller
        self.cluster_id = cluster_id
        self.listener = listener
        self.config = manager.config
        self.producer_ids = producer_ids

    def _leader_hint(self, topic: str, index: int) -> common_pb2.LeaderIdAndEpoch:
        info = None
        topic_meta = self.manager.image.topic_by_name(topic)
        if topic_meta is not None:
            info = topic_meta.partitions.get(index)
        if info is None:
            return common_pb2.LeaderIdAndEpoch(leader_id=-1, leader_epoch=-1)
        return common_pb2.LeaderIdAndEpoch(leader_id=info.leader, leader_epoch=info.leader_epoch)

    # ---- produce -----------------------------------------------------------------------

    async def Produce(
        self, request: broker_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ProduceResponse:
        return await answer_unary(context, self.answer_produce(request))

    async def ProduceStream(
        self,
        requests: AsyncIterator[broker_pb2.ProduceStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[broker_pb2.ProduceStreamResponse]:
        async for answer in serve_stream(
            requests, context, self.answer_produce, broker_pb2.ProduceStreamResponse
        ):
            yield answer

    async def answer_produce(
        self, request: broker_pb2.ProduceRequest
    ) -> broker_pb2.ProduceResponse:
        """Produce's answer, for the unary call and the stream alike; raises InvalidRequest."""
        if request.acks not in (0, 1, -1):
            raise InvalidRequest(f"acks must be 0, 1 or -1 (all), got {request.acks}")
        if request.timeout_ms < 0:
            raise InvalidRequest(f"timeout_ms must be >= 0, got {request.timeout_ms}")
        response = broker_pb2.ProduceResponse()
        # What each partition's answer waits for, started only once every partition is
        # appended: a coroutine made earlier would never be awaited if this handler is
        # cancelled between slices (the deadline passed, the client went away).
        waits: list[tuple[Callable[[], Awaitable[None]], broker_pb2.PartitionProduceResponse]] = []
        turns = TurnBudget()
        for topic in request.topics:
            topic_response = response.topics.add(name=topic.name)
            for data in topic.partitions:
                # Other tasks (heartbeats, Raft, other clients) run between slices of this
                # request, so a request of many partitions never freezes the node.
                await turns.spend(len(data.records))
                result = topic_response.partitions.add(partition=data.partition, base_offset=-1)
                result.log_append_time_ms = -1
                try:
                    if is_internal(topic.name):  # written only by the cluster (issue #15)
                        raise PartitionError(
                            common_pb2.INVALID_TOPIC_EXCEPTION,
                            f"cannot produce to internal topic {topic.name!r}",
                        )
                    partition = self.manager.partition_by_name(topic.name, data.partition)
                    min_isr = self.manager.min_insync_replicas(topic.name)
                    now = self.clock.now_ms()
                    info = partition.append_as_leader(data.records, request.acks, min_isr, now)
                    metrics.record_produce(topic.name, info.record_count, len(data.records))
                    result.base_offset = info.first_offset
                    result.log_start_offset = partition.log_start_offset
                    timeout_s = request.timeout_ms / 1000
                    if request.acks == -1:
                        waits.append((
                            functools.partial(
                                partition.wait_for_isr, info.last_offset, min_isr, timeout_s
                            ),
                            result,
                        ))  # fmt: skip
                    elif request.acks == 1 and partition.flushes_before_ack:
                        waits.append((
                            functools.partial(
                                partition.wait_durable, info.last_offset, timeout_s
                            ),
                            result,
                        ))  # fmt: skip
                except (PartitionError, StorageError) as exc:
                    answer_refusal(result, refusal(exc))
                    result.current_leader.CopyFrom(self._leader_hint(topic.name, data.partition))
        if waits:
            await asyncio.gather(*(self._answer_when(wait, result) for wait, result in waits))
        return response

    @staticmethod
    async def _answer_when(
        wait: Callable[[], Awaitable[None]], result: broker_pb2.PartitionProduceResponse
    ) -> None:
        """Await an acknowledgement condition (the ISR, or the leader's fsync); a refusal is
        that partition's answer. The condition's coroutine is made here, so a task cancelled
        before it first runs leaves none behind unawaited."""
        try:
            await wait()
        except PartitionError as exc:
            answer_refusal(result, exc)

    # ---- fetch -------------------------------------------------------------------------

    async def Fetch(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.FetchResponse:
        return await answer_unary(context, self.answer_fetch(request))

    async def FetchStream(
        self,
        requests: AsyncIterator[broker_pb2.FetchStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[broker_pb2.FetchStreamResponse]:
        async for answer in serve_stream(
            requests, context, self.answer_fetch, broker_pb2.FetchStreamResponse
        ):
            yield answer

    async def answer_fetch(self, request: broker_pb2.FetchRequest) -> broker_pb2.FetchResponse:
        """Fetch's answer, for the unary call and the stream alike; raises InvalidRequest."""
        if request.max_wait_ms < 0 or request.min_bytes < 0 or request.max_bytes < 0:
            raise InvalidRequest("max_wait_ms, min_bytes and max_bytes must be >= 0")
        max_bytes = min(
            request.max_bytes or self.config["fetch.max.bytes"], self.config["fetch.max.bytes"]
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(request.max_wait_ms, FETCH_WAIT_MS_MAX) / 1000
        while True:
            response, total, answer_now, watched = await self._read_all(request, max_bytes)
            remaining = deadline - loop.time()
            # Nothing to watch (no partitions asked for): waiting could never end early, and
            # wait_any would return at once, so looping here would spin the event loop until
            # the deadline (up to a minute): answer now.
            if total >= max(1, request.min_bytes) or answer_now or remaining <= 0 or not watched:
                for topic in response.topics:
                    metrics.record_fetch(topic.name, sum(len(p.records) for p in topic.partitions))
                return response
            # The read yields to the loop between slices: a partition read early may have
            # changed since; read again at once rather than wait for a change already past.
            if any(notifier.version != version for notifier, version in watched):
                continue
            await wait_any((notifier for notifier, _ in watched), remaining)

    async def _read_all(
        self, request: broker_pb2.FetchRequest, max_bytes: int
    ) -> tuple[broker_pb2.FetchResponse, int, bool, list]:  # type: ignore[type-arg]
        response = broker_pb2.FetchResponse()
        total = 0
        answer_now = False  # an error or a redirect is answered without waiting
        watched = []
        turns = TurnBudget()
        for topic in request.topics:
            topic_response = response.topics.add(name=topic.name)
            for wanted in topic.partitions:
                await turns.spend()
                result = topic_response.partitions.add(partition=wanted.partition)
                try:
                    # Any replica serves consumers (KIP-392): a follower below the high
                    # watermark it knows; only a leader sends consumers elsewhere.
                    partition = self.manager.partition_by_name(topic.name, wanted.partition)
                    partition.check_leader_epoch(wanted.current_leader_epoch)
                    elsewhere = self.manager.preferred_read_replica(
                        partition, request.rack_id, wanted.fetch_offset
                    )
                    if elsewhere is not None:
                        partition.check_readable(wanted.fetch_offset)
                        result.preferred_read_replica = elsewhere
                        result.high_watermark = partition.high_watermark
                        result.log_start_offset = partition.log_start_offset
                        result.last_stable_offset = partition.last_stable_offset
                        answer_now = True  # the consumer has somewhere better to wait
                        continue
                    budget = max_bytes - total
                    limit = min(wanted.partition_max_bytes or budget, budget)
                    # At least one batch when nothing has been taken yet (Kafka's rule).
                    aborted: list[AbortedTxn] = []
                    if request.isolation_level == broker_pb2.READ_COMMITTED:
                        records, aborted = partition.read_stable(wanted.fetch_offset, max(limit, 1))
                    else:
                        records = partition.read_committed(wanted.fetch_offset, max(limit, 1))
                    if total and len(records) > budget:
                        records, aborted = b"", []
                    result.records = records
                    for txn in aborted:
                        result.aborted_transactions.add(
                            producer_id=txn.producer_id, first_offset=txn.first_offset
                        )
                    result.last_stable_offset = partition.last_stable_offset
                    total += len(records)
                    result.high_watermark = partition.high_watermark
                    result.log_start_offset = partition.log_start_offset
                    watched.append((partition.changed, partition.changed.version))
                except (PartitionError, StorageError) as exc:
                    answer_refusal(result, refusal(exc))
                    result.current_leader.CopyFrom(self._leader_hint(topic.name, wanted.partition))
                    answer_now = True
        return response, total, answer_now, watched

    # ---- offsets -----------------------------------------------------------------------

    async def ListOffsets(
        self, request: broker_pb2.ListOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ListOffsetsResponse:
        response = broker_pb2.ListOffsetsResponse()
        turns = TurnBudget()
        for topic in request.topics:
            topic_response = response.topics.add(name=topic.name)
            for wanted in topic.partitions:
                await turns.spend()
                result = topic_response.partitions.add(partition=wanted.partition, offset=-1)
                result.timestamp = -1
                try:
                    partition = self.manager.partition_by_name(topic.name, wanted.partition)
                    partition.check_leader(wanted.current_leader_epoch)
                    result.leader_epoch = partition.leader_epoch
                    if wanted.timestamp == EARLIEST_TIMESTAMP:
                        result.offset = partition.log_start_offset
                    elif wanted.timestamp == LATEST_TIMESTAMP:
                        result.offset = (
                            partition.last_stable_offset
                            if request.isolation_level == broker_pb2.READ_COMMITTED
                            else partition.high_watermark
                        )
                    elif wanted.timestamp >= 0:
                        found = partition.offset_for_timestamp(wanted.timestamp)
                        if found is not None and found[1] < partition.high_watermark:
                            result.timestamp, result.offset = found
                    else:
                        raise PartitionError(
                            common_pb2.INVALID_REQUEST,
                            f"timestamp {wanted.timestamp}: use -1 (latest), -2 (earliest) "
                            "or a time in ms",
                        )
                except (PartitionError, StorageError) as exc:
                    answer_refusal(result, refusal(exc))
        return response

    # ---- metadata ----------------------------------------------------------------------

    async def Metadata(
        self, request: broker_pb2.MetadataRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.MetadataResponse:
        image = self.manager.image
        # Internal topics are never auto-created: the group coordinator creates its own.
        missing = [
            n for n in request.topics if image.topic_by_name(n) is None and not is_internal(n)
        ]
        if (
            missing
            and request.allow_auto_topic_creation
            and self.config["auto.create.topics.enable"]
        ):
            await self._auto_create(missing)
            image = self.manager.image
        response = broker_pb2.MetadataResponse(
            cluster_id=self.cluster_id, controller_id=self.controller.controller_id
        )
        for broker in sorted(image.brokers.values(), key=lambda b: b.broker_id):
            endpoint = broker.endpoint(self.listener)
            if broker.fenced or endpoint is None:
                continue
            response.brokers.add(
                node_id=broker.broker_id, host=endpoint.host, port=endpoint.port, rack=broker.rack
            )
        names = (
            list(request.topics)
            if request.topics or not request.all_topics
            else sorted(image.topic_ids)
        )
        turns = TurnBudget()
        for name in names:
            await turns.spend()
            topic = image.topic_by_name(name)
            out = response.topics.add(name=name)
            if topic is None:
                out.error_code = common_pb2.UNKNOWN_TOPIC_OR_PARTITION
                out.error_message = f"topic {name!r} does not exist"
                continue
            out.topic_id = topic.topic_id
            out.is_internal = is_internal(name)
            for index, info in sorted(topic.partitions.items()):
                # Kafka's meaning: on a dead broker, or offline there (its log failed).
                offline = [
                    r for r in info.replicas if not self._alive(r) or r in info.offline_replicas
                ]
                out.partitions.add(
                    partition=index,
                    leader_id=info.leader,
                    leader_epoch=info.leader_epoch,
                    replicas=info.replicas,
                    isr=info.isr,
                    offline_replicas=offline,
                    error_code=common_pb2.LEADER_NOT_AVAILABLE
                    if info.leader < 0
                    else common_pb2.NONE,
                )
        return response

    async def InitProducerId(
        self, request: broker_pb2.InitProducerIdRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.InitProducerIdResponse:
        try:
            producer_id = await self.producer_ids.next_id()
        except ControllerUnavailable as exc:
            return broker_pb2.InitProducerIdResponse(
                error_code=common_pb2.COORDINATOR_NOT_AVAILABLE,
                error_message=f"cannot allocate producer ids now: {exc}",
            )
        return broker_pb2.InitProducerIdResponse(producer_id=producer_id, producer_epoch=0)

    def _alive(self, broker_id: int) -> bool:
        broker = self.manager.image.brokers.get(broker_id)
        return broker is not None and not broker.fenced

    async def _auto_create(self, names: list[str]) -> None:
        request = admin_pb2.CreateTopicsRequest(
            topics=[
                admin_pb2.CreatableTopic(name=n, num_partitions=-1, replication_factor=-1)
                for n in names
            ]
        )
        try:
            response = await self.controller.call(lambda s: s.CreateTopics, request, deadline_s=5.0)
        except ControllerUnavailable as exc:
            log.info("auto-creating %s failed: %s", names, exc)
            return
        # Wait (briefly) until the new topics reach this broker's image.
        created = [t.name for t in response.topics if t.error_code == common_pb2.NONE]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while created and loop.time() < deadline:
            if all(self.manager.image.topic_by_name(n) is not None for n in created):
                return
            await asyncio.sleep(0.02)
