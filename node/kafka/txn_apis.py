"""Kafka's transactional APIs (KIP-98) on the Kafka listener, translated to strom's Transaction
service (node/txn/service.py) as node/kafka/apis.py does for the rest: AddPartitionsToTxn,
AddOffsetsToTxn, EndTxn, TxnOffsetCommit, and InitProducerId with a transactional id. Mixed
into KafkaApis; FindCoordinator with key type 1, transactional Produce and Fetch's isolation
level are handled there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from strom.node.security.access import Denied
from strom.node.txn.service import TransactionServicer
from strom.v1 import common_pb2, txn_pb2

from .codec import Message
from .listener import Session

CLUSTER_AUTHORIZATION_FAILED = common_pb2.CLUSTER_AUTHORIZATION_FAILED
COORDINATOR_NOT_AVAILABLE = common_pb2.COORDINATOR_NOT_AVAILABLE
INVALID_REQUEST = common_pb2.INVALID_REQUEST
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = common_pb2.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
PATH = "/strom.v1.Transaction/"


class TransactionApis:
    """The handlers; `transactions` is None on a node without the Transaction service."""

    transactions: TransactionServicer | None
    _call: Callable[[Session, str, Any, Callable[[Any, Any], Awaitable[Any]]], Awaitable[Any]]

    def txn_handlers(self) -> dict[int, Callable[[Session, int, Message], Awaitable[Message]]]:
        return {
            24: self.add_partitions_to_txn,
            25: self.add_offsets_to_txn,
            26: self.end_txn,
            28: self.txn_offset_commit,
        }

    async def _txn_call(self, session: Session, method: str, request: Any) -> tuple[int, Any]:
        """(error code, response): the Transaction service's `method` behind its rule; a
        refused request becomes its code."""
        from .apis import InvalidRequest  # apis.py imports this module

        if self.transactions is None:
            return COORDINATOR_NOT_AVAILABLE, None
        try:
            response = await self._call(
                session, PATH + method, request, getattr(self.transactions, method)
            )
        except InvalidRequest as exc:
            return exc.code, None
        except Denied:
            return TRANSACTIONAL_ID_AUTHORIZATION_FAILED, None
        return int(getattr(response, "error_code", 0)), response

    async def init_transactional_producer(self, session: Session, body: Message) -> Message:
        code, response = await self._txn_call(
            session, "InitProducerId",
            txn_pb2.TxnInitProducerIdRequest(
                transactional_id=body["transactional_id"],
                transaction_timeout_ms=body["transaction_timeout_ms"],
            ),
        )  # fmt: skip
        return {
            "throttle_time_ms": 0,
            "error_code": code,
            "producer_id": response.producer_id if not code else -1,
            "producer_epoch": response.producer_epoch if not code else -1,
        }

    async def add_partitions_to_txn(self, session: Session, version: int, body: Message) -> Message:
        request = txn_pb2.AddPartitionsToTxnRequest(
            transactional_id=body["transactional_id"],
            producer_id=body["producer_id"],
            producer_epoch=body["producer_epoch"],
        )
        for topic in body["topics"]:
            for index in topic["partitions"]:
                request.partitions.add(topic=topic["name"], partition=index)
        code: int = INVALID_REQUEST
        if request.partitions:
            code, _ = await self._txn_call(session, "AddPartitionsToTxn", request)
        # strom adds a request's partitions together: one code for all of them
        return {
            "throttle_time_ms": 0,
            "results": [
                {
                    "name": topic["name"],
                    "results": [
                        {"partition_index": index, "partition_error_code": code}
                        for index in topic["partitions"]
                    ],
                }
                for topic in body["topics"]
            ],
        }

    async def add_offsets_to_txn(self, session: Session, version: int, body: Message) -> Message:
        code, _ = await self._txn_call(
            session, "AddOffsetsToTxn",
            txn_pb2.AddOffsetsToTxnRequest(
                transactional_id=body["transactional_id"], producer_id=body["producer_id"],
                producer_epoch=body["producer_epoch"], group_id=body["group_id"],
            ),
        )  # fmt: skip
        return {"throttle_time_ms": 0, "error_code": code}

    async def end_txn(self, session: Session, version: int, body: Message) -> Message:
        code, _ = await self._txn_call(
            session, "EndTxn",
            txn_pb2.EndTxnRequest(
                transactional_id=body["transactional_id"], producer_id=body["producer_id"],
                producer_epoch=body["producer_epoch"], commit=body["committed"],
            ),
        )  # fmt: skip
        return {"throttle_time_ms": 0, "error_code": code}

    async def txn_offset_commit(self, session: Session, version: int, body: Message) -> Message:
        request = txn_pb2.TxnOffsetCommitRequest(
            transactional_id=body["transactional_id"],
            group_id=body["group_id"],
            producer_id=body["producer_id"],
            producer_epoch=body["producer_epoch"],
            member_id=body["member_id"],
            generation_id=body["generation_id"],
        )
        add_committed_offsets(request.topics, body["topics"])
        code, response = await self._txn_call(session, "TxnOffsetCommit", request)
        results = {}
        if response is not None:
            results = {
                (t.name, p.partition): p.error_code for t in response.topics for p in t.partitions
            }
        return {
            "throttle_time_ms": 0,
            "topics": [
                {
                    "name": topic["name"],
                    "partitions": [
                        {
                            "partition_index": p["partition_index"],
                            "error_code": code
                            or results.get((topic["name"], p["partition_index"]), 0),
                        }
                        for p in topic["partitions"]
                    ],
                }
                for topic in body["topics"]
            ],
        }


def add_committed_offsets(topics: Any, body_topics: list[Message]) -> None:
    """A Kafka OffsetCommit or TxnOffsetCommit body's topics, added to strom's request."""
    for topic in body_topics:
        out = topics.add(name=topic["name"])
        for p in topic["partitions"]:
            out.partitions.add(
                partition=p["partition_index"],
                offset=p["committed_offset"],
                metadata=p["committed_metadata"] or "",
            )
