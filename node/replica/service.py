"""Broker-to-broker replication over gRPC (the Replica service): followers fetch from the
leader (KIP-320 epoch checks, divergence answered at once so the follower truncates), the
transaction coordinator registers partitions and writes markers, and a follower asks where an
epoch ends. Only the inter-broker listener serves it (node/listeners.py).

Like the client handlers (node/broker/service.py), each partition's outcome is an ErrorCode in
its own result; a malformed request is a gRPC INVALID_ARGUMENT, and a replica whose broker epoch
is not the registered one is refused as a whole (FAILED_PRECONDITION).
"""

from __future__ import annotations

import asyncio

import grpc

from strom.node.delayed import FETCH_WAIT_MS_MAX, wait_any
from strom.node.errors import answer_refusal, as_error_code
from strom.node.loop_turns import TurnBudget
from strom.node.replica.manager import ReplicaManager
from strom.node.replica.partition import PartitionError, refusal
from strom.storage.control_records import TxnMarker
from strom.storage.errors import StorageError
from strom.v1 import replica_pb2, replica_pb2_grpc


class ReplicaServicer(replica_pb2_grpc.ReplicaServicer):
    """What a leader answers other brokers: their followers' fetches, and the transaction
    coordinator's partition registrations and markers."""

    def __init__(self, manager: ReplicaManager) -> None:
        self.manager = manager
        # replica id -> (broker epoch, fetch_sequence) of the newest fetch it sent here: one
        # entry per broker. A fetch behind it was abandoned by its follower (fetcher.py).
        self._newest_fetch: dict[int, tuple[int, int]] = {}

    def _overtaken(self, request: replica_pb2.ReplicaFetchRequest) -> bool:
        newest = self._newest_fetch.get(request.replica_id)
        ours = (request.broker_epoch, request.fetch_sequence)
        return request.fetch_sequence != 0 and newest is not None and newest > ours

    async def Fetch(
        self, request: replica_pb2.ReplicaFetchRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.ReplicaFetchResponse:
        if request.max_wait_ms < 0 or request.max_bytes < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "max_wait_ms and max_bytes must be >= 0"
            )
        replica = self.manager.image.brokers.get(request.replica_id)
        if replica is None or replica.broker_epoch != request.broker_epoch:
            current = None if replica is None else replica.broker_epoch
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"STALE_BROKER_EPOCH: broker {request.replica_id} epoch {request.broker_epoch} "
                f"is not the registered one ({current})",
            )
        if request.fetch_sequence:
            if self._overtaken(request):
                return replica_pb2.ReplicaFetchResponse()  # abandoned: its positions are old
            self._newest_fetch[request.replica_id] = (request.broker_epoch, request.fetch_sequence)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(request.max_wait_ms, FETCH_WAIT_MS_MAX) / 1000
        while True:
            fetched = await self._fetch(request)
            if fetched is None:  # overtaken while it waited: answer nothing, take nothing
                return replica_pb2.ReplicaFetchResponse()
            response, total, watched = fetched
            remaining = deadline - loop.time()
            if total >= max(1, request.min_bytes) or remaining <= 0 or not watched:
                return response
            if any(notifier.version != version for notifier, version in watched):
                continue  # changed while the read yielded to the loop: read again
            await wait_any((notifier for notifier, _ in watched), remaining)

    async def _fetch(
        self, request: replica_pb2.ReplicaFetchRequest
    ) -> tuple[replica_pb2.ReplicaFetchResponse, int, list] | None:  # type: ignore[type-arg]
        """The answer, its size and the partitions to watch; None when a newer fetch of the same
        replica overtook this one (checked before each position it would record)."""
        response = replica_pb2.ReplicaFetchResponse()
        total = 0
        watched = []
        active = self.manager.active_brokers()
        # A request that names no bound gets what a follower of this broker would ask for.
        budget = request.max_bytes or self.manager.config["replica.fetch.response.max.bytes"]
        turns = TurnBudget()
        for wanted in request.partitions:
            await turns.spend()
            if self._overtaken(request):
                return None
            now = self.manager.clock.now_ms()
            result = response.partitions.add(topic_id=wanted.topic_id, partition=wanted.partition)
            try:
                partition = self.manager.partition_by_id(wanted.topic_id, wanted.partition)
                partition.check_leader_epoch(wanted.current_leader_epoch)
                throttled = self.manager.leader_throttles(partition, request.replica_id)
                fetched = partition.fetch_for_follower(
                    request.replica_id,
                    wanted.fetch_offset,
                    wanted.last_fetched_epoch,
                    max(1, min(wanted.partition_max_bytes or budget, budget - total)),
                    active,
                    now,
                    request.broker_epoch,
                    send_records=not throttled or self.manager.leader_throttle.allows(now),
                    partition_epoch=wanted.partition_epoch,
                )
                if throttled:
                    self.manager.leader_throttle.charge(len(fetched.records), now)
                if fetched.isr_change is not None:
                    self.manager.submit_isr_change(partition, fetched.isr_change)
                result.high_watermark = fetched.high_watermark
                result.log_start_offset = fetched.log_start_offset
                if fetched.diverging is not None:
                    result.diverging_epoch.epoch, result.diverging_epoch.end_offset = (
                        fetched.diverging
                    )
                    total += 1  # answer at once: the follower must truncate
                else:
                    result.records = fetched.records
                    total += len(fetched.records)
                watched.append((partition.changed, partition.changed.version))
            except (PartitionError, StorageError) as exc:
                answer_refusal(result, refusal(exc))
                total += 1
        return response, total, watched

    async def RegisterTxnPartitions(
        self, request: replica_pb2.TxnPartitionsRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.TxnPartitionsResponse:
        response = replica_pb2.TxnPartitionsResponse()
        for wanted in request.partitions:
            result = response.partitions.add(topic_id=wanted.topic_id, partition=wanted.partition)
            try:
                partition = self.manager.partition_by_id(wanted.topic_id, wanted.partition)
                partition.register_transaction(
                    request.producer_id, request.producer_epoch, request.coordinator_epoch
                )
            except (PartitionError, StorageError) as exc:
                answer_refusal(result, refusal(exc))
        return response

    async def WriteTxnMarkers(
        self, request: replica_pb2.WriteTxnMarkersRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.TxnPartitionsResponse:
        response = replica_pb2.TxnPartitionsResponse()
        marker = TxnMarker(
            request.producer_id, request.producer_epoch, request.commit, request.coordinator_epoch
        )
        turns = TurnBudget()
        for wanted in request.partitions:
            await turns.spend()
            result = response.partitions.add(topic_id=wanted.topic_id, partition=wanted.partition)
            try:
                partition = self.manager.partition_by_id(wanted.topic_id, wanted.partition)
                info = partition.write_markers([marker], self.manager.clock.now_ms())
                # Written once the ISR has it, as Kafka's markers (acks=all): a marker only
                # the old leader held would leave the transaction open on the new one, and
                # the coordinator completes the transaction on this answer.
                min_isr = self.manager.min_insync_replicas(partition.topic)
                await partition.wait_for_isr(
                    info.last_offset, min_isr, self.manager.config["request.timeout.ms"] / 1000
                )
                for callback in self.manager.on_txn_marker:
                    callback(partition.topic, partition.partition, marker)
            except (PartitionError, StorageError) as exc:
                answer_refusal(result, refusal(exc))
        return response

    async def OffsetForLeaderEpoch(
        self, request: replica_pb2.OffsetForLeaderEpochRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.OffsetForLeaderEpochResponse:
        response = replica_pb2.OffsetForLeaderEpochResponse()
        turns = TurnBudget()
        for wanted in request.partitions:
            await turns.spend()
            result = response.partitions.add(topic_id=wanted.topic_id, partition=wanted.partition)
            try:
                partition = self.manager.partition_by_id(wanted.topic_id, wanted.partition)
                partition.check_leader_epoch(wanted.current_leader_epoch)
                epoch, end = partition.end_offset_for_epoch(wanted.leader_epoch)
                result.leader_epoch, result.end_offset = epoch, end
            except (PartitionError, StorageError) as exc:
                result.error_code = as_error_code(refusal(exc).code)
        return response
