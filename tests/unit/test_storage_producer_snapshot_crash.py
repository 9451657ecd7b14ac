"""Crash tests of producer-state snapshots: a child process appends idempotent batches of many
producers to a log with small segments (so it rolls, and writes a snapshot at each roll) and is
SIGKILLed at random moments, some of them while a snapshot is being written. After each
reopen, the producer state must equal the state of every batch the log holds, built from
scratch, and every producer must continue where the log says it stands. Some rounds also tear
the newest snapshot (as a file system without atomic renames could after a power loss): the
damage is reported, the snapshot skipped, and the state is still exact.
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
from test_storage_log_property import state_from_scratch

from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog
from strom.storage.producer_state import snapshot_offsets, snapshot_path

CONFIG = {"segment_bytes": 16_000, "index_interval_bytes": 512}
NOW_MS = 1_700_000_000_000
PRODUCERS = 400  # a snapshot of ~14 KB: a kill lands inside its write now and then

# The child: reopen, and append one batch per producer in turn, each going on from the
# sequence the log's producer state holds; print each acknowledged last offset.
CHILD = """
import sys
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import Record, encode_batch

path, now, producers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = LogConfig(segment_bytes=16_000, index_interval_bytes=512)
log = PartitionLog.open(path, config, now_ms=now)
print("ready", log.log_end_offset, flush=True)
n = 0
while True:
    pid = 5000 + n % producers
    entry = log.producer_state.producers.get(pid)
    seq = 0 if entry is None else entry.last_seq + 1
    records = [Record(None, b"v" * 10, (), now) for _ in range(1 + n % 3)]
    batch = encode_batch(records, producer_id=pid, producer_epoch=0, base_sequence=seq)
    info = log.append(batch, 1, now_ms=now)
    print(info.last_offset, flush=True)
    n += 1
"""


def _run_and_kill(path: Path, rng: random.Random) -> int:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(NOW_MS), str(PRODUCERS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("ready"), line
    time.sleep(rng.uniform(0.05, 0.5))  # where the kill lands is the randomness, not a wait
    child.send_signal(signal.SIGKILL)
    acked = -1
    for line in child.stdout:
        acked = int(line)
    child.wait()
    return acked


@pytest.mark.parametrize("seed", [21, 22])
def test_sigkill_leaves_snapshots_that_rebuild_the_exact_state(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "crash-0"
    for round_ in range(4):
        acked = _run_and_kill(path, rng)
        torn = round_ % 2 == 1 and bool(snapshot_offsets(str(path)))
        if torn:
            newest = snapshot_path(str(path), snapshot_offsets(str(path))[-1])
            size = os.path.getsize(newest)
            with open(newest, "r+b") as f:
                f.truncate(rng.randrange(0, max(size, 1)))
        log = PartitionLog.open(str(path), LogConfig(**CONFIG), now_ms=NOW_MS)
        assert log.log_end_offset >= acked + 1, f"seed {seed} round {round_}: lost acked data"
        assert not any(n.endswith(".tmp") for n in os.listdir(path))
        loaded = log.producer_state_load
        assert len(loaded.corrupt) == int(torn), loaded
        if loaded.snapshot_offset is not None:  # only the headers after it were read
            assert loaded.headers_scanned <= log.log_end_offset - loaded.snapshot_offset
        state = log.producer_state
        assert state.end_offset == log.log_end_offset
        assert sorted(state.as_tuples()) == sorted(state_from_scratch(log).as_tuples())
        log.close(clean=round_ == 2)
    assert len(snapshot_offsets(str(path))) > 1
