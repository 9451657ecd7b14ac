"""A partition's durable log (Kafka's UnifiedLog): appends as leader or follower, reads, truncation,
retention, recovery bookkeeping and the leader-epoch cache, over `local_log` segments.

Folder `<topic>-<partition>/`::

    00000000000000000000.log / .index / .timeindex   segments (see `log_segment`)
    00000000000000000000.txnindex                     aborted transactions (`txn_index`)
    partition.metadata                                topic id (see `partition_metadata`)
    leader-epoch-checkpoint                           epoch → start offset (`leader_epoch_cache`)
    recovery-point-offset-checkpoint                  offset below which everything is fsynced
    log-start-offset-checkpoint                       the first offset the log still serves
    00000000000000001200.snapshot                     producer state as of an offset
                                                      (see `producer_state`)
    .clean-shutdown                                   present only after a clean `close()`

The two offset checkpoints use Kafka's checkpoint format with one entry ``0 <offset>``.

Rules:
- A leader append is one pass: every batch validated completely (`batch_validation`: header,
  CRC, record framing), then checked against the producer state (duplicates, sequences, zombie
  epochs), then given offsets and the leader epoch in place and written. Nothing is written
  unless all of it passes. Follower appends keep the leader's offsets and must continue the log
  exactly; only their bounds are checked.
- The log owns its producer state (`producer_state`): every append, truncation and move of the
  log start updates it here, for leaders and followers alike. A snapshot is written at every
  segment roll and at a clean close. Opening builds the state from the newest snapshot plus the
  headers after it. After a truncation the state must be replayed the same way; until that
  replay is installed (`plan_producer_state_replay`, run anywhere, `install_producer_state`; or
  `load_producer_state` inline) appends are refused with `ProducerStateLoadingError`.
- Transactions (KIP-98): a client's transactional batch is accepted only from a producer the
  caller says the transaction coordinator registered (`append(transactional_producers=)`);
  the producer state records the first offset of every open transaction, and the first
  unstable offset bounds the last stable offset (`last_stable_offset`). Markers are appended
  only by `append_markers` (clients may not write control batches); an abort marker adds an
  entry to the active segment's `.txnindex`. The txn indexes after the snapshot a producer-state
  replay starts from are rebuilt from that replay (after a crash or a truncation).
- The recovery point only moves forward past fsynced bytes (`flush`; a `FlushJob` run in a
  worker thread and completed here; and on every roll the finished segment is fsynced), and
  back with truncation. Its checkpoint file is written at rolls, truncations and close, so it
  may trail: recovery then rescans a little more, which is always safe.
- The clean-shutdown marker is deleted as soon as the log is opened, so any later crash is seen.
- Time is never read here: callers pass `now_ms`.
- Not thread-safe: one owner (the node's event loop) calls it.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from . import durability
from .batch_validation import validate_batches
from .checkpoint_file import read_checkpoint, write_checkpoint
from .control_records import ABORT, COMMIT, TxnMarker, decode_marker, encode_marker
from .durability import fsync_dir, write_atomically
from .errors import CorruptRecordError, OffsetOutOfRangeError, UnexpectedAppendOffsetError
from .leader_epoch_cache import FILE_NAME as EPOCH_FILE
from .leader_epoch_cache import LeaderEpochCache
from .local_log import LocalLog
from .log_config import LogConfig
from .log_recovery import load_segments
from .log_segment import CLEANED_SUFFIX, INT32_MAX, LogSegment
from .partition_metadata import check_topic_id
from .producer_state import (
    BatchRange,
    CompletedTxn,
    ProducerState,
    ProducerStateError,
    ProducerStateLoadingError,
    ProducerStateReplay,
    SegmentSpan,
    delete_snapshots,
    retain_snapshots,
    snapshot_offsets,
    write_snapshot,
)
from .record_batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    NO_TIMESTAMP,
    BatchHeader,
    assign_offset_and_epoch,
    parse_header,
)
from .txn_index import AbortedTxn

RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
LOG_START_FILE = "log-start-offset-checkpoint"
CLEAN_SHUTDOWN_FILE = ".clean-shutdown"

# A retention rule: (segment, the segment after it or None) → delete it?
_Predicate = Callable[[LogSegment, LogSegment | None], bool]


@dataclass(slots=True)
class FlushJob:
    """The fsyncs that make a log durable up to `end_offset`: planned on the owner's loop
    (`PartitionLog.plan_flush`), run anywhere (a worker thread), then completed on the loop
    (`PartitionLog.complete_flush`). It holds descriptors of its own, so a roll, retention or
    truncation meanwhile cannot pull a file out from under it."""

    end_offset: int
    generation: int
    fds: list[int]
    directory: str | None  # fsync the folder too: a segment file was created since the last job
    active_base: int

    def run(self) -> None:
        try:
            for fd in self.fds:
                durability.fsync(fd)
            if self.directory is not None:
                durability.fsync_dir(self.directory)
        finally:
            self.close()

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)


class AppendInfo(NamedTuple):
    """What an append wrote: offsets [first_offset, last_offset] in `batch_count` batches.
    A NamedTuple (immutable, built by one C call): one is returned per append."""

    first_offset: int
    last_offset: int
    max_timestamp: int
    offset_of_max_timestamp: int
    record_count: int
    batch_count: int
    size_in_bytes: int


@dataclass(frozen=True, slots=True)
class OpenInfo:
    clean_shutdown: bool
    recovered_segments: int
    truncated_bytes: int


@dataclass(frozen=True, slots=True)
class ProducerStateLoadInfo:
    """How the producer state was last built: from the snapshot at `snapshot_offset` (None: from
    the log start) plus `headers_scanned` batch headers; `corrupt` snapshots were deleted."""

    snapshot_offset: int | None
    headers_scanned: int
    corrupt: tuple[str, ...]


def _read_offset(path: str) -> int | None:
    entries = read_checkpoint(path)
    return entries[0][1] if entries else None


class LogReader(Protocol):
    """What a partition log's readers may use; only its owner appends, truncates or configures
    it (node/replica/partition.py hands this view out)."""

    @property
    def log_start_offset(self) -> int: ...

    @property
    def log_end_offset(self) -> int: ...

    @property
    def size_in_bytes(self) -> int: ...

    @property
    def segment_base_offsets(self) -> tuple[int, ...]: ...

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> bytes: ...


class PartitionLog:
    """Open with `PartitionLog.open(...)`; close with `close()`."""

    def __init__(
        self,
        directory: str,
        config: LogConfig,
        local: LocalLog,
        epochs: LeaderEpochCache,
        log_start_offset: int,
        recovery_point: int,
        topic_id: str | None,
        open_info: OpenInfo,
    ) -> None:
        self.directory = directory
        self.config = config
        self._local = local
        self.leader_epoch_cache = epochs
        self._log_start_offset = log_start_offset
        self._recovery_point = recovery_point
        self.topic_id = topic_id
        self.open_info = open_info
        self._closed = False
        self._producers = ProducerState(local.log_end_offset)
        self._producers_pending = True  # until the first load
        self._generation = (
            0  # bumped by every truncation: a replay or flush planned before is stale
        )
        self._dir_synced_base = -1  # active segment base when a flush job last fsynced the folder
        self.producer_state_load = ProducerStateLoadInfo(None, 0, ())
        # a `.txnindex` was unreadable at open: the first replay starts at the log start,
        # ignoring snapshots, so that it rebuilds every txn index
        self._replay_from_start = any(s.txn_index_damaged for s in local.segments)

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str,
        config: LogConfig | None = None,
        *,
        now_ms: int,
        topic_id: str | None = None,
        initial_offset: int = 0,
    ) -> PartitionLog:
        """Open (creating if needed) the log in `directory`, recovering after an unclean
        shutdown. `topic_id`, when given, must match the folder's (InconsistentTopicIdError).
        A new, empty log starts at `initial_offset`."""
        config = config or LogConfig()
        os.makedirs(directory, exist_ok=True)
        stored_topic_id = check_topic_id(directory, topic_id)
        marker = os.path.join(directory, CLEAN_SHUTDOWN_FILE)
        clean = os.path.exists(marker)
        if clean:
            os.remove(marker)
            fsync_dir(directory)
        recovery_point = _read_offset(os.path.join(directory, RECOVERY_POINT_FILE)) or 0
        log_start = _read_offset(os.path.join(directory, LOG_START_FILE))
        epochs = LeaderEpochCache(os.path.join(directory, EPOCH_FILE))

        def on_recovered_batch(header: BatchHeader) -> None:
            # Kafka's rule: recovery only adds epochs newer than the cache knows; entries the
            # lost tail invalidated are cut below with truncate_from_end.
            epoch = header.partition_leader_epoch
            latest = epochs.latest_epoch
            if epoch >= 0 and (latest is None or epoch > latest):
                epochs.assign(epoch, header.base_offset)

        loaded = load_segments(
            directory,
            clean_shutdown=clean,
            recovery_point=recovery_point,
            index_interval_bytes=config.index_interval_bytes,
            now_ms=now_ms,
            on_recovered_batch=on_recovered_batch,
        )
        segments = loaded.segments
        if not segments:
            start = initial_offset if log_start is None else log_start
            segments = [LogSegment(directory, start, config.index_interval_bytes, now_ms)]
        local = LocalLog(directory, config.index_interval_bytes, segments)
        log_start = max(log_start or 0, segments[0].base_offset)
        info = OpenInfo(clean, loaded.recovered_segments, loaded.truncated_bytes)
        log = cls(
            directory, config, local, epochs, log_start, recovery_point, stored_topic_id, info
        )
        if log_start > local.log_end_offset:
            log.truncate_fully_and_start_at(log_start, now_ms=now_ms)
        epochs.truncate_from_end(local.log_end_offset)
        epochs.truncate_from_start(log_start)
        if loaded.recovered_segments or recovery_point > local.log_end_offset:
            log.flush()  # recovered bytes are now known good; make them durable
        log._write_log_start()
        delete_snapshots(
            directory, [o for o in snapshot_offsets(directory) if o > log.log_end_offset]
        )
        log.load_producer_state()
        return log

    # ---- state ---------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._local.log_end_offset

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    @property
    def size_in_bytes(self) -> int:
        return self._local.size_in_bytes

    @property
    def segment_base_offsets(self) -> tuple[int, ...]:
        return tuple(s.base_offset for s in self._local.segments)

    @property
    def producer_state(self) -> ProducerState:
        """The producer state as of the log end (read it; the log alone changes it)."""
        return self._producers

    @property
    def producer_state_pending(self) -> bool:
        """True after a truncation until the replayed producer state is installed."""
        return self._producers_pending

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"log {self.directory} is closed")

    def _check_producer_state(self) -> None:
        if self._producers_pending:
            raise ProducerStateLoadingError(
                f"{self.directory}: the producer state is being rebuilt after a truncation; "
                "retry shortly"
            )

    # ---- appends -------------------------------------------------------------------------

    def append(
        self,
        data: bytes,
        leader_epoch: int,
        *,
        now_ms: int,
        batches_max: int | None = None,
        transactional_producers: Container[tuple[int, int]] = (),
    ) -> AppendInfo:
        """Append batches produced by a client, as leader, in one pass: validate every batch,
        check it against the producer state, then assign offsets from the log end offset, stamp
        `leader_epoch` in place and write. Raises `CorruptRecordError` or `ProducerStateError`
        (nothing written) on bad input, and INVALID_RECORD for more than `batches_max` batches.
        A request that only retries one batch this log already holds writes nothing and answers
        where that batch was written (`batch_count` 0). A transactional batch whose (producer id,
        epoch) is not in `transactional_producers` (those the transaction coordinator registered
        for this partition) is refused with INVALID_TXN_STATE: its transaction could never end
        here. The epoch counts: a fenced instance's batch must not join the transaction its
        successor registered, whose commit marker would make it visible."""
        self._check_open()
        config = self.config
        checked = validate_batches(
            data,
            max_message_bytes=config.max_message_bytes,
            now_ms=now_ms,
            timestamp_before_max_ms=config.message_timestamp_before_max_ms,
            timestamp_after_max_ms=config.message_timestamp_after_max_ms,
            batches_max=batches_max,
        )
        if len(data) > config.segment_bytes:
            raise CorruptRecordError(
                f"{len(data)} bytes in one append exceed segment.bytes={config.segment_bytes}",
                "RECORD_LIST_TOO_LARGE",
            )
        for _, header in checked:
            if (
                header.is_transactional
                and (header.producer_id, header.producer_epoch) not in transactional_producers
            ):
                raise ProducerStateError(
                    "INVALID_TXN_STATE",
                    f"producer {header.producer_id} epoch {header.producer_epoch} is not in a "
                    "transaction the coordinator registered for this partition",
                )
        self._check_producer_state()
        duplicates = self._producers.check([header for _, header in checked])
        if any(d is not None for d in duplicates):
            return _duplicate_answer(duplicates)
        buf = bytearray(data)
        offset = self.log_end_offset
        stamped = []
        for position, header in checked:
            assign_offset_and_epoch(buf, position, offset, leader_epoch)
            stamped.append(
                (position, header._replace(base_offset=offset, partition_leader_epoch=leader_epoch))
            )
            offset += header.record_count
        return self._append(buf, stamped, now_ms)

    def append_markers(
        self, markers: Sequence[TxnMarker], leader_epoch: int, *, now_ms: int
    ) -> AppendInfo:
        """Append one transaction marker per entry, as leader (Kafka's WriteTxnMarkers on the
        partition): each ends its producer's open transaction here, committed or aborted. A
        marker with an epoch older than its producer's is refused (INVALID_PRODUCER_EPOCH,
        nothing written): it comes from a fenced coordinator's view of the producer."""
        self._check_open()
        if not markers:
            raise ValueError("no markers to append")
        self._check_producer_state()
        buf = bytearray()
        batches = []
        for marker in markers:
            batches.append((len(buf), None))
            buf += encode_marker(marker, now_ms)
        headers = [parse_header(buf, position) for position, _ in batches]
        self._producers.check(headers)
        offset = self.log_end_offset
        stamped = []
        for (position, _), header in zip(batches, headers, strict=True):
            assign_offset_and_epoch(buf, position, offset, leader_epoch)
            stamped.append(
                (position, header._replace(base_offset=offset, partition_leader_epoch=leader_epoch))
            )
            offset += 1
        return self._append(buf, stamped, now_ms)

    def append_as_follower(self, data: bytes, *, now_ms: int) -> AppendInfo:
        """Append batches exactly as the leader sent them. Only bounds are checked, and that
        offsets never go backwards: no batch may start below the log end or overlap the one
        before (`UnexpectedAppendOffsetError` otherwise, nothing written). Gaps are allowed, as
        in Kafka: compaction removes whole batches from the leader's log."""
        if self._closed:
            self._check_open()
        if not data:
            raise CorruptRecordError("no record batches received")
        if len(data) > self.config.segment_bytes:
            raise CorruptRecordError(
                f"{len(data)} bytes in one append exceed segment.bytes", "RECORD_LIST_TOO_LARGE"
            )
        self._check_producer_state()
        # One pass: bounds (as `split_batches`) and contiguity, parsing each header once.
        batches = []
        expected = self._local.active.next_offset
        position, end = 0, len(data)
        while position < end:
            if end - position < HEADER_SIZE:
                raise CorruptRecordError(f"batch at byte {position}: only {end - position} left")
            header = parse_header(data, position)
            size = header.batch_length + LOG_OVERHEAD
            if header.magic != MAGIC or size < HEADER_SIZE or size > end - position:
                raise CorruptRecordError(
                    f"batch at byte {position}: magic {header.magic}, {size} bytes claimed, "
                    f"{end - position} left"
                )
            if header.base_offset < expected or header.last_offset_delta < 0:
                raise UnexpectedAppendOffsetError(
                    f"batch at byte {position} starts at offset {header.base_offset} "
                    f"(last delta {header.last_offset_delta}); the log expects at least {expected}"
                )
            expected = header.base_offset + header.last_offset_delta + 1
            batches.append((position, header))
            position += size
        return self._append(data, batches, now_ms)

    def _append(
        self, data: bytes | bytearray, batches: list[tuple[int, BatchHeader]], now_ms: int
    ) -> AppendInfo:
        # marker types first: a marker that cannot be read is refused before anything is written
        kinds = {
            position: COMMIT if decode_marker(data, position).commit else ABORT
            for position, header in batches
            if header.is_control and header.producer_id >= 0
        }
        first = batches[0][1].base_offset
        last_header = batches[-1][1]
        last = last_header.base_offset + last_header.last_offset_delta
        max_ts, offset_of_max, records = NO_TIMESTAMP, first, 0
        cache = self.leader_epoch_cache
        latest_epoch = cache.latest_epoch
        for _, header in batches:
            records += header.record_count
            if header.max_timestamp > max_ts:
                max_ts = header.max_timestamp
                offset_of_max = header.base_offset + header.last_offset_delta
            epoch = header.partition_leader_epoch
            if epoch >= 0 and epoch != latest_epoch:
                cache.assign(epoch, header.base_offset)
                latest_epoch = cache.latest_epoch
        active = self._local.active
        if active.size and (
            active.size > self.config.segment_bytes - len(data)
            or max_ts - active.rolling_timestamp > self.config.segment_ms
            or active.rolling_timestamp < 0
            or last - active.base_offset > INT32_MAX
        ):
            self._maybe_roll(len(data), max_ts, last, now_ms)  # the full rule, when it may roll
            active = self._local.active
        active.append(data, batches)
        update = self._producers.update
        for position, header in batches:
            if header.is_control and header.producer_id >= 0:
                completed = update(header, kinds[position])
                if completed is not None and completed.aborted:
                    active.txn_index.append(_aborted_entry(completed))
            else:
                update(header)
        return AppendInfo(first, last, max_ts, offset_of_max, records, len(batches), len(data))

    def _maybe_roll(self, incoming_bytes: int, max_ts: int, last_offset: int, now_ms: int) -> None:
        """Kafka's shouldRoll: size, age (by record timestamps when the segment has them),
        and relative offsets that must fit the indexes' 32 bits."""
        active = self._local.active
        if active.size == 0:
            return
        if active.rolling_timestamp >= 0:
            waited_ms = max_ts - active.rolling_timestamp
        else:
            waited_ms = now_ms - active.created_ms
        if (
            active.size > self.config.segment_bytes - incoming_bytes
            or waited_ms > self.config.segment_ms
            or last_offset - active.base_offset > INT32_MAX
        ):
            self.roll(now_ms=now_ms)

    def roll(self, *, now_ms: int) -> None:
        """Start a new active segment (no-op if the active one is empty) and fsync the
        finished ones, moving the recovery point to the new segment's base."""
        self._check_open()
        before = self._local.active
        if self._local.roll(now_ms) is not before:
            self._flush_up_to_active()
            self._snapshot_producer_state()

    # ---- transactions --------------------------------------------------------------------

    def first_unstable_offset(self) -> int | None:
        """The first offset of the oldest open transaction here (None: none is open)."""
        return self._producers.first_unstable_offset()

    def last_stable_offset(self, high_watermark: int) -> int:
        """Below this, every record's transaction (if any) is decided: the lower of the high
        watermark and the first unstable offset. read_committed fetches stop here."""
        unstable = self._producers.first_unstable_offset()
        return high_watermark if unstable is None else min(high_watermark, unstable)

    def aborted_transactions(self, start_offset: int, end_offset: int) -> list[AbortedTxn]:
        """The aborted transactions that may hold records in [start_offset, end_offset), from
        the txn indexes of the segment holding `start_offset` and every later one (an abort's
        entry lives with its marker, which follows its records), in marker order."""
        self._check_open()
        segments = self._local.segments
        first = self._local.index_of(max(start_offset, self._log_start_offset))
        found: list[AbortedTxn] = []
        for segment in segments[first:]:
            found.extend(segment.txn_index.overlapping(start_offset, end_offset))
        return found

    def _rebuild_txn_indexes(self, replayed_from: int, aborted: list[CompletedTxn]) -> None:
        """Replace every txn index entry at or after `replayed_from` by those a replay from
        there met: a crash may have lost some, and a truncation left the rest to be redone."""
        segments = self._local.segments
        for segment in segments:
            segment.txn_index.truncate_to(replayed_from)
        for completed in aborted:
            index = self._local.index_of(completed.last_offset)
            segments[index].txn_index.append(_aborted_entry(completed))

    # ---- reads ---------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> bytes:
        """Raw bytes of whole batches, starting with the batch containing `offset`, up to
        `max_bytes` but at least one batch, and only batches wholly below `max_offset` (the
        high watermark for consumers). Empty at the log end. Never decodes records."""
        self._check_open()
        if offset < self._log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRangeError(offset, self._log_start_offset, self.log_end_offset)
        if offset == self.log_end_offset:
            return b""
        return self._local.read(offset, max_bytes, max_offset)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(timestamp, offset) of the first record whose timestamp is ≥ `timestamp_ms`, or None
        (Kafka's ListOffsets by time)."""
        self._check_open()
        for segment in self._local.segments:
            if segment.max_timestamp >= timestamp_ms:
                found = segment.find_offset_by_timestamp(timestamp_ms, self._log_start_offset)
                if found is not None:
                    return found
        return None

    def check_integrity(self) -> None:
        """CRC-check every batch of every segment (an operator's full scan)."""
        for segment in self._local.segments:
            segment.check_integrity()

    # ---- truncation ----------------------------------------------------------------------

    def truncate_to(self, offset: int, *, now_ms: int) -> int:
        """Remove every batch from the one containing `offset` on (a follower dropping its
        divergent suffix). Returns the new log end offset, which is `offset` when it falls on
        a batch boundary. Below the log start this truncates fully."""
        self._check_open()
        if offset < 0:
            raise ValueError(f"cannot truncate to negative offset {offset}")
        if offset >= self.log_end_offset:
            return self.log_end_offset
        if offset < self._log_start_offset:
            self.truncate_fully_and_start_at(offset, now_ms=now_ms)
            return offset
        # Snapshots past the new end describe batches about to go: delete them (durably) first.
        self._generation += 1
        self._producers_pending = True
        delete_snapshots(
            self.directory, [o for o in snapshot_offsets(self.directory) if o > offset]
        )
        self._local.truncate_to(offset)
        if self.log_end_offset < self._log_start_offset:
            # The batch holding `offset` also held the log start: nothing servable is left.
            self.truncate_fully_and_start_at(self._log_start_offset, now_ms=now_ms)
            return self.log_end_offset
        self.leader_epoch_cache.truncate_from_end(self.log_end_offset)
        if self._recovery_point > self.log_end_offset:
            self._recovery_point = self.log_end_offset
            self._write_recovery_point()
        return self.log_end_offset

    def truncate_fully_and_start_at(self, offset: int, *, now_ms: int) -> None:
        """Delete everything and continue, empty, at `offset` (a follower far behind)."""
        self._check_open()
        self._generation += 1
        delete_snapshots(self.directory, snapshot_offsets(self.directory))
        self._local.truncate_fully(offset, now_ms)
        self.leader_epoch_cache.clear()
        self._log_start_offset = offset
        self._recovery_point = offset
        self._write_log_start()
        self._write_recovery_point()
        self._producers = ProducerState(offset)
        self._producers_pending = False

    def maybe_increment_log_start_offset(self, offset: int) -> bool:
        """Move the log start offset up to `offset` (≤ the log end); older offsets stop being
        served and whole segments below it are deleted by the next retention pass."""
        self._check_open()
        if offset <= self._log_start_offset:
            return False
        if offset > self.log_end_offset:
            raise OffsetOutOfRangeError(offset, self._log_start_offset, self.log_end_offset)
        self._log_start_offset = offset
        self.leader_epoch_cache.truncate_from_start(offset)
        self._write_log_start()
        self._on_log_start_moved()
        return True

    # ---- retention -----------------------------------------------------------------------

    def delete_old_segments(self, high_watermark: int, *, now_ms: int) -> int:
        """Retention: delete whole segments by retention.ms (each segment's largest
        timestamp), then retention.bytes, then those below the log start offset — only
        segments that end at or below `high_watermark`. An expired active segment is rolled
        first. Returns the number of segments deleted."""
        self._check_open()
        config = self.config
        deleted = 0
        if config.retention_ms >= 0:
            deleted += self._delete_while(
                high_watermark,
                now_ms,
                lambda s, _: now_ms - _largest_timestamp(s) > config.retention_ms,
            )
        if config.retention_bytes >= 0:
            excess = [self.size_in_bytes - config.retention_bytes]

            def over_size(segment: LogSegment, _: LogSegment | None) -> bool:
                if excess[0] - segment.size < 0:
                    return False
                excess[0] -= segment.size
                return True

            deleted += self._delete_while(high_watermark, now_ms, over_size)
        deleted += self._delete_while(
            high_watermark,
            now_ms,
            lambda _, after: after is not None and after.base_offset <= self._log_start_offset,
        )
        return deleted

    def _delete_while(self, high_watermark: int, now_ms: int, predicate: _Predicate) -> int:
        doomed: list[LogSegment] = []
        segments = self._local.segments
        for i, segment in enumerate(segments):
            after = segments[i + 1] if i + 1 < len(segments) else None
            upper = after.base_offset if after is not None else self.log_end_offset
            last_and_empty = after is None and segment.size == 0
            if high_watermark >= upper and not last_and_empty and predicate(segment, after):
                doomed.append(segment)
            else:
                break
        if not doomed:
            return 0
        if doomed[-1] is self._local.active:
            self.roll(now_ms=now_ms)
        self._local.delete_segments(doomed)
        start = self._local.segments[0].base_offset
        if start > self._log_start_offset:
            self._log_start_offset = start
            self.leader_epoch_cache.truncate_from_start(start)
            self._write_log_start()
            self._on_log_start_moved()
        return len(doomed)

    # ---- producer state (see `producer_state`) ----------------------------------------------

    def _on_log_start_moved(self) -> None:
        self._producers.evict_before(self._log_start_offset)
        retain_snapshots(self.directory, self._log_start_offset, self.log_end_offset)

    def _snapshot_producer_state(self) -> None:
        """Write the producer state as of the log end (at a roll, and at a clean close)."""
        if self._producers_pending:
            return  # nothing newer to say than the snapshot the replay starts from
        assert self._producers.end_offset == self.log_end_offset, "producer state out of step"
        write_snapshot(self.directory, self._producers)
        retain_snapshots(self.directory, self._log_start_offset, self.log_end_offset)

    def plan_producer_state_replay(self, full: bool = False) -> ProducerStateReplay | None:
        """The replay that rebuilds the producer state as of the log end, when one is pending
        (None otherwise). Run it anywhere (`ProducerStateReplay.run`, e.g. in a worker thread),
        then hand the result to `install_producer_state` on the owner's thread. Unless `full`,
        it reaches back only to the oldest snapshot it may start from."""
        if self._closed or not self._producers_pending:
            return None
        start, end = self._log_start_offset, self.log_end_offset
        candidates = [o for o in snapshot_offsets(self.directory) if start <= o <= end]
        if self._replay_from_start:
            full, candidates = True, []
        offsets = sorted({start, *candidates}) if full or not candidates else candidates
        segments = self._local.segments
        first = self._local.index_of(offsets[0])
        spans: list[SegmentSpan] = []
        try:
            for segment in segments[first:]:
                fd = segment.duplicate_fd()
                spans.append(SegmentSpan(fd, segment.log_path, segment.base_offset, segment.size))
        except OSError:
            for span in spans:
                os.close(span.fd)
            raise
        starts = {}
        for offset in offsets:
            index = self._local.index_of(offset)
            found = segments[index].translate_offset(offset)
            starts[offset] = (index - first, found[0]) if found else (index - first + 1, 0)
        return ProducerStateReplay(
            self.directory,
            spans,
            starts,
            start,
            end,
            self._generation,
            use_snapshots=not self._replay_from_start,
        )

    def replay_is_current(self, replay: ProducerStateReplay) -> bool:
        """False once the log was truncated or closed after `replay` was planned: its result
        (or its failure: the files changed under it) no longer counts."""
        return (
            not self._closed and self._producers_pending and (replay.generation == self._generation)
        )

    def install_producer_state(self, replay: ProducerStateReplay, state: ProducerState) -> bool:
        """Install what `replay` built; False (nothing changed) if it is no longer current."""
        if not self.replay_is_current(replay):
            return False
        state.evict_before(self._log_start_offset)  # retention may have moved the start meanwhile
        self._rebuild_txn_indexes(replay.replayed_from, replay.aborted)
        if replay.replayed_from == self._log_start_offset:
            self._replay_from_start = False
        self._producers = state
        self._producers_pending = False
        self.producer_state_load = ProducerStateLoadInfo(
            replay.snapshot_offset, replay.headers_scanned, replay.corrupt
        )
        return True

    def load_producer_state(self) -> None:
        """Complete a pending producer-state replay here and now (opening does this)."""
        replay = self.plan_producer_state_replay()
        while replay is not None:
            state = replay.run()
            if state is not None:
                self.install_producer_state(replay, state)
                return
            replay = self.plan_producer_state_replay(full=True)

    # ---- compaction (see `log_cleaner`) ----------------------------------------------------

    def cleanable_segments(self, bound: int) -> tuple[LogSegment, ...]:
        """The segments that lie entirely below `bound`; never the active segment."""
        self._check_open()
        segments = self._local.segments
        return tuple(
            segment for segment, after in itertools.pairwise(segments) if after.base_offset <= bound
        )

    def replace_cleaned_segment(self, segment: LogSegment, cleaned_path: str | None) -> bool:
        """Swap in a cleaned copy of `segment` (`LogSegment.replace_with`), or, when
        `cleaned_path` is None because nothing in it survived, delete it (the first segment
        stays, emptied, so the log start offset does not move). False, with nothing changed
        except the cleaned file removed, when `segment` is no longer a closed segment of
        this log (truncated or deleted meanwhile)."""
        self._check_open()
        segments = self._local.segments
        if segment not in segments or segment is self._local.active:
            if cleaned_path is not None and os.path.exists(cleaned_path):
                os.remove(cleaned_path)
            return False
        if cleaned_path is not None:
            segment.replace_with(cleaned_path)
        elif segment is segments[0]:
            empty = segment.log_path + CLEANED_SUFFIX
            write_atomically(empty, b"")
            segment.replace_with(empty)
        else:
            self._local.delete_segments([segment])
            fsync_dir(self.directory)
        return True

    # ---- durability ----------------------------------------------------------------------

    def _write_recovery_point(self) -> None:
        path = os.path.join(self.directory, RECOVERY_POINT_FILE)
        write_checkpoint(path, [(0, self._recovery_point)])

    def _write_log_start(self) -> None:
        path = os.path.join(self.directory, LOG_START_FILE)
        write_checkpoint(path, [(0, self._log_start_offset)])

    def _flush_up_to_active(self) -> None:
        active = self._local.active
        if self._recovery_point >= active.base_offset:
            return
        for segment in self._local.segments[self._local.index_of(self._recovery_point) :]:
            if segment is not active:
                segment.flush()
        fsync_dir(self.directory)
        self._recovery_point = active.base_offset
        self._write_recovery_point()

    @property
    def unflushed_messages(self) -> int:
        """Offsets appended past the recovery point (Kafka's unflushedMessages)."""
        return self.log_end_offset - self._recovery_point

    def plan_flush(self) -> FlushJob | None:
        """The fsyncs that make everything appended so far durable, to `run` off the loop and
        then `complete_flush`; None when nothing is unflushed, or the log is closed (a clean
        close flushed it; a dropped or crashed replica has nothing left to make durable)."""
        if self._closed:
            return None
        end = self.log_end_offset
        if self._recovery_point >= end:
            return None
        segments = self._local.segments[self._local.index_of(self._recovery_point) :]
        active_base = self._local.active.base_offset
        fds: list[int] = []
        try:
            for segment in segments:
                fds.append(segment.duplicate_fd())
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        directory = self.directory if active_base != self._dir_synced_base else None
        return FlushJob(end, self._generation, fds, directory, active_base)

    def complete_flush(self, job: FlushJob) -> bool:
        """Move the recovery point past what `job` made durable; False (and nothing moves) if
        the log was truncated or closed since it was planned."""
        if self._closed or job.generation != self._generation:
            return False
        if job.directory is not None:
            self._dir_synced_base = max(self._dir_synced_base, job.active_base)
        self._recovery_point = max(self._recovery_point, min(job.end_offset, self.log_end_offset))
        return True

    def flush(self) -> None:
        """fsync every segment with bytes at or above the recovery point, then move the
        recovery point to the log end offset."""
        self._check_open()
        self._local.flush_from(self._recovery_point)
        self._recovery_point = self.log_end_offset
        self._write_recovery_point()

    def close(self, *, clean: bool = True) -> None:
        """Clean: flush, write indexes and checkpoints, then the clean-shutdown marker. Not
        clean: just release the files, leaving the disk as a crash would."""
        if self._closed:
            return
        if clean:
            self.flush()
            self._snapshot_producer_state()
            self._local.close(clean=True)
            write_atomically(os.path.join(self.directory, CLEAN_SHUTDOWN_FILE), b"")
        else:
            self._local.close(clean=False)
        self._closed = True

    def delete(self) -> None:
        """Close and remove the whole partition folder."""
        if not self._closed:
            self._local.close(clean=False)
            self._closed = True
        shutil.rmtree(self.directory, ignore_errors=True)


def _duplicate_answer(duplicates: list[BatchRange | None]) -> AppendInfo:
    """A request retrying one batch the log holds is answered with where that batch went."""
    original = duplicates[0]
    if len(duplicates) != 1 or original is None:
        raise CorruptRecordError("a request mixing a retried batch with new ones", "INVALID_RECORD")
    return AppendInfo(
        original.first_offset, original.last_offset, NO_TIMESTAMP, original.first_offset, 0, 0, 0
    )


def _largest_timestamp(segment: LogSegment) -> int:
    """A segment's largest record timestamp; Kafka falls back to the file's modification time
    when no batch carries a timestamp."""
    if segment.max_timestamp >= 0:
        return segment.max_timestamp
    return int(os.stat(segment.log_path).st_mtime * 1000)


def _aborted_entry(completed: CompletedTxn) -> AbortedTxn:
    return AbortedTxn(
        completed.producer_id,
        completed.first_offset,
        completed.last_offset,
        completed.last_stable_offset,
    )
