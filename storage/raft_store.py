"""The durable store of the Raft metadata log: hard state, log segments and the latest snapshot.

`FileRaftStore` implements `strom.raft.storage.LogStore`: the core reads it through the
`Storage` protocol, the node's Raft driver persists each Ready with the write methods, and the
node serves observers committed entries (`entries`) and the latest snapshot (`snapshot`) from it.
Every write method is durable (fsynced) when it returns. Not thread-safe: one owner (the Raft
driver task) calls it, possibly from a worker thread for the fsync.

Directory layout and file formats (all integers big-endian):

    hardstate                  magic b"SRHS" | version u8 = 1 | term u64 | vote u64 | commit u64
                               | crc32c u32 (of every byte before it)            (33 bytes)
    snapshot                   magic b"SRSN" | version u8 = 1 | index u64 | term u64
                               | data_len u64 | data | crc32c u32 (of every byte before it)
    log-<first index:020d>.seg frames, back to back:
                               length u32 (of the payload) | crc32c u32 (of the payload)
                               | payload = term u64 | index u64 | kind u8 | data

`hardstate` and `snapshot` are replaced atomically: write `<name>.tmp`, fsync it, rename it
over `<name>`, fsync the directory. A reader therefore sees the old or the new file, whole;
a bad checksum there is disk corruption and opening fails (StoreCorruptError).

Log rules: segments hold contiguous indexes; a segment named N starts at index N; a new segment
is started when the active one exceeds `segment_bytes_max`. Appends fsync the segment (and the
directory when a segment was created) before returning, so entries are durable before they are
acknowledged. A conflicting suffix is removed by truncating the segment holding its first index
at that frame and deleting every later segment. Compaction writes the snapshot, then deletes the
segments whose entries the snapshot covers whole; covered frames left in the first segment are
skipped when reading.

Recovery on open: leftover `*.tmp` files are deleted; segments are scanned in order and the log
is cut at the first bad frame (short header or payload, oversize length, checksum mismatch, or
an index that does not follow its predecessor): the file is truncated there and later segments
are deleted, which repairs a torn tail after a crash. Entries at or below the snapshot are
dropped; if the log does not continue the snapshot (it lacks (snapshot.index, snapshot.term)
and does not start right after it), the whole log is dropped, as installing a snapshot would
have done (Raft §7). All entries after the snapshot are cached in memory: the metadata log is
bounded by snapshots.
"""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path

import crc32c

from strom.raft.errors import CompactedError, RaftError, UnavailableError
from strom.raft.storage import limit_size
from strom.raft.types import Entry, EntryKind, HardState, Snapshot, SnapshotMeta

_HARD = struct.Struct(">4sBQQQ")
_HARD_MAGIC = b"SRHS"
_SNAP_HEAD = struct.Struct(">4sBQQQ")
_SNAP_MAGIC = b"SRSN"
_CRC = struct.Struct(">I")
_FRAME = struct.Struct(">II")
_ENTRY = struct.Struct(">QQB")
_VERSION = 1
_KINDS = frozenset(int(k) for k in EntryKind)


class StoreCorruptError(RaftError):
    """A file that is only ever replaced atomically failed its checksum: the disk lost data.
    Fatal: the operator must restore this node's Raft directory (or wipe it and let the node
    catch up from the leader as a fresh voter)."""


def _crc(data: bytes) -> int:
    return int(crc32c.crc32c(data))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(directory: Path, name: str, data: bytes) -> None:
    tmp = directory / f"{name}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / name)
    _fsync_dir(directory)


def encode_frame(entry: Entry) -> bytes:
    payload = _ENTRY.pack(entry.term, entry.index, int(entry.kind)) + entry.data
    return _FRAME.pack(len(payload), _crc(payload)) + payload


class _Segment:
    __slots__ = ("base", "path", "positions", "size")

    def __init__(self, base: int, path: Path) -> None:
        self.base = base
        self.path = path
        self.positions: list[int] = []  # byte offset of each frame, by index - base
        self.size = 0


