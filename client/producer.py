"""The producer: per-partition batching, routing to partition leaders, retries.

`AsyncProducer.send()` appends a record to its partition's open batch and returns a future of
its `RecordMetadata`. A batch is sent when it reaches `batch_size` bytes or has waited
`linger_ms`; every ready batch for one leader broker travels in one Produce request. Retriable
errors (a leader moved, not enough replicas for now) refresh metadata and retry with backoff
until `delivery_timeout_ms`; fatal ones fail the batch's futures with a typed error. One batch
per partition is in flight at a time, so retries never reorder a partition's records.

Partitioning follows Kafka: murmur2 of the key, round-robin without a key (the seed document's
M1→P0, M2→P1, ...), or the partition the caller names.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from strom.storage.record_batch import Compression, Record, encode_batch
from strom.v1 import broker_pb2, common_pb2

from ._loop import LoopThread
from .cluster import Backoff, ClusterClient
from .errors import METADATA_STALE, FatalError, KafkaTimeoutError, StromError, error_from_code
from .partitioner import make_partitioner
from .records import RecordMetadata

RECORD_OVERHEAD_BYTES = 24  # a record's framing, roughly, for batch size accounting
_ACKS = {"all": -1, "-1": -1, -1: -1, "1": 1, 1: 1, "0": 0, 0: 0}
_COMPRESSION = {None: Compression.NONE, "none": Compression.NONE, "gzip": Compression.GZIP}


@dataclass(slots=True)
class _Batch:
    topic: str
    partition: int
    records: list[Record] = field(default_factory=list)
    # asyncio futures (AsyncProducer) or concurrent.futures ones (Producer): both are completed
    # only on the loop thread, through set_result / set_exception.
    futures: list[Any] = field(default_factory=list)
    size_bytes: int = 0
    num_partitions: int = 1
    created: float = 0.0
    deadline: float = 0.0
    encoded: bytes | None = None  # encoded once, on first dispatch; retries resend these bytes
    # Returns the batch's bytes to whoever accounts buffer_memory for it (None: the async one).
    on_release: Callable[[int], None] | None = None


class AsyncProducer:
    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        *,
        acks: int | str = "all",
        linger_ms: int = 5,
        batch_size: int = 16_384,
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
        sasl_mechanism: str = "PLAIN",
        sasl_username: str | None = None,
        sasl_password: str | None = None,
    ) -> None:
        if acks not in _ACKS:
            raise FatalError(
                common_pb2.INVALID_REQUIRED_ACKS, f"acks must be all, 1 or 0, got {acks!r}"
            )
        if compression_type not in _COMPRESSION:
            raise FatalError(
                common_pb2.UNSUPPORTED_COMPRESSION_TYPE,
                f"compression_type must be none or gzip, got {compression_type!r}",
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
            sasl_mechanism=sasl_mechanism,
            sasl_username=sasl_username,
            sasl_password=sasl_password,
        )
        self._open: dict[tuple[str, int], _Batch] = {}
        self._ready: list[_Batch] = []
        self._in_flight: set[tuple[str, int]] = set()
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[RecordMetadata]] = set()
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
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record; await the returned future for its metadata."""
        if self._closed:
            raise FatalError(common_pb2.INVALID_REQUEST, "the producer is closed")
        size = self.check_record(key, value, headers)
        meta = await self.cluster.topic(topic, allow_auto_topic_creation=True)
        count = len(meta.partitions)
        partition = self.choose_partition(topic, key, partition, count)
        await self._reserve(size)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RecordMetadata] = loop.create_future()
        ts = int(time.time() * 1000) if timestamp is None else timestamp
        batch = self._open.get((topic, partition))
        if batch is None or batch.size_bytes + size > self.batch_size:
            if batch is not None:
                self._seal(batch)
            now = loop.time()
            batch = _Batch(
                topic, partition, num_partitions=count, created=now,
                deadline=now + self.delivery_timeout_s,
            )  # fmt: skip
            self._open[(topic, partition)] = batch
        batch.records.append(
            Record(bytes(key) if key is not None else None, bytes(value) if value is not None else None,
                   tuple(headers or ()), ts)
        )  # fmt: skip
        batch.futures.append(future)
        batch.size_bytes += size
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        if batch.size_bytes >= self.batch_size:
            self._seal(batch)
        self._ensure_sender()
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

    def _release(self, batch: _Batch) -> None:
        if batch.on_release is not None:
            batch.on_release(batch.size_bytes)
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
        if value is not None and not isinstance(value, bytes | bytearray):
            raise TypeError(f"value must be bytes or None, got {type(value).__name__}")
        if key is not None and not isinstance(key, bytes | bytearray):
            raise TypeError(f"key must be bytes or None, got {type(key).__name__}")
        size = RECORD_OVERHEAD_BYTES + len(key or b"") + len(value or b"")
        size += sum(len(k) + len(v or b"") for k, v in headers or ())
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

    def submit_batch(self, batch: _Batch) -> None:
        """Queue a whole batch built elsewhere (the synchronous facade); loop thread only."""
        loop = asyncio.get_running_loop()
        batch.created = loop.time()
        batch.deadline = batch.created + self.delivery_timeout_s
        self._ready.append(batch)
        self._wake.set()
        self._ensure_sender()

    def _seal(self, batch: _Batch) -> None:
        if self._open.get((batch.topic, batch.partition)) is batch:
            del self._open[(batch.topic, batch.partition)]
        self._ready.append(batch)
        self.partitioner.on_new_batch(batch.topic, batch.partition, batch.num_partitions)
        self._wake.set()

    def _ensure_sender(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    async def flush(self, timeout_s: float | None = None) -> None:
        """Send everything queued and wait for every outstanding record's answer."""
        for batch in list(self._open.values()):
            self._seal(batch)
        if self._pending:
            self._ensure_sender()
            await asyncio.wait(set(self._pending), timeout=timeout_s)

    async def close(self) -> None:
        if self._closed:
            return
        await self.flush()
        self._closed = True
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        await self.cluster.close()

    # ---- the sender --------------------------------------------------------------------

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._open or self._ready or self._in_flight:
            now = loop.time()
            for batch in list(self._open.values()):
                if now - batch.created >= self.linger_s:
                    self._seal(batch)
            # One batch per partition at a time, oldest first: it keeps a partition's records
            # in order across retries, and one Produce answer per partition is unambiguous.
            sendable = []
            for batch in list(self._ready):
                key = (batch.topic, batch.partition)
                if key not in self._in_flight:
                    self._ready.remove(batch)
                    self._in_flight.add(key)
                    sendable.append(batch)
            if sendable:
                await self._dispatch(sendable)
            self._wake.clear()
            wait = self.linger_s
            if self._open:
                oldest = min(b.created for b in self._open.values())
                wait = max(0.0, oldest + self.linger_s - loop.time())
            try:
                async with asyncio.timeout(wait if (self._open or self._ready) else 1.0):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _dispatch(self, batches: list[_Batch]) -> None:
        by_leader: dict[int, list[_Batch]] = {}
        for batch in batches:
            meta = self.cluster.meta.topics.get(batch.topic)
            part = meta.partitions.get(batch.partition) if meta else None
            leader = part.leader if part else -1
            by_leader.setdefault(leader, []).append(batch)
        for leader, group in by_leader.items():
            asyncio.get_running_loop().create_task(self._produce(leader, group))

    async def _ensure_producer_id(self) -> None:
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

    def _encode(self, batch: _Batch) -> bytes:
        if batch.encoded is None:
            sequence = -1
            if self.idempotent:
                key = (batch.topic, batch.partition)
                sequence = self._next_sequence.get(key, 0)
                self._next_sequence[key] = (sequence + len(batch.records)) % (1 << 31)
            batch.encoded = encode_batch(
                batch.records,
                compression=self.compression,
                producer_id=self.producer_id if self.idempotent else -1,
                producer_epoch=self.producer_epoch if self.idempotent else -1,
                base_sequence=sequence,
            )
        return batch.encoded

    async def _produce(self, leader: int, batches: list[_Batch]) -> None:
        retry: list[_Batch] = []
        try:
            await self._ensure_producer_id()
            address = self.cluster.address_of(leader)
            if address is None:
                raise error_from_code(
                    common_pb2.LEADER_NOT_AVAILABLE, f"no leader known ({leader})"
                )
            request = broker_pb2.ProduceRequest(acks=self.acks, timeout_ms=self.request_timeout_ms)
            by_topic: dict[str, Any] = {}
            for batch in batches:
                topic = by_topic.get(batch.topic)
                if topic is None:
                    topic = by_topic[batch.topic] = request.topics.add(name=batch.topic)
                topic.partitions.add(partition=batch.partition, records=self._encode(batch))
            response = await self.cluster.call(
                address,
                self.cluster.broker_stub(address).Produce,
                request,
                self.request_timeout_ms / 1000 + 5,
            )
            results = {(t.name, p.partition): p for t in response.topics for p in t.partitions}
            for batch in batches:
                result = results.get((batch.topic, batch.partition))
                if result is None:
                    retry.append(batch)
                    continue
                if result.error_code == common_pb2.NONE:
                    self._complete(batch, result.base_offset)
                    continue
                error = error_from_code(result.error_code, result.error_message)
                if result.error_code in METADATA_STALE:
                    self.cluster.invalidate(batch.topic)
                if error.retriable:
                    retry.append(batch)
                else:
                    self._fail(batch, error)
        except StromError as exc:
            if not exc.retriable:
                for batch in batches:
                    self._fail(batch, exc)
            else:
                for batch in batches:
                    self.cluster.invalidate(batch.topic)
                retry = batches
        finally:
            for batch in batches:
                if batch not in retry:
                    self._in_flight.discard((batch.topic, batch.partition))
        if retry:
            await self._retry(retry)

    async def _retry(self, batches: list[_Batch]) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.cluster.retry_backoff_ms, self.cluster.retry_backoff_max_ms)
        await asyncio.sleep(backoff.next_delay_s())
        live = []
        for batch in batches:
            if loop.time() > batch.deadline:
                self._in_flight.discard((batch.topic, batch.partition))
                self._fail(
                    batch,
                    KafkaTimeoutError(
                        f"{batch.topic}-{batch.partition}: not delivered within "
                        f"delivery_timeout_ms={int(self.delivery_timeout_s * 1000)}"
                    ),
                )
            else:
                live.append(batch)
        if not live:
            return
        try:
            for topic in {b.topic for b in live}:
                await self.cluster.topic(topic)
        except StromError:
            pass
        # Retried batches go first for their partitions: they are still marked in flight.
        await self._dispatch_retry(live)

    async def _dispatch_retry(self, batches: list[_Batch]) -> None:
        by_leader: dict[int, list[_Batch]] = {}
        for batch in batches:
            meta = self.cluster.meta.topics.get(batch.topic)
            part = meta.partitions.get(batch.partition) if meta else None
            by_leader.setdefault(part.leader if part else -1, []).append(batch)
        await asyncio.gather(*(self._produce(leader, group) for leader, group in by_leader.items()))
        self._wake.set()

    def _complete(self, batch: _Batch, base_offset: int) -> None:
        self._release(batch)
        for i, (record, future) in enumerate(zip(batch.records, batch.futures, strict=True)):
            if not future.done():
                offset = base_offset + i if self.acks != 0 and base_offset >= 0 else -1
                future.set_result(
                    RecordMetadata(batch.topic, batch.partition, offset, record.timestamp_ms)
                )
        self._wake.set()

    def _fail(self, batch: _Batch, error: Exception) -> None:
        self._release(batch)
        for future in batch.futures:
            if not future.done():
                future.set_exception(error)
        self._wake.set()


