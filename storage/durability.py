"""Making bytes durable: every fsync of the storage layer goes through this module.

One place, so that the rules are visible (fsync a file before renaming it into place, fsync the
directory after creating, renaming or deleting entries) and so that tests which cannot observe
durability anyway (they never lose power) may replace `fsync` with a no-op to stay fast.
Modules call `durability.fsync(...)` through the module attribute for that reason.
"""

from __future__ import annotations

import os


def fsync(fd: int) -> None:
    os.fsync(fd)


def fsync_dir(path: str) -> None:
    """Make a create, rename or delete in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, sync: bool = True) -> None:
    """Replace `path` by `data` so that a crash leaves the old or the new file, never a torn
    one: write `<path>.tmp`, fsync, rename over `path`, fsync the directory."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        fsync_dir(os.path.dirname(path) or ".")
