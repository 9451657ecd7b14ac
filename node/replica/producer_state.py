"""Idempotent producers on one partition replica (KIP-98 style): the last batches of each producer.

Every replica, leader or follower, keeps per producer id its epoch and the sequence ranges and
offsets of its last `BATCHES_PER_PRODUCER_MAX` batches, updated from the batch headers it
appends, so a new leader deduplicates exactly as the old one did. On open (and after a
truncation) the state is rebuilt by reading the batch headers of the log — headers only, never
records.

Leader check of an incoming batch with a producer id:
- an epoch older than the producer's current one: INVALID_PRODUCER_EPOCH (a zombie producer);
- a sequence range equal to one of the cached batches: a duplicate (a retry of a batch that was
  written): answered with the original offsets, nothing appended;
- a new epoch must start at sequence 0; otherwise the first sequence must follow the last one
  (sequences wrap at 2^31): anything else is OUT_OF_ORDER_SEQUENCE_NUMBER;
- a producer unknown here (its state aged out with the log) is accepted as it comes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from strom.node.errors import CodedError
from strom.storage.batch_validation import split_batches
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import BatchHeader, parse_header
from strom.v1 import common_pb2

BATCHES_PER_PRODUCER_MAX = 5
PRODUCERS_MAX = 100_000
SEQUENCE_MODULUS = 1 << 31
READ_CHUNK_BYTES = 4 << 20


class ProducerStateError(CodedError):
    """A batch the producer state refuses (zombie epoch, sequence gap)."""


@dataclass(frozen=True, slots=True)
class BatchRange:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    batches: deque[BatchRange] = field(
        default_factory=lambda: deque(maxlen=BATCHES_PER_PRODUCER_MAX)
    )

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1


def last_sequence(header: BatchHeader) -> int:
    return (header.base_sequence + header.last_offset_delta) % SEQUENCE_MODULUS


class ProducerState:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}

    def check(self, header: BatchHeader) -> BatchRange | None:
        """Leader check before appending; returns the original range of a duplicate, None for
        a batch to append, or raises ProducerStateError."""
        if header.producer_id < 0:
            return None
        entry = self.producers.get(header.producer_id)
        if entry is None:
            return None
        if header.producer_epoch < entry.epoch:
            raise ProducerStateError(
                common_pb2.INVALID_PRODUCER_EPOCH,
                f"producer {header.producer_id} epoch {header.producer_epoch} is older than "
                f"{entry.epoch}: a newer instance of this producer is active",
            )
        first, last = header.base_sequence, last_sequence(header)
        if header.producer_epoch == entry.epoch:
            for cached in entry.batches:
                if cached.first_seq == first and cached.last_seq == last:
                    return cached
            expected = (entry.last_seq + 1) % SEQUENCE_MODULUS
            if first != expected:
                raise ProducerStateError(
                    common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER,
                    f"producer {header.producer_id}: sequence {first} after {entry.last_seq}; "
                    f"expected {expected}",
                )
        elif first != 0:
            raise ProducerStateError(
                common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER,
                f"producer {header.producer_id}: new epoch {header.producer_epoch} must start "
                f"at sequence 0, not {first}",
            )
        return None

    def update(self, header: BatchHeader) -> None:
        """Record an appended batch (leader after its append, follower as it appends)."""
        if header.producer_id < 0:
            return
        entry = self.producers.get(header.producer_id)
        if entry is None or header.producer_epoch > entry.epoch:
            if entry is None and len(self.producers) >= PRODUCERS_MAX:
                self.producers.pop(next(iter(self.producers)))  # the oldest producer ages out
            entry = self.producers[header.producer_id] = ProducerEntry(header.producer_epoch)
        elif header.producer_epoch < entry.epoch:
            return
        entry.batches.append(
            BatchRange(
                header.base_sequence,
                last_sequence(header),
                header.base_offset,
                header.base_offset + header.last_offset_delta,
            )
        )

    def update_all(self, data: bytes) -> None:
        for position, _ in split_batches(data):
            self.update(parse_header(data, position))

    @classmethod
    def rebuild(cls, log: PartitionLog) -> ProducerState:
        """Replay the batch headers of the whole log (done at open and after truncation)."""
        state = cls()
        offset = log.log_start_offset
        while offset < log.log_end_offset:
            data = log.read(offset, READ_CHUNK_BYTES)
            if not data:
                break
            for header in _headers(data):
                state.update(header)
                offset = header.base_offset + header.last_offset_delta + 1
        return state


def _headers(data: bytes) -> Iterable[BatchHeader]:
    for position, _ in split_batches(data):
        yield parse_header(data, position)
