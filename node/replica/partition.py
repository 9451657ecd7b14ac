"""One partition replica on this broker: its log, its role, and its high watermark.

The Partition is the single owner of the replica's state (STYLE.md): the replica manager, the
request handlers and the follower fetcher all go through it, on the event loop. As leader it
validates and appends producer batches, serves follower fetches (recording their progress in a
pure `LeaderState`), moves the high watermark, and completes acks=all produces waiting for it.
As follower it appends what its leader sent and takes the leader's high watermark.

Consumers only ever see offsets below the high watermark (DESIGN.md §7).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from strom.node import metrics
from strom.node.delayed import ChangeNotifier, OffsetWaiters
from strom.node.errors import CodedError
from strom.node.metadata.image import PartitionInfo
from strom.storage.batch_validation import split_batches
from strom.storage.partition_log import AppendInfo, PartitionLog
from strom.storage.record_batch import parse_header
from strom.v1 import common_pb2

from .leader_state import IsrChange, LeaderState, diverging_epoch
from .producer_state import ProducerState, ProducerStateError

log = logging.getLogger("strom.replica")


class PartitionError(CodedError):
    """A per-partition refusal with a Kafka error code; the handler puts it in the response."""


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
        self.log = log
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
        self.producers = ProducerState.rebuild(log)

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def is_leader(self) -> bool:
        return self.leader_state is not None

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
        leo = self.log.log_end_offset
        # Every batch this leader writes is stamped with its epoch; the cache records where the
        # epoch starts so followers can find where their logs diverge (KIP-101).
        self.log.leader_epoch_cache.assign(info.leader_epoch, leo)
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
        headers = [parse_header(data, position) for position, _ in split_batches(data)]
        try:
            duplicates = [self.producers.check(h) for h in headers]
        except ProducerStateError as exc:
            raise PartitionError(exc.code, f"{self.name}: {exc.message}") from exc
        if any(d is not None for d in duplicates):
            if not all(d is not None for d in duplicates) or len(duplicates) != 1:
                raise PartitionError(
                    common_pb2.INVALID_RECORD,
                    f"{self.name}: a request mixing a retried batch with new ones",
                )
            original = duplicates[0]
            assert original is not None
            # A retry of a batch this log already has: answer with where it was written.
            return AppendInfo(original.first_offset, original.last_offset, -1,
                              original.first_offset, 0, 0, 0)  # fmt: skip
        info = self.log.append(data, self.leader_epoch, now_ms=now_ms)
        offset = info.first_offset
        for header in headers:
            self.producers.update(header._replace(base_offset=offset))
            offset += header.record_count
        self._maybe_advance_hw()
        self.changed.notify()
        return info

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
        if state.maybe_advance_high_watermark(self.log.log_end_offset):
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
    ) -> FollowerFetchResult:
        state = self._require_leader()
        if replica_id not in self.replicas:
            raise PartitionError(
                common_pb2.NOT_LEADER_OR_FOLLOWER,
                f"broker {replica_id} is not a replica of {self.name}",
            )
        leo = self.log.log_end_offset
        if last_fetched_epoch >= 0:
            end = self.log.leader_epoch_cache.end_offset_for(last_fetched_epoch, leo)
            diverging = diverging_epoch(end, fetch_offset, last_fetched_epoch)
            if diverging is not None:
                return FollowerFetchResult(
                    b"", self.high_watermark, self.log.log_start_offset, diverging, None
                )
        if fetch_offset > leo:
            raise PartitionError(
                common_pb2.OFFSET_OUT_OF_RANGE,
                f"{self.name}: follower offset {fetch_offset} is past the leader's end {leo}",
            )
        state.on_follower_fetch(replica_id, fetch_offset, leo, now_ms, broker_epoch)
        self._maybe_advance_hw()
        change = state.maybe_expand_isr(replica_id, active_brokers)
        if fetch_offset < self.log.log_start_offset:
            raise PartitionError(
                common_pb2.OFFSET_OUT_OF_RANGE,
                f"{self.name}: offset {fetch_offset} was deleted; log starts at "
                f"{self.log.log_start_offset}",
            )
        records = self.log.read(fetch_offset, max_bytes) if fetch_offset < leo else b""
        return FollowerFetchResult(
            records, self.high_watermark, self.log.log_start_offset, None, change
        )

    def maybe_shrink_isr(self, now_ms: int, lag_time_max_ms: int) -> IsrChange | None:
        state = self.leader_state
        return None if state is None else state.maybe_shrink_isr(now_ms, lag_time_max_ms)

    def on_isr_change_failed(self) -> None:
        if self.leader_state is not None:
            self.leader_state.on_isr_change_failed()

    # ---- follower ----------------------------------------------------------------------

    def append_as_follower(self, data: bytes, leader_hw: int, now_ms: int) -> None:
        if data:
            self.log.append_as_follower(data, now_ms=now_ms)
            self.producers.update_all(data)
            self.changed.notify()
        self.follower_update_hw(leader_hw)

    def follower_update_hw(self, leader_hw: int) -> None:
        self._set_hw(min(leader_hw, self.log.log_end_offset))

    def truncate_to(self, offset: int, now_ms: int) -> None:
        if offset < self.log.log_end_offset:
            log.info(
                "%s: truncating divergent suffix from %d (log end was %d)",
                self.name, offset, self.log.log_end_offset,
            )  # fmt: skip
            self.log.truncate_to(offset, now_ms=now_ms)
            self.producers = ProducerState.rebuild(self.log)
        if self.high_watermark > self.log.log_end_offset:
            # What was cut was never committed as far as this replica can prove: it must not
            # count as committed if this replica leads later (Kafka clamps the HW here too).
            self._reset_hw(self.log.log_end_offset)
        # Even with nothing to cut, drop epochs that start at or past `offset`: a replica that
        # led an epoch without writing in it keeps an entry at its log end, and would otherwise
        # ask about that epoch forever (Kafka's UnifiedLog.truncateTo does the same).
        self.log.leader_epoch_cache.truncate_from_end(offset)

    # ---- reads -------------------------------------------------------------------------

    def read_committed(self, offset: int, max_bytes: int) -> bytes:
        """Consumer read: whole batches from `offset`, only below the high watermark.

        An offset between the high watermark and the log end is valid but not yet readable
        (a new leader's HW can trail what consumers already read from the old one): the read is
        empty, never OFFSET_OUT_OF_RANGE, or consumers would reset and re-read (Kafka's rule)."""
        if offset > self.log.log_end_offset:
            raise PartitionError(
                common_pb2.OFFSET_OUT_OF_RANGE,
                f"{self.name}: offset {offset} is past the log end {self.log.log_end_offset}",
            )
        if offset < self.log.log_start_offset:
            raise PartitionError(
                common_pb2.OFFSET_OUT_OF_RANGE,
                f"{self.name}: offset {offset} is before the log start "
                f"{self.log.log_start_offset} (deleted by retention)",
            )
        if offset >= self.high_watermark:
            return b""
        data: bytes = self.log.read(offset, max_bytes, max_offset=self.high_watermark)
        return data
