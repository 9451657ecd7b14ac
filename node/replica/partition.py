"""One partition replica on this broker: its log, its role, and its high watermark.

The Partition is the single owner of the replica's state (STYLE.md), its log included: the
replica manager, the request handlers and the follower fetcher all go through its verbs, on the
event loop, and readers get a read-only view of the log (`log`). As leader it appends producer
batches (the log validates them, checks them against its producer state and writes them in one
pass), serves follower fetches (recording their progress in a pure `LeaderState`), moves the
high watermark, and completes acks=all produces waiting for it. As follower it appends what its
leader sent, takes the leader's high watermark, and truncates a divergent suffix.

After a truncation the log's producer state must be replayed from its newest snapshot: a short
scan (up to `REPLAY_IN_PLACE_BYTES_MAX`) runs in place, a longer one in a worker thread, never on
the event loop, and appends wait for it (a produce meanwhile gets a retriable
NOT_LEADER_OR_FOLLOWER; the fetcher skips the partition).

Durability follows the topic's `flush.messages` / `flush.ms`: fsyncs run in a worker thread,
grouped (one for everything appended while the previous one ran). With `flush.messages=1` a
write counts only once it is fsynced: the leader counts itself towards the high watermark with
its durable end, acks=1 answers after the leader's fsync, and the follower fetcher reports a
partition's fetch offset only after its fsync, so acks=all means "on disk on every in-sync
replica" and survives a power loss of all of them.

A storage failure (an I/O error on append or fsync, a damaged file met while replaying) is
reported once through `on_failure`: the replica manager then takes the replica offline on this
broker.

Consumers only ever see offsets below the high watermark (DESIGN.md §7); read_committed
consumers only below the last stable offset (`last_stable_offset`: the lower of the HW and the
first offset of the oldest open transaction), with the aborted transactions of what they read
(`read_stable`), as Kafka's Fetch answers them.

Transactions (KIP-98): as leader, a transactional batch is accepted only from a producer the
transaction coordinator registered here (`register_transaction`, its AddPartitionsToTxn) or
whose transaction the log already holds open (registered before a leader change); markers come
only from the coordinator (`write_markers`) and end the registration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from strom.node import metrics
from strom.node.delayed import ChangeNotifier, OffsetWaiters
from strom.node.errors import CodedError
from strom.node.metadata.image import PartitionInfo
from strom.storage import log_cleaner
from strom.storage.control_records import TxnMarker
from strom.storage.errors import StorageError
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import AppendInfo, LogReader, PartitionLog
from strom.storage.producer_state import ProducerState, ProducerStateReplay
from strom.storage.record_batch import HEADER_SIZE, parse_header
from strom.storage.txn_index import AbortedTxn
from strom.v1 import common_pb2

from .leader_state import IsrChange, LeaderState, diverging_epoch

log = logging.getLogger("strom.replica")

# A producer-state replay reading at most this much of the log, from a snapshot of at most
# this size (about 500 producers), runs in place (a millisecond or two); a longer one runs in a
# worker thread, so the event loop never stalls on it.
REPLAY_IN_PLACE_BYTES_MAX = 1 << 20
REPLAY_IN_PLACE_SNAPSHOT_BYTES_MAX = 64 << 10
LONG_MAX = 2**63 - 1  # flush.ms default: no timed flush
# Record batches one produce request may carry for one partition: Kafka's rule for RecordBatch
# v2 (LogValidator: "exactly one batch"), which every producer follows. It bounds the work one
# partition entry can cost the leader; more is refused (INVALID_RECORD) before any is checked.
PRODUCE_BATCHES_PER_PARTITION_MAX = 1


class PartitionError(CodedError):
    """A per-partition refusal with a Kafka error code; the handler puts it in the response."""


def storage_refusal(name: str, exc: StorageError) -> PartitionError:
    """A storage error as the per-partition refusal it means (its Kafka error name)."""
    return PartitionError(_storage_code(exc), f"{name}: {exc}")


def refusal(exc: PartitionError | StorageError) -> PartitionError:
    """What a request for one partition answers when it failed: the partition's refusal, or a
    storage error that reached the handler, as the Kafka code it names."""
    if isinstance(exc, PartitionError):
        return exc
    return PartitionError(_storage_code(exc), str(exc))


def _storage_code(exc: StorageError) -> int:
    if exc.error_name in _CODES:
        return common_pb2.ErrorCode.Value(exc.error_name)
    return common_pb2.KAFKA_STORAGE_ERROR


_CODES = frozenset(common_pb2.ErrorCode.keys())


def is_storage_failure(exc: BaseException) -> bool:
    """An error that says this replica's files cannot be used (not bad input, not a retry)."""
    if isinstance(exc, StorageError):
        return exc.error_name == "KAFKA_STORAGE_ERROR"
    return isinstance(exc, OSError)


