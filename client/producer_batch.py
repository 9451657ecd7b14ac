"""A producer batch and the futures of its records (Kafka's ProducerBatch, ProduceRequestResult
and FutureRecordMetadata).

Records are encoded into the batch's bytes as they are sent (`BatchBuilder`); no record objects
are kept. The batch has one `BatchResult`, completed once, on the client's loop thread, with the
base offset or an error. Each record's future is a small `RecordFuture` pointing at that result
and its own index, so a send costs no lock, event or loop callback of its own: waiting, awaiting
and callbacks all go through the batch's result.

A `RecordFuture` behaves like both future kinds the SDK returned before: `result(timeout)`,
`exception(timeout)`, `done()`, `add_done_callback(fn)` (called with the future, on the loop
thread, in send order) as concurrent.futures, and `await future` as asyncio.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import Any

from strom.storage.record_batch import BatchBuilder

from .records import RecordMetadata

log = logging.getLogger(__name__)


class BatchResult:
    """The outcome of one batch: its base offset, or the error that failed it."""

    __slots__ = (
        "_callbacks",
        "_done",
        "_event",
        "_lock",
        "_waiters",
        "base_offset",
        "error",
        "has_offsets",
        "partition",
        "topic",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.has_offsets = True
        self.base_offset = -1
        self.error: BaseException | None = None
        self._done = False
        self._lock = threading.Lock()
        self._event: threading.Event | None = None
        # A deque, not a list under the lock: append and popleft are atomic, so a send() adding
        # its callback never waits for the loop thread completing the batch (see add_callback).
        self._callbacks: deque[tuple[Callable[[RecordFuture], object], RecordFuture]] = deque()
        self._waiters: list[asyncio.Future[None]] = []

    def done(self) -> bool:
        return self._done

    def complete(self, base_offset: int, error: BaseException | None = None) -> None:
        """Set the outcome once (later calls are ignored); run callbacks; wake waiters."""
        with self._lock:
            if self._done:
                return
            self.base_offset = base_offset
            self.error = error
            self._done = True
            event, waiters = self._event, self._waiters
        if event is not None:
            event.set()
        for waiter in waiters:
            if not waiter.done():
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)
        self._run_callbacks()

    def _run_callbacks(self) -> None:
        """Run each queued callback exactly once (popleft is atomic), in the order added."""
        callbacks = self._callbacks
        while callbacks:
            try:
                callback, future = callbacks.popleft()
            except IndexError:  # another thread took the last one
                return
            _run_callback(callback, future)

    def wait(self, timeout_s: float | None) -> bool:
        """Block the calling thread until done (or `timeout_s`); True if done."""
        if self._done:
            return True
        with self._lock:
            if self._done:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout_s)

    def add_callback(
        self, callback: Callable[[RecordFuture], object], future: RecordFuture
    ) -> None:
        # Queue first, then look at `_done`: if complete() set it before our append, its drain may
        # have missed this callback, so drain here; if after, its drain runs it. Either way once.
        self._callbacks.append((callback, future))
        if self._done:
            self._run_callbacks()

    def waiter(self) -> asyncio.Future[None]:
        """An asyncio future of the running loop, resolved when the batch is done."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if not self._done:
                self._waiters.append(waiter)
                return waiter
        waiter.set_result(None)
        return waiter


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _run_callback(callback: Callable[[RecordFuture], object], future: RecordFuture) -> None:
    try:
        callback(future)
    except Exception:  # as concurrent.futures: a failing callback must not stop the others
        log.exception("a producer send() callback raised")


class RecordFuture:
    """The future `send()` returns: where the record landed, once its batch is acknowledged."""

    __slots__ = ("_index", "_result", "_timestamp")

    def __init__(self, result: BatchResult, index: int, timestamp_ms: int) -> None:
        self._result = result
        self._index = index
        self._timestamp = timestamp_ms

    def done(self) -> bool:
        return self._result._done

    def cancelled(self) -> bool:
        return False

    def _value(self) -> RecordMetadata:
        result = self._result
        if result.error is not None:
            raise result.error
        offset = result.base_offset + self._index if result.has_offsets else -1
        return RecordMetadata(result.topic, result.partition, offset, self._timestamp)

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Block until acknowledged (a loop-thread caller must only ask once `done()`)."""
        if not self._result.wait(timeout):
            raise TimeoutError(f"the record was not acknowledged within {timeout} s")
        return self._value()

    get = result  # kafka-python's name

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self._result.wait(timeout):
            raise TimeoutError(f"the record was not acknowledged within {timeout} s")
        return self._result.error

    def add_done_callback(self, fn: Callable[[RecordFuture], object]) -> None:
        self._result.add_callback(fn, self)

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        if not self._result._done:
            yield from self._result.waiter().__await__()
        return self._value()


class ProducerBatch:
    """Records for one partition, encoded as they arrive, sent and retried as one unit."""

    __slots__ = (
        "builder",
        "created",
        "deadline",
        "encoded",
        "num_partitions",
        "order",
        "partition",
        "result",
        "size_bytes",
        "topic",
    )

    def __init__(self, topic: str, partition: int, num_partitions: int = 1) -> None:
        self.topic = topic
        self.partition = partition
        self.num_partitions = num_partitions
        self.builder = BatchBuilder()
        self.result = BatchResult(topic, partition)
        self.size_bytes = 0  # what buffer_memory accounts for this batch
        self.created = 0.0  # accumulator clock when opened: linger and delivery deadline start
        self.deadline = 0.0
        self.encoded: bytes | None = None  # encoded once, on first dispatch; retries resend it
        self.order = -1  # dispatch order among the producer's batches (the sender sets it)

    @property
    def record_count(self) -> int:
        return self.builder.count

    def append(
        self,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        accounted_bytes: int,
    ) -> RecordFuture:
        """Encode one record into the batch; `accounted_bytes` is what the caller reserved for
        it against buffer_memory (released with the batch)."""
        index = self.builder.count
        self.builder.append(timestamp_ms, key, value, headers)
        self.size_bytes += accounted_bytes
        return RecordFuture(self.result, index, timestamp_ms)
