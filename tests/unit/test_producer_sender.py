"""The sender pipelines batches per partition and keeps them in order through retries.

A scripted leader checks idempotence sequences as the broker does (duplicates answered with the
original offset, gaps refused as OUT_OF_ORDER_SEQUENCE_NUMBER), answers requests in a random
order, and refuses some first attempts as NOT_LEADER_OR_FOLLOWER without appending. Whatever the
seed, every record must be acknowledged exactly once, in send order, with contiguous offsets.
"""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import pytest

from strom.client.cluster import ClusterMeta, PartitionMeta, TopicMeta
from strom.client.errors import FatalError, error_from_code
from strom.client.producer import AsyncProducer
from strom.storage.record_batch import parse_header
from strom.storage.record_decode import decode_batch
from strom.v1 import broker_pb2, common_pb2

PARTITIONS = 2


class ScriptedLeader:
    """One leader for every partition of topic "t", with the broker's sequence rules."""

    def __init__(self, seed: int, refuse_fraction: float) -> None:
        self.rng = random.Random(seed)
        self.refuse_fraction = refuse_fraction
        self.logs: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
        self.next_seq: dict[int, int] = {}
        self.seen: dict[tuple[int, int], int] = {}  # (partition, base seq) -> base offset
        self.refused_once: set[tuple[int, int]] = set()
        self.max_concurrent = 0
        self._concurrent = 0

    async def produce(self, request: broker_pb2.ProduceRequest) -> broker_pb2.ProduceResponse:
        self._concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self._concurrent)
        try:
            await asyncio.sleep(self.rng.random() * 0.005)  # answers overtake each other
            response = broker_pb2.ProduceResponse()
            for topic in request.topics:
                out = response.topics.add(name=topic.name)
                for p in topic.partitions:
                    code, offset = self._append(p.partition, p.records)
                    out.partitions.add(partition=p.partition, error_code=code, base_offset=offset)
            return response
        finally:
            self._concurrent -= 1

    def _append(self, partition: int, data: bytes) -> tuple[Any, int]:
        header = parse_header(data)
        seq = header.base_sequence
        if (partition, seq) in self.seen:
            return common_pb2.NONE, self.seen[(partition, seq)]  # a duplicate
        # As the broker: a producer it does not know yet may start at any sequence.
        if partition in self.next_seq and seq != self.next_seq[partition]:
            return common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER, -1
        if (partition, seq) not in self.refused_once and self.rng.random() < self.refuse_fraction:
            self.refused_once.add((partition, seq))
            return common_pb2.NOT_LEADER_OR_FOLLOWER, -1
        offset = sum(len(decode_batch(b)[1]) for b in self.logs[partition])
        self.logs[partition].append(data)
        self.seen[(partition, seq)] = offset
        self.next_seq[partition] = seq + header.record_count
        return common_pb2.NONE, offset


class FakeCluster:
    retry_backoff_ms = 1
    retry_backoff_max_ms = 2

    def __init__(self, leader: ScriptedLeader) -> None:
        self.leader = leader
        partitions = {p: PartitionMeta(p, 1, 0, (1,), (1,)) for p in range(PARTITIONS)}
        self.meta = ClusterMeta("c", 1, {1: "leader"}, {"t": TopicMeta("t", b"id", partitions)})

    def address_of(self, node_id: int) -> str | None:
        return self.meta.brokers.get(node_id)

    def broker_stub(self, address: str) -> Any:
        return self

    def produce_call(self, address: str) -> Any:  # ClusterClient's: the stub's Produce here
        return self.broker_stub(address).Produce

    @property
    def Produce(self) -> Any:  # the stub method's name
        return self.leader.produce

    async def call(self, address: str, fn: Any, request: Any, timeout_s: float) -> Any:
        return await fn(request)

    def invalidate(self, topic: str) -> None:
        pass

    async def topic(self, name: str, **_: Any) -> TopicMeta:
        return self.meta.topics[name]

    async def close(self) -> None:
        pass


async def _run(leader: ScriptedLeader, records: int) -> list[Any]:
    producer = AsyncProducer("fake:1", acks="all", linger_ms=1, batch_size=600)
    producer.cluster = FakeCluster(leader)  # type: ignore[assignment]
    producer.producer_id, producer.producer_epoch = 7, 0
    futures = [
        await producer.send("t", b"v%d" % i, partition=i % PARTITIONS) for i in range(records)
    ]
    await producer.flush(timeout_s=30)
    results = []
    for future in futures:
        try:
            results.append(await future)
        except FatalError as exc:
            results.append(exc)
    await producer.close()
    return results


@pytest.mark.parametrize("seed", range(8))
def test_every_record_lands_once_in_send_order_despite_refusals_and_reordering(seed: int) -> None:
    leader = ScriptedLeader(seed, refuse_fraction=0.3)
    results = asyncio.run(_run(leader, 400))
    assert leader.max_concurrent > 1, "batches were never pipelined"
    assert leader.refused_once, "the script never refused a batch"
    for partition in range(PARTITIONS):
        mine = [r for i, r in enumerate(results) if i % PARTITIONS == partition]
        assert [r.offset for r in mine] == list(range(len(mine)))
        values = [r.value for b in leader.logs[partition] for r in decode_batch(b)[1]]
        assert values == [b"v%d" % i for i in range(partition, 400, PARTITIONS)]


