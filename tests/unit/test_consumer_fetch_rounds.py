"""The consumer fetches from each broker on its own: one broker's records are handed out while
another broker still holds its long poll (Kafka's consumer sends to every node that has no
request pending). A round that waited for every broker made a three-partition topic's
end-to-end p99 about 4x its one-partition figure (bench/RESULTS.md)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from strom.client.consumer import AsyncConsumer
from strom.client.records import TopicPartition
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import broker_pb2

FAST = TopicPartition("t", 0)  # led by broker "fast", which has records
SLOW = TopicPartition("t", 1)  # led by broker "slow", which long-polls until released
# A bound for the test run, not a speed claim: waiting for the slow broker never ends.
NEVER_S = 10.0


def _answer(tp: TopicPartition, base_offset: int, count: int) -> broker_pb2.FetchResponse:
    records = encode_batch(
        [Record(None, f"v{i}".encode(), (), 1) for i in range(count)], base_offset=base_offset
    )
    response = broker_pb2.FetchResponse()
    topic = response.topics.add(name=tp.topic)
    topic.partitions.add(
        partition=tp.partition, high_watermark=base_offset + count, records=records
    )
    return response


class TwoBrokers:
    """Stands in for the cluster client: "fast" answers at once, "slow" when released."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.release_slow = asyncio.Event()
        self.fast_next = 0

    def fetch_call(self, address: str) -> str:
        return address

    async def call(self, address: str, fn: Any, request: Any, timeout_s: float) -> Any:
        self.calls[address] += 1
        if address == "fast":
            if self.fast_next > 0:  # nothing new: hold the long poll
                await asyncio.sleep(NEVER_S)
            self.fast_next += 3
            return _answer(FAST, 0, 3)
        await self.release_slow.wait()
        return _answer(SLOW, 0, 2)


def _consumer(brokers: TwoBrokers) -> AsyncConsumer:
    consumer = AsyncConsumer("localhost:1")
    consumer.cluster.call = brokers.call  # type: ignore[method-assign]
    consumer.cluster.fetch_call = brokers.fetch_call  # type: ignore[method-assign]

    async def by_leader(partitions: Any, read_replicas: bool = False) -> dict[str, list[Any]]:
        return {"fast": [FAST], "slow": [SLOW]}

    async def nothing_missing(*_: Any, **__: Any) -> None:
        return None

    consumer._by_leader = by_leader  # type: ignore[method-assign]
    consumer._reset_missing = nothing_missing  # type: ignore[method-assign]
    consumer.assign([FAST, SLOW])
    consumer._positions.update({FAST: 0, SLOW: 0})
    consumer._consumed.update({FAST: 0, SLOW: 0})
    return consumer


def test_one_brokers_records_do_not_wait_for_another_brokers_long_poll() -> None:
    asyncio.run(_records_do_not_wait())


async def _records_do_not_wait() -> None:
    brokers = TwoBrokers()
    consumer = _consumer(brokers)
    try:
        # With a round that gathered every broker, this poll returned only at its own
        # timeout (here: never within NEVER_S), though the fast broker answered at once.
        records = await asyncio.wait_for(consumer.poll(timeout_ms=60_000), NEVER_S)
        assert [(r.partition, r.offset) for r in records] == [(0, 0), (0, 1), (0, 2)]
        assert not brokers.release_slow.is_set()

        # The slow broker's fetch outlives that round: it is not sent again while in flight,
        # and its answer is handed out by a later poll.
        brokers.release_slow.set()
        records = await asyncio.wait_for(consumer.poll(timeout_ms=60_000), NEVER_S)
        assert [(r.partition, r.offset) for r in records] == [(1, 0), (1, 1)]
        assert brokers.calls["slow"] == 1
    finally:
        await consumer.close()


def test_close_cancels_every_brokers_fetch_in_flight() -> None:
    asyncio.run(_close_cancels())


async def _close_cancels() -> None:
    brokers = TwoBrokers()
    consumer = _consumer(brokers)
    await asyncio.wait_for(consumer.poll(timeout_ms=60_000), NEVER_S)
    in_flight = list(consumer._fetching.values())
    assert in_flight, "the slow broker's fetch should still be in flight"
    await consumer.close()
    assert all(task.cancelled() for task in in_flight)
    assert consumer._fetching == {}
