"""Small durable files written atomically: Kafka's checkpoint format, and a directory fsync.

Checkpoint format (Kafka's CheckpointFile, text, one item per line)::

    0                 <- version
    2                 <- number of entries
    0 0               <- entries, fields separated by one space
    3 1200

A checkpoint is written to `<name>.tmp`, fsynced, renamed over `<name>`, and the directory is
fsynced, so a crash leaves either the old or the new file, never a torn one. A leftover `.tmp`
is garbage and ignored.
"""

from __future__ import annotations

import os

from .errors import LogCorruptionError

VERSION = 0


def fsync_dir(path: str) -> None:
    """Make a rename or create in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, sync: bool = True) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        fsync_dir(os.path.dirname(path) or ".")


def write_checkpoint(path: str, entries: list[tuple[int, int]], sync: bool = True) -> None:
    lines = [str(VERSION), str(len(entries)), *(f"{a} {b}" for a, b in entries)]
    write_atomically(path, ("\n".join(lines) + "\n").encode(), sync)


def read_checkpoint(path: str) -> list[tuple[int, int]] | None:
    """The entries of the checkpoint at `path`, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    try:
        if int(lines[0]) != VERSION:
            raise ValueError(f"unknown version {lines[0]!r}")
        count = int(lines[1])
        entries = []
        for line in lines[2 : 2 + count]:
            a, b = line.split(" ")
            entries.append((int(a), int(b)))
        if len(entries) != count:
            raise ValueError(f"{count} entries announced, {len(entries)} present")
    except (ValueError, IndexError) as err:
        raise LogCorruptionError(path, 0, f"malformed checkpoint file: {err}") from None
    return entries
