"""Producer-state rebuilds never stall the node (issue #14, defect 6).

Every partition open and every real truncation scanned all batch headers of the log,
synchronously, on the event loop (about 0.5 s per GB): a node opening many partitions, or a
failover truncating many at once, could stall past broker.session.timeout.ms and be fenced.
Now a clean shutdown leaves a snapshot of the producer state, an open reads only the headers
after the newest snapshot, and a long replay after a truncation runs in a worker thread.

Both tests count work instead of timing it: the bytes the broker reads from its logs when it
opens them, and the batch headers it parses on the event loop's thread while a follower
truncates a large log.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from replica_fixtures import (
    TOPIC_ID,
    ScriptedLeaderPeers,
    changed,
    image,
    leader_batches,
    led_by,
    manager,
    until,
)

from strom.storage import record_batch
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import replica_pb2

PID = 77


@pytest.fixture
def pread_bytes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Bytes read with os.pread (how logs are read) while the test runs."""
    counted = [0]
    real = os.pread

    def counting(fd: int, size: int, offset: int) -> bytes:
        data = real(fd, size, offset)
        counted[0] += len(data)
        return data

    monkeypatch.setattr(os, "pread", counting)
    yield counted


@pytest.fixture
def headers_parsed_on_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Batch headers parsed on the main thread (the event loop's) by any strom module."""
    counted = [0]
    real = record_batch.parse_header
    main = threading.main_thread()

    def counting(*args: Any) -> Any:
        if threading.current_thread() is main:
            counted[0] += 1
        return real(*args)

    for name, module in list(sys.modules.items()):
        if name.startswith("strom.") and getattr(module, "parse_header", None) is real:
            monkeypatch.setattr(module, "parse_header", counting)
    yield counted


def produce(partition: Any, batches: int) -> None:
    for seq in range(batches):
        data = encode_batch(
            [Record(None, b"x" * 40, (), 1000 + seq)],  # time moves on, as in life
            producer_id=PID,
            producer_epoch=0,
            base_sequence=seq,
        )
        partition.append_as_leader(data, 1, 1, now_ms=2000)


def test_opening_after_a_clean_shutdown_reads_no_batch_headers(
    tmp_path: Path, pread_bytes: list[int]
) -> None:
    async def first_life() -> int:
        replicas = manager(tmp_path)
        img = image({0: led_by(1)})
        replicas.on_metadata(img, changed(img))
        leader = replicas.partition_by_name("t", 0)
        produce(leader, 5000)
        size = leader.log.size_in_bytes
        await replicas.stop()
        replicas.logs.close()  # a clean shutdown
        return size

    async def second_life() -> int:
        replicas = manager(tmp_path)
        img = image({0: led_by(1, epoch=2)})
        replicas.on_metadata(img, changed(img))
        leader = replicas.partition_by_name("t", 0)
        read = pread_bytes[0]
        # The state is whole: a retry of the last batch is answered as a duplicate.
        retry = encode_batch(
            [Record(None, b"x" * 40, (), 5999)],
            producer_id=PID,
            producer_epoch=0,
            base_sequence=4999,
        )
        info = leader.append_as_leader(retry, 1, 1, now_ms=3000)
        assert (info.first_offset, info.batch_count) == (4999, 0)
        await replicas.stop()
        replicas.logs.close()
        return read

    size = asyncio.run(first_life())
    pread_bytes[0] = 0
    read = asyncio.run(second_life())
    # Main read the whole log again (~`size` bytes) to rebuild the producer state; now only
    # the snapshot and each segment's tail bookkeeping are read.
    assert read < size / 20, (read, size)


def test_a_big_truncation_never_stalls_the_event_loop(
    tmp_path: Path, headers_parsed_on_loop: list[int]
) -> None:
    """A follower of 20,000 batches (1.5 MB, no snapshot below the truncation point) truncates
    to 19,000 and fetches on: the replay of 19,000 headers runs in a worker thread, and the
    loop parses a handful of headers (main: all of them, on the loop, while nothing else ran)."""
    count, cut = 20_000, 19_000
    log = PartitionLog.open(str(tmp_path / "data" / "t-0"), now_ms=0, topic_id=TOPIC_ID.hex())
    log.append_as_follower(leader_batches(0, count, pid=PID), now_ms=0)
    log.close()

    def leader(request: replica_pb2.ReplicaFetchRequest) -> replica_pb2.ReplicaFetchResponse:
        response = replica_pb2.ReplicaFetchResponse()
        for wanted in request.partitions:
            out = response.partitions.add(topic_id=wanted.topic_id, partition=wanted.partition)
            if wanted.last_fetched_epoch == 1 and wanted.fetch_offset > cut:
                # The leader's epoch 1 ended at `cut`: the follower's suffix diverged.
                out.diverging_epoch.epoch, out.diverging_epoch.end_offset = 1, cut
            elif wanted.fetch_offset < cut + 10:
                out.records = leader_batches(wanted.fetch_offset, 10, epoch=2, pid=PID)
            out.high_watermark = min(wanted.fetch_offset, cut)
        return response

    async def scenario() -> tuple[int, tuple[int, int]]:
        peers = ScriptedLeaderPeers(leader)
        replicas = manager(tmp_path, peers)
        follower = image({0: led_by(2, epoch=2)})
        before = headers_parsed_on_loop[0]
        replicas.on_metadata(follower, changed(follower))
        partition = replicas.partition_by_name("t", 0)
        caught_up = cut + 10  # truncated, replayed, then fetched ten batches of epoch 2
        await until(
            lambda: any(p.fetch_offset == caught_up for r in peers.requests for p in r.partitions),
            timeout_s=60,
        )
        parsed = headers_parsed_on_loop[0] - before
        # The rebuilt state is whole: as leader, a retry of the last batch is a duplicate.
        partition.make_leader(led_by(1, epoch=3), now_ms=5000)
        retry = leader_batches(cut + 9, 1, epoch=2, pid=PID)
        info = partition.append_as_leader(retry, 1, 1, now_ms=5000)
        await replicas.stop()
        replicas.logs.close()
        return parsed, (info.first_offset, info.batch_count)

    parsed, retried = asyncio.run(scenario())
    assert parsed < 1_000, parsed
    assert retried == (cut + 9, 0)
