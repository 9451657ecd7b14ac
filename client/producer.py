"""The producer: per-partition batching, routing to partition leaders, retries.

`AsyncProducer.send()` encodes a record into its partition's open batch (client/producer_batch.py)
and returns a `RecordFuture` of its `RecordMetadata`. A batch is sealed when it reaches
`batch_size` bytes or has waited `linger_ms`; the sender (client/producer_sender.py) pipelines
sealed batches to partition leaders, up to `max_in_flight_requests_per_connection` per
partition, and retries retriable errors in order until `delivery_timeout_ms`; fatal errors fail
the batch's futures with a typed error. With idempotence (the default for acks=all) retries
neither duplicate nor reorder a partition's records.

Partitioning follows Kafka: murmur2 of the key, round-robin without a key (the seed document's
M1→P0, M2→P1, ...), or the partition the caller names.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Container, Sequence
from typing import Any

from strom.storage.record_batch import Compression
from strom.v1 import broker_pb2, common_pb2

from ._loop import LoopThread
from .cluster import ClusterClient
from .errors import FatalError, KafkaTimeoutError, error_from_code
from .partitioner import make_partitioner
from .producer_batch import ProducerBatch, RecordFuture
from .producer_sender import Sender

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
        **security_options: Any,
    ) -> None:
        """`security_options`: security_protocol, ssl_cafile, ssl_certfile, ssl_keyfile
        (client/tls.py `SecurityOptions`)."""
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
        self.max_block_s = max_block_ms / 1000
        self._buffered = 0
        self._space = asyncio.Event()
        if enable_idempotence and self.acks != -1:
            raise FatalError(
                common_pb2.INVALID_CONFIG,
                "enable_idempotence=True needs acks='all' (an acks=1 write can be lost on "
                "failover, so retries could not be deduplicated safely)",
            )
        # Kafka's default since 3.0: idempotent whenever acks=all, unless turned off.
        self.idempotent = self.acks == -1 and enable_idempotence is not False
        self.producer_id = -1
        self.producer_epoch = -1
        self._next_sequence: dict[tuple[str, int], int] = {}
        self._producer_id_lock = asyncio.Lock()
        self.linger_ms = linger_ms
        self.linger_s = linger_ms / 1000
        self.batch_size = batch_size
        self.compression = _COMPRESSION[compression_type]
        self.partitioner = make_partitioner(partitioner)
        self.request_timeout_ms = request_timeout_ms
        self.delivery_timeout_s = delivery_timeout_ms / 1000
        self.max_request_size = max_request_size
        self.cluster = ClusterClient(
            bootstrap_servers,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            **security_options,
        )
        self._open: dict[tuple[str, int], ProducerBatch] = {}
        self._sender = Sender(self, max_in_flight_requests_per_connection)
        self._unfinished: set[ProducerBatch] = set()  # queued or in flight: what flush awaits
        self._closed = False

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
        size = self.check_record(key, value, headers)
        meta = self.cluster.meta.topics.get(topic)
        if meta is None:
            meta = await self.cluster.topic(topic, allow_auto_topic_creation=True)
        count = len(meta.partitions)
        partition = self.choose_partition(topic, key, partition, count)
        if self._buffered + size > self.buffer_memory:
            await self._reserve(size)
        else:
            self._buffered += size
        batch = self._open.get((topic, partition))
        if batch is None or batch.size_bytes + size > self.batch_size:
            if batch is not None:
                self._seal(batch)
            batch = ProducerBatch(topic, partition, count)
            batch.created = asyncio.get_running_loop().time()
            batch.deadline = batch.created + self.delivery_timeout_s
            self._open[(topic, partition)] = batch
            self._unfinished.add(batch)
            self._sender.ensure_running()
        future = batch.append(
            time.time_ns() // 1_000_000 if timestamp is None else timestamp, key, value, headers,
            size,
        )  # fmt: skip
        if batch.size_bytes >= self.batch_size:
            self._seal(batch)
        return future

    async def _reserve(self, size: int) -> None:
        """Back-pressure: wait (up to max_block_ms) until buffer_memory has room for `size`."""
        if self._buffered + size > self.buffer_memory:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.max_block_s
            while self._buffered + size > self.buffer_memory:
                self._space.clear()
                remaining = deadline - loop.time()
                try:
                    async with asyncio.timeout(max(0.0, remaining)):
                        await self._space.wait()
                except TimeoutError:
                    raise KafkaTimeoutError(
                        f"buffer_memory ({self.buffer_memory} bytes) stayed full for "
                        f"max_block_ms={int(self.max_block_s * 1000)}: the cluster is not keeping "
                        "up with this producer"
                    ) from None
        self._buffered += size

    def _release(self, batch: ProducerBatch) -> None:
        if batch.on_release is not None:
            batch.on_release(batch)
        else:
            self._buffered -= batch.size_bytes
            self._space.set()

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

    def choose_partition(
        self, topic: str, key: bytes | None, partition: int | None, count: int
    ) -> int:
        if partition is None:
            return self.partitioner.partition(topic, key, count)
        if not 0 <= partition < count:
            raise FatalError(
                common_pb2.UNKNOWN_TOPIC_OR_PARTITION,
                f"topic {topic!r} has partitions 0..{count - 1}, not {partition}",
            )
        return partition

    def submit_batch(self, batch: ProducerBatch) -> None:
        """Queue a whole batch built elsewhere (the synchronous facade); loop thread only."""
        loop = asyncio.get_running_loop()
        batch.created = loop.time()
        batch.deadline = batch.created + self.delivery_timeout_s
        self._unfinished.add(batch)
        self._sender.submit(batch)

    def _seal(self, batch: ProducerBatch) -> None:
        if self._open.get((batch.topic, batch.partition)) is batch:
            del self._open[(batch.topic, batch.partition)]
        self.partitioner.on_new_batch(batch.topic, batch.partition, batch.num_partitions)
        self._sender.submit(batch)

    async def flush(self, timeout_s: float | None = None) -> None:
        """Send everything queued and wait for every outstanding record's answer."""
        for batch in list(self._open.values()):
            self._seal(batch)
        if self._unfinished:
            self._sender.ensure_running()
            waiters = {batch.result.waiter() for batch in self._unfinished}
            await asyncio.wait(waiters, timeout=timeout_s)

    async def close(self) -> None:
        if self._closed:
            return
        await self.flush()
        self._closed = True
        await self._sender.stop()
        await self.cluster.close()

    # ---- what the sender needs -----------------------------------------------------------

    @property
    def has_open_batches(self) -> bool:
        return bool(self._open)

    def seal_lingering(self, held: Container[tuple[str, int]] = ()) -> float | None:
        """Seal the open batches that waited linger_ms, except those of `held` partitions (they
        cannot be sent yet: records keep joining them until the sender can take them, as in
        Kafka's accumulator, so a busy producer sends fewer, fuller batches). Returns seconds
        until the next open batch's linger ends; None when none is still lingering (a held one
        is sealed when its partition's answer wakes the sender)."""
        if not self._open:
            return None
        now = asyncio.get_running_loop().time()
        due_s = None
        for key, batch in list(self._open.items()):
            left_s = batch.created + self.linger_s - now
            if left_s > 0:
                due_s = left_s if due_s is None else min(due_s, left_s)
            elif key not in held:
                self._seal(batch)
        return due_s

    async def ensure_producer_id(self) -> None:
        if not self.idempotent or self.producer_id >= 0:
            return
        async with self._producer_id_lock:
            if self.producer_id >= 0:
                return
            response = await self.cluster.call_any(
                lambda a: self.cluster.broker_stub(a).InitProducerId,
                broker_pb2.InitProducerIdRequest(),
            )
            if response.error_code != common_pb2.NONE:
                raise error_from_code(response.error_code, response.error_message)
            self.producer_id, self.producer_epoch = response.producer_id, response.producer_epoch

    def reset_producer_id(self) -> None:
        """Forget the producer id and every sequence: the next batch starts a fresh id at 0."""
        self.producer_id = self.producer_epoch = -1
        self._next_sequence.clear()

    def encode(self, batch: ProducerBatch) -> bytes:
        """The batch's bytes, sealed on first use with the next sequence of its partition."""
        if batch.encoded is None:
            sequence = -1
            if self.idempotent:
                key = (batch.topic, batch.partition)
                sequence = self._next_sequence.get(key, 0)
                self._next_sequence[key] = (sequence + batch.record_count) % (1 << 31)
            batch.encoded = batch.builder.build(
                compression=self.compression,
                producer_id=self.producer_id if self.idempotent else -1,
                producer_epoch=self.producer_epoch if self.idempotent else -1,
                base_sequence=sequence,
            )
        return batch.encoded

    def complete(self, batch: ProducerBatch, base_offset: int) -> None:
        self._release(batch)
        self._unfinished.discard(batch)
        batch.result.has_offsets = self.acks != 0 and base_offset >= 0
        batch.result.complete(base_offset)

    def fail(self, batch: ProducerBatch, error: Exception) -> None:
        self._release(batch)
        self._unfinished.discard(batch)
        batch.result.complete(-1, error)