class Producer:
    """Synchronous producer over AsyncProducer. `send()` appends to a per-partition batch in the
    caller's thread (like Java's RecordAccumulator); only whole batches cross to the client's
    loop thread, when full or after `linger_ms`. Returns concurrent.futures.Future objects."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "localhost:9092", **options: Any):
        self._loop = LoopThread("strom-producer")
        self._async: AsyncProducer = self._loop.run(
            _make_async_producer(bootstrap_servers, options)
        )
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._buffered = 0
        self._open: dict[tuple[str, int], _Batch] = {}
        self._outstanding: set[concurrent.futures.Future[RecordMetadata]] = set()
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
    ) -> concurrent.futures.Future[RecordMetadata]:
        if self._closed:
            raise FatalError(common_pb2.INVALID_REQUEST, "the producer is closed")
        producer = self._async
        size = producer.check_record(key, value, headers)
        meta = producer.cluster.meta.topics.get(topic)
        if meta is None:
            meta = self._loop.run(producer.cluster.topic(topic, allow_auto_topic_creation=True))
        count = len(meta.partitions)
        future: concurrent.futures.Future[RecordMetadata] = concurrent.futures.Future()
        record = Record(
            bytes(key) if key is not None else None,
            bytes(value) if value is not None else None,
            tuple(headers or ()),
            int(time.time() * 1000) if timestamp is None else timestamp,
        )
        to_send = []
        with self._lock:
            # Back-pressure: block the caller while buffer_memory is full (max_block_ms).
            if not self._space.wait_for(
                lambda: self._buffered + size <= producer.buffer_memory, producer.max_block_s
            ):
                raise KafkaTimeoutError(
                    f"buffer_memory ({producer.buffer_memory} bytes) stayed full for "
                    f"max_block_ms={int(producer.max_block_s * 1000)}"
                )
            chosen = producer.choose_partition(topic, key, partition, count)
            self._buffered += size
            batch = self._open.get((topic, chosen))
            if batch is None or batch.size_bytes + size > producer.batch_size:
                if batch is not None:
                    to_send.append(self._take(batch))
                batch = _Batch(topic, chosen, num_partitions=count, on_release=self._release)
                self._open[(topic, chosen)] = batch
                self._loop.loop.call_soon_threadsafe(self._linger, batch)
            batch.records.append(record)
            batch.futures.append(future)
            batch.size_bytes += size
            self._outstanding.add(future)
            if batch.size_bytes >= producer.batch_size:
                to_send.append(self._take(batch))
        future.add_done_callback(self._outstanding.discard)
        for sealed in to_send:
            self._loop.loop.call_soon_threadsafe(self._async.submit_batch, sealed)
        return future

    def _release(self, size: int) -> None:
        """Loop thread: a batch is done; its bytes leave the buffer."""
        with self._space:
            self._buffered -= size
            self._space.notify_all()

    def _take(self, batch: _Batch) -> _Batch:
        """Seal `batch`: no more records join it (caller holds the lock)."""
        if self._open.get((batch.topic, batch.partition)) is batch:
            del self._open[(batch.topic, batch.partition)]
        self._async.partitioner.on_new_batch(batch.topic, batch.partition, batch.num_partitions)
        return batch

    def _linger(self, batch: _Batch) -> None:
        """Loop thread: seal `batch` after linger_ms if the caller has not filled it."""

        def expire() -> None:
            with self._lock:
                if self._open.get((batch.topic, batch.partition)) is not batch:
                    return
                self._take(batch)
            self._async.submit_batch(batch)

        asyncio.get_running_loop().call_later(self._async.linger_s, expire)

    def flush(self, timeout_s: float | None = None) -> None:
        with self._lock:
            batches = [self._take(b) for b in list(self._open.values())]
        for batch in batches:
            self._loop.loop.call_soon_threadsafe(self._async.submit_batch, batch)
        concurrent.futures.wait(set(self._outstanding), timeout=timeout_s)

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
