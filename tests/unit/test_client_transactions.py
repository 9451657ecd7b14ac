"""The SDK's side of transactions without a cluster: what a read_committed consumer takes from
a fetched partition (control batches never, aborted transactions' batches dropped), and the
transactional producer's state rules (calls out of order, abortable vs fatal errors)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from strom.client.consumer import AsyncConsumer
from strom.client.errors import (
    FatalError,
    ProducerFencedError,
    RetriableError,
    TransactionAbortableError,
    TransactionStateError,
)
from strom.client.producer import AsyncProducer
from strom.client.records import TopicPartition
from strom.client.transactions import TxnState
from strom.storage.control_records import TxnMarker, encode_marker
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import broker_pb2, common_pb2

TP = TopicPartition("payments", 0)


def batch(value: bytes, offset: int, producer_id: int = -1) -> bytes:
    return encode_batch(
        [Record(None, value, (), 1)], base_offset=offset, producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1, base_sequence=0 if producer_id >= 0 else -1,
        is_transactional=producer_id >= 0,
    )  # fmt: skip


def marker(producer_id: int, commit: bool, offset: int) -> bytes:
    data = bytearray(encode_marker(TxnMarker(producer_id, 0, commit, 0), 1))
    data[0:8] = offset.to_bytes(8, "big")  # the leader assigns a marker's offset on append
    return bytes(data)


# offsets 0 (pid 7, aborted), 1 (pid 8, committed), 2 (plain), 3 abort marker, 4 commit marker,
# 5 (pid 7 again: a later transaction of the same producer, committed)
LOG = (
    batch(b"aborted", 0, 7) + batch(b"committed", 1, 8) + batch(b"plain", 2)
    + marker(7, False, 3) + marker(8, True, 4) + batch(b"later", 5, 7)
)  # fmt: skip


def take(isolation_level: str, aborted: list[tuple[int, int]]) -> tuple[list[bytes], int]:
    consumer = AsyncConsumer("localhost:1", isolation_level=isolation_level)
    consumer._positions[TP] = 0
    consumer._take(TP, LOG, [SimpleNamespace(producer_id=p, first_offset=o) for p, o in aborted])
    return [r.value or b"" for r in consumer._buffer.take(100, {})], consumer._positions[TP]


def test_read_committed_drops_the_aborted_transaction_and_never_shows_markers() -> None:
    assert take("read_committed", [(7, 0)]) == ([b"committed", b"plain", b"later"], 6)


def test_read_uncommitted_shows_every_data_record_but_no_marker() -> None:
    assert take("read_uncommitted", []) == (
        [b"aborted", b"committed", b"plain", b"later"],
        6,
    )


def test_an_unknown_isolation_level_is_refused() -> None:
    with pytest.raises(FatalError) as refused:
        AsyncConsumer("localhost:1", isolation_level="serializable")
    assert refused.value.code == common_pb2.INVALID_CONFIG


def test_transactional_calls_out_of_order_are_refused_before_anything_is_sent() -> None:
    async def scenario() -> None:
        producer = AsyncProducer("localhost:1", transactional_id="t")
        with pytest.raises(TransactionStateError):
            producer.begin_transaction()  # before init_transactions
        with pytest.raises(TransactionStateError):
            await producer.send("payments", b"x")
        assert producer.transactions is not None
        producer.transactions.state = TxnState.READY
        with pytest.raises(TransactionStateError):
            await producer.commit_transaction()  # no transaction begun
        plain = AsyncProducer("localhost:1")
        with pytest.raises(TransactionStateError):
            await plain.init_transactions()  # not transactional
        await producer.cluster.close()
        await plain.cluster.close()

    asyncio.run(scenario())


def test_a_transactional_producer_needs_acks_all_and_idempotence() -> None:
    with pytest.raises(FatalError):
        AsyncProducer("localhost:1", transactional_id="t", acks=1)
    with pytest.raises(FatalError):
        AsyncProducer("localhost:1", transactional_id="t", enable_idempotence=False)


def test_a_failed_record_makes_the_transaction_abortable_a_fenced_one_fatal() -> None:
    async def scenario() -> None:
        producer = AsyncProducer("localhost:1", transactional_id="t")
        transactions = producer.transactions
        assert transactions is not None
        transactions.state = TxnState.READY
        producer.begin_transaction()
        transactions.batch_failed(RetriableError(common_pb2.REQUEST_TIMED_OUT, "expired"))
        assert transactions.state == TxnState.ABORTABLE
        with pytest.raises(TransactionAbortableError):
            await producer.send("payments", b"x")
        with pytest.raises(TransactionAbortableError):
            await producer.commit_transaction()
        transactions.batch_failed(FatalError(common_pb2.INVALID_PRODUCER_EPOCH, "zombie"))
        assert transactions.state == TxnState.FATAL
        with pytest.raises(ProducerFencedError):
            await producer.abort_transaction()
        await producer.cluster.close()

    asyncio.run(scenario())


def test_concurrent_transactions_is_retried_soon_and_other_errors_with_the_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the previous transaction's markers are written the coordinator answers
    CONCURRENT_TRANSACTIONS: the producer retries it after ~20 ms (not retry_backoff_ms), and
    a fenced answer stops the retries with a fatal error."""
    from strom.client import transactions as module
    from strom.v1 import txn_pb2

    answers = [common_pb2.CONCURRENT_TRANSACTIONS, common_pb2.CONCURRENT_TRANSACTIONS,
               common_pb2.COORDINATOR_LOAD_IN_PROGRESS, common_pb2.NONE]  # fmt: skip
    asked: list[str] = []
    delays: list[float] = []

    async def coordinator(cluster, key, method, request, cache, **kw):  # type: ignore[no-untyped-def]
        asked.append(method)
        return txn_pb2.TxnInitProducerIdResponse(
            error_code=answers.pop(0), producer_id=5, producer_epoch=1
        )

    async def sleep(delay_s: float) -> None:
        delays.append(delay_s)

    async def scenario() -> None:
        producer = AsyncProducer("localhost:1", transactional_id="t", retry_backoff_ms=500)
        transactions = producer.transactions
        assert transactions is not None
        monkeypatch.setattr(module, "call_coordinator", coordinator)
        monkeypatch.setattr(module.asyncio, "sleep", sleep)
        await transactions.init()
        assert transactions.state == TxnState.READY
        assert (producer.sequences.producer_id, producer.sequences.producer_epoch) == (5, 1)
        assert asked == ["InitProducerId"] * 4
        assert 0.016 <= delays[0] <= 0.024 and 0.032 <= delays[1] <= 0.048  # 20, 40 ms
        assert delays[2] >= 0.4  # another retriable answer: retry_backoff_ms
        answers.append(common_pb2.PRODUCER_FENCED)
        with pytest.raises(ProducerFencedError):
            await transactions.init()
        assert transactions.state == TxnState.FATAL
        monkeypatch.undo()
        await producer.cluster.close()

    asyncio.run(scenario())


