"""The high-watermark checkpoint of a data directory (Kafka's `replication-offset-checkpoint`).

A restarted broker starts each replica's high watermark from here instead of 0, so consumers of a
partition it leads again do not see the log shrink to nothing while followers catch up. The
format is Kafka's: a version line (0), a count line, then `topic partition offset` per line.
Written atomically (temp file, fsync, rename). A missing or malformed file means "no knowledge":
every high watermark starts at 0, which is safe (it only advances).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("strom.replica")


def write_hw_checkpoint(path: str, high_watermarks: dict[tuple[str, int], int]) -> None:
    lines = ["0", str(len(high_watermarks))]
    lines += [
        f"{topic} {partition} {hw}" for (topic, partition), hw in sorted(high_watermarks.items())
    ]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_hw_checkpoint(path: str) -> dict[tuple[str, int], int]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    try:
        if lines[0] != "0" or int(lines[1]) != len(lines) - 2:
            raise ValueError("bad header")
        out = {}
        for line in lines[2:]:
            topic, partition, hw = line.split(" ")
            out[(topic, int(partition))] = int(hw)
        return out
    except (ValueError, IndexError) as exc:
        log.warning("ignoring malformed %s (%s): high watermarks start at 0", path, exc)
        return {}
