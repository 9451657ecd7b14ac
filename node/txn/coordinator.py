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
        host retries periodically), never blocking the others."""
        completed = []
        for tid, metadata in list(self.states.items()):
            if metadata.state not in PREPARE_STATES:
                continue
            if partition is not None and self.partition_of(tid) != partition:
                continue
            async with self._lock(tid):
                current = self.states.get(tid)
                if current is None or current.state not in PREPARE_STATES:
                    continue  # completed meanwhile (the producer's retried EndTxn)
                try:
                    await self._complete(current)
                except (TxnError, OSError, ConnectionError, TimeoutError) as exc:
                    log.warning("%r: markers not written yet (%s); retrying later", tid, exc)
                    continue
                completed.append(tid)
        return completed

    def owns(self, partition: int) -> bool:
        return partition in self._owned

    def unload(self, partition: int) -> None:
        """Leadership of `partition` moved away: forget its ids (the new leader loads them)."""
        self._owned.discard(partition)
        for tid in [t for t in self.states if self.partition_of(t) == partition]:
            del self.states[tid]

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

    async def _complete(self, preparing: TxnMetadata) -> TxnMetadata:
        """Markers for a PREPARE_* state, then its COMPLETE_* state, persisted."""
        await self._send_markers(preparing, preparing.state == TxnState.PREPARE_COMMIT)
        return await self._write(preparing.complete(self._now_ms()))

    # ---- requests --------------------------------------------------------------------------

    async def init_producer_id(
        self, transactional_id: str, timeout_ms: int, fresh_producer_id: Callable[[], int]
    ) -> TxnMetadata:
        """InitProducerId with a transactional id: a new epoch, every older instance fenced.
        An open transaction is aborted first (markers with a bumped epoch)."""
        self.owned_partition(transactional_id)
        async with self._lock(transactional_id):
            current = self.states.get(transactional_id)
            if current is None or current.state == TxnState.DEAD:
                return await self._write(
                    new_transactional_id(
                        transactional_id, fresh_producer_id(), timeout_ms, self._now_ms()
                    )
                )
            if current.state == TxnState.ONGOING:
                current = await self._write(current.abort_for_fencing(self._now_ms()))
            if current.state in PREPARE_STATES:
                current = await self._complete(current)
            return await self._write(
                current.init_producer(timeout_ms, self._now_ms(), fresh_producer_id())
            )

    async def add_partitions(
        self, transactional_id: str, producer_id: int, producer_epoch: int,
        partitions: frozenset[tuple[str, int]],
    ) -> TxnMetadata:  # fmt: skip
        """AddPartitionsToTxn (AddOffsetsToTxn passes the group's `__consumer_offsets`
        partition): persisted, then registered with the partitions' leaders."""
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
        """EndTxn: PREPARE_* persisted (the decision), markers written, COMPLETE_* persisted.
        Answered once complete, so the producer's next transaction sees its outcome."""
        async with self._lock(transactional_id):
            current = self._existing(transactional_id)
            ended = current.end(producer_id, producer_epoch, commit, self._now_ms())
            if ended is current and ended.state not in PREPARE_STATES:
                return ended  # a retry of what is already complete
            if ended is not current:
                ended = await self._write(ended)
            if ended.state in PREPARE_STATES:
                ended = await self._complete(ended)
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
                preparing = await self._write(current.abort_for_fencing(now))
                aborted.append(tid)
                try:
                    await self._complete(preparing)
                except (TxnError, OSError, ConnectionError, TimeoutError) as exc:
                    # decided and persisted: complete_pending writes the markers later
                    log.warning("%r: abort markers not written yet (%s)", tid, exc)
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
