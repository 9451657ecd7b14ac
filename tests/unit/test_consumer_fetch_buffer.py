"""The consumer's fetch buffer: per-partition runs, taken in order, positions from the last."""

from __future__ import annotations

from strom.client.consumer import _FetchBuffer
from strom.client.records import ConsumerRecord, TopicPartition

A = TopicPartition("t", 0)
B = TopicPartition("t", 1)


def _run(tp: TopicPartition, first: int, count: int) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(tp.topic, tp.partition, o, 0, None, b"v", ())
        for o in range(first, first + count)
    ]


def test_records_come_out_in_fetch_order_and_positions_follow_the_last_taken() -> None:
    buffer = _FetchBuffer()
    buffer.add(A, _run(A, 0, 3), 3)
    buffer.add(B, _run(B, 10, 2), 12)
    buffer.add(A, [], 3)
    consumed: dict[TopicPartition, int] = {}
    first = buffer.take(2, consumed)
    assert [(r.partition, r.offset) for r in first] == [(0, 0), (0, 1)]
    assert consumed == {A: 2} and len(buffer) == 3
    second = buffer.take(10, consumed)
    assert [(r.partition, r.offset) for r in second] == [(0, 2), (1, 10), (1, 11)]
    assert consumed == {A: 3, B: 12} and len(buffer) == 0
    assert buffer.take(5, consumed) == []


def test_discarding_a_partition_keeps_the_others_and_a_partly_taken_run() -> None:
    buffer = _FetchBuffer()
    buffer.add(A, _run(A, 0, 4), 4)
    buffer.add(B, _run(B, 0, 2), 2)
    buffer.add(A, _run(A, 4, 1), 5)
    consumed: dict[TopicPartition, int] = {}
    buffer.take(1, consumed)
    buffer.discard(lambda tp: tp == B)
    assert len(buffer) == 4
    assert [r.offset for r in buffer.take(10, consumed)] == [1, 2, 3, 4]
    assert consumed == {A: 5}


def test_the_position_moves_past_batches_the_fetch_skipped() -> None:
    """A transaction's commit marker (offset 3) ends partition A, an aborted transaction and its
    marker (offsets 10-12) end B: once their records are taken, the positions are past them,
    not stuck on the marker (the position a read_committed drain compares to the LSO)."""
    buffer = _FetchBuffer()
    buffer.add(A, _run(A, 0, 3), 3)
    buffer.add(A, [], 4)  # only the commit marker after the records
    buffer.add(B, _run(B, 8, 2), 10)
    buffer.add(B, [], 13)
    consumed: dict[TopicPartition, int] = {}
    assert [r.offset for r in buffer.take(3, consumed)] == [0, 1, 2]
    assert consumed == {A: 4}  # the empty run right behind the cut is taken too
    assert [r.offset for r in buffer.take(1, consumed)] == [8]
    assert consumed == {A: 4, B: 9}  # B's run is not finished: the skip is not reached yet
    assert [r.offset for r in buffer.take(10, consumed)] == [9]
    assert consumed == {A: 4, B: 13} and len(buffer) == 0
