"""The file-backed Raft store (storage/raft_store.py) against the in-memory model, across
crash-and-reopen, torn tails and garbage tails; plus the atomic-file and snapshot rules."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strom.raft import Entry, EntryKind, HardState, MemoryStorage, Snapshot
from strom.storage.raft_store import FileRaftStore, StoreCorruptError, encode_frame

SEGMENT_BYTES_MAX = 96  # tiny, so appends roll segments and compaction deletes whole ones


def _contents(store: FileRaftStore | MemoryStorage) -> tuple[object, ...]:
    first, last = store.first_index(), store.last_index()
    terms = [store.term(i) for i in range(first - 1, last + 1)]
    ents = store.entries(first, last + 1, 1 << 30) if last >= first else []
    return store.initial_state(), store.snapshot(), first, last, terms, ents


def _rebuild(model: MemoryStorage, drop_last: bool) -> MemoryStorage:
    fresh = MemoryStorage()
    fresh.install_snapshot(model.snapshot())
    first, last = model.first_index(), model.last_index()
    ents = model.entries(first, last + 1, 1 << 30) if last >= first else []
    fresh.append(ents[:-1] if drop_last else ents)
    fresh.set_hard_state(model.initial_state())
    return fresh


def _last_segment(path: Path) -> Path | None:
    segs = sorted(path.glob("log-*.seg"))
    return segs[-1] if segs else None


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.integers(0, 3),
            st.integers(1, 5),
            st.integers(0, 2),
            st.binary(max_size=24),
        ),
        st.tuples(st.just("hard"), st.integers(0, 3), st.integers(0, 3), st.integers(0, 60)),
        st.tuples(st.just("compact"), st.integers(0, 60), st.binary(max_size=8)),
        st.tuples(st.just("install"), st.integers(1, 4), st.integers(0, 2), st.binary(max_size=8)),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("tear"), st.integers(1, 10_000)),
        st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=40)),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_file_store_matches_memory_model_across_crashes(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        store = FileRaftStore(path, segment_bytes_max=SEGMENT_BYTES_MAX)
        model = MemoryStorage()
        for op in ops:
            store, model = _apply(op, path, store, model)
            assert _contents(store) == _contents(model), op
        reopened = FileRaftStore(path, segment_bytes_max=SEGMENT_BYTES_MAX)
        assert _contents(reopened) == _contents(model)


def _apply(
    op: tuple[object, ...], path: Path, store: FileRaftStore, model: MemoryStorage
) -> tuple[FileRaftStore, MemoryStorage]:
    kind = op[0]
    first, last = model.first_index(), model.last_index()
    if kind == "append":
        _, back, count, bump, data = op
        assert isinstance(back, int) and isinstance(count, int) and isinstance(bump, int)
        assert isinstance(data, bytes)
        start = max(first, last + 1 - back, model.initial_state().commit + 1)
        if start > last + 1:
            return store, model
        term = model.term(start - 1) + bump
        ents = [
            Entry(term, start + k, EntryKind.NOOP if k == 0 and bump else EntryKind.NORMAL, data)
            for k in range(count)
        ]
        store.append(ents)
        model.append(ents)
    elif kind == "hard":
        _, term_bump, vote, commit = op
        assert isinstance(term_bump, int) and isinstance(vote, int) and isinstance(commit, int)
        old = model.initial_state()
        commit = max(old.commit, min(commit, last))
        hs = HardState(old.term + term_bump, vote, commit)
        store.set_hard_state(hs)
        model.set_hard_state(hs)
    elif kind == "compact":
        _, at, data = op
        assert isinstance(at, int) and isinstance(data, bytes)
        index = min(at, last)
        if index > model.snapshot().index:
            snap = Snapshot(index, model.term(index), data)
            store.compact(snap)
            model.compact(snap)
    elif kind == "install":
        _, ahead, bump, data = op
        assert isinstance(ahead, int) and isinstance(bump, int) and isinstance(data, bytes)
        snap = Snapshot(last + ahead, model.term(last) + bump + 1, data)
        store.install_snapshot(snap)
        model.install_snapshot(snap)
        hs = model.initial_state()
        model.set_hard_state(HardState(hs.term, hs.vote, max(hs.commit, snap.index)))
        store.set_hard_state(model.initial_state())
    elif kind == "reopen":
        store = FileRaftStore(path, segment_bytes_max=SEGMENT_BYTES_MAX)
    elif kind == "tear":
        # A crash tore the last frame (it was never acknowledged, so it is above commit).
        seg = _last_segment(path)
        if seg is None or last < first or last <= model.initial_state().commit:
            return store, model
        frame = len(encode_frame(model.entries(last, last + 1, 1 << 30)[0]))
        size = seg.stat().st_size
        if size < frame:
            return store, model
        _, n = op
        assert isinstance(n, int)
        with open(seg, "r+b") as f:
            f.truncate(size - 1 - n % (frame - 1))
        store = FileRaftStore(path, segment_bytes_max=SEGMENT_BYTES_MAX)
        model = _rebuild(model, drop_last=True)
    elif kind == "garbage":
        seg = _last_segment(path)
        if seg is None:
            return store, model
        _, junk = op
        assert isinstance(junk, bytes)
        with open(seg, "ab") as f:
            f.write(junk)
        store = FileRaftStore(path, segment_bytes_max=SEGMENT_BYTES_MAX)
    return store, model


def test_reopen_restores_everything(tmp_path: Path) -> None:
    store = FileRaftStore(tmp_path)
    store.append([Entry(1, 1), Entry(1, 2, EntryKind.NORMAL, b"a"), Entry(2, 3, data=b"b")])
    store.set_hard_state(HardState(2, 1, 2))
    again = FileRaftStore(tmp_path)
    assert again.initial_state() == HardState(2, 1, 2)
    assert again.entries(1, 4, 1 << 20) == store.entries(1, 4, 1 << 20)
    assert not list(tmp_path.glob("*.tmp"))


def test_torn_tail_is_truncated_at_first_bad_frame(tmp_path: Path) -> None:
    store = FileRaftStore(tmp_path)
    store.append([Entry(1, i, data=b"x" * 10) for i in range(1, 6)])
    seg = _last_segment(tmp_path)
    assert seg is not None
    raw = bytearray(seg.read_bytes())
    frame = len(encode_frame(Entry(1, 1, data=b"x" * 10)))
    raw[3 * frame + 12] ^= 0xFF  # corrupt entry 4's payload: 4 and 5 must go
    seg.write_bytes(bytes(raw))
    again = FileRaftStore(tmp_path)
    assert again.last_index() == 3
    assert seg.stat().st_size == 3 * frame
    again.append([Entry(2, 4, data=b"y")])
    assert FileRaftStore(tmp_path).term(4) == 2


def test_corrupt_hard_state_is_fatal(tmp_path: Path) -> None:
    FileRaftStore(tmp_path).set_hard_state(HardState(3, 1, 0))
    hs = tmp_path / "hardstate"
    raw = bytearray(hs.read_bytes())
    raw[10] ^= 1
    hs.write_bytes(bytes(raw))
    with pytest.raises(StoreCorruptError):
        FileRaftStore(tmp_path)


def test_commit_beyond_the_durable_log_is_fatal(tmp_path: Path) -> None:
    store = FileRaftStore(tmp_path)
    store.append([Entry(1, 1), Entry(1, 2)])
    store.set_hard_state(HardState(1, 1, 2))
    seg = _last_segment(tmp_path)
    assert seg is not None
    seg.write_bytes(b"")
    with pytest.raises(StoreCorruptError, match="beyond the last durable entry"):
        FileRaftStore(tmp_path)


def test_crash_during_install_snapshot_drops_the_conflicting_log(tmp_path: Path) -> None:
    """Raft §7: keep the log after a snapshot only if it holds the snapshot's last entry."""
    store = FileRaftStore(tmp_path)
    store.append([Entry(1, i) for i in range(1, 8)])
    # The snapshot file is written first; simulate a crash before the segments are deleted.
    store._write_snapshot(Snapshot(5, 2, b"state"))
    again = FileRaftStore(tmp_path)
    assert (again.snapshot(), again.first_index(), again.last_index()) == (
        Snapshot(5, 2, b"state"),
        6,
        5,
    )
    store = FileRaftStore(tmp_path / "b")
    store.append([Entry(1, i) for i in range(1, 8)])
    store._write_snapshot(Snapshot(5, 1, b"state"))  # matches entry 5: keep 6 and 7
    again = FileRaftStore(tmp_path / "b")
    assert (again.first_index(), again.last_index(), again.term(7)) == (6, 7, 1)


def test_compaction_deletes_covered_segments(tmp_path: Path) -> None:
    store = FileRaftStore(tmp_path, segment_bytes_max=64)
    store.append([Entry(1, i, data=b"z" * 20) for i in range(1, 11)])
    before = len(list(tmp_path.glob("log-*.seg")))
    store.compact(Snapshot(8, 1, b"s"))
    after = len(list(tmp_path.glob("log-*.seg")))
    assert before > after >= 1
    again = FileRaftStore(tmp_path, segment_bytes_max=64)
    assert (again.first_index(), again.last_index(), again.snapshot().data) == (9, 10, b"s")
    assert [e.index for e in again.entries(9, 11, 1 << 20)] == [9, 10]
