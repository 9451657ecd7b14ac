"""Property: the file-backed partition log matches an in-memory model across random appends
(leader and follower), reads, truncations, rolls, retention, log-start moves, and close/reopen —
clean, unclean, unclean with the unflushed tail cut short, and with garbage on the tail.

The model is a list of batches (offsets, stored bytes, record timestamps, leader epoch). Reads
must return a prefix of the model's batches starting at the one holding the offset, as long as
possible within max_bytes, max_offset and the segment; retention must only cut a prefix of
whole batches at or below the high watermark.

Producer state: batches carry producer ids (idempotent producers, retries included), and the
log's producer state — kept up incrementally, loaded from a snapshot plus the headers after it
at reopen (snapshots damaged now and then), replayed after truncations (inline, or planned,
interrupted by another truncation and run elsewhere) — must always equal the state built from
every batch of the log from scratch.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from strom.storage import durability
from strom.storage.errors import StorageError
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog
from strom.storage.producer_state import (
    ProducerState,
    ProducerStateError,
    snapshot_offsets,
    snapshot_path,
)
from strom.storage.record_batch import Record, assign_offset_and_epoch, encode_batch, parse_header

T0 = 1_700_000_000_000


@dataclass
class ModelBatch:
    base: int
    data: bytes
    stamps: list[int]  # record timestamps
    epoch: int

    @property
    def last(self) -> int:
        return self.base + len(self.stamps) - 1


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The model never loses power, so fsync is unobservable here; skipping it keeps the
    # property fast. The crash tests keep real fsyncs.
    monkeypatch.setattr(durability, "fsync", lambda fd: None)
    yield


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="strom-prop-")
        self.batches: list[ModelBatch] = []
        self.start = 0
        self.end = 0
        self.now = T0
        self.epoch = 0
        self.config = LogConfig()
        self.log: PartitionLog | None = None
        # producer number -> the last batch it sent and its record timestamps (for retries)
        self.sent: dict[int, tuple[bytes, list[int]]] = {}

    def teardown(self) -> None:
        if self.log is not None:
            self.log.close(clean=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize(
        segment_bytes=st.integers(1500, 4000),
        index_interval_bytes=st.sampled_from([0, 64, 500, 4096]),
        retention_ms=st.sampled_from([-1, 5_000, 60_000]),
        retention_bytes=st.sampled_from([-1, 800, 5000]),
        segment_ms=st.sampled_from([10_000, 7 * 24 * 3600 * 1000]),
    )
    def open_log(self, **config: int) -> None:
        self.config = LogConfig(**config)
        self.log = PartitionLog.open(self.dir, self.config, now_ms=self.now)

    @property
    def plog(self) -> PartitionLog:
        assert self.log is not None
        return self.log

    # ---- model helpers -------------------------------------------------------------------

    def _records(self, count: int, jitter: list[int]) -> list[Record]:
        return [
            Record(
                None if i % 2 else b"k",
                bytes([(self.end + i) % 251]) * (i * 7 % 40),
                (),
                self.now - jitter[i % len(jitter)],
            )
            for i in range(count)
        ]

    def _holding(self, offset: int) -> int:
        """Index of the model batch holding `offset` (or the first after it)."""
        for i, b in enumerate(self.batches):
            if b.last >= offset:
                return i
        return len(self.batches)

    # ---- rules ---------------------------------------------------------------------------

    def _producer_fields(self, producer: int, move: str) -> dict[str, int]:
        """Producer id, epoch and sequence for producer number `producer` (-1: none), going on
        from what the log knows of it; `move` "bump" starts a new producer epoch."""
        if producer < 0:
            return {}
        pid = 1000 + producer
        entry = self.plog.producer_state.producers.get(pid)
        if entry is None:
            return {"producer_id": pid, "producer_epoch": 0, "base_sequence": 0}
        if move == "bump":
            return {"producer_id": pid, "producer_epoch": entry.epoch + 1, "base_sequence": 0}
        seq = (entry.last_seq + 1) % (1 << 31)
        return {"producer_id": pid, "producer_epoch": entry.epoch, "base_sequence": seq}

    def _leader_append(self, raw: bytes, stamps: list[int]) -> None:
        """Append as leader and follow in the model: a duplicate writes nothing and names a
        batch the log holds with the same producer and sequence; a refused sequence writes
        nothing."""
        self.plog.load_producer_state()  # a replay left for "later" happens before appending
        header = parse_header(raw)
        try:
            info = self.plog.append(raw, self.epoch, now_ms=self.now)
        except ProducerStateError:
            return
        if info.batch_count == 0:
            original = next(b for b in self.batches if b.base == info.first_offset)
            kept = parse_header(original.data)
            assert (kept.producer_id, kept.base_sequence) == (
                header.producer_id,
                header.base_sequence,
            )
            return
        count = header.last_offset_delta + 1
        assert (info.first_offset, info.last_offset) == (self.end, self.end + count - 1)
        assert info.max_timestamp == max(stamps)
        stored = bytearray(raw)
        assign_offset_and_epoch(stored, 0, self.end, self.epoch)
        self.batches.append(ModelBatch(self.end, bytes(stored), stamps, self.epoch))
        self.end += count

    # ---- rules ---------------------------------------------------------------------------

    @rule(
        count=st.integers(1, 12),
        jitter=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
        gzip=st.booleans(),
        new_epoch=st.booleans(),
        tick=st.integers(0, 4000),
        producer=st.integers(-1, 2),
        producer_move=st.sampled_from(["next", "next", "bump", "retry"]),
    )
    def append_as_leader(
        self,
        count: int,
        jitter: list[int],
        gzip: bool,
        new_epoch: bool,
        tick: int,
        producer: int,
        producer_move: str,
    ) -> None:
        self.now += tick
        self.epoch += int(new_epoch)
        if producer >= 0 and producer_move == "retry" and producer in self.sent:
            self._leader_append(*self.sent[producer])  # the producer retries its last batch
            return
        records = self._records(count, jitter)
        self.plog.load_producer_state()
        raw = encode_batch(
            records, compression=int(gzip), **self._producer_fields(producer, producer_move)
        )
        stamps = [r.timestamp_ms for r in records]
        if producer >= 0:
            self.sent[producer] = (raw, stamps)
        self._leader_append(raw, stamps)

    @rule(
        count=st.integers(1, 6),
        batches=st.integers(1, 3),
        tick=st.integers(0, 4000),
        producer=st.integers(-1, 2),
    )
    def append_as_follower(self, count: int, batches: int, tick: int, producer: int) -> None:
        self.now += tick
        self.plog.load_producer_state()
        chunks, new = [], []
        base = self.end
        for _ in range(batches):
            records = self._records(count, [0, 10])
            fields = self._producer_fields(producer, "next")
            if fields:  # what the leader wrote: later batches of the same request go on
                fields["base_sequence"] += (base - self.end) % (1 << 31)
            data = encode_batch(
                records, base_offset=base, partition_leader_epoch=self.epoch, **fields
            )
            chunks.append(data)
            new.append(ModelBatch(base, data, [r.timestamp_ms for r in records], self.epoch))
            base += count
        info = self.plog.append_as_follower(b"".join(chunks), now_ms=self.now)
        assert (info.first_offset, info.last_offset) == (self.end, base - 1)
        self.batches += new
        self.end = base

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data(), max_bytes=st.integers(1, 3000), bounded=st.booleans())
    def read(self, data: st.DataObject, max_bytes: int, bounded: bool) -> None:
        offset = data.draw(st.integers(self.start, self.end))
        max_offset = data.draw(st.integers(self.start, self.end)) if bounded else None
        got = self.plog.read(offset, max_bytes, max_offset)
        i = self._holding(offset)
        limit = self.end if max_offset is None else max_offset
        eligible = [b for b in self.batches[i:] if b.last < limit]
        if offset >= self.end or not eligible or eligible[0] is not self.batches[i]:
            assert got == b""
            return
        expected = b""
        for taken, b in enumerate(eligible):
            if taken and (len(expected) + len(b.data) > max_bytes):
                break
            if taken and b.base in self.plog.segment_base_offsets:
                break  # one segment per read
            expected += b.data
        assert got == expected

    @precondition(lambda self: self.end > self.start)
    @rule(max_bytes=st.integers(1, 3000))
    def read_front_to_back(self, max_bytes: int) -> None:
        """A consumer: each read starts right after the last batch of the previous one."""
        got = b""
        offset = self.start
        while offset < self.end:
            data = self.plog.read(offset, max_bytes)
            assert data
            got += data
            position = 0
            while position < len(data):
                header = parse_header(data, position)
                offset = header.last_offset + 1
                position += header.size_in_bytes
        assert got == b"".join(b.data for b in self.batches)

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data(), replay=st.sampled_from(["inline", "planned", "interrupted", "later"]))
    def truncate(self, data: st.DataObject, replay: str) -> None:
        self._truncate(data.draw(st.integers(self.start, self.end)))
        if replay == "inline":
            self.plog.load_producer_state()
        elif replay == "planned":  # as the node does: planned here, run elsewhere, installed
            plan = self.plog.plan_producer_state_replay()
            if plan is not None:
                state = plan.run()
                assert state is None or self.plog.install_producer_state(plan, state)
        elif replay == "interrupted":  # another truncation overtakes the planned replay
            plan = self.plog.plan_producer_state_replay()
            if plan is not None and self.end > self.start:
                again = data.draw(st.integers(self.start, self.end - 1))
                self._truncate(again)  # below the end: it cuts, so the plan is overtaken
                try:  # its own descriptors, on files truncated under it: it may fail
                    state = plan.run()
                except StorageError:
                    assert not self.plog.replay_is_current(plan)
                    return
                assert state is None or not self.plog.install_producer_state(plan, state)
            elif plan is not None:
                plan.close()
        # "later": the next rule that needs the producer state completes the replay.

    def _truncate(self, offset: int) -> None:
        new_end = self.plog.truncate_to(offset, now_ms=self.now)
        i = self._holding(offset)
        if offset < self.end:
            # Whole batches go: the one holding `offset` and all after it. If that batch also
            # holds the log start, the log restarts empty at the log start.
            cut = self.batches[i].base
            del self.batches[i:]
            self.end = max(cut, self.start)
        assert new_end == self.end == self.plog.log_end_offset

    @rule(gap=st.integers(0, 50))
    def truncate_fully(self, gap: int) -> None:
        offset = self.end + gap
        self.plog.truncate_fully_and_start_at(offset, now_ms=self.now)
        self.batches, self.start, self.end = [], offset, offset

    @rule(data=st.data(), how=st.sampled_from(["flip", "cut", "empty"]))
    def damage_a_snapshot(self, data: st.DataObject, how: str) -> None:
        """A snapshot file damaged on disk: the next open must notice, skip it and still build
        the same state (from an older snapshot, or from the log start)."""
        offsets = snapshot_offsets(self.dir)
        if not offsets:
            return
        path = snapshot_path(self.dir, data.draw(st.sampled_from(offsets)))
        with open(path, "rb") as f:
            raw = f.read()
        if not raw:
            return
        if how == "flip":
            at = data.draw(st.integers(0, len(raw) - 1))
            raw = raw[:at] + bytes([raw[at] ^ 0x40]) + raw[at + 1 :]
        else:
            raw = raw[: data.draw(st.integers(0, len(raw) - 1))] if how == "cut" else b""
        with open(path, "wb") as f:
            f.write(raw)

    @rule()
    def roll(self) -> None:
        self.plog.roll(now_ms=self.now)

    @rule(data=st.data(), age=st.integers(0, 120_000))
    def retention(self, data: st.DataObject, age: int) -> None:
        self.now += age
        hw = data.draw(st.integers(self.start, self.end))
        old_start = self.start
        self.plog.delete_old_segments(hw, now_ms=self.now)
        new_start = self.plog.log_start_offset
        assert old_start <= new_start <= max(hw, old_start)
        if new_start != old_start:
            assert new_start in self.plog.segment_base_offsets
            assert new_start == self.end or any(b.base == new_start for b in self.batches)
        self.batches = [b for b in self.batches if b.last >= new_start]
        self.start = new_start

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data())
    def move_log_start(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.start, self.end))
        self.plog.maybe_increment_log_start_offset(offset)
        self.start = offset
        self.batches = [b for b in self.batches if b.last >= offset]

    @rule(target_age=st.integers(-1000, 8000))
    def offset_for_timestamp(self, target_age: int) -> None:
        target = self.now - target_age
        expected = None
        for b in self.batches:
            for k, ts in enumerate(b.stamps):
                if b.base + k >= self.start and ts >= target:
                    expected = (ts, b.base + k)
                    break
            if expected:
                break
        assert self.plog.offset_for_timestamp(target) == expected

    @rule()
    def flush(self) -> None:
        self.plog.flush()
        assert self.plog.recovery_point == self.end

    @rule(mode=st.sampled_from(["clean", "unclean", "lose-tail", "garbage"]), data=st.data())
    def reopen(self, mode: str, data: st.DataObject) -> None:
        log = self.plog
        recovery_point = log.recovery_point
        bases = log.segment_base_offsets
        log.close(clean=mode == "clean")
        active = os.path.join(self.dir, f"{bases[-1]:020d}.log")
        if mode == "lose-tail":
            # The OS lost unsynced bytes: cut the active segment anywhere past the flushed part.
            # The file's layout comes from its bytes (it also holds batches below the start).
            with open(active, "rb") as f:
                raw = f.read()
            layout, pos = [], 0
            while pos < len(raw):
                header = parse_header(raw, pos)
                layout.append((pos, header))
                pos += header.size_in_bytes
            flushed = next((p for p, h in layout if h.last_offset >= recovery_point), len(raw))
            cut = data.draw(st.integers(flushed, len(raw)))
            os.truncate(active, cut)
            lost = [h for p, h in layout if p + h.size_in_bytes > cut]
            if lost:
                new_end = lost[0].base_offset
                self.batches = [b for b in self.batches if b.base < new_end]
                self.end = max(new_end, self.start)  # below the start: restarts empty
        elif mode == "garbage":
            with open(active, "ab") as f:
                f.write(data.draw(st.binary(min_size=1, max_size=80)))
        self.log = PartitionLog.open(self.dir, self.config, now_ms=self.now)
        assert self.log.open_info.clean_shutdown == (mode == "clean")

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def offsets_match(self) -> None:
        if self.log is None:
            return
        assert self.plog.log_end_offset == self.end
        assert self.plog.log_start_offset == self.start
        assert self.start <= self.end

    @invariant()
    def epochs_match(self) -> None:
        if self.log is None:
            return
        cache = self.plog.leader_epoch_cache
        entries = cache.entries
        assert all(
            a.epoch < b.epoch and a.start_offset < b.start_offset
            for a, b in itertools.pairwise(entries)
        )
        assert all(self.start <= e.start_offset <= self.end for e in entries)
        for b in self.batches:
            if b.base >= self.start:
                assert cache.epoch_for_offset(b.base) == b.epoch

    @invariant()
    def producer_state_matches_the_log(self) -> None:
        if self.log is None or self.plog.producer_state_pending:
            return
        state = self.plog.producer_state
        assert state.end_offset == self.end
        # The order of producers (who ages out first) depends on history the log no longer
        # holds once its start moved; the content must match exactly.
        assert sorted(state.as_tuples()) == sorted(state_from_scratch(self.plog).as_tuples())


def state_from_scratch(log: PartitionLog) -> ProducerState:
    """The producer state of every batch the log holds, read front to back."""
    state = ProducerState(log.log_start_offset)
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        position = 0
        while position < len(data):
            header = parse_header(data, position)
            state.update(header)
            offset = header.last_offset + 1
            position += header.size_in_bytes
    state.evict_before(log.log_start_offset)
    return state


TestLogProperty = LogMachine.TestCase
TestLogProperty.settings = settings(
    max_examples=int(os.environ.get("STROM_PROP_EXAMPLES", "40")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def test_headers_of_the_model_are_parsable() -> None:
    data = encode_batch([Record(None, b"x", (), T0)], base_offset=5, partition_leader_epoch=2)
    assert (parse_header(data).base_offset, parse_header(data).partition_leader_epoch) == (5, 2)
