"""Crash tests: a child process appending in a loop is SIGKILLed at random moments. After each
reopen the log must be valid (every batch's CRC checks), hold exactly a prefix of what was
written, and keep everything whose append had returned (a process crash loses no page cache).
Then: garbage on the tail is truncated away, and a flipped byte below the recovery point is
reported with its file and byte position instead of being served.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from strom.storage.errors import LogCorruptionError
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import parse_header
from strom.storage.record_decode import decode_batches

CONFIG = {"segment_bytes": 20_000, "index_interval_bytes": 512}
NOW_MS = 1_700_000_000_000

# The child: reopen, continue the sequence 0, 1, 2, ... from the log end, print each
# acknowledged last offset. Flushes now and then so the recovery point moves too.
CHILD = """
import sys
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import Record, encode_batch

path, now = sys.argv[1], int(sys.argv[2])
log = PartitionLog.open(path, LogConfig(segment_bytes=20_000, index_interval_bytes=512), now_ms=now)
i = log.log_end_offset
print("ready", i, flush=True)
n = 0
while True:
    size = 1 + n % 7
    records = [Record(None, str(i + k).encode() * 20, (), now) for k in range(size)]
    info = log.append(encode_batch(records, compression=n % 3 == 0), 1 + n // 50, now_ms=now)
    i = info.last_offset + 1
    print(info.last_offset, flush=True)
    n += 1
    if n % 25 == 0:
        log.flush()
"""


def _run_and_kill(path: Path, rng: random.Random) -> int:
    """Start the child, let it append for a random while, SIGKILL it; return the last offset
    it acknowledged (-1 if none)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(NOW_MS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("ready"), line
    time.sleep(rng.uniform(0.02, 0.4))  # where the kill lands is the randomness, not a wait
    child.send_signal(signal.SIGKILL)
    acked = -1
    for line in child.stdout:
        acked = int(line)
    child.wait()
    return acked


def _check_prefix(log: PartitionLog) -> None:
    log.check_integrity()
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        for record in decode_batches(data):
            assert record.value == str(record.offset).encode() * 20, record
        offset = parse_header(data, 0).base_offset
        for record in decode_batches(data):
            offset = record.offset + 1


@pytest.mark.parametrize("seed", [11, 12])
def test_sigkill_at_random_moments_leaves_a_valid_prefix(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "crash-0"
    for round_ in range(4):
        acked = _run_and_kill(path, rng)
        log = PartitionLog.open(str(path), LogConfig(**CONFIG), now_ms=NOW_MS)
        assert not log.open_info.clean_shutdown
        assert log.log_end_offset >= acked + 1, f"seed {seed} round {round_}: lost acked data"
        _check_prefix(log)
        entries = log.leader_epoch_cache.entries
        assert all(e.start_offset < log.log_end_offset for e in entries)
        if round_ == 2:
            # garbage on the tail (a torn write) is cut away by recovery
            end = log.log_end_offset
            log.close(clean=False)
            active = path / f"{log.segment_base_offsets[-1]:020d}.log"
            with active.open("ab") as f:
                f.write(rng.randbytes(rng.randint(1, 300)))
            log = PartitionLog.open(str(path), LogConfig(**CONFIG), now_ms=NOW_MS)
            assert log.log_end_offset == end and log.open_info.truncated_bytes > 0
            _check_prefix(log)
        log.close(clean=round_ % 2 == 0)
    assert len(PartitionLog.open(str(path), now_ms=NOW_MS).segment_base_offsets) > 1


def test_flipped_byte_below_the_recovery_point_is_reported_with_file_and_position(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    path = tmp_path / "crash-0"
    while True:
        _run_and_kill(path, rng)
        log = PartitionLog.open(str(path), LogConfig(**CONFIG), now_ms=NOW_MS)
        if len(log.segment_base_offsets) >= 3:
            break
        log.close(clean=False)
    log.flush()  # everything is below the recovery point now
    log.close(clean=False)
    victim = path / f"{log.segment_base_offsets[1]:020d}.log"
    raw = bytearray(victim.read_bytes())
    # Flip one bit inside the records of a batch somewhere in the middle of the segment (the
    # CRC covers them; baseOffset and the leader epoch are, as in Kafka, not covered).
    batch_start = 0
    target = rng.randrange(len(raw) // 4, len(raw) // 2)
    while batch_start + parse_header(raw, batch_start).size_in_bytes <= target:
        batch_start += parse_header(raw, batch_start).size_in_bytes
    size = parse_header(raw, batch_start).size_in_bytes
    flip = rng.randrange(batch_start + 61, batch_start + size)
    raw[flip] ^= 0x40
    victim.write_bytes(bytes(raw))

    log = PartitionLog.open(str(path), LogConfig(**CONFIG), now_ms=NOW_MS)
    assert log.open_info.recovered_segments == 1  # only the active segment was rescanned
    with pytest.raises(LogCorruptionError) as info:
        offset = log.segment_base_offsets[1]
        while offset < log.log_end_offset:  # a consumer reading the segment front to back
            data = log.read(offset, 4096)
            offset = decode_batches(data)[-1].offset + 1
    assert info.value.path == str(victim)
    assert info.value.position == batch_start
    assert f"{victim} at byte {batch_start}" in str(info.value)
    assert os.path.getsize(victim) == len(raw)  # nothing was truncated below the point
