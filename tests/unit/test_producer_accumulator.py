"""The record accumulator both producers share: linger, the buffer_memory bound and draining per
broker, on an injected clock (nothing here waits for real time except the bounded block)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from strom.client.errors import KafkaTimeoutError
from strom.client.partitioner import make_partitioner
from strom.client.producer_accumulator import RecordAccumulator


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _accumulator(clock: FakeClock, **options: int) -> RecordAccumulator:
    settings = {
        "batch_size": 100, "linger_ms": 10, "buffer_memory": 1000, "max_block_ms": 50,
        "delivery_timeout_ms": 5000,
    } | options  # fmt: skip
    return RecordAccumulator(partitioner=make_partitioner("default"), clock=clock, **settings)


def _append(acc: RecordAccumulator, partition: int, size: int = 30, topic: str = "t") -> bool:
    with acc.lock:
        appended = acc.append(topic, partition, 4, 0, None, b"v", None, size)
        if appended is None:
            acc.wait_for_room(size)
            appended = acc.append(topic, partition, 4, 0, None, b"v", None, size)
    assert appended is not None
    return appended[1]


def _everything(key: tuple[str, int]) -> int:
    return 5


def _leader_by_partition(key: tuple[str, int]) -> int:
    return 1 if key[1] % 2 == 0 else 2


def test_an_open_batch_waits_for_linger_on_the_clock() -> None:
    clock = FakeClock()
    acc = _accumulator(clock)
    assert _append(acc, 0)  # a new batch: the sender must start its linger
    assert not _append(acc, 0)  # joins it
    drained, due_s = acc.drain(_everything, _leader_by_partition)
    assert drained == {}
    assert due_s == pytest.approx(0.010)
    clock.now += 0.004
    assert acc.drain(_everything, _leader_by_partition)[1] == pytest.approx(0.006)
    clock.now += 0.006
    drained, due_s = acc.drain(_everything, _leader_by_partition)
    assert [(b.partition, b.record_count) for b in drained[1]] == [(0, 2)]
    assert due_s is None
    assert not acc.has_batches


def test_a_full_batch_is_ready_at_once_and_the_next_record_opens_another() -> None:
    clock = FakeClock()
    acc = _accumulator(clock)
    for _ in range(3):
        _append(acc, 1)  # 90 of 100 bytes
    assert _append(acc, 1)  # 120 > 100: the first is sealed, a second opened
    drained, due_s = acc.drain(_everything, _leader_by_partition)
    assert [b.record_count for b in drained[2]] == [3]
    assert due_s == pytest.approx(0.010)  # the second still lingers
    assert acc.has_batches


def test_drain_groups_batches_by_leader_and_respects_each_partitions_room() -> None:
    clock = FakeClock()
    acc = _accumulator(clock, batch_size=30)  # every record fills a batch
    for partition in (0, 1, 2, 0, 0):
        _append(acc, partition)
    room = {("t", 0): 2, ("t", 1): 0, ("t", 2): 1}
    drained, _ = acc.drain(room.__getitem__, _leader_by_partition)
    assert {leader: [b.partition for b in batches] for leader, batches in drained.items()} == {
        1: [0, 0, 2]
    }
    # Partition 0's third batch and partition 1's wait until there is room.
    drained, _ = acc.drain(_everything, _leader_by_partition)
    assert sorted((leader, b.partition) for leader, bs in drained.items() for b in bs) == [
        (1, 0), (2, 1),
    ]  # fmt: skip


def test_a_lingered_batch_stays_open_while_its_partition_has_no_room() -> None:
    clock = FakeClock()
    acc = _accumulator(clock)
    _append(acc, 0)
    clock.now += 1
    drained, due_s = acc.drain(lambda key: 0, _leader_by_partition)
    assert drained == {} and due_s is None  # held: an answer wakes the sender, not a timer
    _append(acc, 0)  # still joins the lingered batch
    drained, _ = acc.drain(_everything, _leader_by_partition)
    assert [b.record_count for b in drained[1]] == [2]


def test_seal_all_makes_lingering_batches_ready() -> None:
    clock = FakeClock()
    acc = _accumulator(clock)
    _append(acc, 0)
    _append(acc, 1)
    acc.seal_all()
    drained, due_s = acc.drain(_everything, _leader_by_partition)
    assert sum(len(b) for b in drained.values()) == 2 and due_s is None


def test_batches_carry_the_delivery_deadline_of_the_clock() -> None:
    clock = FakeClock()
    acc = _accumulator(clock)
    _append(acc, 0)
    clock.now += 1
    acc.seal_all()
    (batch,) = acc.drain(_everything, _leader_by_partition)[0][1]
    assert (batch.created, batch.deadline) == (100.0, 105.0)


def test_the_buffer_bound_blocks_a_thread_until_an_answer_releases_bytes() -> None:
    clock = FakeClock()
    acc = _accumulator(clock, buffer_memory=100, batch_size=60, max_block_ms=5_000)
    _append(acc, 0, size=60)  # sealed: full
    assert acc.append("t", 1, 4, 0, None, b"v", None, 50) is None  # no room: nothing changes
    assert acc.buffered == 60
    blocked = threading.Thread(target=_append, args=(acc, 1, 50))
    blocked.start()
    blocked.join(0.05)
    assert blocked.is_alive()
    (batch,) = acc.drain(_everything, _leader_by_partition)[0][1]
    acc.complete(batch, 0, has_offsets=True)
    blocked.join(5)
    assert not blocked.is_alive()
    assert acc.buffered == 50 and len(acc.unfinished) == 1  # the blocked record's batch


def test_the_buffer_bound_fails_after_max_block_ms_in_a_thread_and_on_the_loop() -> None:
    clock = FakeClock()
    acc = _accumulator(clock, buffer_memory=100, max_block_ms=20)
    _append(acc, 0, size=90)
    with pytest.raises(KafkaTimeoutError, match="buffer_memory"):
        _append(acc, 0, size=20)
    with pytest.raises(KafkaTimeoutError, match="buffer_memory"):
        asyncio.run(acc.reserve_async(20))
    assert acc.buffered == 90


def test_a_failed_batch_returns_its_bytes_and_fails_its_records() -> None:
    clock = FakeClock()
    acc = _accumulator(clock)
    appended = acc.append("t", None, 4, 0, b"k", b"v", None, 30)  # the partitioner chooses
    assert appended is not None
    future = appended[0]
    acc.seal_all()
    (batch,) = next(iter(acc.drain(_everything, _leader_by_partition)[0].values()))
    acc.fail(batch, KafkaTimeoutError("gone"))
    assert acc.buffered == 0
    assert isinstance(future.exception(timeout=0), KafkaTimeoutError)