def test_a_real_sequence_gap_is_fatal() -> None:
    leader = ScriptedLeader(0, refuse_fraction=0.0)
    leader.next_seq[0] = 1000  # the leader expects a sequence this producer never sent
    results = asyncio.run(_run(leader, 20))
    refused = [r for i, r in enumerate(results) if i % PARTITIONS == 0]
    assert all(isinstance(r, FatalError) for r in refused)
    assert {r.name for r in refused} == {"OUT_OF_ORDER_SEQUENCE_NUMBER"}
    assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i % PARTITIONS)


def test_out_of_order_is_fatal_by_itself() -> None:
    assert not error_from_code(common_pb2.OUT_OF_ORDER_SEQUENCE_NUMBER).retriable


def test_the_sync_producer_lets_go_of_every_answered_batch() -> None:
    from strom.client.producer import Producer

    producer = Producer("fake:1", acks="all", linger_ms=1, batch_size=600)
    try:
        producer._async.cluster = FakeCluster(ScriptedLeader(3, refuse_fraction=0.2))  # type: ignore[assignment]
        producer._async.producer_id, producer._async.producer_epoch = 7, 0
        futures = [producer.send("t", b"v%d" % i, partition=i % PARTITIONS) for i in range(300)]
        # No flush (it would tidy up): lingering seals every batch, answers release them.
        assert all(f.result(timeout=30).offset >= 0 for f in futures)
        # Nothing answered stays referenced, and buffer_memory is all returned.
        assert not producer._outstanding
        assert producer._reserved == producer._released > 0
    finally:
        producer.close()


class TimedLeader(ScriptedLeader):
    """Answers every request after `delay_s`, counting requests."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(0, refuse_fraction=0.0)
        self.delay_s = delay_s
        self.requests = 0

    async def produce(self, request: broker_pb2.ProduceRequest) -> broker_pb2.ProduceResponse:
        self.requests += 1
        await asyncio.sleep(self.delay_s)
        return await super().produce(request)


class TwoLeaders(FakeCluster):
    """Partition 0 led by node 2 (`slow`), the others by node 1 (`fast`)."""

    def __init__(self, fast: ScriptedLeader, slow: ScriptedLeader, partitions: int) -> None:
        super().__init__(fast)
        self.by_address = {"fast": fast, "slow": slow}
        parts = {p: PartitionMeta(p, 2 if p == 0 else 1, 0, (1,), (1,)) for p in range(partitions)}
        brokers = {1: "fast", 2: "slow"}
        self.meta = ClusterMeta("c", 1, brokers, {"t": TopicMeta("t", b"id", parts)})

    def broker_stub(self, address: str) -> Any:
        return SimpleNamespace(Produce=self.by_address[address].produce)


def test_a_lingered_batch_keeps_filling_while_its_partition_cannot_send() -> None:
    """Kafka's accumulator: linger makes a batch sendable, not closed. Partition 0's leader
    answers in 60 ms and it may have one request out; answers for partitions 1 and 2 wake the
    sender every few ms meanwhile. Partition 0's records must keep joining its open batch
    until it can send, not leave as a small batch per wake-up to queue behind the slow one."""
    fast, slow = TimedLeader(0.002), TimedLeader(0.06)
    fast.logs[2] = []

    async def run() -> list[Any]:
        producer = AsyncProducer(
            "fake:1", acks="all", linger_ms=1, batch_size=1 << 20,
            max_in_flight_requests_per_connection=1,
        )  # fmt: skip
        producer.cluster = TwoLeaders(fast, slow, 3)  # type: ignore[assignment]
        producer.producer_id, producer.producer_epoch = 7, 0
        futures = []
        for i in range(900):
            futures.append(await producer.send("t", b"v%d" % i, partition=i % 3))
            if i % 6 == 5:
                await asyncio.sleep(0.001)  # 1 ms between bursts: every burst outlives linger
        await producer.flush(timeout_s=30)
        results = [await f for f in futures]
        await producer.close()
        return results

    results = asyncio.run(run())
    for partition, leader in ((0, slow), (1, fast), (2, fast)):
        mine = [r for r in results if r.partition == partition]
        assert [r.offset for r in mine] == list(range(300))
        values = [r.value for b in leader.logs[partition] for r in decode_batch(b)[1]]
        assert values == [b"v%d" % i for i in range(partition, 900, 3)]
    assert slow.requests <= 8, f"{slow.requests} requests to the slow leader"


class BrokenCluster(FakeCluster):
    """A cluster client whose call fails with a bug, not a StromError."""

    async def call(self, address: str, fn: Any, request: Any, timeout_s: float) -> Any:
        raise RuntimeError("a bug in the transport")


def test_an_unexpected_error_fails_the_batches_instead_of_hanging_flush() -> None:
    async def run() -> list[Any]:
        producer = AsyncProducer("fake:1", acks="all", linger_ms=1)
        producer.cluster = BrokenCluster(ScriptedLeader(0, 0.0))  # type: ignore[assignment]
        producer.producer_id, producer.producer_epoch = 7, 0
        futures = [await producer.send("t", b"v", partition=p) for p in range(PARTITIONS)]
        async with asyncio.timeout(10):  # on main this flush waited forever
            await producer.flush()
        outcomes = [f.exception(timeout=0) for f in futures]
        await producer.close()
        return outcomes

    outcomes = asyncio.run(run())
    assert all(isinstance(e, RuntimeError) and "transport" in str(e) for e in outcomes)
