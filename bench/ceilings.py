"""Ceilings for the side-by-side benchmarks: a plain file append of the same bytes.

`file_append(directory, count, record_bytes, batch_records, fsync)` appends `count` records of
`record_bytes` bytes to a new file, joining `batch_records` records into one buffer and one
`os.write` per batch (what a minimal log does with a producer's batch), and returns records/s.
With `fsync=False` nothing is flushed in the timed loop (the bytes reach the page cache only,
like Kafka's and strom's logs, which leave flushing to the OS and to replication); with
`fsync=True` each batch is followed by `os.fsync` before the next one is written.

The raw-gRPC ceiling lives in bench/cluster_bench.py (`raw_grpc`) and is reused from there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def file_append(
    directory: Path, count: int, record_bytes: int, batch_records: int, fsync: bool
) -> float:
    """Records/s of appending `count` records in batches to a fresh file under `directory`."""
    record = b"x" * record_bytes
    path = directory / f"append-{time.monotonic_ns()}.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        started = time.perf_counter()
        written = 0
        while written < count:
            n = min(batch_records, count - written)
            # The batch is assembled from separate records inside the timed loop, as a
            # producer would, rather than writing one pre-built buffer over and over.
            buffer = b"".join([record] * n)
            view = memoryview(buffer)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
            written += n
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink()
    return count / elapsed
