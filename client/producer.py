"""The producer: per-partition batching, routing to partition leaders, retries.

`AsyncProducer.send()` and the synchronous `Producer.send()` both encode a record into its
partition's open batch in one record accumulator (client/producer_accumulator.py: batches,
buffer_memory, linger) and return a `RecordFuture` of its `RecordMetadata`. A batch is ready when
it reaches `batch_size` bytes or has waited `linger_ms`; the sender (client/producer_sender.py)
drains ready batches per leader and pipelines them, up to
`max_in_flight_requests_per_connection` per partition, and retries retriable errors in order until `delivery_timeout_ms`; fatal errors fail
the batch's futures with a typed error. With idempotence (the default for acks=all) retries
neither duplicate nor reorder a partition's records.

Partitioning follows Kafka: murmur2 of the key, round-robin without a key (the seed document's
M1→P0, M2→P1, ...), or the partition the caller names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from strom.storage.record_batch import Compression
from strom.v1 import common_pb2

from ._loop import LoopThread
from .cluster import ClusterClient
from .errors import FatalError, TransactionStateError
from .partitioner import make_partitioner
from .producer_accumulator import RecordAccumulator
from .producer_batch import ProducerBatch, RecordFuture
from .producer_sender import Sender
from .producer_sequences import SequenceState
from .records import ConsumerGroupMetadata, TopicPartition
from .transactions import TransactionManager

_BYTES = (bytes, bytearray)  # a tuple: `bytes | bytearray` would build a union on every call
RECORD_OVERHEAD_BYTES = 24  # a record's framing, roughly, for batch size accounting
_ACKS = {"all": -1, "-1": -1, -1: -1, "1": 1, 1: 1, "0": 0, 0: 0}
_COMPRESSION = {
    None: Compression.NONE,
    "none": Compression.NONE,
    "gzip": Compression.GZIP,
    "snappy": Compression.SNAPPY,
    "lz4": Compression.LZ4,
    "zstd": Compression.ZSTD,
}


class AsyncProducer:
    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        *,
        acks: int | str = "all",
        # Defaults measured on the 2-core bench machine (README "Producer defaults",
        # bench/RESULTS.md): a Python gRPC call costs far more CPU than Kafka's, so records per
        # request decide throughput and, once the cores are busy, latency too.
        linger_ms: int = 10,
        batch_size: int = 262_144,
        compression_type: str | None = None,
        partitioner: str = "default",
        request_timeout_ms: int = 30_000,
        delivery_timeout_ms: int = 120_000,
        max_request_size: int = 1_048_576,
        retry_backoff_ms: int = 100,
        client_id: str = "strom-producer",
        enable_idempotence: bool | None = None,
        buffer_memory: int = 32 * 1024 * 1024,
        max_block_ms: int = 60_000,
        max_in_flight_requests_per_connection: int = 5,
        bootstrap_timeout_ms: int | None = None,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
        **security_options: Any,
    ) -> None:
        """`security_options`: security_protocol, ssl_cafile, ssl_certfile, ssl_keyfile
        (client/tls.py `SecurityOptions`), and `streaming` (ClusterClient: requests on one
        stream per broker, off by default). `bootstrap_timeout_ms`: see ClusterClient (the
        command line's console producer sets it). `transactional_id`: a transactional
        producer (init_transactions, begin_transaction, send_offsets_to_transaction,
        commit_transaction, abort_transaction); idempotent, acks=all."""
        if acks not in _ACKS:
            raise FatalError(
                common_pb2.INVALID_REQUIRED_ACKS, f"acks must be all, 1 or 0, got {acks!r}"
            )
        if compression_type not in _COMPRESSION:
            raise FatalError(
                common_pb2.UNSUPPORTED_COMPRESSION_TYPE,
                f"compression_type must be none, gzip, snappy, lz4 or zstd, got {compression_type!r}",
            )
        self.acks = _ACKS[acks]
        self.buffer_memory = buffer_memory
        if enable_idempotence and self.acks != -1:
            raise FatalError(
                common_pb2.INVALID_CONFIG,
                "enable_idempotence=True needs acks='all' (an acks=1 write can be lost on "
                "failover, so retries could not be deduplicated safely)",
            )
        if transactional_id is not None and (self.acks != -1 or enable_idempotence is False):
            raise FatalError(
                common_pb2.INVALID_CONFIG,
                "a transactional producer is idempotent with acks='all' (its records are "
                "written exactly once or the transaction aborts)",
            )
        # Kafka's default since 3.0: idempotent whenever acks=all, unless turned off.
        self.idempotent = self.acks == -1 and enable_idempotence is not False
        self.sequences = SequenceState(
            self.idempotent, _COMPRESSION[compression_type], transactional_id is not None
        )
        self.linger_ms = linger_ms
        self.batch_size = batch_size
        self.request_timeout_ms = request_timeout_ms
        self.max_request_size = max_request_size
        self.max_in_flight = max_in_flight_requests_per_connection
        self.accumulator = RecordAccumulator(
            batch_size=batch_size,
            linger_ms=linger_ms,
            buffer_memory=buffer_memory,
            max_block_ms=max_block_ms,
            delivery_timeout_ms=delivery_timeout_ms,
            partitioner=make_partitioner(partitioner),
        )
        self.cluster = ClusterClient(
            bootstrap_servers,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            bootstrap_timeout_ms=bootstrap_timeout_ms,
            **security_options,
        )
        self.transactions: TransactionManager | None = None
        if transactional_id is not None:
            self.transactions = TransactionManager(
                self.cluster, self.sequences, transactional_id, transaction_timeout_ms
            )
        # Made with the first batch, over the cluster client in use then.
        self._sender: Sender | None = None
        self._closed = False

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def producer_id(self) -> int:
        return self.sequences.producer_id

    @producer_id.setter
    def producer_id(self, value: int) -> None:
        self.sequences.producer_id = value

    @property
    def producer_epoch(self) -> int:
        return self.sequences.producer_epoch

    @producer_epoch.setter
    def producer_epoch(self, value: int) -> None:
        self.sequences.producer_epoch = value

    # ---- send --------------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordFuture:
        """Queue one record; await the returned future for its metadata."""
        if self._closed:
            raise FatalError(common_pb2.INVALID_REQUEST, "the producer is closed")
        if self.transactions is not None:
            self.transactions.check_send()
        size = self.check_record(key, value, headers)
        meta = self.cluster.meta.topics.get(topic)
        if meta is None:
            meta = await self.cluster.topic(topic, allow_auto_topic_creation=True)
        count = len(meta.partitions)
        if partition is not None:
            self.check_partition(topic, partition, count)
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        accumulator = self.accumulator
        appended = accumulator.append(topic, partition, count, timestamp, key, value, headers, size)
        if appended is None:  # buffer_memory is full: wait for answers to free some
            deadline = accumulator.clock() + accumulator.max_block_s
            while appended is None:
                await accumulator.wait_for_space(size, deadline)
                appended = accumulator.append(
                    topic, partition, count, timestamp, key, value, headers, size
                )
        future, wake = appended
        if wake:
            self.wake_sender()
        return future

    # The buffer tests' view of the accumulator's bound.
    async def _reserve(self, size: int) -> None:
        await self.accumulator.reserve_async(size)

    def _release(self, batch: ProducerBatch) -> None:
        self.accumulator.release(batch)

    @property
    def _buffered(self) -> int:
        return self.accumulator.buffered

    def check_record(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
    ) -> int:
        """Validate one record before anything is queued; returns its accounted size."""
        size = RECORD_OVERHEAD_BYTES
        if value is not None:
            if not isinstance(value, _BYTES):
                raise TypeError(f"value must be bytes or None, got {type(value).__name__}")
            size += len(value)
        if key is not None:
            if not isinstance(key, _BYTES):
                raise TypeError(f"key must be bytes or None, got {type(key).__name__}")
            size += len(key)
        if headers:
            size += sum(len(k) + len(v or b"") for k, v in headers)
        if size > self.max_request_size or size > self.buffer_memory:
            raise FatalError(
                common_pb2.MESSAGE_TOO_LARGE,
                f"the record is {size} bytes, larger than max_request_size="
                f"{self.max_request_size} (or buffer_memory={self.buffer_memory})",
            )
        return size

    @staticmethod
    def check_partition(topic: str, partition: int, count: int) -> None:
        """A partition the caller names must exist."""
        if not 0 <= partition < count:
            raise FatalError(
                common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
                f"topic {topic!r} has partitions 0..{count - 1}, not {partition}",
            )

    def wake_sender(self) -> None:
        """Loop thread: a batch was opened or sealed, or a flush asks for everything."""
        if self._sender is None:
            self._sender = Sender(
                self.cluster, self.accumulator, self.sequences, acks=self.acks,
                request_timeout_ms=self.request_timeout_ms, max_in_flight=self.max_in_flight,
                transactions=self.transactions,
            )  # fmt: skip
        self._sender.wakeup()

    async def flush(self, timeout_s: float | None = None) -> None:
        """Send everything queued and wait for every outstanding record's answer."""
        self.accumulator.seal_all()
        unfinished = list(self.accumulator.unfinished)
        if unfinished:
            self.wake_sender()
            waiters = {batch.result.waiter() for batch in unfinished}
            await asyncio.wait(waiters, timeout=timeout_s)

    # ---- transactions (confluent-kafka's names) -----------------------------------------

    def _txn(self) -> TransactionManager:
        if self.transactions is None:
            raise TransactionStateError(
                common_pb2.INVALID_CONFIG, "a transactional call needs transactional_id"
            )
        return self.transactions

    async def init_transactions(self) -> None:
        """Register the transactional id with its coordinator and take a new epoch: an older
        producer with the same id is fenced from now on, and its unfinished transaction is
        aborted (or, already decided, completed) before this returns."""
        await self._txn().init()

    def begin_transaction(self) -> None:
        self._txn().begin()

    async def send_offsets_to_transaction(
        self,
        offsets: dict[TopicPartition, int],
        group_metadata: ConsumerGroupMetadata | str,
    ) -> None:
        """Commit the consumer's `offsets` (the next offset to read, per partition) as part of
        the transaction: they count only if it commits (consume-transform-produce)."""
        if isinstance(group_metadata, str):
            group_metadata = ConsumerGroupMetadata(group_metadata)
        await self._txn().send_offsets(
            {TopicPartition(*tp): o for tp, o in offsets.items()}, group_metadata
        )

    async def commit_transaction(self) -> None:
        """Deliver every record of the transaction, then commit it: its records become
        visible to read_committed consumers, its offsets committed. A record that could not
        be delivered raises TransactionAbortableError (call abort_transaction)."""
        transactions = self._txn()
        transactions.check_send()
        await self.flush()
        await transactions.end(commit=True)

    async def abort_transaction(self) -> None:
        """Abort the transaction: its records are never visible to read_committed consumers,
        its offsets never committed. Records still queued are sent first (and aborted)."""
        transactions = self._txn()
        await self.flush()
        await transactions.end(commit=False)

    async def close(self) -> None:
        if self._closed:
            return
        await self.flush()
        self._closed = True
        if self._sender is not None:
            await self._sender.stop()
        await self.cluster.close()


class Producer:
    """Synchronous producer over AsyncProducer's accumulator. `send()` encodes the record into
    its partition's batch in the caller's thread (like Java's RecordAccumulator); the client's
    loop thread only drains whole batches, when full or after `linger_ms`. Returns
    `RecordFuture`s, which behave like concurrent.futures.Future (`result`, `exception`,
    `add_done_callback`)."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "localhost:9092", **options: Any):
        self._loop = LoopThread("strom-producer")
        self._async: AsyncProducer = self._loop.run(
            _make_async_producer(bootstrap_servers, options)
        )
        self._closed = False

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordFuture:
        if self._closed:
            raise FatalError(common_pb2.INVALID_REQUEST, "the producer is closed")
        producer = self._async
        if producer.transactions is not None:
            producer.transactions.check_send()
        size = producer.check_record(key, value, headers)
        meta = producer.cluster.meta.topics.get(topic)
        if meta is None:
            meta = self._loop.run(producer.cluster.topic(topic, allow_auto_topic_creation=True))
        count = len(meta.partitions)
        if partition is not None:
            producer.check_partition(topic, partition, count)
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        accumulator = producer.accumulator
        with accumulator.lock:  # callers' threads, and the loop thread draining
            appended = accumulator.append(
                topic, partition, count, timestamp, key, value, headers, size
            )
            if appended is None:  # buffer_memory is full: wait for answers to free some
                accumulator.wait_for_room(size)
                appended = accumulator.append(
                    topic, partition, count, timestamp, key, value, headers, size
                )
        assert appended is not None  # there was room, and the lock is still ours
        future, wake = appended
        if wake:
            self._loop.loop.call_soon_threadsafe(producer.wake_sender)
        return future

    # The tests' view of the accumulator: what is still referenced, and the buffer's counters.
    @property
    def _outstanding(self) -> set[ProducerBatch]:
        return self._async.accumulator.unfinished

    @property
    def _reserved(self) -> int:
        return self._async.accumulator.reserved

    @property
    def _released(self) -> int:
        return self._async.accumulator.released

    def flush(self, timeout_s: float | None = None) -> None:
        """Send every open batch and wait for every outstanding batch's answer."""
        accumulator = self._async.accumulator
        accumulator.seal_all()
        self._loop.loop.call_soon_threadsafe(self._async.wake_sender)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with accumulator.lock:
            waiting = list(accumulator.unfinished)
        for batch in waiting:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not batch.result.wait(remaining):
                return

    def init_transactions(self) -> None:
        self._loop.run(self._async.init_transactions())

    def begin_transaction(self) -> None:
        self._async.begin_transaction()

    def send_offsets_to_transaction(
        self,
        offsets: dict[TopicPartition, int],
        group_metadata: ConsumerGroupMetadata | str,
    ) -> None:
        self._loop.run(self._async.send_offsets_to_transaction(offsets, group_metadata))

    def commit_transaction(self) -> None:
        self._loop.run(self._async.commit_transaction())

    def abort_transaction(self) -> None:
        self._loop.run(self._async.abort_transaction())

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._loop.run(self._async.close())


async def _make_async_producer(
    bootstrap_servers: str | Sequence[str], options: dict[str, Any]
) -> AsyncProducer:
    return AsyncProducer(bootstrap_servers, **options)
