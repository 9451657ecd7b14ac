"""flush.messages=1: a write counts only once it is fsynced (issue #17, durability as a choice).

Real Partition objects over real logs in a temporary folder; fsyncs go through
tests/faults/power_loss.PageCache, which records what each file held at its last fsync and
can cut every file back to that, as a power loss would. With flush.messages=1 no acknowledged
write is lost to the power loss; with the default (the page cache), the same check fails.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from faults.power_loss import PageCache

from strom.node.metadata.image import PartitionInfo
from strom.node.replica.partition import Partition
from strom.storage import durability
from strom.storage.log_config import LogConfig
from strom.storage.partition_log import FlushJob, PartitionLog
from strom.storage.record_batch import Record, encode_batch
from strom.storage.record_decode import decode_batches

TOPIC_ID = bytes(range(16))
SYNC = LogConfig(flush_messages=1)


def batch(value: str) -> bytes:
    return encode_batch([Record(None, value.encode(), (), 1000)])


def leader(directory: Path, config: LogConfig, isr: tuple[int, ...] = (1,)) -> Partition:
    log = PartitionLog.open(str(directory), config=config, now_ms=0)
    partition = Partition("orders", 0, TOPIC_ID, log, 1, high_watermark=0)
    partition.make_leader(
        PartitionInfo(replicas=isr, isr=isr, leader=1, leader_epoch=1, partition_epoch=1), 0
    )
    return partition


class HeldFsyncs:
    """fsyncs wait at a gate (in their worker thread) until the test opens it; flush jobs are
    counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.jobs = 0
        real_fsync, real_run = durability.fsync, FlushJob.run

        def held_fsync(fd: int) -> None:
            self.gate.wait(5)
            real_fsync(fd)

        def counted_run(job: FlushJob) -> None:
            self.jobs += 1
            real_run(job)

        monkeypatch.setattr(durability, "fsync", held_fsync)
        monkeypatch.setattr(FlushJob, "run", counted_run)


def test_the_leader_counts_a_write_towards_the_high_watermark_only_once_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        partition = leader(tmp_path / "orders-0", SYNC)
        held = HeldFsyncs(monkeypatch)
        info = partition.append_as_leader(batch("a"), acks=-1, min_insync_replicas=1, now_ms=1)
        await asyncio.sleep(0.05)  # the flush is in its worker thread, held at the gate
        assert partition.log_end_offset == 1
        assert partition.high_watermark == 0, "counted before the fsync"
        assert partition.durable_end_offset == 0
        acked = asyncio.create_task(partition.wait_durable(info.last_offset, timeout_s=5))
        await asyncio.sleep(0.05)
        assert not acked.done(), "acks=1 answered before the fsync"
        held.gate.set()
        await acked
        await partition.flush()
        assert partition.durable_end_offset == 1
        assert partition.high_watermark == 1

    asyncio.run(scenario())


def test_writes_that_arrive_during_an_fsync_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: 50 appends while one fsync is held cost one more flush, not 50."""

    async def scenario() -> HeldFsyncs:
        partition = leader(tmp_path / "orders-0", SYNC)
        held = HeldFsyncs(monkeypatch)
        partition.append_as_leader(batch("first"), acks=1, min_insync_replicas=1, now_ms=1)
        await asyncio.sleep(0.05)
        for i in range(50):
            partition.append_as_leader(batch(f"v{i}"), acks=1, min_insync_replicas=1, now_ms=2)
        held.gate.set()
        await partition.flush()
        assert partition.durable_end_offset == 51
        assert partition.high_watermark == 51
        return held

    assert asyncio.run(scenario()).jobs == 2


def test_without_flush_messages_the_leader_counts_its_page_cache(tmp_path: Path) -> None:
    async def scenario() -> None:
        partition = leader(tmp_path / "orders-0", LogConfig())
        partition.append_as_leader(batch("a"), acks=-1, min_insync_replicas=1, now_ms=1)
        assert partition.high_watermark == 1
        assert partition.durable_end_offset == 0
        assert partition.maybe_flush() is None  # nothing asks for an fsync yet

    asyncio.run(scenario())


def test_flush_ms_flushes_in_the_background(tmp_path: Path) -> None:
    async def scenario() -> None:
        partition = leader(tmp_path / "orders-0", LogConfig(flush_ms=50))
        partition.append_as_leader(batch("a"), acks=1, min_insync_replicas=1, now_ms=1_000)
        assert partition.durable_end_offset == 0
        await asyncio.sleep(0.2)
        assert partition.durable_end_offset == 1

    asyncio.run(scenario())


def acknowledged_after_power_loss(
    directory: Path, config: LogConfig
) -> tuple[list[str], list[str]]:
    """Append 20 writes, each acknowledged as acks=1 would be, lose power, reopen: (acked,
    recovered values)."""
    cache = PageCache()
    acked: list[str] = []

    async def write() -> None:
        partition = leader(directory, config)
        for i in range(20):
            info = partition.append_as_leader(batch(f"v{i}"), acks=1, min_insync_replicas=1,
                                              now_ms=1 + i)  # fmt: skip
            if partition.flushes_before_ack:
                await partition.wait_durable(info.last_offset, timeout_s=5)
            acked.append(f"v{i}")
        partition._log.close(clean=False)  # the machine dies: nothing more reaches the disk

    with cache.installed():
        asyncio.run(write())
    assert cache.lose_power([str(directory)]) >= 0
    log = PartitionLog.open(str(directory), config=config, now_ms=100)
    data = log.read(0, 1 << 20) if log.log_end_offset else b""
    values = [r.value.decode() for r in decode_batches(data) if r.value is not None]
    log.close()
    return acked, values


def test_flush_messages_one_loses_no_acknowledged_write_to_a_power_loss(tmp_path: Path) -> None:
    acked, recovered = acknowledged_after_power_loss(tmp_path / "orders-0", SYNC)
    assert recovered[: len(acked)] == acked


def test_the_page_cache_loses_acknowledged_writes_to_a_power_loss(tmp_path: Path) -> None:
    """The check above can fail: with the default policy the writes were never fsynced."""
    acked, recovered = acknowledged_after_power_loss(tmp_path / "orders-0", LogConfig())
    assert acked and recovered[: len(acked)] != acked


def test_a_flush_due_after_the_log_closed_does_nothing(tmp_path: Path) -> None:
    """Found by the node simulation (seed 229): a replica dropped (its log closed) while its
    flush task was scheduled made the task fail ("log is closed")."""

    async def scenario() -> None:
        partition = leader(tmp_path / "orders-0", SYNC)
        partition.append_as_leader(batch("a"), acks=1, min_insync_replicas=1, now_ms=1)
        partition._log.close(clean=False)  # dropped before the flush task ran
        await partition.flush()
        assert partition.durable_end_offset == 0

    asyncio.run(scenario())
