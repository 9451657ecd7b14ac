"""Idempotent producers of one partition log (KIP-98) and their snapshots on disk: Kafka's
ProducerStateManager. The partition log owns one `ProducerState` and keeps it in step with
every append, truncation and move of its start (see `partition_log`).

State. Per producer id: its epoch and the sequence ranges and offsets of its last
`BATCHES_PER_PRODUCER_MAX` batches, taken from the header of every batch the log appends, as
leader or follower, so that a new leader deduplicates exactly as the old one did. `end_offset`
is where the state stands: every batch below it is applied, none at or above it.

Leader check of incoming batches (`check`, in request order, each against the state as the
earlier ones of the same request would leave it):
- a batch without a producer id passes;
- an epoch older than the producer's current one: INVALID_PRODUCER_EPOCH (a zombie producer);
- a sequence range equal to one of the cached batches: a duplicate (the retry of a batch that
  was written), answered with the original offsets, nothing appended;
- a new epoch must start at sequence 0; otherwise the first sequence must follow the last one
  (sequences wrap at 2^31): anything else is OUT_OF_ORDER_SEQUENCE_NUMBER;
- a producer unknown here (it aged out, or its batches left with retention) is accepted.

Bounds: at most `PRODUCERS_MAX` producers (the oldest ages out first; the order is kept in
snapshots, so a rebuilt state ages out the same one), at most `BATCHES_PER_PRODUCER_MAX`
batches each. A producer whose last batch lies below the log start offset is forgotten
(`evict_before`), as Kafka does when retention moves the start.

Snapshots. `<offset, 20 digits>.snapshot` in the partition folder holds the state as of that
offset. The log writes one when it rolls a segment (at the new segment's base offset) and when
it closes cleanly (at its end offset), and keeps the newest `SNAPSHOTS_MAX` at or above its
start. To build the state as of its end, the log loads the newest valid snapshot at or below
the end and replays only the batch headers after it (`HeaderReplay`); with none, it replays from
its start. Snapshots above a truncation point are deleted, durably, with the truncation.

File format (big-endian; written to `.tmp`, fsynced and renamed, so a crash leaves the old file
or the new one)::

    version    int16   2 (1: the same without the open transactions; still read)
    crc        uint32  CRC-32C of every byte after this field
    offset     int64   the snapshot's offset (also its file name)
    producers  int32   P
    batches    int32   B
    P × (producer_id int64, epoch int16, batch count int8), oldest producer first
    B × (first_seq int32, last_seq int32, first_offset int64, last_offset int64), the batches
        of the producers in that order, oldest first
    ongoing    int32   T (version 2)
    T × (producer_id int64, first_offset int64), the open transactions, oldest first

Arrays of fixed-size entries, so that decoding is a few `struct.iter_unpack` passes.

Transactions (KIP-98). A transactional batch opens its producer's transaction at its first
offset (`ongoing`; a producer has at most one open); a marker (control batch, see
`control_records`) closes it and returns the `CompletedTxn`, whose abort the log writes to the
`.txnindex`. The oldest open transaction's first offset is the first unstable offset, which
bounds the last stable offset. A marker with a newer epoch (the coordinator fenced the producer)
moves the producer to that epoch with no batches, so the next batch must start at sequence 0 and
the fenced instance's batches are refused; a marker with an older epoch is refused. A producer
with an open transaction is kept when the log start moves (`evict_before`). A replay decodes
each marker's record to tell commit from abort.

A snapshot that is short, of another version, inconsistent with its name or failing its CRC is
reported (`SnapshotLoad.corrupt`), deleted and skipped: the next older one is tried, then the
log start. Time is never read here; nothing here is thread-safe except `HeaderReplay.run`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import crc32c

from .control_records import ABORT, COMMIT, decode_marker
from .durability import fsync_dir, write_atomically
from .errors import LogCorruptionError, StorageError
from .record_batch import HEADER_SIZE, LOG_OVERHEAD, MAGIC, BatchHeader, parse_header

BATCHES_PER_PRODUCER_MAX = 5
PRODUCERS_MAX = 100_000
SEQUENCE_MODULUS = 1 << 31
SNAPSHOTS_MAX = 4
SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOT_VERSION = 2  # 2 adds the ongoing transactions; 1 (none) is still read
REPLAY_CHUNK_BYTES = 64 * 1024

_PREFIX = struct.Struct(">hI")  # version, crc
_BODY_HEAD = struct.Struct(">qii")  # offset, producer count, batch count
_PRODUCER = struct.Struct(">qhb")  # producer id, epoch, batch count
_BATCH = struct.Struct(">iiqq")  # first seq, last seq, first offset, last offset
_ONGOING_COUNT = struct.Struct(">i")
_ONGOING = struct.Struct(">qq")  # producer id, first offset of its open transaction


class ProducerStateError(StorageError):
    """A batch the producer state refuses: a zombie epoch or a sequence gap. Nothing written."""

    def __init__(self, error_name: str, message: str) -> None:
        super().__init__(f"{error_name}: {message}")
        self.error_name = error_name
        self.detail = message


class ProducerStateLoadingError(StorageError):
    """The producer state is being rebuilt after a truncation: appends wait until it is (a
    leader that deduplicated against a stale state could write a retried batch twice)."""

    error_name = "NOT_LEADER_OR_FOLLOWER"
    retriable = True


class BatchRange(NamedTuple):
    """One cached batch of a producer. A NamedTuple: snapshots decode hundreds of thousands."""

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


class CompletedTxn(NamedTuple):
    """A transaction ended by a marker at `last_offset`: its first offset in this log (the
    marker's own when none of its records is here), and the last stable offset once it is
    complete (Kafka's AbortedTxn.lastStableOffset, for the `.txnindex` of an abort)."""

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int
    aborted: bool


def last_sequence(header: BatchHeader) -> int:
    return (header.base_sequence + header.last_offset_delta) % SEQUENCE_MODULUS


class ProducerState:
    """The producers of one log as of `end_offset`; see the module docstring for the rules."""

    def __init__(self, end_offset: int = 0) -> None:
        self.producers: dict[int, ProducerEntry] = {}
        # producer id -> first offset of its open transaction; insertion order is offset order
        # (a transaction opens at an append, and appends come in offset order)
        self.ongoing: dict[int, int] = {}
        self.end_offset = end_offset

    def first_unstable_offset(self) -> int | None:
        """The first offset of the oldest open transaction, None when none is open: no
        read_committed reader may read at or past it (the last stable offset is the lower of
        it and the high watermark)."""
        return next(iter(self.ongoing.values()), None)

    def check(self, headers: Sequence[BatchHeader]) -> list[BatchRange | None]:
        """Leader check of a request's batches, in order: for each, the original range of a
        duplicate or None for a batch to append. Raises ProducerStateError. Changes nothing."""
        staged: dict[int, tuple[int, int]] = {}  # producer id -> (epoch, last seq) so far
        results: list[BatchRange | None] = []
        for header in headers:
            pid = header.producer_id
            if pid < 0:
                results.append(None)
                continue
            entry = self.producers.get(pid)
            if header.is_control:
                current = staged[pid][0] if pid in staged else entry.epoch if entry else -1
                if header.producer_epoch < current:
                    raise ProducerStateError(
                        "INVALID_PRODUCER_EPOCH",
                        f"marker for producer {pid} epoch {header.producer_epoch} is older "
                        f"than {current}",
                    )
                results.append(None)
                continue
            if pid in self.ongoing and not header.is_transactional:
                raise ProducerStateError(
                    "INVALID_TXN_STATE",
                    f"producer {pid} sent a non-transactional batch inside its open transaction",
                )
            if pid in staged:
                epoch, last_seq = staged[pid]
            elif entry is not None:
                epoch, last_seq = entry.epoch, entry.last_seq
            else:
                staged[pid] = (header.producer_epoch, last_sequence(header))
                results.append(None)
                continue
            duplicate = self._check_one(header, entry, epoch, last_seq, pid in staged)
            if duplicate is None:
                staged[pid] = (max(epoch, header.producer_epoch), last_sequence(header))
            results.append(duplicate)
        return results

    @staticmethod
    def _check_one(
        header: BatchHeader, entry: ProducerEntry | None, epoch: int, last_seq: int, staged: bool
    ) -> BatchRange | None:
        pid = header.producer_id
        if header.producer_epoch < epoch:
            raise ProducerStateError(
                "INVALID_PRODUCER_EPOCH",
                f"producer {pid} epoch {header.producer_epoch} is older than {epoch}: a newer "
                "instance of this producer is active",
            )
        first, last = header.base_sequence, last_sequence(header)
        if header.producer_epoch == epoch:
            if entry is not None and not staged and entry.epoch == epoch:
                for cached in entry.batches:
                    if cached.first_seq == first and cached.last_seq == last:
                        return cached
            expected = (last_seq + 1) % SEQUENCE_MODULUS
            if first != expected:
                raise ProducerStateError(
                    "OUT_OF_ORDER_SEQUENCE_NUMBER",
                    f"producer {pid}: sequence {first} after {last_seq}; expected {expected}",
                )
        elif first != 0:
            raise ProducerStateError(
                "OUT_OF_ORDER_SEQUENCE_NUMBER",
                f"producer {pid}: new epoch {header.producer_epoch} must start at sequence 0, "
                f"not {first}",
            )
        return None

    def update(self, header: BatchHeader, control_type: int | None = None) -> CompletedTxn | None:
        """Apply one appended batch (with its final offsets), leader or follower. For a
        transaction marker, `control_type` is its type (`control_records.ABORT` or `COMMIT`, read
        from its record) and the transaction it ends is returned."""
        next_offset = header.base_offset + header.last_offset_delta + 1
        if next_offset > self.end_offset:
            self.end_offset = next_offset
        pid = header.producer_id
        if pid < 0:
            return None
        if header.is_control:
            return self._end_transaction(header, control_type)
        entry = self.producers.get(pid)
        if entry is None or header.producer_epoch > entry.epoch:
            if entry is None and len(self.producers) >= PRODUCERS_MAX:
                self.producers.pop(next(iter(self.producers)))  # the oldest producer ages out
            entry = self.producers[pid] = ProducerEntry(header.producer_epoch)
        elif header.producer_epoch < entry.epoch:
            return None
        if header.is_transactional and pid not in self.ongoing:
            self.ongoing[pid] = header.base_offset
        entry.batches.append(
            BatchRange(
                header.base_sequence,
                last_sequence(header),
                header.base_offset,
                header.base_offset + header.last_offset_delta,
            )
        )

        return None

    def _end_transaction(self, header: BatchHeader, control_type: int | None) -> CompletedTxn:
        if control_type not in (ABORT, COMMIT):
            raise StorageError(f"marker at offset {header.base_offset} has no ABORT/COMMIT type")
        pid = header.producer_id
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerEntry(header.producer_epoch)
        elif header.producer_epoch > entry.epoch:
            # the coordinator bumped the epoch to fence a zombie: the new epoch starts at seq 0
            entry.epoch = header.producer_epoch
            entry.batches.clear()
        marker_offset = header.base_offset
        first = self.ongoing.pop(pid, marker_offset)
        stable = self.first_unstable_offset()
        return CompletedTxn(
            pid,
            first,
            marker_offset,
            marker_offset + 1 if stable is None else stable,
            control_type == ABORT,
        )

    def evict_before(self, log_start_offset: int) -> None:
        """Forget batches wholly below the log start, and producers left with none."""
        gone = [
            p
            for p, e in self.producers.items()
            if p not in self.ongoing
            and (not e.batches or e.batches[-1].last_offset < log_start_offset)
        ]
        for pid in gone:
            del self.producers[pid]
        for entry in self.producers.values():
            while entry.batches and entry.batches[0].last_offset < log_start_offset:
                entry.batches.popleft()

    def as_tuples(self) -> tuple[tuple[int, int, tuple[BatchRange, ...]], ...]:
        """The whole state, order included, as plain values (tests compare states by it)."""
        return tuple((pid, e.epoch, tuple(e.batches)) for pid, e in self.producers.items())

    # ---- snapshot encoding -------------------------------------------------------------

    def encode(self) -> bytes:
        producers = bytearray()
        batches = bytearray()
        pack_producer, pack_batch = _PRODUCER.pack, _BATCH.pack
        count = 0
        for pid, entry in self.producers.items():
            producers += pack_producer(pid, entry.epoch, len(entry.batches))
            for b in entry.batches:
                batches += pack_batch(*b)
            count += len(entry.batches)
        ongoing = _ONGOING_COUNT.pack(len(self.ongoing)) + b"".join(
            _ONGOING.pack(pid, first) for pid, first in self.ongoing.items()
        )
        body = (
            _BODY_HEAD.pack(self.end_offset, len(self.producers), count)
            + producers
            + batches
            + ongoing
        )
        return _PREFIX.pack(SNAPSHOT_VERSION, crc32c.crc32c(body)) + body

    @classmethod
    def decode(cls, data: bytes, path: str) -> ProducerState:
        """Raises LogCorruptionError naming `path` when `data` is not a valid snapshot."""
        if len(data) < _PREFIX.size + _BODY_HEAD.size:
            raise LogCorruptionError(path, 0, f"snapshot of {len(data)} bytes is cut short")
        version, crc = _PREFIX.unpack_from(data)
        if version not in (1, SNAPSHOT_VERSION):
            raise LogCorruptionError(path, 0, f"snapshot version {version} is unknown")
        with memoryview(data) as view:
            if crc32c.crc32c(view[_PREFIX.size :]) != crc:
                raise LogCorruptionError(path, 0, "snapshot CRC-32C mismatch")
            end_offset, producer_count, batch_count = _BODY_HEAD.unpack_from(data, _PREFIX.size)
            start = _PREFIX.size + _BODY_HEAD.size
            middle = start + producer_count * _PRODUCER.size
            end = middle + batch_count * _BATCH.size
            ongoing_at = end
            ongoing_count = 0
            if version >= 2 and end + _ONGOING_COUNT.size <= len(data):
                (ongoing_count,) = _ONGOING_COUNT.unpack_from(data, end)
                end += _ONGOING_COUNT.size + max(ongoing_count, 0) * _ONGOING.size
            elif version >= 2:
                end += _ONGOING_COUNT.size  # missing: reported below
            if producer_count < 0 or batch_count < 0 or ongoing_count < 0 or end != len(data):
                raise LogCorruptionError(path, start, "snapshot sizes disagree with its length")
            ranges = map(BatchRange._make, _BATCH.iter_unpack(view[middle:ongoing_at]))
            state = cls(end_offset)
            taken = 0
            for pid, epoch, batches in _PRODUCER.iter_unpack(view[start:middle]):
                if batches < 0 or taken + batches > batch_count:
                    raise LogCorruptionError(path, start, f"producer {pid}: {batches} batches")
                entry = state.producers[pid] = ProducerEntry(epoch)
                entry.batches.extend(itertools.islice(ranges, batches))
                taken += batches
            start_ongoing = ongoing_at + _ONGOING_COUNT.size
            for pid, first in _ONGOING.iter_unpack(view[start_ongoing:end]):
                state.ongoing[pid] = first
        if taken != batch_count:
            raise LogCorruptionError(path, middle, "batches left over after the producers")
        return state


# ---- snapshot files ----------------------------------------------------------------------


def snapshot_path(directory: str, offset: int) -> str:
    return os.path.join(directory, f"{offset:020d}{SNAPSHOT_SUFFIX}")


def snapshot_offsets(directory: str) -> list[int]:
    """Offsets of the snapshot files in `directory`, ascending."""
    offsets = []
    for name in os.listdir(directory):
        stem = name[: -len(SNAPSHOT_SUFFIX)]
        if name.endswith(SNAPSHOT_SUFFIX) and len(stem) == 20 and stem.isdigit():
            offsets.append(int(stem))
    return sorted(offsets)


def write_snapshot(directory: str, state: ProducerState) -> None:
    write_atomically(snapshot_path(directory, state.end_offset), state.encode())


def delete_snapshots(directory: str, offsets: Iterable[int]) -> int:
    """Delete the snapshots at `offsets`, durably; returns how many existed."""
    deleted = 0
    for offset in offsets:
        with contextlib.suppress(FileNotFoundError):
            os.remove(snapshot_path(directory, offset))
            deleted += 1
    if deleted:
        fsync_dir(directory)
    return deleted


def retain_snapshots(directory: str, log_start_offset: int, log_end_offset: int) -> None:
    """Keep the newest SNAPSHOTS_MAX snapshots in [log start, log end]; delete the others."""
    offsets = snapshot_offsets(directory)
    kept = [o for o in offsets if log_start_offset <= o <= log_end_offset][-SNAPSHOTS_MAX:]
    delete_snapshots(directory, sorted(set(offsets) - set(kept)))


@dataclass(frozen=True, slots=True)
class SnapshotLoad:
    """The newest usable snapshot at or below an offset: its state (None: there is none) and
    the corrupt ones met on the way, as `path: reason` (deleted, to be reported)."""

    state: ProducerState | None
    corrupt: tuple[str, ...]


def load_newest_snapshot(directory: str, at_most: int, at_least: int) -> SnapshotLoad:
    corrupt = []
    for offset in reversed(snapshot_offsets(directory)):
        if offset > at_most or offset < at_least:
            continue
        path = snapshot_path(directory, offset)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue  # deleted meanwhile (retention): an older one will do
        try:
            state = ProducerState.decode(data, path)
            if state.end_offset != offset:
                raise LogCorruptionError(path, 0, f"snapshot says offset {state.end_offset}")
        except LogCorruptionError as exc:
            corrupt.append(f"{path}: {exc.reason}")
            delete_snapshots(directory, [offset])
            continue
        return SnapshotLoad(state, tuple(corrupt))
    return SnapshotLoad(None, tuple(corrupt))


# ---- replaying batch headers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentSpan:
    """Bytes [0, end) of one segment file (base offset `base_offset`), read through a descriptor
    `fd` of the replay's own."""

    fd: int
    path: str
    base_offset: int
    end: int


class ProducerStateReplay:
    """Builds the state as of `end_offset`: the newest valid snapshot in [log start, end], then
    the batch headers after it (from the log start when there is none).

    The log plans it (`PartitionLog.plan_producer_state_replay`) with descriptors duplicated from
    its segments' and the byte position of every place the replay may start (`starts`: offset →
    (span index, position)), so `run` touches nothing the log's owner uses and may run in a
    worker thread while the owner goes on: files may be truncated, cleaned or deleted meanwhile,
    and the owner then discards the result (`generation`). `run` returns None when every
    snapshot the plan counted on was corrupt and the spans do not reach back to the log start
    (plan again with `full=True`). `run` closes the descriptors; `close` does so if it never ran.
    """

    def __init__(
        self,
        directory: str,
        spans: list[SegmentSpan],
        starts: dict[int, tuple[int, int]],
        log_start_offset: int,
        end_offset: int,
        generation: int,
        use_snapshots: bool = True,
    ) -> None:
        self.directory = directory
        self.use_snapshots = use_snapshots
        self.spans = spans
        self.starts = starts
        self.log_start_offset = log_start_offset
        self.end_offset = end_offset
        self.generation = generation
        self.snapshot_offset: int | None = None
        self.corrupt: tuple[str, ...] = ()
        self.headers_scanned = 0
        # where the replay started (its snapshot's offset or the log start) and the aborted
        # transactions whose marker it met: the txn indexes from there on are rebuilt from them
        self.replayed_from = log_start_offset
        self.aborted: list[CompletedTxn] = []
        # Bytes of batches after the newest place it may start: what `run` reads unless that
        # snapshot turns out damaged (the owner runs short replays in place).
        newest = starts[max(starts)]
        self.scan_bytes = sum(s.end for s in spans[newest[0] :]) - newest[1]
        # and the size of the snapshot it starts from (decoding costs far more per byte)
        self.snapshot_bytes = _size(snapshot_path(directory, max(starts)))

    def run(self) -> ProducerState | None:
        try:
            if self.use_snapshots:
                loaded = load_newest_snapshot(
                    self.directory, self.end_offset, self.log_start_offset
                )
            else:
                loaded = SnapshotLoad(None, ())
            self.corrupt = loaded.corrupt
            if loaded.state is not None:
                state, start = loaded.state, loaded.state.end_offset
                self.snapshot_offset = start
            else:
                state, start = ProducerState(self.log_start_offset), self.log_start_offset
            where = self.starts.get(start)
            if where is None:
                return None
            self.replayed_from = start
            first_span, position = where
            for span in self.spans[first_span:]:
                for header, control in _headers(span, position):
                    if header.base_offset + header.last_offset_delta >= start:
                        completed = state.update(header, control)
                        if completed is not None and completed.aborted:
                            self.aborted.append(completed)
                        self.headers_scanned += 1
                position = 0
            state.evict_before(self.log_start_offset)
            state.end_offset = self.end_offset
            return state
        finally:
            self.close()

    def close(self) -> None:
        spans, self.spans = self.spans, []
        for span in spans:
            os.close(span.fd)


def marker_type(data: bytes | bytearray | memoryview, at: int, path: str, where: int) -> int:
    """ABORT or COMMIT of the marker batch at `at` of `data`; LogCorruptionError otherwise."""
    try:
        return COMMIT if decode_marker(data, at).commit else ABORT
    except StorageError as exc:
        raise LogCorruptionError(path, where, f"transaction marker is damaged: {exc}") from None


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def _headers(span: SegmentSpan, position: int) -> Iterable[tuple[BatchHeader, int | None]]:
    """The batch headers of a span from byte `position`, reading about REPLAY_CHUNK_BYTES at a
    time and never a batch's records beyond that: a large batch costs a pread, not its bytes.
    Each comes with its marker type when it is a transaction marker (a small batch, decoded)."""
    end = span.end
    while position < end:
        chunk = os.pread(span.fd, min(REPLAY_CHUNK_BYTES, end - position), position)
        at = 0
        while len(chunk) - at >= HEADER_SIZE:
            header = parse_header(chunk, at)
            size = header.batch_length + LOG_OVERHEAD
            if header.magic != MAGIC or size < HEADER_SIZE or position + at + size > end:
                raise LogCorruptionError(span.path, position + at, "batch header is damaged")
            control = None
            if header.is_control and header.producer_id >= 0:
                if at + size <= len(chunk):
                    control = marker_type(chunk, at, span.path, position + at)
                else:
                    whole = os.pread(span.fd, size, position + at)
                    control = marker_type(whole, 0, span.path, position + at)
            yield header, control
            at += size
        if at == 0:
            raise LogCorruptionError(span.path, position, "batch header cut short")
        position += at