class FileRaftStore:
    def __init__(
        self,
        directory: str | Path,
        segment_bytes_max: int = 64 << 20,
        entry_bytes_max: int = 64 << 20,
    ) -> None:
        """Open (creating if needed) the store in `directory` and recover it."""
        assert segment_bytes_max > 0 and entry_bytes_max > 0
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._segment_bytes_max = segment_bytes_max
        self._entry_bytes_max = entry_bytes_max
        for tmp in self._dir.glob("*.tmp"):
            tmp.unlink()
        self._hard_state = self._load_hard_state()
        self._snapshot = self._load_snapshot()
        self._segments: list[_Segment] = []
        self._entries: list[Entry] = []  # every entry after the snapshot, in index order
        self._recover_log()
        if self._hard_state.commit > self.last_index():
            raise StoreCorruptError(
                f"{self._dir}: hard state commit {self._hard_state.commit} is beyond the last "
                f"durable entry {self.last_index()}"
            )

    # ---- read side (strom.raft.storage.Storage) ----

    def initial_state(self) -> HardState:
        return self._hard_state

    def first_index(self) -> int:
        return self._snapshot.index + 1

    def last_index(self) -> int:
        return self._snapshot.index + len(self._entries)

    def term(self, index: int) -> int:
        offset = self._snapshot.index
        if index < offset:
            raise CompactedError(f"index {index} is below the snapshot at {offset}")
        if index == offset:
            return self._snapshot.term
        if index > self.last_index():
            raise UnavailableError(f"index {index} is above the last index {self.last_index()}")
        return self._entries[index - offset - 1].term

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        offset = self._snapshot.index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (snapshot at {offset})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"index {hi - 1} is above the last index {self.last_index()}")
        return limit_size(self._entries[lo - offset - 1 : hi - offset - 1], bytes_max)

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot.meta

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # ---- write side (strom.raft.storage.LogStore) ----

    def set_hard_state(self, hard_state: HardState) -> None:
        head = _HARD.pack(
            _HARD_MAGIC, _VERSION, hard_state.term, hard_state.vote, hard_state.commit
        )
        _write_atomically(self._dir, "hardstate", head + _CRC.pack(_crc(head)))
        self._hard_state = hard_state

    def append(self, entries: list[Entry]) -> None:
        offset = self._snapshot.index
        entries = [e for e in entries if e.index > offset]
        if not entries:
            return
        first = entries[0].index
        assert first <= self.last_index() + 1, f"gap: append at {first} after {self.last_index()}"
        for a, b in itertools.pairwise(entries):
            assert b.index == a.index + 1, "entries must be contiguous"
        if first <= self.last_index():
            self._truncate_from(first)
        created = False
        pos = 0
        while pos < len(entries):
            if not self._segments or self._segments[-1].size >= self._segment_bytes_max:
                self._new_segment(entries[pos].index)
                created = True
            pos = self._write_frames(self._segments[-1], entries, pos)
        if created:
            _fsync_dir(self._dir)

    def _write_frames(self, seg: _Segment, entries: list[Entry], pos: int) -> int:
        """Append entries[pos:] to `seg` until it is full; fsync; the next position."""
        with open(seg.path, "ab") as f:
            while pos < len(entries) and (seg.size < self._segment_bytes_max or not seg.positions):
                entry = entries[pos]
                frame = encode_frame(entry)
                assert len(frame) - _FRAME.size <= self._entry_bytes_max + _ENTRY.size
                seg.positions.append(seg.size)
                f.write(frame)
                seg.size += len(frame)
                self._entries.append(entry)
                pos += 1
            f.flush()
            os.fsync(f.fileno())
        return pos

    def install_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.index <= self._snapshot.index:
            return
        self._write_snapshot(snapshot)
        for seg in self._segments:
            seg.path.unlink()
        self._segments = []
        self._entries = []
        self._snapshot = snapshot
        _fsync_dir(self._dir)

    def compact(self, snapshot: Snapshot) -> None:
        if snapshot.index <= self._snapshot.index:
            return
        assert snapshot.index <= self.last_index(), "compaction beyond the last index"
        assert self.term(snapshot.index) == snapshot.term, "compaction snapshot term mismatch"
        self._write_snapshot(snapshot)
        drop = snapshot.index - self._snapshot.index
        self._entries = self._entries[drop:]
        self._snapshot = snapshot
        # A segment is covered whole when the next one starts at or below index + 1.
        while len(self._segments) > 1 and self._segments[1].base <= snapshot.index + 1:
            self._segments.pop(0).path.unlink()
        if self._segments and not self._entries:
            # Everything is covered: start afresh so the next append starts a new segment.
            for seg in self._segments:
                seg.path.unlink()
            self._segments = []
        _fsync_dir(self._dir)

    def close(self) -> None:
        """Nothing is buffered; present so owners can release the store explicitly."""

    # ---- internals ----

    def _new_segment(self, base: int) -> _Segment:
        seg = _Segment(base, self._dir / f"log-{base:020d}.seg")
        seg.path.write_bytes(b"")
        self._segments.append(seg)
        return seg

    def _truncate_from(self, index: int) -> None:
        """Remove every entry at or after `index` from disk and memory."""
        while self._segments and self._segments[-1].base > index:
            self._segments.pop().path.unlink()
        if self._segments:
            seg = self._segments[-1]
            keep = index - seg.base
            if keep < len(seg.positions):
                cut = seg.positions[keep]
                with open(seg.path, "r+b") as f:
                    f.truncate(cut)
                    os.fsync(f.fileno())
                del seg.positions[keep:]
                seg.size = cut
        del self._entries[index - self._snapshot.index - 1 :]
        _fsync_dir(self._dir)

    def _write_snapshot(self, snapshot: Snapshot) -> None:
        head = _SNAP_HEAD.pack(
            _SNAP_MAGIC, _VERSION, snapshot.index, snapshot.term, len(snapshot.data)
        )
        body = head + snapshot.data
        _write_atomically(self._dir, "snapshot", body + _CRC.pack(_crc(body)))

    def _load_hard_state(self) -> HardState:
        path = self._dir / "hardstate"
        if not path.exists():
            return HardState()
        raw = path.read_bytes()
        if len(raw) != _HARD.size + _CRC.size or _CRC.unpack_from(raw, _HARD.size)[0] != _crc(
            raw[: _HARD.size]
        ):
            raise StoreCorruptError(f"{path}: bad length or checksum")
        magic, version, term, vote, commit = _HARD.unpack_from(raw)
        if magic != _HARD_MAGIC or version != _VERSION:
            raise StoreCorruptError(f"{path}: unknown magic {magic!r} or version {version}")
        return HardState(term, vote, commit)

    def _load_snapshot(self) -> Snapshot:
        path = self._dir / "snapshot"
        if not path.exists():
            return Snapshot()
        raw = path.read_bytes()
        if len(raw) < _SNAP_HEAD.size + _CRC.size:
            raise StoreCorruptError(f"{path}: too short")
        magic, version, index, term, length = _SNAP_HEAD.unpack_from(raw)
        end = _SNAP_HEAD.size + length
        if (
            magic != _SNAP_MAGIC
            or version != _VERSION
            or len(raw) != end + _CRC.size
            or _CRC.unpack_from(raw, end)[0] != _crc(raw[:end])
        ):
            raise StoreCorruptError(f"{path}: bad magic, version, length or checksum")
        return Snapshot(index, term, raw[_SNAP_HEAD.size : end])

    def _recover_log(self) -> None:
        paths = sorted(self._dir.glob("log-*.seg"))
        entries: list[Entry] = []
        for n, path in enumerate(paths):
            seg = _Segment(int(path.stem[4:]), path)
            data = path.read_bytes()
            # A segment must continue its predecessor; otherwise it is garbage from here on.
            follows = not entries or seg.base == entries[-1].index + 1
            good = self._scan(seg, data, entries) if follows else 0
            self._segments.append(seg)
            if good < len(data):
                # Torn or corrupt tail: cut here, drop every later segment.
                with open(path, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
                for later in paths[n + 1 :]:
                    later.unlink()
                break
        self._drop_empty_segments()
        self._entries = self._continue_snapshot(entries)
        _fsync_dir(self._dir)

    def _continue_snapshot(self, entries: list[Entry]) -> list[Entry]:
        """The entries after the snapshot, or none if the log does not continue it (Raft §7:
        keep the suffix only when the log holds the snapshot's last entry)."""
        snap = self._snapshot
        if entries:
            first = entries[0].index
            if first == snap.index + 1:
                return entries
            covered = first <= snap.index <= entries[-1].index
            if covered and entries[snap.index - first].term == snap.term:
                return entries[snap.index - first + 1 :]
        for seg in self._segments:
            seg.path.unlink()
        self._segments = []
        return []

    def _scan(self, seg: _Segment, data: bytes, entries: list[Entry]) -> int:
        """Read seg's frames into `entries`; the offset of the first bad frame (or the end)."""
        pos = 0
        expected = seg.base
        while pos + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, pos)
            start = pos + _FRAME.size
            if length < _ENTRY.size or length > self._entry_bytes_max + _ENTRY.size:
                break
            payload = data[start : start + length]
            if len(payload) != length or _crc(payload) != crc:
                break
            term, index, kind = _ENTRY.unpack_from(payload)
            if index != expected or kind not in _KINDS:
                break
            entries.append(Entry(term, index, EntryKind(kind), payload[_ENTRY.size :]))
            seg.positions.append(pos)
            expected += 1
            pos = start + length
        seg.size = pos
        return pos

    def _drop_empty_segments(self) -> None:
        for seg in [s for s in self._segments if not s.positions]:
            seg.path.unlink()
        self._segments = [s for s in self._segments if s.positions]
