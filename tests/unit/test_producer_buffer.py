"""Producer memory is bounded: send() waits for room, then fails clearly after max_block_ms."""

from __future__ import annotations

import asyncio

import pytest

from strom.client.errors import KafkaTimeoutError, StromError
from strom.client.producer import AsyncProducer
from strom.client.producer_batch import ProducerBatch


def test_full_buffer_blocks_then_times_out() -> None:
    async def scenario() -> None:
        producer = AsyncProducer("localhost:1", buffer_memory=1000, max_block_ms=50)
        await producer._reserve(900)
        with pytest.raises(KafkaTimeoutError, match="buffer_memory"):
            await producer._reserve(200)

    asyncio.run(scenario())


def test_a_finished_batch_makes_room_for_a_waiting_send() -> None:
    async def scenario() -> int:
        producer = AsyncProducer("localhost:1", buffer_memory=1000, max_block_ms=5_000)
        await producer._reserve(900)
        waiter = asyncio.create_task(producer._reserve(500))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        batch = ProducerBatch("t", 0)
        batch.size_bytes = 900
        producer._release(batch)
        await asyncio.wait_for(waiter, 1)
        return producer._buffered

    assert asyncio.run(scenario()) == 500


def test_a_record_larger_than_the_buffer_is_refused() -> None:
    producer = AsyncProducer("localhost:1", buffer_memory=100)
    with pytest.raises(StromError) as err:
        producer.check_record(None, b"x" * 200, None)
    assert err.value.name == "MESSAGE_TOO_LARGE"
