"""Storage benchmarks: append and read throughput of a PartitionLog against plain file I/O of
the same bytes in the same run, and record batch encoding against kafka-python.

Run: .venv/bin/python bench/storage.py [--mib 128] [--trials 3] [--dir /path]

Each figure is the median of `--trials` runs. Appends and reads hit the page cache (no fsync
in the timed loop, as in Kafka where flushing is left to the OS and replication); the
baselines do exactly the same system calls a minimal log would: one os.write per batch, one
os.pread per fetch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import Record, encode_batch

NOW_MS = 1_700_000_000_000
MIB = 1024 * 1024


def _batches(batch_bytes: int, record_bytes: int, total_bytes: int) -> list[bytes]:
    """Producer batches (base offset 0, as a client sends them) of about `batch_bytes`."""
    per_batch = max(1, batch_bytes // (record_bytes + 10))
    value = b"x" * record_bytes
    one = encode_batch([Record(None, value, (), NOW_MS)] * per_batch)
    return [one] * max(1, total_bytes // len(one))


def _stamped(batches: list[bytes]) -> list[bytes]:
    """The same batches as a leader would send them to a follower (offsets assigned)."""
    out = []
    offset = 0
    for raw in batches:
        buf = bytearray(raw)
        buf[0:8] = offset.to_bytes(8, "big")
        out.append(bytes(buf))
        offset += int.from_bytes(raw[57:61], "big")
    return out


def bench_plain_write(root: str, batches: list[bytes]) -> float:
    path = os.path.join(root, "plain.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    start = time.perf_counter()
    for b in batches:
        os.write(fd, b)
    elapsed = time.perf_counter() - start
    os.close(fd)
    os.remove(path)
    return sum(map(len, batches)) / elapsed / MIB


def bench_log_append(root: str, batches: list[bytes], follower: bool) -> float:
    path = os.path.join(root, "bench-0")
    shutil.rmtree(path, ignore_errors=True)
    log = PartitionLog.open(path, LogConfig(), now_ms=NOW_MS)
    start = time.perf_counter()
    if follower:
        for b in batches:
            log.append_as_follower(b, now_ms=NOW_MS)
    else:
        for b in batches:
            log.append(b, 0, now_ms=NOW_MS)
    elapsed = time.perf_counter() - start
    log.close(clean=False)
    shutil.rmtree(path)
    return sum(map(len, batches)) / elapsed / MIB


def bench_reads(
    root: str, batches: list[bytes], fetch_bytes: int, reopen: bool
) -> tuple[float, float]:
    """(log read MiB/s, plain pread MiB/s) reading the whole log front to back."""
    path = os.path.join(root, "read-0")
    shutil.rmtree(path, ignore_errors=True)
    log = PartitionLog.open(path, LogConfig(), now_ms=NOW_MS)
    for b in batches:
        log.append_as_follower(b, now_ms=NOW_MS)
    if reopen:  # bytes from disk are CRC-checked when first served
        log.close()
        log = PartitionLog.open(path, LogConfig(), now_ms=NOW_MS)
    segment = os.path.join(path, f"{0:020d}.log")
    fd = os.open(segment, os.O_RDONLY)
    size = os.fstat(fd).st_size

    def plain() -> float:
        position = 0
        start = time.perf_counter()
        while position < size:
            position += len(os.pread(fd, fetch_bytes, position))
        return size / (time.perf_counter() - start) / MIB

    # The baseline runs before and after the log pass (page cache and CPU state drift on a
    # shared machine); it is the mean of both.
    before = plain()
    batch_size = len(batches[0])
    records_per_batch = int.from_bytes(batches[0][57:61], "big")
    end = log.log_end_offset
    total = 0
    offset = 0
    start = time.perf_counter()
    while offset < end:
        data = log.read(offset, fetch_bytes)
        total += len(data)
        # All batches are alike, so the next offset needs no header walk in the timed loop.
        offset += len(data) // batch_size * records_per_batch
    log_rate = total / (time.perf_counter() - start) / MIB
    plain_rate = (before + plain()) / 2
    os.close(fd)
    log.close(clean=False)
    shutil.rmtree(path)
    return log_rate, plain_rate


def bench_encode(records_per_batch: int, rounds: int) -> tuple[float, float]:
    """(strom records/s, kafka-python records/s) encoding 100-byte records."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    value = b"v" * 100
    records = [Record(None, value, (), NOW_MS + i) for i in range(records_per_batch)]
    start = time.perf_counter()
    for _ in range(rounds):
        encode_batch(records)
    strom_rate = rounds * records_per_batch / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(rounds):
        builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 30)
        for i, r in enumerate(records):
            builder.append(i, r.timestamp_ms, r.key, r.value, [])
        builder.build()
    kafka_rate = rounds * records_per_batch / (time.perf_counter() - start)
    return strom_rate, kafka_rate


def _row(label: str, pairs: list[tuple[float, float]]) -> None:
    """Median log rate, median baseline rate, median of the per-trial ratios."""
    log_rate = statistics.median(p[0] for p in pairs)
    plain = statistics.median(p[1] for p in pairs)
    ratio = statistics.median(p[0] / p[1] for p in pairs)
    print(f"{label} {log_rate:>8.0f} {plain:>9.0f} {ratio:>6.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=128, help="MiB appended per trial")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="strom-bench-", dir=args.dir)
    total = args.mib * MIB
    trials = args.trials
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.mib} MiB per trial, "
        f"median of {trials}, dir {root}"
    )
    try:
        print("\n== append (MiB/s; log and baseline alternate within each trial) ==")
        print(f"{'batch':>8} {'record':>7} {'path':<26} {'log':>8} {'os.write':>9} {'ratio':>6}")
        for batch_bytes, record_bytes in ((100 * 1024, 1024), (MIB, 1024), (100 * 1024, 100)):
            batches = _batches(batch_bytes, record_bytes, total)
            stamped = _stamped(batches)
            for label, data, follower in (
                ("follower (bounds only)", stamped, True),
                ("leader (full validation)", batches, False),
            ):
                pairs = [
                    (bench_log_append(root, data, follower), bench_plain_write(root, batches))
                    for _ in range(trials)
                ]
                _row(f"{len(batches[0]) // 1024:>6}Ki {record_bytes:>6}B {label:<26}", pairs)

        print("\n== read, front to back (MiB/s) ==")
        print(f"{'batch':>8} {'fetch':>7} {'log state':<26} {'log':>8} {'pread':>9} {'ratio':>6}")
        for batch_bytes in (100 * 1024, MIB):
            stamped = _stamped(_batches(batch_bytes, 1024, total))
            for reopen in (False, True):
                results = [bench_reads(root, stamped, MIB, reopen) for _ in range(trials)]
                label = "reopened (CRC on read)" if reopen else "written by this process"
                _row(f"{len(stamped[0]) // 1024:>6}Ki {'1Mi':>7} {label:<26}", results)

        print("\n== encode 100-byte records (records/s) ==")
        results = [bench_encode(1000, 40) for _ in range(trials)]
        strom_rate = statistics.median(r[0] for r in results)
        kafka_rate = statistics.median(r[1] for r in results)
        print(
            f"strom encode_batch {strom_rate:,.0f}  kafka-python DefaultRecordBatchBuilder "
            f"{kafka_rate:,.0f}  ratio {strom_rate / kafka_rate:.2f}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
