"""The transaction coordinator's logic for the `__transaction_state` partitions this broker leads
(Kafka's TransactionCoordinator), over three seams so it is tested without a cluster:

- `persist(partition, records)`: append to that `__transaction_state` partition and wait until
  it is committed (acks=all); raises on failure. Every transition is persisted before it is
  answered or acted on, so a new coordinator resumes from what was promised.
- `send_markers(metadata, commit)`: write the markers of `metadata`'s transaction to the leaders
  of all its partitions (replica service WriteTxnMarkers) until every one is written; raises
  if it cannot (the coordinator retries later; the state stays PREPARE_*).
- `register(metadata, partitions)`: tell those partitions' leaders the producer may write
  transactional batches there (RegisterTxnPartitions), before AddPartitionsToTxn answers.

One owner per transactional id: requests for one id are serialized by its lock, so a
transition is always computed from the persisted state. Failover: `load` replays a partition's
records, then finishes every PREPARE_* transaction (markers, then COMPLETE_*); an ONGOING one
is left to its producer or to the timeout (`abort_expired`).

EndTxn is answered once its decision (PREPARE_COMMIT / PREPARE_ABORT) is persisted, as Kafka's
coordinator does: the markers and the COMPLETE_* state follow in a completion task of the id
(`_completer`), which retries with backoff while this broker coordinates the id. Nothing else
moves a PREPARE_* state (every request answers CONCURRENT_TRANSACTIONS meanwhile), so the
markers are written outside the id's lock and only the COMPLETE_* write takes it. A request
that arrives while the markers are written waits for them up to `concurrent_wait_ms_max`
before it is answered CONCURRENT_TRANSACTIONS (Kafka answers at once; the short wait spares
the producer a retry round trip in the common case, markers written in a few ms). A failover
loses nothing: the decision is in `__transaction_state`, and the new coordinator's `load`
writes the markers.

Served by node/txn/service.py (the Transaction gRPC service) over node/txn/host.py, which
implements the seams on a broker and runs the timers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from strom.v1 import common_pb2

from .state import (
    PREPARE_STATES,
    TxnError,
    TxnMetadata,
    TxnState,
    new_transactional_id,
)
from .state_log import encode_states, load_states, state_partition

log = logging.getLogger("strom.txn")

# How long a request arriving while a decided transaction's markers are written waits for
# them before it is answered CONCURRENT_TRANSACTIONS (the client retries).
CONCURRENT_WAIT_MS_MAX = 100
# The completion task's backoff between attempts at the markers (a leader unreachable).
COMPLETE_BACKOFF_MS_MIN = 50
COMPLETE_BACKOFF_MS_MAX = 2_000
_MARKER_FAILURES = (TxnError, OSError, ConnectionError, TimeoutError)

Persist = Callable[[int, bytes], Awaitable[None]]
SendMarkers = Callable[[TxnMetadata, bool], Awaitable[None]]
Register = Callable[[TxnMetadata, frozenset[tuple[str, int]]], Awaitable[None]]


class TxnCoordinator:
    def __init__(
        self,
        num_partitions: int,
        persist: Persist,
        send_markers: SendMarkers,
        register: Register,
        now_ms: Callable[[], int],
    ) -> None:
        self.num_partitions = num_partitions
        self._persist = persist
        self._send_markers = send_markers
        self._register = register
        self._now_ms = now_ms
        self.states: dict[str, TxnMetadata] = {}
        self._owned: set[int] = set()  # state partitions this broker leads and has loaded
        self._locks: dict[str, asyncio.Lock] = {}
        # the running completion task (markers, then COMPLETE_*) of each PREPARE_* id
        self._completing: dict[str, asyncio.Task[None]] = {}
        self.concurrent_wait_ms_max = CONCURRENT_WAIT_MS_MAX

    # ---- ownership -------------------------------------------------------------------------

    async def load(self, partition: int, records: bytes) -> None:
        """Become the coordinator of `partition`: take its states from `records` (the whole
        partition, in order), then finish the transactions that were being completed."""
        loaded: dict[str, TxnMetadata] = {}
        load_states(records, loaded, lambda offset, why: log.warning("skipped %d: %s", offset, why))
        for tid, metadata in loaded.items():
            if state_partition(tid, self.num_partitions) == partition:
                self.states[tid] = metadata
        self._owned.add(partition)
        await self.complete_pending(partition)

    async def complete_pending(self, partition: int | None = None) -> list[str]:
        """Write the markers of every PREPARE_* transaction (of `partition`, or of every owned
        partition) and complete it; returns the ids completed. A transaction whose markers
        cannot be written yet (a leader unreachable) stays PREPARE_* for the next call (the
        id's completion task retries with backoff), never blocking the others. An id whose
        completion task is running is left to it."""
        completed = []
        for tid, metadata in list(self.states.items()):
            if metadata.state not in PREPARE_STATES or self.completing(tid):
                continue
            if partition is not None and self.partition_of(tid) != partition:
                continue
            if await self._finish(tid):
                completed.append(tid)
        return completed

    async def _finish(self, transactional_id: str) -> bool:
        """One attempt at the id's markers now; when it fails, its completion task retries."""
        try:
            return await self._complete_once(transactional_id)
        except _MARKER_FAILURES as exc:
            log.warning("%r: markers not written yet (%s); retrying", transactional_id, exc)
            self._schedule_completion(transactional_id)
            return False

    def owns(self, partition: int) -> bool:
        return partition in self._owned

    def unload(self, partition: int) -> None:
        """Leadership of `partition` moved away: forget its ids (the new leader loads them)."""
        self._owned.discard(partition)
        for tid in [t for t in self.states if self.partition_of(t) == partition]:
            del self.states[tid]
            task = self._completing.pop(tid, None)
            if task is not None:
                task.cancel()  # the new coordinator writes the markers

    def partition_of(self, transactional_id: str) -> int:
        return state_partition(transactional_id, self.num_partitions)

    def owned_partition(self, transactional_id: str) -> int:
        partition = self.partition_of(transactional_id)
        if partition not in self._owned:
            raise TxnError(
                common_pb2.NOT_COORDINATOR,
                f"this broker does not coordinate {transactional_id!r} (state partition "
                f"{partition})",
            )
        return partition

    def _lock(self, transactional_id: str) -> asyncio.Lock:
        return self._locks.setdefault(transactional_id, asyncio.Lock())

    async def _write(self, metadata: TxnMetadata) -> TxnMetadata:
        partition = self.owned_partition(metadata.transactional_id)
        await self._persist(
            partition, encode_states([(metadata.transactional_id, metadata)], self._now_ms())
        )
        self.states[metadata.transactional_id] = metadata
        return metadata

    def completing(self, transactional_id: str) -> bool:
        """A completion task (markers, then COMPLETE_*) runs for the id."""
        task = self._completing.get(transactional_id)
        return task is not None and not task.done()

    async def _complete_once(self, transactional_id: str) -> bool:
        """One attempt to finish the id's PREPARE_* state: its markers (outside the lock:
        nothing else moves a PREPARE_* state), then COMPLETE_*, persisted. False when there
        was nothing to finish; raises when the markers or the write failed."""
        preparing = self.states.get(transactional_id)
        if preparing is None or preparing.state not in PREPARE_STATES:
            return False
        await self._send_markers(preparing, preparing.state == TxnState.PREPARE_COMMIT)
        async with self._lock(transactional_id):
            if self.states.get(transactional_id) is not preparing:
                return False  # completed meanwhile, or this broker lost the partition
            await self._write(preparing.complete(self._now_ms()))
        return True

    def _schedule_completion(self, transactional_id: str) -> None:
        """Start the id's completion task unless one runs."""
        if not self.completing(transactional_id):
            self._completing[transactional_id] = asyncio.get_running_loop().create_task(
                self._completer(transactional_id), name=f"txn-complete-{transactional_id}"
            )

    async def _completer(self, transactional_id: str) -> None:
        """Finish the id's PREPARE_* state, retrying with backoff while this broker still
        coordinates it (unload cancels the task: the next coordinator finishes it)."""
        delay_ms = COMPLETE_BACKOFF_MS_MIN
        # Taken while the loop runs: a task destroyed unfinished (its process gone, its loop
        # closed) runs this `finally` with no loop, where current_task() raises.
        me = asyncio.current_task()
        try:
            while True:
                try:
                    await self._complete_once(transactional_id)
                    return
                except _MARKER_FAILURES as exc:
                    current = self.states.get(transactional_id)
                    if current is None or current.state not in PREPARE_STATES:
                        return
                    log.warning("%r: markers not written yet (%s); retrying in %d ms",
                                transactional_id, exc, delay_ms)  # fmt: skip
                await asyncio.sleep(delay_ms / 1000)
                delay_ms = min(COMPLETE_BACKOFF_MS_MAX, delay_ms * 2)
        finally:
            if self._completing.get(transactional_id) is me:
                del self._completing[transactional_id]

    async def _await_completion(self, transactional_id: str) -> None:
        """Wait (bounded) for the id's running completion task, outside its lock."""
        task = self._completing.get(transactional_id)
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self.concurrent_wait_ms_max / 1000)

    async def stop(self) -> None:
        """Cancel the completion tasks (shutdown): the decisions are persisted, the next
        coordinator of their partitions writes the markers."""
        tasks = list(self._completing.values())
        self._completing.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- requests --------------------------------------------------------------------------

    async def init_producer_id(
        self, transactional_id: str, timeout_ms: int, fresh_producer_id: Callable[[], int]
    ) -> TxnMetadata:
        """InitProducerId with a transactional id: a new epoch, every older instance fenced.
        An open transaction is aborted first (PREPARE_ABORT with a bumped epoch, its markers
        written by the completion task); while a transaction completes the answer is
        CONCURRENT_TRANSACTIONS (after a bounded wait) and the producer retries, as Kafka's."""
        self.owned_partition(transactional_id)
        await self._await_completion(transactional_id)
        async with self._lock(transactional_id):
            current = self.states.get(transactional_id)
            if current is None or current.state == TxnState.DEAD:
                return await self._write(
                    new_transactional_id(
                        transactional_id, fresh_producer_id(), timeout_ms, self._now_ms()
                    )
                )
            if current.state == TxnState.ONGOING:
                await self._write(current.abort_for_fencing(self._now_ms()))
        current = self.states.get(transactional_id)
        if current is not None and current.state in PREPARE_STATES:
            self._schedule_completion(transactional_id)
            await self._await_completion(transactional_id)
        async with self._lock(transactional_id):
            current = self._existing(transactional_id)
            # PREPARE_* still (markers not written yet): CONCURRENT_TRANSACTIONS
            return await self._write(
                current.init_producer(timeout_ms, self._now_ms(), fresh_producer_id())
            )

    async def add_partitions(
        self, transactional_id: str, producer_id: int, producer_epoch: int,
        partitions: frozenset[tuple[str, int]],
    ) -> TxnMetadata:  # fmt: skip
        """AddPartitionsToTxn (AddOffsetsToTxn passes the group's `__consumer_offsets`
        partition): persisted, then registered with the partitions' leaders. The previous
        transaction's markers still being written: CONCURRENT_TRANSACTIONS after a bounded
        wait (the producer retries)."""
        await self._await_completion(transactional_id)
        async with self._lock(transactional_id):
            current = self._existing(transactional_id)
            added = current.add_partitions(producer_id, producer_epoch, partitions, self._now_ms())
            if added is not current:
                await self._write(added)
            await self._register(added, partitions)
            return added

    async def end_txn(
        self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> TxnMetadata:
        """EndTxn: PREPARE_* persisted (the decision), then answered; the completion task
        writes the markers and COMPLETE_*. A retry of a decided or completed EndTxn answers
        the same outcome (the decision is durable either way)."""
        async with self._lock(transactional_id):
            current = self._existing(transactional_id)
            ended = current.end(producer_id, producer_epoch, commit, self._now_ms())
            if ended is not current:
                ended = await self._write(ended)
        if ended.state in PREPARE_STATES:
            self._schedule_completion(transactional_id)
        return ended

    async def abort_expired(self) -> list[str]:
        """Abort every ONGOING transaction past its timeout, fencing its producer (a bumped
        epoch); returns the ids aborted. Run periodically (Kafka:
        transaction.abort.timed.out.transaction.cleanup.interval.ms)."""
        now = self._now_ms()
        aborted = []
        for tid in [t for t, m in self.states.items() if m.expired(now)]:
            async with self._lock(tid):
                current = self.states.get(tid)
                if current is None or not current.expired(self._now_ms()):
                    continue
                log.info("%r: transaction past its %d ms timeout: aborting", tid,
                         current.timeout_ms)  # fmt: skip
                await self._write(current.abort_for_fencing(now))
                aborted.append(tid)
            await self._finish(tid)  # decided and persisted: markers now or retried
        return aborted

    def _existing(self, transactional_id: str) -> TxnMetadata:
        self.owned_partition(transactional_id)
        current = self.states.get(transactional_id)
        if current is None:
            raise TxnError(
                common_pb2.INVALID_PRODUCER_ID_MAPPING,
                f"{transactional_id!r} is unknown: call InitProducerId first",
            )
        return current
