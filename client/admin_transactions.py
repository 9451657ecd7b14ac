"""Admin.list_transactions / describe_transactions: the transactional ids the cluster's
transaction coordinators know (Kafka's ListTransactions and DescribeTransactions, what
kafka-transactions.sh shows).

Mixed into AsyncAdmin (client/admin.py). Each broker lists only the ids it coordinates, so the
listing asks every broker at once; a description goes to the id's coordinator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from strom.v1 import common_pb2, group_pb2, txn_pb2, txn_pb2_grpc

from .cluster import ClusterClient
from .coordinator import COORDINATOR_ATTEMPTS_MAX, FIND_AGAIN, call_coordinator
from .errors import error_from_code


@dataclass(frozen=True, slots=True)
class TransactionListing:
    transactional_id: str
    producer_id: int
    state: str  # Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort
    coordinator_id: int


@dataclass(frozen=True, slots=True)
class TransactionDescription:
    transactional_id: str
    coordinator_id: int
    state: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    start_ms: int  # when the open transaction began; -1 outside one
    partitions: tuple[tuple[str, int], ...]  # of the open transaction


class AsyncTransactionsAdmin:
    cluster: ClusterClient

    async def list_transactions(
        self, states: Sequence[str] | None = None
    ) -> list[TransactionListing]:
        """Every transactional id, from every broker's transaction coordinator (`states`:
        only ids in those states)."""
        await self.cluster.refresh_metadata([])
        request = txn_pb2.ListTransactionsRequest(states=list(states or ()))
        brokers = sorted(self.cluster.meta.brokers.items())
        answers = await asyncio.gather(
            *(
                self.cluster.call(
                    address,
                    txn_pb2_grpc.TransactionStub(self.cluster.channel(address)).ListTransactions,
                    request,
                    self.cluster.request_timeout_s,
                )
                for _, address in brokers
            )
        )
        found = {}
        for (broker_id, _), answer in zip(brokers, answers, strict=True):
            if answer.error_code != common_pb2.NONE:
                raise error_from_code(answer.error_code, "")
            for t in answer.transactions:
                found[t.transactional_id] = TransactionListing(
                    t.transactional_id, t.producer_id, t.state, broker_id
                )
        return [found[tid] for tid in sorted(found)]

    async def describe_transactions(
        self, transactional_ids: Sequence[str]
    ) -> list[TransactionDescription]:
        """Each id's state, from its coordinator; an unknown id raises
        TRANSACTIONAL_ID_NOT_FOUND."""
        out = []
        for tid in transactional_ids:
            for attempt in range(COORDINATOR_ATTEMPTS_MAX):
                response = await call_coordinator(
                    self.cluster, tid, "DescribeTransactions",
                    txn_pb2.DescribeTransactionsRequest(transactional_ids=[tid]),
                    key_type=group_pb2.TRANSACTION, stub_type=txn_pb2_grpc.TransactionStub,
                )  # fmt: skip
                d = response.transactions[0]
                # the answer is per id: a coordinator that moved or loads says so there
                if d.error_code not in FIND_AGAIN or attempt == COORDINATOR_ATTEMPTS_MAX - 1:
                    break
                await asyncio.sleep(self.cluster.retry_backoff_ms / 1000)
            if d.error_code != common_pb2.NONE:
                raise error_from_code(d.error_code, d.error_message)
            out.append(
                TransactionDescription(
                    d.transactional_id,
                    d.coordinator_id,
                    d.state,
                    d.producer_id,
                    d.producer_epoch,
                    d.timeout_ms,
                    d.start_ms,
                    tuple((p.topic, p.partition) for p in d.partitions),
                )
            )
        return out
