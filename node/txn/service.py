"""The Transaction gRPC service (proto/strom/v1/txn.proto): a transactional producer's requests
to its transaction coordinator (node/txn/host.py), and TxnOffsetCommit to its group's
coordinator (node/group/coordinator.py). Served on client listeners of every broker; a broker
that does not coordinate the id answers NOT_COORDINATOR and the client finds the coordinator
again (FindCoordinator with key_type TRANSACTION).

Input is checked here: an empty transactional id or group id, a timeout out of range, negative
producer ids, partitions of topics that do not exist (UNKNOWN_TOPIC_OR_PARTITION) or of an
internal topic (a producer never writes those; AddOffsetsToTxn names the group instead).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc

from strom.node.group.coordinator import GroupCoordinator, GroupError
from strom.node.internal_topics import OFFSETS_TOPIC, is_internal
from strom.node.peers import ControllerUnavailable
from strom.node.replica.manager import ReplicaManager
from strom.v1 import common_pb2, txn_pb2, txn_pb2_grpc

from .host import TxnCoordinatorHost
from .state import TxnError, TxnMetadata, TxnState

log = logging.getLogger("strom.txn")

# Kafka's names of the states, as its tools show them.
STATE_NAMES = {
    TxnState.EMPTY: "Empty",
    TxnState.ONGOING: "Ongoing",
    TxnState.PREPARE_COMMIT: "PrepareCommit",
    TxnState.PREPARE_ABORT: "PrepareAbort",
    TxnState.COMPLETE_COMMIT: "CompleteCommit",
    TxnState.COMPLETE_ABORT: "CompleteAbort",
    TxnState.DEAD: "Dead",
}
PARTITIONS_PER_REQUEST_MAX = 10_000


def _code(code: int) -> common_pb2.ErrorCode.ValueType:
    return common_pb2.ErrorCode.ValueType(code)


class TransactionServicer(txn_pb2_grpc.TransactionServicer):
    def __init__(
        self,
        host: TxnCoordinatorHost,
        groups: GroupCoordinator,
        manager: ReplicaManager,
        next_producer_id: Callable[[], Awaitable[int]],
        ensure_internal_topic: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.host = host
        self.coordinator = host.coordinator
        self.groups = groups
        self.manager = manager
        self.next_producer_id = next_producer_id
        self.ensure_internal_topic = ensure_internal_topic

    async def _ids(self, context: grpc.aio.ServicerContext, tid: str, pid: int, epoch: int) -> None:
        if not tid:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "transactional_id is empty")
        if pid < 0 or epoch < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "producer_id and producer_epoch must be >= 0 (from InitProducerId)",
            )

    async def InitProducerId(
        self, request: txn_pb2.TxnInitProducerIdRequest, context: grpc.aio.ServicerContext
    ) -> txn_pb2.TxnInitProducerIdResponse:
        if not request.transactional_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "transactional_id is empty")
        try:
            self.host.check_coordinator(request.transactional_id)
            self.coordinator.owned_partition(request.transactional_id)
            try:
                fresh = await self.next_producer_id()
            except ControllerUnavailable as exc:  # retriable, as the broker's InitProducerId
                raise TxnError(
                    common_pb2.COORDINATOR_NOT_AVAILABLE, f"cannot allocate producer ids now: {exc}"
                ) from exc
            metadata = await self.coordinator.init_producer_id(
                request.transactional_id, request.transaction_timeout_ms, lambda: fresh
            )
        except TxnError as exc:
            return txn_pb2.TxnInitProducerIdResponse(
                error_code=_code(exc.code), error_message=str(exc)
            )
        return txn_pb2.TxnInitProducerIdResponse(
            producer_id=metadata.producer_id, producer_epoch=metadata.producer_epoch
        )

    async def AddPartitionsToTxn(
        self, request: txn_pb2.AddPartitionsToTxnRequest, context: grpc.aio.ServicerContext
    ) -> txn_pb2.TxnResponse:
        await self._ids(context, request.transactional_id, request.producer_id,
                        request.producer_epoch)  # fmt: skip
        if not request.partitions or len(request.partitions) > PARTITIONS_PER_REQUEST_MAX:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"name 1 to {PARTITIONS_PER_REQUEST_MAX} partitions",
            )
        image = self.manager.image
        wanted = set()
        for tp in request.partitions:
            topic = image.topic_by_name(tp.topic)
            if is_internal(tp.topic):
                return txn_pb2.TxnResponse(
                    error_code=common_pb2.INVALID_REQUEST,
                    error_message=f"{tp.topic!r} is internal: producers do not write it",
                )
            if topic is None or tp.partition not in topic.partitions:
                return txn_pb2.TxnResponse(
                    error_code=common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
                    error_message=f"{tp.topic}-{tp.partition} does not exist",
                )
            wanted.add((tp.topic, tp.partition))
        return await self._add(request.transactional_id, request.producer_id,
                               request.producer_epoch, frozenset(wanted))  # fmt: skip

    async def _add(
        self, tid: str, pid: int, epoch: int, partitions: frozenset[tuple[str, int]]
    ) -> txn_pb2.TxnResponse:
        try:
            self.host.check_coordinator(tid)
            await self.coordinator.add_partitions(tid, pid, epoch, partitions)
        except TxnError as exc:
            return txn_pb2.TxnResponse(error_code=_code(exc.code), error_message=str(exc))
        return txn_pb2.TxnResponse()

    async def AddOffsetsToTxn(
        self, request: txn_pb2.AddOffsetsToTxnRequest, context: grpc.aio.ServicerContext
    ) -> txn_pb2.TxnResponse:
        await self._ids(context, request.transactional_id, request.producer_id,
                        request.producer_epoch)  # fmt: skip
        if not request.group_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "group_id is empty")
        if not await self.ensure_internal_topic(OFFSETS_TOPIC):
            return txn_pb2.TxnResponse(
                error_code=common_pb2.COORDINATOR_NOT_AVAILABLE,
                error_message=f"creating {OFFSETS_TOPIC}; retry",
            )
        partition = self.groups.partition_for(request.group_id)
        return await self._add(request.transactional_id, request.producer_id,
                               request.producer_epoch,
                               frozenset({(OFFSETS_TOPIC, partition)}))  # fmt: skip

    async def EndTxn(
        self, request: txn_pb2.EndTxnRequest, context: grpc.aio.ServicerContext
    ) -> txn_pb2.TxnResponse:
        await self._ids(context, request.transactional_id, request.producer_id,
                        request.producer_epoch)  # fmt: skip
        try:
            self.host.check_coordinator(request.transactional_id)
            await self.coordinator.end_txn(
                request.transactional_id, request.producer_id, request.producer_epoch,
                request.commit,
            )  # fmt: skip
        except TxnError as exc:
            return txn_pb2.TxnResponse(error_code=_code(exc.code), error_message=str(exc))
        return txn_pb2.TxnResponse()

    async def TxnOffsetCommit(
        self, request: txn_pb2.TxnOffsetCommitRequest, context: grpc.aio.ServicerContext
    ) -> txn_pb2.TxnOffsetCommitResponse:
        await self._ids(context, request.transactional_id, request.producer_id,
                        request.producer_epoch)  # fmt: skip
        items = [
            (t.name, p.partition, p.offset, p.metadata)
            for t in request.topics
            for p in t.partitions
        ]
        try:
            results = await self.groups.txn_commit(
                request.group_id, request.producer_id, request.producer_epoch,
                request.member_id, request.generation_id, items,
            )  # fmt: skip
        except GroupError as exc:
            return txn_pb2.TxnOffsetCommitResponse(
                error_code=_code(exc.code), error_message=exc.message
            )
        response = txn_pb2.TxnOffsetCommitResponse()
        for t in request.topics:
            out = response.topics.add(name=t.name)
            for p in t.partitions:
                code, message = results.get((t.name, p.partition), (common_pb2.NONE, ""))
                out.partitions.add(
                    partition=p.partition, error_code=_code(code), error_message=message
                )
        return response

    async def ListTransactions(
        self, request: txn_pb2.ListTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> txn_pb2.ListTransactionsResponse:
        known = set(STATE_NAMES.values())
        unknown = [s for s in request.states if s not in known]
        if unknown:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown states {unknown}; states are {', '.join(STATE_NAMES.values())}",
            )
        wanted = set(request.states)
        response = txn_pb2.ListTransactionsResponse()
        for tid, metadata in sorted(self.coordinator.states.items()):
            state = STATE_NAMES[metadata.state]
            if wanted and state not in wanted:
                continue
            response.transactions.add(
                transactional_id=tid, producer_id=metadata.producer_id, state=state
            )
        return response

    async def DescribeTransactions(
        self, request: txn_pb2.DescribeTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> txn_pb2.DescribeTransactionsResponse:
        response = txn_pb2.DescribeTransactionsResponse()
        for tid in request.transactional_ids:
            out = response.transactions.add(
                transactional_id=tid, coordinator_id=self.manager.broker_id
            )
            try:
                if not tid:
                    raise TxnError(common_pb2.INVALID_REQUEST, "the transactional id is empty")
                self.host.check_coordinator(tid)
                self.coordinator.owned_partition(tid)
                metadata = self.coordinator.states.get(tid)
                if metadata is None:
                    raise TxnError(
                        common_pb2.TRANSACTIONAL_ID_NOT_FOUND, f"{tid!r} is not known here"
                    )
            except TxnError as exc:
                out.error_code, out.error_message = _code(exc.code), str(exc)
                continue
            _describe(metadata, out)
        return response


def _describe(metadata: TxnMetadata, out: txn_pb2.TransactionDescription) -> None:
    out.state = STATE_NAMES[metadata.state]
    out.producer_id = metadata.producer_id
    out.producer_epoch = metadata.producer_epoch
    out.timeout_ms = metadata.timeout_ms
    out.start_ms = metadata.start_ms
    for topic, partition in sorted(metadata.partitions):
        out.partitions.add(topic=topic, partition=partition)
