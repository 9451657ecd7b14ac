"""The record accumulator: open batches per partition, the buffer_memory bound, and ready batches
drained per broker for the sender (Kafka's RecordAccumulator, aiokafka's MessageAccumulator).

Both producers append here: `AsyncProducer` on the client's loop thread, the synchronous
`Producer` in its callers' threads (a record is encoded in the caller's thread; only whole
batches reach the loop). `lock` guards the batch table, the partitioner and the reserved-bytes
counter. The loop thread takes it to drain, once per sender turn; appending threads hold it
around `append` (and `wait_for_room`). The async producer appends on the loop thread itself, so
it needs no lock to append: an uncontended lock costs as much as a fifth of a send.

A partition has at most one open batch, and sealed ones waiting, oldest first. A batch is
sealed when it is full, when `seal_all` (flush) asks, or when the sender drains it after it has
waited linger_ms. A partition the sender cannot send to yet is not drained, so its lingered
batch stays open and keeps filling: a busy producer sends fewer, fuller batches.

buffer_memory counts every record's accounted bytes from `append` until its batch is answered
(`complete` or `fail`, loop thread). `reserved` is written under the lock, `released` by the
loop thread only, so an answer never waits for a sending thread's lock; the in-use bytes are the
difference.

Time is read only through the injected `clock` (monotonic seconds): linger and delivery
deadlines. Record timestamps are wall-clock and chosen by the producers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from .errors import KafkaTimeoutError
from .partitioner import Partitioner
from .producer_batch import ProducerBatch, RecordFuture

Key = tuple[str, int]


class RecordAccumulator:
    def __init__(
        self,
        *,
        batch_size: int,
        linger_ms: int,
        buffer_memory: int,
        max_block_ms: int,
        delivery_timeout_ms: int,
        partitioner: Partitioner,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.batch_size = batch_size
        self.linger_s = linger_ms / 1000
        self.buffer_memory = buffer_memory
        self.max_block_s = max_block_ms / 1000
        self.delivery_timeout_s = delivery_timeout_ms / 1000
        self.partitioner = partitioner
        self.clock = clock
        self.lock = threading.Lock()
        self._space = threading.Condition(self.lock)  # threads blocked in wait_for_room
        self._space_async = asyncio.Event()  # the loop's producer blocked in wait_for_space
        self._blocked_threads = 0
        self._reserved = 0
        self._released = 0
        self._open: dict[Key, ProducerBatch] = {}  # at most one per partition, filling
        self._sealed: dict[Key, deque[ProducerBatch]] = {}  # full or lingered, oldest first
        self.unfinished: set[ProducerBatch] = set()  # appended to, not yet answered

    # ---- the buffer_memory bound -----------------------------------------------------------

    @property
    def reserved(self) -> int:
        return self._reserved

    @property
    def released(self) -> int:
        return self._released

    @property
    def buffered(self) -> int:
        """Bytes of records appended and not yet answered (or reserved for one being sent)."""
        return self._reserved - self._released

    def _fits(self, size: int) -> bool:
        return self._reserved - self._released + size <= self.buffer_memory

    async def wait_for_space(self, size: int, deadline: float) -> None:
        """Back-pressure on the loop thread: wait until `size` bytes would fit (they are not
        reserved: the caller tries again), failing at `deadline` (clock seconds)."""
        while not self._fits(size):
            # No await between the check and clear(): releases run on this same loop.
            self._space_async.clear()
            try:
                async with asyncio.timeout(max(0.0, deadline - self.clock())):
                    await self._space_async.wait()
            except TimeoutError:
                raise self._full_error() from None

    async def reserve_async(self, size: int) -> None:
        """Reserve `size` bytes on the loop thread without a record, waiting up to max_block_ms
        for room (the buffer tests fill the buffer this way)."""
        await self.wait_for_space(size, self.clock() + self.max_block_s)
        self._reserved += size

    def wait_for_room(self, size: int) -> None:
        """Back-pressure in a sending thread, which holds `lock`: block up to max_block_ms until
        `size` bytes fit."""
        # Counted before the predicate is first checked: a release that the check missed then
        # sees the count and notifies (see release).
        self._blocked_threads += 1
        try:
            if not self._space.wait_for(lambda: self._fits(size), self.max_block_s):
                raise self._full_error()
        finally:
            self._blocked_threads -= 1

    def _full_error(self) -> KafkaTimeoutError:
        return KafkaTimeoutError(
            f"buffer_memory ({self.buffer_memory} bytes) stayed full for "
            f"max_block_ms={int(self.max_block_s * 1000)}: the cluster is not keeping up with "
            "this producer"
        )

    def release(self, batch: ProducerBatch) -> None:
        """Loop thread: the batch is answered; its bytes leave the buffer. Only a blocked thread
        makes this take the lock."""
        self.unfinished.discard(batch)
        self._released += batch.size_bytes
        if self._blocked_threads:
            with self._space:
                self._space.notify_all()
        self._space_async.set()

    # ---- appending ---------------------------------------------------------------------------

    def append(
        self,
        topic: str,
        partition: int | None,
        num_partitions: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        size: int,
    ) -> tuple[RecordFuture, bool] | None:
        """Reserve `size` bytes of buffer_memory for one record and encode it into its
        partition's open batch (`partition` None: the partitioner chooses). Without room, None
        is returned and nothing changes (see `wait_for_space`, `wait_for_room`). Returns the
        record's future and whether the sender must look: a batch was opened (its linger starts)
        or sealed full. A caller off the loop thread holds `lock`."""
        if self._reserved - self._released + size > self.buffer_memory:
            return None
        self._reserved += size
        if partition is None:
            partition = self.partitioner.partition(topic, key, num_partitions)
        batch = self._open.get((topic, partition))
        if batch is None or batch.size_bytes + size > self.batch_size:
            batch = self._new_batch(topic, partition, num_partitions, batch)
            wake = True
        else:
            wake = False
        future = batch.append(timestamp_ms, key, value, headers, size)
        if batch.size_bytes >= self.batch_size:
            self._seal(batch)
            wake = True
        return future, wake

    def _new_batch(
        self, topic: str, partition: int, num_partitions: int, full: ProducerBatch | None
    ) -> ProducerBatch:
        """Open the partition's next batch, sealing `full`, its open one (on the loop thread or holding `lock`)."""
        if full is not None:
            self._seal(full)
        batch = ProducerBatch(topic, partition, num_partitions)
        batch.created = now = self.clock()
        batch.deadline = now + self.delivery_timeout_s
        self._open[(topic, partition)] = batch
        self.unfinished.add(batch)
        return batch

    def _seal(self, batch: ProducerBatch) -> None:
        """No more records join `batch`: it waits to be drained (on the loop thread or holding `lock`)."""
        key = (batch.topic, batch.partition)
        del self._open[key]
        sealed = self._sealed.get(key)
        if sealed is None:
            sealed = self._sealed[key] = deque()
        sealed.append(batch)
        self.partitioner.on_new_batch(batch.topic, batch.partition, batch.num_partitions)

    def seal_all(self) -> None:
        """Flush: every open batch is ready now, lingered or not."""
        with self.lock:
            for batch in list(self._open.values()):
                self._seal(batch)

    # ---- what the sender takes ---------------------------------------------------------------

    @property
    def has_batches(self) -> bool:
        """Batches waiting here, open or sealed (a dict's truth is read atomically)."""
        return bool(self._open or self._sealed)

    def drain(
        self, room: Callable[[Key], int], leader_of: Callable[[Key], int]
    ) -> tuple[dict[int, list[ProducerBatch]], float | None]:
        """Take the ready batches, at most `room(partition)` per partition, oldest first, grouped
        by their partition's leader. Returns them and the seconds until the next open batch's
        linger ends (None when no open batch is still lingering: one kept open because its
        partition had no room is taken when an answer makes room and wakes the sender)."""
        now = self.clock()
        drained: dict[int, list[ProducerBatch]] = {}
        due_s: float | None = None
        with self.lock:
            for key in [*self._sealed, *(k for k in self._open if k not in self._sealed)]:
                free = room(key)
                sealed = self._sealed.get(key)
                while sealed and free > 0:
                    drained.setdefault(leader_of(key), []).append(sealed.popleft())
                    free -= 1
                if sealed is not None and not sealed:
                    del self._sealed[key]
                batch = self._open.get(key)
                if batch is None:
                    continue
                left_s = batch.created + self.linger_s - now
                if left_s > 0:
                    due_s = left_s if due_s is None else min(due_s, left_s)
                elif free > 0:
                    self._seal(batch)
                    drained.setdefault(leader_of(key), []).append(self._sealed[key].popleft())
                    del self._sealed[key]
        return drained, due_s

    def complete(self, batch: ProducerBatch, base_offset: int, has_offsets: bool) -> None:
        self.release(batch)
        batch.result.has_offsets = has_offsets
        batch.result.complete(base_offset)

    def fail(self, batch: ProducerBatch, error: BaseException) -> None:
        self.release(batch)
        batch.result.complete(-1, error)
