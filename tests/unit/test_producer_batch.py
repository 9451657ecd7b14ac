"""A producer batch: records encoded as sent, one result per batch, light per-record futures."""

from __future__ import annotations

import asyncio
import threading

import pytest

from strom.client.errors import FatalError
from strom.client.producer_batch import ProducerBatch, RecordFuture
from strom.client.records import RecordMetadata
from strom.storage.record_decode import decode_batch


def _batch_with(values: list[bytes]) -> tuple[ProducerBatch, list[RecordFuture]]:
    batch = ProducerBatch("t", 2)
    futures = [batch.append(1000 + i, None, v, None, 30) for i, v in enumerate(values)]
    return batch, futures


def test_records_are_encoded_as_they_are_sent() -> None:
    batch, _ = _batch_with([b"a", b"bb", b"ccc"])
    assert batch.record_count == 3
    assert batch.size_bytes == 90  # what was accounted, not what was encoded
    _, records = decode_batch(batch.builder.build())
    assert [(r.offset, r.timestamp_ms, r.value) for r in records] == [
        (0, 1000, b"a"), (1, 1001, b"bb"), (2, 1002, b"ccc"),
    ]  # fmt: skip


def test_each_future_gets_its_own_offset_from_the_batch_base_offset() -> None:
    batch, futures = _batch_with([b"a", b"b", b"c"])
    assert not any(f.done() for f in futures)
    batch.result.complete(40)
    assert [f.result(timeout=0) for f in futures] == [
        RecordMetadata("t", 2, 40, 1000), RecordMetadata("t", 2, 41, 1001),
        RecordMetadata("t", 2, 42, 1002),
    ]  # fmt: skip
    assert all(f.exception() is None for f in futures)


def test_without_offsets_every_record_reports_minus_one() -> None:
    batch, futures = _batch_with([b"a", b"b"])
    batch.result.has_offsets = False
    batch.result.complete(-1)
    assert [f.result().offset for f in futures] == [-1, -1]


def test_an_error_fails_every_record_of_the_batch_and_completes_once() -> None:
    batch, futures = _batch_with([b"a", b"b"])
    error = FatalError(10, "too large")
    batch.result.complete(-1, error)
    batch.result.complete(7)  # ignored: a batch has one outcome
    for future in futures:
        assert future.exception() is error
        with pytest.raises(FatalError, match="too large"):
            future.result()


def test_callbacks_run_in_send_order_and_late_ones_run_at_once() -> None:
    batch, futures = _batch_with([b"a", b"b", b"c"])
    seen: list[int] = []
    for future in reversed(futures[:2]):
        future.add_done_callback(lambda f: seen.append(f.result().offset))
    futures[2].add_done_callback(lambda f: seen.append(f.result().offset))
    assert seen == []
    batch.result.complete(0)
    assert seen == [1, 0, 2]
    futures[0].add_done_callback(lambda f: seen.append(-f.result().offset - 10))
    assert seen == [1, 0, 2, -10]


def test_a_failing_callback_does_not_stop_the_others() -> None:
    batch, futures = _batch_with([b"a", b"b"])
    seen: list[int] = []
    futures[0].add_done_callback(lambda f: 1 / 0)
    futures[1].add_done_callback(lambda f: seen.append(f.result().offset))
    batch.result.complete(5)
    assert seen == [6]


def test_result_blocks_until_another_thread_completes_the_batch() -> None:
    batch, futures = _batch_with([b"a"])
    with pytest.raises(TimeoutError):
        futures[0].result(timeout=0.01)
    completer = threading.Timer(0.05, batch.result.complete, args=(3,))
    completer.start()
    assert futures[0].result(timeout=10).offset == 3
    completer.join()


def test_futures_are_awaitable_before_and_after_completion() -> None:
    async def scenario() -> list[int]:
        batch, futures = _batch_with([b"a", b"b"])
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, batch.result.complete, 9)
        first = await futures[0]
        second = await futures[1]
        return [first.offset, second.offset]

    assert asyncio.run(scenario()) == [9, 10]


def test_awaiting_a_failed_record_raises_its_error() -> None:
    async def scenario() -> None:
        batch, futures = _batch_with([b"a"])
        asyncio.get_running_loop().call_later(0.01, batch.result.complete, -1, FatalError(2))
        await futures[0]

    with pytest.raises(FatalError):
        asyncio.run(scenario())
