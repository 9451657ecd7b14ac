"""The producer's sender: ready batches to partition leaders, pipelined, retried in order.

It depends on the cluster, the record accumulator (client/producer_accumulator.py: it drains
ready batches from it and hands answered ones back) and the sequence state
(client/producer_sequences.py), never on a producer: both producers share it.

Up to `max_in_flight` batches per partition are on the wire at once (Kafka's
max.in.flight.requests.per.connection, default 5): one batch per round trip would cap a
partition at batch_size / RTT, and with acks=all a round trip includes the followers' fetches.

Order survives retries. Until a partition's leader has acknowledged one batch of the producer
id, the partition sends one batch at a time (a leader takes any first sequence from a producer it
does not know yet). Batches of a partition are dispatched, and given their idempotence
sequence numbers, in the order they were sealed. When one fails with a retriable error the
partition stops sending new batches, waits for its in-flight ones to answer, then resends every
failed batch one at a time, oldest first, before new batches flow again. A later batch that the
leader refused as out of order (OUT_OF_ORDER_SEQUENCE_NUMBER, because an earlier one never
arrived) is retriable while an earlier batch of its partition is unresolved; otherwise it is a
real gap and fatal. A retried batch the leader already has comes back as a duplicate with its
original offsets (the broker caches each producer's last five batches).

Without idempotence a retried batch can land after a later one (as in Kafka); acks=all with
idempotence (the default) keeps each partition's records in send order, exactly once.

When a batch outlives delivery_timeout_ms it fails. With idempotence the producer then takes a
new producer id and re-encodes the partition's waiting batches, so they do not carry sequence
numbers after a gap the broker would refuse forever (Kafka bumps the epoch for the same reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

from strom.v1 import broker_pb2, common_pb2

from .cluster import Backoff, ClusterClient
from .errors import METADATA_STALE, KafkaTimeoutError, StromError, error_from_code
from .producer_accumulator import Key, RecordAccumulator
from .producer_batch import ProducerBatch
from .producer_sequences import SequenceState
from .transactions import TransactionManager

log = logging.getLogger(__name__)


class Sender:
    def __init__(
        self,
        cluster: ClusterClient,
        accumulator: RecordAccumulator,
        sequences: SequenceState,
        *,
        acks: int,
        request_timeout_ms: int,
        max_in_flight: int,
        transactions: TransactionManager | None = None,
    ) -> None:
        self.cluster = cluster
        # A transactional producer: each partition joins the transaction before its first
        # batch is sent, and a batch that fails makes the transaction abortable.
        self.transactions = transactions
        self.accumulator = accumulator
        self.sequences = sequences
        self.acks = acks
        self.request_timeout_ms = request_timeout_ms
        self.max_in_flight = max_in_flight
        self.in_flight: dict[Key, deque[ProducerBatch]] = {}  # sent, unanswered, in send order
        self.retrying: dict[Key, list[ProducerBatch]] = {}  # failed, waiting to be resent
        self._resending: set[Key] = set()
        # Partitions whose leader has acknowledged a batch of the current producer id. Until
        # then one batch at a time: a leader accepts any first sequence from a producer it does
        # not know, so a pipelined second batch could land before a first one that failed.
        self.acknowledged: set[Key] = set()
        self._dispatched = 0  # dispatch order of batches, for "is there an earlier one"
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def busy(self) -> bool:
        return bool(self.in_flight or self.retrying)

    def wakeup(self) -> None:
        """Loop thread: the accumulator has a new or newly sealed batch (or a flush)."""
        self.wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        accumulator = self.accumulator
        while accumulator.has_batches or self.busy:
            # Cleared before draining: a wake-up while this turn dispatches starts another turn.
            self.wake.clear()
            drained, next_linger_s = accumulator.drain(self._room, self._leader_of)
            if drained:
                await self._dispatch(drained)
            wait = next_linger_s if next_linger_s is not None else 1.0
            try:
                async with asyncio.timeout(wait):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def _room(self, key: Key) -> int:
        """How many more batches the partition may send now: none while it is retrying (later
        batches must not overtake), else up to its in-flight limit."""
        if key in self.retrying:
            return 0
        pipelined = key in self.acknowledged or not self.sequences.idempotent
        limit = self.max_in_flight if pipelined else 1
        return max(0, limit - len(self.in_flight.get(key, ())))

    def _mark_in_flight(self, batch: ProducerBatch) -> None:
        if batch.order < 0:
            batch.order = self._dispatched
            self._dispatched += 1
        self.in_flight.setdefault((batch.topic, batch.partition), deque()).append(batch)

    async def _dispatch(self, drained: dict[int, list[ProducerBatch]]) -> None:
        if self.transactions is not None:
            keys = {(b.topic, b.partition) for batches in drained.values() for b in batches}
            try:
                await self.transactions.add_partitions(keys)
            except StromError as exc:
                for batches in drained.values():
                    for batch in batches:
                        self.transactions.batch_failed(exc)
                        self.accumulator.fail(batch, exc)
                return
        for batches in drained.values():
            for batch in batches:
                self._mark_in_flight(batch)
        # The producer id first, so that every batch is encoded (and given its sequence
        # numbers) in dispatch order, before any of the produce tasks can interleave.
        with contextlib.suppress(Exception):  # each _produce tries again and reports it
            await self.sequences.ensure_producer_id(self.cluster)
        # One request per leader per round: a request carries at most one batch of a partition
        # (its answer is per partition), so a partition's second batch goes in the next request.
        for leader, batches in drained.items():
            rounds: list[list[ProducerBatch]] = []
            seen: dict[Key, int] = {}
            for batch in batches:
                key = (batch.topic, batch.partition)
                round_ = seen[key] = seen.get(key, -1) + 1
                if round_ == len(rounds):
                    rounds.append([])
                rounds[round_].append(batch)
            for group in rounds:
                self._spawn(self._produce(leader, group))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # The loop keeps only weak references to tasks: hold them until they finish.
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _leader_of(self, key: Key) -> int:
        meta = self.cluster.meta.topics.get(key[0])
        part = meta.partitions.get(key[1]) if meta else None
        return part.leader if part else -1

    # ---- one request ---------------------------------------------------------------------

    async def _produce(self, leader: int, batches: list[ProducerBatch]) -> None:
        cluster = self.cluster
        outcomes: dict[int, tuple[int, Exception | None]] = {}  # id(batch) -> offset, error
        try:
            await self.sequences.ensure_producer_id(cluster)
            address = cluster.address_of(leader)
            if address is None:
                raise error_from_code(common_pb2.LEADER_NOT_AVAILABLE, f"no leader ({leader})")
            request = broker_pb2.ProduceRequest(acks=self.acks, timeout_ms=self.request_timeout_ms)
            by_topic: dict[str, Any] = {}
            for batch in batches:
                topic = by_topic.get(batch.topic)
                if topic is None:
                    topic = by_topic[batch.topic] = request.topics.add(name=batch.topic)
                records = self.sequences.encode(batch)
                topic.partitions.add(partition=batch.partition, records=records)
            response = await cluster.call(
                address, cluster.produce_call(address), request,
                self.request_timeout_ms / 1000 + 5,
            )  # fmt: skip
            results = {(t.name, p.partition): p for t in response.topics for p in t.partitions}
            for batch in batches:
                result = results.get((batch.topic, batch.partition))
                if result is None:
                    missing = error_from_code(common_pb2.NETWORK_EXCEPTION, "no answer for it")
                    outcomes[id(batch)] = (-1, missing)
                elif result.error_code == common_pb2.NONE:
                    outcomes[id(batch)] = (result.base_offset, None)
                else:
                    if result.error_code in METADATA_STALE:
                        cluster.invalidate(batch.topic)
                    refused = error_from_code(result.error_code, result.error_message)
                    outcomes[id(batch)] = (-1, refused)
        except StromError as exc:
            if exc.retriable:
                for batch in batches:
                    cluster.invalidate(batch.topic)
            for batch in batches:
                outcomes[id(batch)] = (-1, exc)
        except Exception as exc:
            # A bug (here or in the cluster client), not an answer: fail the batches with it,
            # so that their futures and flush() see it instead of waiting forever.
            log.exception("producing to leader %s failed unexpectedly", leader)
            for batch in batches:
                outcomes[id(batch)] = (-1, exc)
        for batch in batches:
            self._settle(batch, *outcomes[id(batch)])
        self.wake.set()

    def _settle(self, batch: ProducerBatch, offset: int, error: Exception | None) -> None:
        key = (batch.topic, batch.partition)
        flying = self.in_flight.get(key)
        if flying is not None and batch in flying:
            flying.remove(batch)
            if not flying:
                del self.in_flight[key]
        if error is None:
            self.acknowledged.add(key)
            self.accumulator.complete(batch, offset, has_offsets=self.acks != 0 and offset >= 0)
        elif isinstance(error, StromError) and (
            error.retriable or self._earlier_unresolved(key, batch, error)
        ):
            retry = self.retrying.setdefault(key, [])
            retry.append(batch)
            retry.sort(key=lambda b: b.order)
        else:
            if self.transactions is not None:
                self.transactions.batch_failed(error)
            self.accumulator.fail(batch, error)
        if key in self.retrying and key not in self.in_flight and key not in self._resending:
            self._resending.add(key)
            self._spawn(self._resend(key))

    def _earlier_unresolved(self, key: Key, batch: ProducerBatch, error: StromError) -> bool:
        """An out-of-order refusal caused by an earlier batch of the partition that has not
        arrived (yet): retriable. Without such a batch it is a real gap."""
        if error.code != common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER:
            return False
        earlier = [*self.in_flight.get(key, ()), *self.retrying.get(key, ())]
        return any(other.order < batch.order for other in earlier)

    # ---- retries ---------------------------------------------------------------------------

    async def _resend(self, key: Key) -> None:
        """Resend a partition's failed batches one at a time, oldest first, with backoff; new
        batches of the partition wait until none are left."""
        cluster = self.cluster
        backoff = Backoff(cluster.retry_backoff_ms, cluster.retry_backoff_max_ms)
        try:
            while self.retrying.get(key):
                await asyncio.sleep(backoff.next_delay_s())
                batches = self.retrying[key]
                if self.accumulator.clock() > batches[0].deadline:
                    self._expire(key)
                    continue
                with contextlib.suppress(StromError):  # the leader may have moved
                    await cluster.topic(key[0])
                batch = batches.pop(0)
                self._mark_in_flight(batch)
                await self._produce(self._leader_of(key), [batch])
                if batch.result.done():
                    backoff = Backoff(cluster.retry_backoff_ms, cluster.retry_backoff_max_ms)
        finally:
            self._resending.discard(key)
            if not self.retrying.get(key):
                self.retrying.pop(key, None)
            self.wake.set()

    def _expire(self, key: Key) -> None:
        """Fail the partition's batches past their delivery deadline; with idempotence, start a
        new producer id and re-encode the rest (their sequences would follow a gap)."""
        now = self.accumulator.clock()
        batches = self.retrying[key]
        expired = [b for b in batches if now > b.deadline]
        self.retrying[key] = [b for b in batches if now <= b.deadline]
        ms = int(self.accumulator.delivery_timeout_s * 1000)
        for batch in expired:
            error = KafkaTimeoutError(f"{key[0]}-{key[1]}: not delivered within {ms} ms")
            if self.transactions is not None:
                self.transactions.batch_failed(error)
            self.accumulator.fail(batch, error)
        if self.sequences.idempotent and self.transactions is None:
            # (a transactional producer takes a new epoch when the transaction ends instead)
            self.sequences.reset()
            self.acknowledged.clear()
            for batch in self.retrying[key]:
                batch.encoded = None
