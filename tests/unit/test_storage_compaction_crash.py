"""Crash test of the cleaner's swap protocol: a child process cleans a copy of a log and is
SIGKILLed at a random moment. After each reopen the log must be valid (every batch's CRC checks,
reads decode), hold only original records and at least the fully cleaned ones, show the same
latest value per key as before, and keep no `.cleaned` leftovers; cleaning again gives exactly
the fully cleaned log.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from strom.storage import log_cleaner
from strom.storage.batch_validation import split_batches
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import Record, encode_batch, parse_header
from strom.storage.record_decode import decode_batches

NOW_MS = 1_700_000_000_000
CONFIG = LogConfig(segment_bytes=4_000, index_interval_bytes=256)

CHILD = """
import sys
from strom.storage import log_cleaner
from strom.storage.batch_validation import split_batches
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog

path, now = sys.argv[1], int(sys.argv[2])
log = PartitionLog.open(path, LogConfig(segment_bytes=4_000, index_interval_bytes=256), now_ms=now)
print("ready", flush=True)
while True:
    log_cleaner.clean_log(log, log.log_end_offset, now_ms=now, delete_retention_ms=1000)
"""


def _build(path: Path) -> None:
    log = PartitionLog.open(str(path), CONFIG, now_ms=NOW_MS)
    rng = random.Random(7)
    for i in range(1_500):
        records = []
        for _ in range(rng.randint(1, 4)):
            key = f"k{rng.randrange(40)}".encode()
            value = None if rng.random() < 0.1 else f"v{i}".encode() * rng.randint(1, 4)
            ts = NOW_MS - (5_000 if i < 700 else 0)  # early tombstones have expired
            records.append(Record(key, value, (), ts))
        log.append(encode_batch(records, compression=i % 4 == 0), 1, now_ms=NOW_MS)
    log.close()


def _records(log: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    log.check_integrity()
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        records = [r for r in decode_batches(data) if r.offset >= offset]
        out += [(r.offset, r.key, r.value) for r in records]
        offset = parse_header(data, split_batches(data)[-1][0]).next_offset
    return out


def _latest(records: list[tuple[int, bytes | None, bytes | None]]) -> dict[bytes, bytes]:
    view: dict[bytes, bytes | None] = {}
    for _, key, value in records:
        assert key is not None
        view[key] = value
    return {k: v for k, v in view.items() if v is not None}


def test_sigkill_during_cleaning_leaves_a_valid_log(tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    _build(pristine)
    original_log = PartitionLog.open(str(pristine), CONFIG, now_ms=NOW_MS)
    original = _records(original_log)
    original_log.close()
    # The fully cleaned result, computed in process.
    reference = tmp_path / "reference"
    shutil.copytree(pristine, reference)
    ref_log = PartitionLog.open(str(reference), CONFIG, now_ms=NOW_MS)
    log_cleaner.clean_log(ref_log, ref_log.log_end_offset, now_ms=NOW_MS, delete_retention_ms=1000)
    cleaned = _records(ref_log)
    ref_log.close()
    assert len(cleaned) < len(original) // 4
    assert _latest(cleaned) == _latest(original)

    rng = random.Random(int(os.environ.get("STROM_TEST_SEED", "11")))
    for round_ in range(8):
        work = tmp_path / f"round{round_}"
        shutil.copytree(pristine, work)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(work), str(NOW_MS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().startswith("ready")
        time.sleep(rng.uniform(0.0, 0.15))  # where the kill lands is the randomness
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        log = PartitionLog.open(str(work), CONFIG, now_ms=NOW_MS)
        assert not [n for n in os.listdir(work) if n.endswith((".cleaned", ".tmp"))]
        seen = _records(log)
        assert set(cleaned) <= set(seen) <= set(original)
        assert [o for o, _, _ in seen] == sorted(o for o, _, _ in seen)
        assert _latest(seen) == _latest(original)
        assert log.log_end_offset == original[-1][0] + 1
        log_cleaner.clean_log(log, log.log_end_offset, now_ms=NOW_MS, delete_retention_ms=1000)
        assert _records(log) == cleaned
        log.close()
        shutil.rmtree(work)
