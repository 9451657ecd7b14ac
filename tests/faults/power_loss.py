"""A power loss, simulated: what a file keeps is what it held at its last fsync.

`PageCache` wraps `os.fsync` (every fsync of the node goes through it: the storage layer's
`durability`, the Raft store, checkpoints) and records, per file (device and inode, so renames
of atomically written files keep their record), its size at the last fsync. `lose_power(roots)`
then cuts every regular file under `roots` back to that size, or to nothing if it was never
fsynced, as the page cache of a machine that lost power would.

The model is exact for the append-only files that matter here (segments, the Raft log) and
lenient elsewhere: bytes rewritten in place after an fsync, or a rename whose folder was not
fsynced, survive in the model where a real disk might lose them. It can only miss losses, never
invent them, so a run that loses acknowledged writes under it loses them on real hardware too.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


class PageCache:
    def __init__(self) -> None:
        self._synced: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()  # fsyncs also run in worker threads
        self.fsyncs = 0

    def _record(self, fd: int) -> None:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            with self._lock:
                self._synced[(info.st_dev, info.st_ino)] = info.st_size
                self.fsyncs += 1

    @contextmanager
    def installed(self) -> Iterator[PageCache]:
        real: Callable[[int], None] = os.fsync

        def fsync(fd: int) -> None:
            real(fd)
            self._record(fd)

        os.fsync = fsync
        try:
            yield self
        finally:
            os.fsync = real

    def lose_power(self, roots: Iterable[str]) -> int:
        """Cut every file under `roots` back to its last fsynced size; returns bytes dropped.
        Call it only while no process has these files open (after a crash of every node)."""
        dropped = 0
        for root in roots:
            for folder, _, names in os.walk(root):
                for name in names:
                    path = os.path.join(folder, name)
                    info = os.lstat(path)
                    if not stat.S_ISREG(info.st_mode):
                        continue
                    with self._lock:
                        kept = self._synced.get((info.st_dev, info.st_ino), 0)
                    if info.st_size > kept:
                        os.truncate(path, kept)
                        dropped += info.st_size - kept
        return dropped
