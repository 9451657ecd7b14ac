"""Kafka's checkpoint file format, written atomically (see `durability`).

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

from .durability import write_atomically
from .errors import LogCorruptionError

VERSION = 0


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