def _no_failure_handler(partition: Partition, exc: BaseException) -> None:
    log.error("%s: storage failure: %s", partition.name, exc)


@dataclass(frozen=True, slots=True)
class FollowerFetchResult:
    records: bytes
    high_watermark: int
    log_start_offset: int
    diverging: tuple[int, int] | None
    isr_change: IsrChange | None


class Partition:
    def __init__(
        self, topic: str, partition: int, topic_id: bytes, log: PartitionLog, broker_id: int,
        high_watermark: int,
    ) -> None:  # fmt: skip
        self.topic = topic
        self.partition = partition
        self.topic_id = topic_id
        self._log = log
        self.broker_id = broker_id
        self.leader_id = -1
        self.leader_epoch = -1
        self.partition_epoch = -1
        self.replicas: tuple[int, ...] = ()
        self.isr: tuple[int, ...] = ()
        self.leader_state: LeaderState | None = None
        self.high_watermark = min(high_watermark, log.log_end_offset)
        self.hw_waiters = OffsetWaiters(self.high_watermark)
        self.changed = ChangeNotifier()  # appends and HW moves: wakes long-polling fetches
        # Set by the replica manager: called once per storage failure (it takes us offline).
        self.on_failure: Callable[[Partition, BaseException], None] = _no_failure_handler
        self._loading: asyncio.Task[None] | None = None  # the producer-state replay in flight
        self._flushing: asyncio.Task[None] | None = None  # the fsync loop in flight
        self._flush_timer: asyncio.TimerHandle | None = None  # flush.ms after a first write
        self.durable_waiters = OffsetWaiters(log.recovery_point)  # acks=1 with flush.messages=1
        # producer id -> epoch the transaction coordinator registered for a transaction here
        self._registered_transactions: dict[int, int] = {}
        # producer id -> the newest coordinator epoch heard from for it: a coordinator that
        # lost the transactional id to a newer one (failover) is refused
        # (TRANSACTION_COORDINATOR_FENCED). In memory: a new leader learns it afresh.
        self._coordinator_epochs: dict[int, int] = {}

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def is_leader(self) -> bool:
        return self.leader_state is not None

    # ---- the log: a read-only view, and the verbs others need -----------------------------

    @property
    def log(self) -> LogReader:
        """The log, to read; only this Partition changes it."""
        return self._log

    @property
    def log_start_offset(self) -> int:
        return self._log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log.log_end_offset

    @property
    def latest_epoch(self) -> int | None:
        """The leader epoch of the last batch (or epoch start) this replica has."""
        return self._log.leader_epoch_cache.latest_epoch

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """KIP-101: (the largest epoch ≤ `epoch` this log knows, the offset where it ends)."""
        return self._log.leader_epoch_cache.end_offset_for(epoch, self._log.log_end_offset)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        return self._log.offset_for_timestamp(timestamp_ms)

    @property
    def producer_state(self) -> ProducerState:
        return self._log.producer_state

    @property
    def producer_state_ready(self) -> bool:
        return not self._log.producer_state_pending

    def set_log_config(self, config: LogConfig) -> None:
        """A topic config change (segment size, retention, ...) reaches the log."""
        self._log.config = config
        self._maybe_advance_hw()  # flush.messages may have changed what the leader counts

    # ---- durability ----------------------------------------------------------------------

    @property
    def flushes_before_ack(self) -> bool:
        """flush.messages=1: a write counts (acks=1, the HW, a follower's fetch offset) only
        once it is fsynced."""
        return self._log.config.flushes_before_ack

    @property
    def durable_end_offset(self) -> int:
        """Everything below this is fsynced (the log's recovery point)."""
        return self._log.recovery_point

    @property
    def has_unflushed(self) -> bool:
        return self._log.unflushed_messages > 0

    def maybe_flush(self) -> asyncio.Task[None] | None:
        """Start a flush when the topic's policy asks for one: flush.messages writes unflushed
        now, or (a timer) flush.ms after the first unflushed write. Returns the flush in flight."""
        unflushed = self._log.unflushed_messages
        config = self._log.config
        if unflushed >= config.flush_messages:
            return self.flush()
        if unflushed > 0 and config.flush_ms < LONG_MAX and self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(
                config.flush_ms / 1000, self.flush
            )
        return self._flushing if self._flushing is not None and not self._flushing.done() else None

    def flush(self) -> asyncio.Task[None]:
        """fsync everything appended so far in a worker thread. Callers share the flush in
        flight, which goes on until the log is durable up to its end (group commit)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(
                self._flush_until_durable(), name=f"flush-{self.name}"
            )
        return self._flushing

    async def _flush_until_durable(self) -> None:
        while True:
            try:
                job = self._log.plan_flush()  # None once the log is closed (replica dropped)
            except OSError as exc:
                self.on_failure(self, exc)
                return
            if job is None:
                return
            try:
                await asyncio.to_thread(job.run)
            except OSError as exc:
                self.on_failure(self, exc)
                return
            if self._log.complete_flush(job):
                self.durable_waiters.advance(self._log.recovery_point)
                self._maybe_advance_hw()

    async def wait_durable(self, last_offset: int, timeout_s: float) -> None:
        """acks=1 with flush.messages=1: return once `last_offset` is fsynced here."""
        if not await self.durable_waiters.wait_for(last_offset + 1, timeout_s):
            raise PartitionError(
                common_pb2.REQUEST_TIMED_OUT,
                f"{self.name}: offset {last_offset} was not fsynced in time",
            )

    def _counted_end_offset(self) -> int:
        """What this replica holds, as far as acknowledgements go."""
        return self.durable_end_offset if self.flushes_before_ack else self._log.log_end_offset

    def delete_old_segments(self, now_ms: int) -> int:
        """Retention, only ever below this replica's high watermark."""
        return self._log.delete_old_segments(self.high_watermark, now_ms=now_ms)

    def plan_clean(self, now_ms: int, delete_retention_ms: int) -> log_cleaner.CleanPlan:
        """What compaction may clean: below the last stable offset (so every transaction
        it meets is decided; the LSO is at most the HW) and the active segment."""
        bound = min(self.last_stable_offset, self._log.segment_base_offsets[-1])
        return log_cleaner.plan_clean(
            self._log, bound, now_ms=now_ms, delete_retention_ms=delete_retention_ms
        )

    def swap_in_cleaned(self, cleaned: list[log_cleaner.CleanedSegment]) -> log_cleaner.CleanStats:
        return log_cleaner.swap_in(self._log, cleaned)

    # ---- role changes ------------------------------------------------------------------

    def make_leader(self, info: PartitionInfo, now_ms: int) -> None:
        new_epoch = info.leader_epoch != self.leader_epoch or self.leader_state is None
        if not new_epoch:
            metrics.record_isr_change(self.isr, info.isr)
        self.leader_id, self.leader_epoch = info.leader, info.leader_epoch
        self.partition_epoch, self.replicas, self.isr = (
            info.partition_epoch,
            info.replicas,
            info.isr,
        )
        if not new_epoch and self.leader_state is not None:
            self.leader_state.update_assignment(
                info.replicas, info.isr, info.partition_epoch, now_ms
            )
            self._maybe_advance_hw()
            return
        leo = self._log.log_end_offset
        # Every batch this leader writes is stamped with its epoch; the cache records where the
        # epoch starts so followers can find where their logs diverge (KIP-101).
        self._log.leader_epoch_cache.assign(info.leader_epoch, leo)
        self.leader_state = LeaderState(
            self.broker_id,
            info.replicas,
            info.isr,
            info.leader_epoch,
            info.partition_epoch,
            epoch_start_offset=leo,
            high_watermark=self.high_watermark,
            now_ms=now_ms,
        )
        log.info(
            "%s: leader in epoch %d at offset %d (ISR %s, HW %d)",
            self.name, info.leader_epoch, leo, list(info.isr), self.high_watermark,
        )  # fmt: skip
        self._maybe_advance_hw()

    def make_follower(self, info: PartitionInfo) -> bool:
        """Follow `info.leader`; True if the leader or its epoch changed (refetch needed)."""
        changed = info.leader != self.leader_id or info.leader_epoch != self.leader_epoch
        was_leader = self.leader_state is not None
        self.leader_id, self.leader_epoch = info.leader, info.leader_epoch
        self.partition_epoch, self.replicas, self.isr = (
            info.partition_epoch,
            info.replicas,
            info.isr,
        )
        self.leader_state = None
        self._registered_transactions.clear()  # the coordinator registers with the new leader
        if was_leader or changed:
            self.hw_waiters.fail_all(
                PartitionError(
                    common_pb2.NOT_LEADER_OR_FOLLOWER,
                    f"{self.name}: leadership moved to broker {info.leader}",
                )
            )
            self.hw_waiters = OffsetWaiters(self.high_watermark)
            self.changed.notify()
        return changed or was_leader

    def _reset_durable_waiters(self, reason: str) -> None:
        """A truncation: offsets waited for may now name other records."""
        self.durable_waiters.fail_all(PartitionError(common_pb2.NOT_LEADER_OR_FOLLOWER, reason))
        self.durable_waiters = OffsetWaiters(self._log.recovery_point)

    def check_leader_epoch(self, current_leader_epoch: int) -> None:
        """KIP-320: a request naming another epoch than ours is fenced or premature."""
        if current_leader_epoch < 0 or current_leader_epoch == self.leader_epoch:
            return
        if current_leader_epoch < self.leader_epoch:
            raise PartitionError(
                common_pb2.FENCED_LEADER_EPOCH,
                f"{self.name}: leader epoch {current_leader_epoch} is older than "
                f"{self.leader_epoch}; refresh metadata",
            )
        raise PartitionError(
            common_pb2.UNKNOWN_LEADER_EPOCH,
            f"{self.name}: leader epoch {current_leader_epoch} is newer than this broker's "
            f"{self.leader_epoch}; retry",
        )

    def check_leader(self, current_leader_epoch: int) -> None:
        """A request only the leader answers (a client's fetch or list offsets, offsets for an
        epoch): NOT_LEADER_OR_FOLLOWER unless this broker leads, then the KIP-320 epoch check."""
        self._require_leader()
        self.check_leader_epoch(current_leader_epoch)

    def _require_leader(self) -> LeaderState:
        if self.leader_state is None:
            raise PartitionError(
                common_pb2.NOT_LEADER_OR_FOLLOWER,
                f"broker {self.broker_id} does not lead {self.name} (leader: {self.leader_id})",
            )
        return self.leader_state

    # ---- leader: produce ---------------------------------------------------------------

    def append_as_leader(
        self, data: bytes, acks: int, min_insync_replicas: int, now_ms: int
    ) -> AppendInfo:
        self._require_leader()
        if acks == -1 and len(self.isr) < min_insync_replicas:
            raise PartitionError(
                common_pb2.NOT_ENOUGH_REPLICAS,
                f"{self.name}: ISR {list(self.isr)} has fewer than min.insync.replicas="
                f"{min_insync_replicas} members",
            )
        try:
            info = self._log.append(
                data, self.leader_epoch, now_ms=now_ms,
                batches_max=PRODUCE_BATCHES_PER_PARTITION_MAX,
                transactional_producers=_TransactionalProducers(self),
            )  # fmt: skip
        except (StorageError, OSError) as exc:
            raise self._refusal(exc) from exc
        if info.batch_count:
            self.maybe_flush()
            self._maybe_advance_hw()
            self.changed.notify()
        return info

    # ---- leader: transactions ------------------------------------------------------------

    def register_transaction(
        self, producer_id: int, producer_epoch: int, coordinator_epoch: int = 0
    ) -> None:
        """The transaction coordinator added this partition to the producer's transaction:
        its transactional batches are accepted from now until a marker ends it."""
        self._require_leader()
        self._check_coordinator_epoch(producer_id, coordinator_epoch)
        self._registered_transactions[producer_id] = producer_epoch

    def _check_coordinator_epoch(self, producer_id: int, coordinator_epoch: int) -> None:
        known = self._coordinator_epochs.get(producer_id, -1)
        if coordinator_epoch < known:
            raise PartitionError(
                common_pb2.TRANSACTION_COORDINATOR_FENCED,
                f"{self.name}: coordinator epoch {coordinator_epoch} for producer {producer_id} "
                f"is older than {known}",
            )
        self._coordinator_epochs[producer_id] = coordinator_epoch

    def next_sequence(self, producer_id: int, producer_epoch: int) -> int:
        """The sequence the producer's next batch here must start with, for a batch the broker
        writes on the producer's behalf (the group coordinator's TxnOffsetCommit records): 0
        in a new epoch, else after its last batch."""
        entry = self._log.producer_state.producers.get(producer_id)
        if entry is None or entry.epoch != producer_epoch:
            return 0
        return (entry.last_seq + 1) % (1 << 31)

    def accepts_transactional(self, producer_id: int, producer_epoch: int) -> bool:
        """A transaction of exactly this epoch was registered here, or is open in the log. An
        older epoch is a fenced instance (a zombie): the coordinator may have registered its
        successor here before the successor wrote anything, so the log's producer state does
        not know the new epoch yet and would take the zombie's batch into the successor's
        transaction (found by the node simulation with transactions, issue #21)."""
        if self._registered_transactions.get(producer_id) == producer_epoch:
            return True
        entry = self._log.producer_state.producers.get(producer_id)
        return (
            producer_id in self._log.producer_state.ongoing
            and entry is not None
            and entry.epoch == producer_epoch
        )

    def write_markers(self, markers: list[TxnMarker], now_ms: int) -> AppendInfo:
        """Append the coordinator's commit/abort markers (WriteTxnMarkers), as leader.
        A marker older than its producer's epoch is refused, nothing written."""
        self._require_leader()
        for marker in markers:
            known = self._coordinator_epochs.get(marker.producer_id, -1)
            if marker.coordinator_epoch < known:
                raise PartitionError(
                    common_pb2.TRANSACTION_COORDINATOR_FENCED,
                    f"{self.name}: marker from coordinator epoch {marker.coordinator_epoch} "
                    f"for producer {marker.producer_id}; {known} is current",
                )
        try:
            info = self._log.append_markers(markers, self.leader_epoch, now_ms=now_ms)
        except (StorageError, OSError) as exc:
            raise self._refusal(exc) from exc
        for marker in markers:
            self._coordinator_epochs[marker.producer_id] = marker.coordinator_epoch
            registered = self._registered_transactions.get(marker.producer_id)
            if registered is not None and registered <= marker.producer_epoch:
                del self._registered_transactions[marker.producer_id]
        self.maybe_flush()
        self._maybe_advance_hw()
        self.changed.notify()
        return info

    @property
    def last_stable_offset(self) -> int:
        return self._log.last_stable_offset(self.high_watermark)

    def _refusal(self, exc: StorageError | OSError) -> PartitionError:
        """The answer to a failed log operation; a storage failure is also reported."""
        if is_storage_failure(exc):
            self.on_failure(self, exc)
        if isinstance(exc, StorageError):
            return storage_refusal(self.name, exc)
        return PartitionError(common_pb2.KAFKA_STORAGE_ERROR, f"{self.name}: {exc}")

    async def wait_for_isr(
        self, last_offset: int, min_insync_replicas: int, timeout_s: float
    ) -> None:
        """acks=all: return once every ISR member holds `last_offset`."""
        reached = await self.hw_waiters.wait_for(last_offset + 1, timeout_s)
        if not reached:
            raise PartitionError(
                common_pb2.REQUEST_TIMED_OUT,
                f"{self.name}: the ISR did not replicate offset {last_offset} in time",
            )
        if len(self.isr) < min_insync_replicas:
            raise PartitionError(
                common_pb2.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                f"{self.name}: written, but the ISR shrank below min.insync.replicas="
                f"{min_insync_replicas}",
            )

    def _maybe_advance_hw(self) -> None:
        state = self.leader_state
        if state is None:
            return
        if state.maybe_advance_high_watermark(self._counted_end_offset()):
            self._set_hw(state.high_watermark)

    def _reset_hw(self, hw: int) -> None:
        """Lower the HW (truncation): only a follower does this, so no acks=all waits on it."""
        assert self.leader_state is None, "a leader never truncates"
        self.high_watermark = hw
        self.hw_waiters = OffsetWaiters(hw)
        self.changed.notify()

    def _set_hw(self, hw: int) -> None:
        if hw > self.high_watermark:
            self.high_watermark = hw
            self.hw_waiters.advance(hw)
            self.changed.notify()

    # ---- leader: followers -------------------------------------------------------------

    def fetch_for_follower(
        self,
        replica_id: int,
        fetch_offset: int,
        last_fetched_epoch: int,
        max_bytes: int,
        active_brokers: set[int],
        now_ms: int,
        broker_epoch: int = -1,
        send_records: bool = True,
    ) -> FollowerFetchResult:
        """A follower's fetch: records its position (ISR, high watermark) and reads from it;
        `send_records` False (the leader's throttle is spent): the position only."""
        state = self._require_leader()
        if replica_id not in self.replicas:
            raise PartitionError(
                common_pb2.NOT_LEADER_OR_FOLLOWER,
                f"broker {replica_id} is not a replica of {self.name}",
            )
        leo = self._log.log_end_offset
        if last_fetched_epoch >= 0:
            end = self.end_offset_for_epoch(last_fetched_epoch)
            diverging = diverging_epoch(end, fetch_offset, last_fetched_epoch)
            if diverging is not None:
                return FollowerFetchResult(
                    b"", self.high_watermark, self._log.log_start_offset, diverging, None
                )
        if fetch_offset > leo:
            raise PartitionError(
                common_pb2.OFFSET_OUT_OF_RANGE,
                f"{self.name}: follower offset {fetch_offset} is past the leader's end {leo}",
            )
        state.on_follower_fetch(replica_id, fetch_offset, leo, now_ms, broker_epoch)
        self._maybe_advance_hw()
        change = state.maybe_expand_isr(replica_id, active_brokers)
        if fetch_offset < self._log.log_start_offset:
            raise PartitionError(
                common_pb2.OFFSET_OUT_OF_RANGE,
                f"{self.name}: offset {fetch_offset} was deleted; log starts at "
                f"{self._log.log_start_offset}",
            )
        records = (
            self._log.read(fetch_offset, max_bytes) if fetch_offset < leo and send_records else b""
        )
        return FollowerFetchResult(
            records, self.high_watermark, self._log.log_start_offset, None, change
        )

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords on the leader: records before `offset` (-1: the high watermark) stop
        being served; whole segments below go with the next retention pass. Only committed
        records can be deleted. Returns the log start offset; followers follow it (fetch)."""
        self._require_leader()
        target = self.high_watermark if offset == -1 else offset
        if target < 0 or target > self.high_watermark:
            raise PartitionError(
                common_pb2.OFFSET_OUT_OF_RANGE,
                f"{self.name}: cannot delete records before offset {offset}: it must be -1 or "
                f"between 0 and the high watermark {self.high_watermark}",
            )
        try:
            self._log.maybe_increment_log_start_offset(target)
        except (StorageError, OSError) as exc:
            raise self._refusal(exc) from exc
        return self._log.log_start_offset

    def follow_log_start_offset(self, leader_log_start: int) -> None:
        """A follower takes the leader's log start offset (DeleteRecords, retention), as far
        as its own log reaches."""
        self._log.maybe_increment_log_start_offset(min(leader_log_start, self.log_end_offset))

    def maybe_shrink_isr(self, now_ms: int, lag_time_max_ms: int) -> IsrChange | None:
        state = self.leader_state
        return None if state is None else state.maybe_shrink_isr(now_ms, lag_time_max_ms)

    def on_isr_change_failed(self) -> None:
        if self.leader_state is not None:
            self.leader_state.on_isr_change_failed()

    # ---- follower ----------------------------------------------------------------------

    def append_as_follower(self, data: bytes, leader_hw: int, now_ms: int) -> None:
        """Append what the leader sent (the log updates its producer state from the headers).
        Raises StorageError or OSError; the fetcher decides whether to retry."""
        if data:
            self._log.append_as_follower(data, now_ms=now_ms)
            self.changed.notify()
        self.follower_update_hw(leader_hw)

    def follower_update_hw(self, leader_hw: int) -> None:
        self._set_hw(min(leader_hw, self._log.log_end_offset))

    def truncate_to(self, offset: int, now_ms: int) -> None:
        """Drop the divergent suffix from `offset` on. The producer state is then replayed off
        the event loop (`start_producer_state_load`); appends wait for it."""
        if offset < self._log.log_end_offset:
            log.info(
                "%s: truncating divergent suffix from %d (log end was %d)",
                self.name, offset, self._log.log_end_offset,
            )  # fmt: skip
            self._log.truncate_to(offset, now_ms=now_ms)
            self._reset_durable_waiters(f"{self.name}: truncated from {offset}")
        if self.high_watermark > self._log.log_end_offset:
            # What was cut was never committed as far as this replica can prove: it must not
            # count as committed if this replica leads later (Kafka clamps the HW here too).
            self._reset_hw(self._log.log_end_offset)
        # Even with nothing to cut, drop epochs that start at or past `offset`: a replica that
        # led an epoch without writing in it keeps an entry at its log end, and would otherwise
        # ask about that epoch forever (Kafka's UnifiedLog.truncateTo does the same).
        self._log.leader_epoch_cache.truncate_from_end(offset)
        self.start_producer_state_load()

    def truncate_fully_and_start_at(self, offset: int, now_ms: int) -> None:
        """The leader deleted what this follower would fetch next: start over, empty, there."""
        log.info(
            "%s: log end %d is before the leader's start %d; restarting there",
            self.name, self._log.log_end_offset, offset,
        )  # fmt: skip
        self._log.truncate_fully_and_start_at(offset, now_ms=now_ms)
        self._reset_durable_waiters(f"{self.name}: restarted empty at {offset}")
        self._set_hw(offset)

    # ---- producer state --------------------------------------------------------------------

    def start_producer_state_load(self) -> asyncio.Task[None] | None:
        """Bring the producer state up to date if the log needs it (after a truncation): a
        short replay (the usual one, from the snapshot of the last roll) right here, a long one
        in a worker thread. Returns that task, shared by every caller, or None when the state is
        current. A failure goes to `on_failure`."""
        if self._loading is not None and not self._loading.done():
            return self._loading
        try:
            if self._replay_in_place():
                return None
        except (StorageError, OSError) as exc:
            self.on_failure(self, exc)
            return None
        self._loading = asyncio.get_running_loop().create_task(
            self._replay_producer_state(), name=f"producer-state-{self.name}"
        )
        self._loading.add_done_callback(self._loaded)
        return self._loading

    async def load_producer_state(self) -> None:
        """Wait until the producer state is current (replaying it if needed)."""
        task = self.start_producer_state_load()
        if task is not None:
            await asyncio.shield(task)

    def _replay_in_place(self) -> bool:
        """Run the pending replay now if it is short (REPLAY_IN_PLACE_*_MAX); True when the
        state is current."""
        full = False
        while True:
            replay = self._log.plan_producer_state_replay(full)
            if replay is None:
                return True
            if (
                replay.scan_bytes > REPLAY_IN_PLACE_BYTES_MAX
                or replay.snapshot_bytes > REPLAY_IN_PLACE_SNAPSHOT_BYTES_MAX
            ):
                replay.close()
                return False
            state = replay.run()
            if state is None:
                full = True  # every snapshot it counted on was damaged: from the log start
                continue
            self._install(replay, state)
            return True

    async def _replay_producer_state(self) -> None:
        full = False
        while True:
            replay = self._log.plan_producer_state_replay(full)
            if replay is None:
                return
            try:
                state = await asyncio.to_thread(replay.run)
            except (StorageError, OSError):
                if not self._log.replay_is_current(replay):
                    continue  # truncated again under the replay: plan the next one
                raise
            if state is None:
                full = True
                continue
            if self._install(replay, state):
                return

    def _install(self, replay: ProducerStateReplay, state: ProducerState) -> bool:
        if not self._log.install_producer_state(replay, state):
            return False  # truncated again meanwhile: a newer replay is due
        loaded = self._log.producer_state_load
        for corrupt in loaded.corrupt:
            log.warning("%s: ignored a damaged producer snapshot: %s", self.name, corrupt)
        log.info(
            "%s: producer state rebuilt from %s plus %d batch header(s)", self.name,
            "the log start" if loaded.snapshot_offset is None
            else f"the snapshot at {loaded.snapshot_offset}", loaded.headers_scanned,
        )  # fmt: skip
        return True

    def _loaded(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.on_failure(self, exc)

    # ---- reads -------------------------------------------------------------------------

    def read_stable(self, offset: int, max_bytes: int) -> tuple[bytes, list[AbortedTxn]]:
        """read_committed isolation: whole batches from `offset` below the last stable offset,
        and the aborted transactions that may have records among them (the consumer drops
        those records, as Kafka's do). Same offset rules as `read_committed`."""
        stable = self.last_stable_offset
        self.check_readable(offset)
        if offset >= stable:
            return b"", []
        data: bytes = self._log.read(offset, max_bytes, max_offset=stable)
        if not data:
            return data, []
        return data, self._log.aborted_transactions(offset, _end_of(data))

    def check_readable(self, offset: int) -> None:
        if offset > self._log.log_end_offset:
            raise PartitionError(
                common_pb2.OFFSET_OUT_OF_RANGE,
                f"{self.name}: offset {offset} is past the log end {self._log.log_end_offset}",
            )
        if offset < self._log.log_start_offset:
            raise PartitionError(
                common_pb2.OFFSET_OUT_OF_RANGE,
                f"{self.name}: offset {offset} is before the log start "
                f"{self._log.log_start_offset} (deleted by retention)",
            )

    def read_committed(self, offset: int, max_bytes: int) -> bytes:
        """Consumer read: whole batches from `offset`, only below the high watermark.

        An offset between the high watermark and the log end is valid but not yet readable
        (a new leader's HW can trail what consumers already read from the old one): the read is
        empty, never OFFSET_OUT_OF_RANGE, or consumers would reset and re-read (Kafka's rule)."""
        self.check_readable(offset)
        if offset >= self.high_watermark:
            return b""
        data: bytes = self._log.read(offset, max_bytes, max_offset=self.high_watermark)
        return data


class _TransactionalProducers:
    """`(producer_id, producer_epoch) in ...`: may this producer instance write transactional
    batches here now?"""

    __slots__ = ("_partition",)

    def __init__(self, partition: Partition) -> None:
        self._partition = partition

    def __contains__(self, ids: object) -> bool:
        if not isinstance(ids, tuple) or len(ids) != 2:
            return False
        return self._partition.accepts_transactional(ids[0], ids[1])


def _end_of(data: bytes) -> int:
    """The offset after the last whole batch in `data`."""
    position = 0
    last = None
    while position + HEADER_SIZE <= len(data):
        last = parse_header(data, position)
        position += last.size_in_bytes
    assert last is not None, "a read returns whole batches"
    return last.next_offset