class Producer:
    """Synchronous producer over AsyncProducer. `send()` encodes the record into its partition's
    batch in the caller's thread (like Java's RecordAccumulator); only whole batches cross to the
    client's loop thread, when full or after `linger_ms`. Returns `RecordFuture`s, which behave
    like concurrent.futures.Future (`result`, `exception`, `add_done_callback`)."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "localhost:9092", **options: Any):
        self._loop = LoopThread("strom-producer")
        self._async: AsyncProducer = self._loop.run(
            _make_async_producer(bootstrap_servers, options)
        )
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        # buffer_memory in use = reserved - released. Each counter has one writer (callers under
        # the lock; the loop thread), so finishing a batch never takes the senders' lock.
        self._reserved = 0
        self._released = 0
        self._waiting_for_space = False
        self._open: dict[tuple[str, int], ProducerBatch] = {}
        self._outstanding: set[ProducerBatch] = set()  # sealed, not yet answered
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
        size = producer.check_record(key, value, headers)
        meta = producer.cluster.meta.topics.get(topic)
        if meta is None:
            meta = self._loop.run(producer.cluster.topic(topic, allow_auto_topic_creation=True))
        count = len(meta.partitions)
        now_ms = time.time_ns() // 1_000_000
        sealed = []
        with self._lock:
            if self._reserved - self._released + size > producer.buffer_memory:
                self._wait_for_space(size)
            chosen = producer.choose_partition(topic, key, partition, count)
            self._reserved += size
            batch = self._open.get((topic, chosen))
            # The caller seals what has lingered long enough: a busy producer never needs the
            # loop thread's timer, which would have to take this lock (see _linger).
            if batch is not None and (
                batch.size_bytes + size > producer.batch_size
                or now_ms - batch.created_ms >= producer.linger_ms
            ):
                sealed.append(self._take(batch))
                batch = None
            if batch is None:
                batch = ProducerBatch(topic, chosen, count)
                batch.created_ms = now_ms
                batch.on_release = self._release
                self._open[(topic, chosen)] = batch
                self._loop.loop.call_soon_threadsafe(self._linger, batch)
            future = batch.append(now_ms if timestamp is None else timestamp, key, value, headers,
                                  size)  # fmt: skip
            if batch.size_bytes >= producer.batch_size:
                sealed.append(self._take(batch))
        for full in sealed:
            self._loop.loop.call_soon_threadsafe(producer.submit_batch, full)
        return future

    def _wait_for_space(self, size: int) -> None:
        """Back-pressure: block the caller while buffer_memory is full (max_block_ms); the caller
        holds the lock."""
        producer = self._async
        self._waiting_for_space = True
        try:
            if not self._space.wait_for(
                lambda: self._reserved - self._released + size <= producer.buffer_memory,
                producer.max_block_s,
            ):
                raise KafkaTimeoutError(
                    f"buffer_memory ({producer.buffer_memory} bytes) stayed full for "
                    f"max_block_ms={int(producer.max_block_s * 1000)}"
                )
        finally:
            self._waiting_for_space = False

    def _release(self, batch: ProducerBatch) -> None:
        """Loop thread: a batch is done; its bytes leave the buffer and it leaves the
        outstanding set (a set's discard is atomic). Only a blocked sender is woken (under the
        lock), so the common case takes no lock."""
        self._outstanding.discard(batch)
        self._released += batch.size_bytes
        if self._waiting_for_space:
            with self._space:
                self._space.notify_all()

    def _take(self, batch: ProducerBatch) -> ProducerBatch:
        """Seal `batch`: no more records join it (caller holds the lock)."""
        if self._open.get((batch.topic, batch.partition)) is batch:
            del self._open[(batch.topic, batch.partition)]
        self._outstanding.add(batch)
        self._async.partitioner.on_new_batch(batch.topic, batch.partition, batch.num_partitions)
        return batch

    def _linger(self, batch: ProducerBatch) -> None:
        """Loop thread: seal `batch` if the caller has not, for a producer gone quiet. It waits
        one linger_ms more than the caller would (a busy caller seals on its next send), so the
        two rarely meet on the lock."""

        def expire() -> None:
            if self._open.get((batch.topic, batch.partition)) is not batch:
                return  # sealed already (a dict read is atomic: no lock needed to look)
            with self._lock:
                if self._open.get((batch.topic, batch.partition)) is not batch:
                    return
                self._take(batch)
            self._async.submit_batch(batch)

        linger_s = self._async.linger_s
        asyncio.get_running_loop().call_later(2 * linger_s + 0.001, expire)

    def flush(self, timeout_s: float | None = None) -> None:
        """Send every open batch and wait for every outstanding batch's answer."""
        with self._lock:
            batches = [self._take(b) for b in list(self._open.values())]
        for batch in batches:
            self._loop.loop.call_soon_threadsafe(self._async.submit_batch, batch)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            waiting = list(self._outstanding)
        for batch in waiting:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not batch.result.wait(remaining):
                return

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