def test_a_read_committed_consumer_waits_for_stable_offsets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KIP-447: a read_committed consumer fetches committed offsets with require_stable and
    retries UNSTABLE_OFFSET_COMMIT (a transaction's offsets pending) until they settle, up to
    its request timeout; a read_uncommitted one does not ask for stability (Kafka's rule)."""
    from strom.client.errors import KafkaTimeoutError
    from strom.v1 import group_pb2

    def answer(code: int, offset: int) -> group_pb2.OffsetFetchResponse:
        response = group_pb2.OffsetFetchResponse()
        response.topics.add(name="orders").partitions.add(
            partition=0,
            offset=offset,
            error_code=code,  # type: ignore[arg-type]
        )
        return response

    async def scenario() -> None:
        consumer = AsyncConsumer(
            "localhost:1", group_id="g", isolation_level="read_committed",
            retry_backoff_ms=1, retry_backoff_max_ms=2, request_timeout_ms=200,
        )  # fmt: skip
        answers = [answer(common_pb2.UNSTABLE_OFFSET_COMMIT, -1)] * 2 + [answer(0, 10)]
        asked: list[bool] = []

        async def call(method: str, request: group_pb2.OffsetFetchRequest) -> object:
            asked.append(request.require_stable)
            return answers.pop(0) if answers else answer(common_pb2.UNSTABLE_OFFSET_COMMIT, -1)

        monkeypatch.setattr(consumer, "_coordinator_call", call)
        orders0 = TopicPartition("orders", 0)
        assert await consumer.committed_offsets([orders0]) == {orders0: 10}
        assert asked == [True, True, True]
        with pytest.raises(KafkaTimeoutError, match="orders-0"):
            await consumer.committed_offsets([orders0])  # never settles: bounded
        consumer.isolation_level = broker_pb2.READ_UNCOMMITTED
        answers.append(answer(0, 3))
        asked.clear()
        assert await consumer.committed_offsets([orders0]) == {orders0: 3}
        assert asked == [False]
        await consumer.cluster.close()

    asyncio.run(scenario())


def test_a_transactional_id_refused_by_the_authorizer_is_fatal() -> None:
    from strom.client.errors import (
        AuthorizationFailedError,
        TransactionalIdAuthorizationError,
        TransactionFatalError,
        transaction_error,
    )

    error = transaction_error(common_pb2.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "needs WRITE")
    assert isinstance(error, TransactionalIdAuthorizationError)
    assert isinstance(error, TransactionFatalError) and isinstance(error, AuthorizationFailedError)
    assert not error.retriable
