"""The transactional producer's side of KIP-98 (Kafka's TransactionManager, the transaction
part): the transactional id's coordinator, the producer's epoch, which partitions the current
transaction has added, and the calls that begin, extend and end it.

States (the producer's view)::

    UNINITIALIZED ──init_transactions──▶ READY ──begin_transaction──▶ IN_TRANSACTION
        IN_TRANSACTION ──commit_transaction / abort_transaction──▶ READY
        IN_TRANSACTION ──a record or offset commit refused──▶ ABORTABLE (only abort is allowed)
        any ──fenced (a newer instance) or another fatal answer──▶ FATAL (close the producer)

Before the first batch of a partition is sent in a transaction, the sender adds the partition
(`add_partitions`, one AddPartitionsToTxn for all the partitions of a dispatch): the
coordinator must know every partition whose marker it will write. Requests are retried on
retriable answers (the coordinator moved or is loading, CONCURRENT_TRANSACTIONS while the
previous transaction completes) until `transaction_timeout_ms`.

CONCURRENT_TRANSACTIONS is the common retriable answer: the coordinator answers EndTxn once its
decision is persisted and writes the markers afterwards, so the next transaction's first
AddPartitionsToTxn (or a new epoch's InitProducerId) can arrive while they are written. It is
retried after `CONCURRENT_TXN_BACKOFF_MS` doubling up to `retry_backoff_ms` (Kafka's producer
retries it after 20 ms), not the general backoff: the markers take milliseconds.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterable
from typing import Any

from strom.v1 import common_pb2, group_pb2, txn_pb2, txn_pb2_grpc

from .cluster import Backoff, ClusterClient
from .coordinator import call_coordinator
from .errors import (
    KafkaTimeoutError,
    StromError,
    TransactionAbortableError,
    TransactionFatalError,
    TransactionStateError,
    transaction_error,
)
from .producer_sequences import SequenceState
from .records import ConsumerGroupMetadata, TopicPartition

log = logging.getLogger(__name__)

CONCURRENT_TXN_BACKOFF_MS = 20


class TxnState(enum.Enum):
    UNINITIALIZED = "uninitialized"
    READY = "ready"
    IN_TRANSACTION = "in transaction"
    ABORTABLE = "abortable error"
    FATAL = "fatal error"


class TransactionManager:
    def __init__(
        self,
        cluster: ClusterClient,
        sequences: SequenceState,
        transactional_id: str,
        transaction_timeout_ms: int,
    ) -> None:
        if not transactional_id:
            raise TransactionStateError(
                common_pb2.INVALID_CONFIG, "transactional_id must not be empty"
            )
        self.cluster = cluster
        self.sequences = sequences
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self.state = TxnState.UNINITIALIZED
        self.coordinator: str | None = None  # the coordinator's address, between calls
        self.added: set[tuple[str, int]] = set()  # partitions of the current transaction
        self.offsets_added = False  # AddOffsetsToTxn done in the current transaction
        self.error: StromError | None = None  # why the transaction (or producer) failed
        self._reinit = False  # a batch failed: start the next transaction with a new epoch
        self._lock = asyncio.Lock()

    # ---- state checks ------------------------------------------------------------------

    def _require(self, *states: TxnState) -> None:
        if self.state == TxnState.FATAL:
            assert self.error is not None
            raise self.error
        if self.state not in states:
            raise TransactionStateError(
                common_pb2.INVALID_TXN_STATE,
                f"the producer is {self.state.value}; this call needs "
                f"{' or '.join(s.value for s in states)}",
            )

    def check_send(self) -> None:
        """send() of a transactional producer: only inside a transaction."""
        if self.state == TxnState.ABORTABLE:
            assert self.error is not None
            raise TransactionAbortableError(
                self.error.code, f"the transaction must be aborted first: {self.error}"
            )
        self._require(TxnState.IN_TRANSACTION)

    def batch_failed(self, error: BaseException) -> None:
        """A record of the current transaction was not delivered: it can only abort now (or,
        fenced, the producer is done)."""
        code = getattr(error, "code", common_pb2.UNKNOWN_SERVER_ERROR)
        typed = transaction_error(code, str(error))
        self._reinit = True
        if isinstance(typed, TransactionFatalError):
            self._fail(typed)
        elif self.state == TxnState.IN_TRANSACTION:
            self.state, self.error = TxnState.ABORTABLE, typed

    def _fail(self, error: StromError) -> StromError:
        if isinstance(error, TransactionFatalError):
            self.state, self.error = TxnState.FATAL, error
        return error

    # ---- requests to the coordinator ----------------------------------------------------

    async def _call(self, method: str, request: Any) -> Any:
        """`method` on the coordinator, retried on retriable answers until the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.transaction_timeout_ms / 1000
        backoff = Backoff(self.cluster.retry_backoff_ms, self.cluster.retry_backoff_max_ms)
        busy = Backoff(
            min(CONCURRENT_TXN_BACKOFF_MS, self.cluster.retry_backoff_ms),
            self.cluster.retry_backoff_ms,
        )
        while True:
            try:
                response = await call_coordinator(
                    self.cluster, self.transactional_id, method, request, self,
                    key_type=group_pb2.TRANSACTION, stub_type=txn_pb2_grpc.TransactionStub,
                )  # fmt: skip
                code = response.error_code
                error = (
                    None if code == common_pb2.NONE
                    else transaction_error(code, response.error_message)
                )  # fmt: skip
            except StromError as exc:
                error = exc
            if error is None:
                return response
            if not error.retriable:
                raise self._fail(error)
            if loop.time() >= deadline:
                raise KafkaTimeoutError(f"{method} for {self.transactional_id!r}: {error}")
            log.debug("%s: %s; retrying", method, error)
            wait = busy if error.code == common_pb2.CONCURRENT_TRANSACTIONS else backoff
            await asyncio.sleep(wait.next_delay_s())

    async def init(self) -> None:
        """init_transactions: a new epoch of the transactional id (fencing older instances;
        the coordinator aborts or completes their last transaction first)."""
        async with self._lock:
            self._require(TxnState.UNINITIALIZED, TxnState.READY)
            await self._init_producer_id()
            self.state = TxnState.READY

    async def _init_producer_id(self) -> None:
        request = txn_pb2.TxnInitProducerIdRequest(
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self.transaction_timeout_ms,
        )
        response = await self._call("InitProducerId", request)
        self.sequences.reset()
        self.sequences.producer_id = response.producer_id
        self.sequences.producer_epoch = response.producer_epoch
        self._reinit = False

    def begin(self) -> None:
        self._require(TxnState.READY)
        self.state = TxnState.IN_TRANSACTION
        self.added.clear()
        self.offsets_added = False
        self.error = None

    async def add_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """AddPartitionsToTxn for those not added yet (the sender, before their first batch)."""
        new = sorted(set(partitions) - self.added)
        if not new:
            return
        if self.state != TxnState.IN_TRANSACTION:
            raise TransactionStateError(
                common_pb2.INVALID_TXN_STATE, f"records to send while {self.state.value}"
            )
        request = txn_pb2.AddPartitionsToTxnRequest(
            transactional_id=self.transactional_id,
            producer_id=self.sequences.producer_id,
            producer_epoch=self.sequences.producer_epoch,
            partitions=[txn_pb2.TxnTopicPartition(topic=t, partition=p) for t, p in new],
        )
        await self._call("AddPartitionsToTxn", request)
        self.added.update(new)

    async def send_offsets(
        self, offsets: dict[TopicPartition, int], group: ConsumerGroupMetadata
    ) -> None:
        """AddOffsetsToTxn, then TxnOffsetCommit to the group's coordinator: the offsets are
        committed if, and only if, the transaction commits."""
        self._require(TxnState.IN_TRANSACTION)
        pid, epoch = self.sequences.producer_id, self.sequences.producer_epoch
        await self._call(
            "AddOffsetsToTxn",
            txn_pb2.AddOffsetsToTxnRequest(
                transactional_id=self.transactional_id, producer_id=pid, producer_epoch=epoch,
                group_id=group.group_id,
            ),
        )  # fmt: skip
        self.offsets_added = True
        by_topic: dict[str, list[txn_pb2.TxnOffsetCommitPartition]] = {}
        for tp, offset in sorted(offsets.items()):
            by_topic.setdefault(tp.topic, []).append(
                txn_pb2.TxnOffsetCommitPartition(partition=tp.partition, offset=offset)
            )
        request = txn_pb2.TxnOffsetCommitRequest(
            transactional_id=self.transactional_id, group_id=group.group_id, producer_id=pid,
            producer_epoch=epoch, member_id=group.member_id, generation_id=group.member_epoch,
            topics=[txn_pb2.TxnOffsetCommitTopic(name=t, partitions=ps)
                    for t, ps in by_topic.items()],
        )  # fmt: skip
        cache = _Address()
        response = await call_coordinator(
            self.cluster, group.group_id, "TxnOffsetCommit", request, cache,
            stub_type=txn_pb2_grpc.TransactionStub,
        )  # fmt: skip
        errors = [(response.error_code, response.error_message)] + [
            (p.error_code, f"{t.name}-{p.partition}: {p.error_message}")
            for t in response.topics
            for p in t.partitions
        ]
        for code, message in errors:
            if code != common_pb2.NONE:
                error = transaction_error(code, message)
                if isinstance(error, TransactionFatalError):
                    raise self._fail(error)
                self.state, self.error = TxnState.ABORTABLE, error
                raise TransactionAbortableError(code, f"offsets not committed: {message}")

    async def end(self, commit: bool) -> None:
        """EndTxn once every record is delivered (the caller flushed); READY after."""
        if commit:
            if self.state == TxnState.ABORTABLE:
                assert self.error is not None
                raise TransactionAbortableError(
                    self.error.code, f"cannot commit, abort the transaction: {self.error}"
                )
            self._require(TxnState.IN_TRANSACTION)
        else:
            self._require(TxnState.IN_TRANSACTION, TxnState.ABORTABLE)
        if self.added or self.offsets_added:  # else the coordinator has nothing to end
            request = txn_pb2.EndTxnRequest(
                transactional_id=self.transactional_id,
                producer_id=self.sequences.producer_id,
                producer_epoch=self.sequences.producer_epoch,
                commit=commit,
            )
            # A timeout leaves the state as it was: the call may be repeated (the
            # coordinator answers a retried EndTxn with the same outcome).
            await self._call("EndTxn", request)
        if self._reinit:
            # A batch failed: its partition's sequence numbers have a gap the leader would
            # refuse forever. A new epoch starts every partition at sequence 0 (KIP-360).
            await self._init_producer_id()
        self.added.clear()
        self.offsets_added = False
        self.error = None
        self.state = TxnState.READY


class _Address:
    """A one-call coordinator cache (call_coordinator's `cache`)."""

    coordinator: str | None = None
