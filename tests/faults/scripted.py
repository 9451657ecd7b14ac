"""Client steps for scripted fault scenarios, run inside a lab host with `Lab.call_in` (each call
is a fresh interpreter in the client's namespace; functions are module-level so they pickle).
Each step records its operations into its own history file (merged later by time)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from faults.history import Recorder
from strom.client.admin import AsyncAdmin, NewTopic
from strom.client.consumer import AsyncConsumer
from strom.client.errors import StromError
from strom.client.producer import AsyncProducer
from strom.client.records import TopicPartition
from strom.v1 import common_pb2, group_pb2, group_pb2_grpc


def active_brokers(bootstrap: str) -> list[int]:
    """The ids of the registered, unfenced brokers: the ones placement spreads replicas over."""

    async def run() -> list[int]:
        async with AsyncAdmin(bootstrap, request_timeout_ms=5_000) as admin:
            cluster = await admin.describe_cluster()
            return sorted(b.node_id for b in cluster.brokers if not b.fenced)

    return asyncio.run(run())


def quorum_leader(bootstrap: str, timeout_ms: int) -> int | None:
    """The metadata quorum's leader (the active controller) as the cluster reports it; None if
    no node answered in time (the nemesis then picks a victim by chance)."""

    async def run() -> int | None:
        async with AsyncAdmin(bootstrap, request_timeout_ms=timeout_ms) as admin:
            quorum = await admin.describe_quorum()
            return quorum.leader_id if quorum.leader_id >= 0 else None

    try:
        return asyncio.run(run())
    except StromError:
        return None


def group_coordinator(bootstrap: str, group_id: str, timeout_ms: int) -> str | None:
    """host:port of `group_id`'s coordinator, or None if no node answered in time."""
    return _coordinator(bootstrap, group_pb2.FindCoordinatorRequest(key=group_id), timeout_ms)


def transaction_coordinator(bootstrap: str, transactional_id: str, timeout_ms: int) -> str | None:
    """host:port of `transactional_id`'s transaction coordinator, or None."""
    request = group_pb2.FindCoordinatorRequest(key=transactional_id, key_type=group_pb2.TRANSACTION)
    return _coordinator(bootstrap, request, timeout_ms)


def _coordinator(
    bootstrap: str, request: group_pb2.FindCoordinatorRequest, timeout_ms: int
) -> str | None:
    async def run() -> str | None:
        async with AsyncAdmin(bootstrap, request_timeout_ms=timeout_ms) as admin:
            response = await admin.cluster.call_any(
                lambda a: group_pb2_grpc.GroupStub(admin.cluster.channel(a)).FindCoordinator,
                request,
            )
            if response.error_code != common_pb2.NONE:
                return None
            return f"{response.host}:{response.port}"

    try:
        return asyncio.run(run())
    except StromError:
        return None


def create_topic(
    bootstrap: str, topic: str, configs: dict[str, str]
) -> list[tuple[int, list[int]]]:
    """Create `topic` (5 partitions, RF 3); return each partition's replicas."""

    async def run() -> list[tuple[int, list[int]]]:
        async with AsyncAdmin(bootstrap, request_timeout_ms=10_000) as admin:
            await admin.create_topics([NewTopic(topic, 5, 3, configs)])
            (description,) = await admin.describe_topics([topic])
            return [(p.partition, list(p.replicas)) for p in description.partitions]

    return asyncio.run(run())


def isr(bootstrap: str, topic: str, partition: int) -> tuple[int, list[int]]:
    async def run() -> tuple[int, list[int]]:
        async with AsyncAdmin(bootstrap, request_timeout_ms=5_000) as admin:
            (description,) = await admin.describe_topics([topic])
            p = description.partitions[partition]
            return p.leader, list(p.isr)

    return asyncio.run(run())


def produce(
    bootstrap: str, topic: str, partition: int, prefix: str, count: int, history: str
) -> int:
    """acks=1, no idempotence: each write acknowledged by the leader alone. Returns acks."""

    async def run() -> int:
        acked = 0
        with Recorder(Path(history)) as rec:
            async with AsyncProducer(
                bootstrap, acks="1", linger_ms=0, delivery_timeout_ms=10_000, request_timeout_ms=3_000
            ) as producer:  # fmt: skip
                for i in range(count):
                    value = f"{prefix}-{i}"
                    op = rec.invoke(
                        prefix, "send", {"key": None, "value": value, "partition": partition}
                    )
                    try:
                        md = await (await producer.send(topic, value.encode(), partition=partition))
                        op.ok({"partition": md.partition, "offset": md.offset})
                        acked += 1
                    except StromError as exc:
                        op.info(exc.name)
        return acked

    return asyncio.run(run())


def drain(bootstrap: str, topic: str, partition: int, history: str) -> int:
    """Read the partition from offset 0 to its end, recording every poll."""

    async def run() -> int:
        with Recorder(Path(history)) as rec:
            async with AsyncConsumer(bootstrap, auto_offset_reset="earliest") as consumer:
                tp = TopicPartition(topic, partition)
                consumer.assign([tp])
                end = (await consumer.list_offsets([tp], -1))[tp]
                read = 0
                while await consumer.position(tp) < end:
                    op = rec.invoke("drain", "poll", {})
                    batch = await consumer.poll(timeout_ms=1_000)
                    op.ok(
                        {
                            "records": [
                                [r.partition, r.offset, (r.value or b"").decode()] for r in batch
                            ]
                        }
                    )
                    read += len(batch)
                return read

    return asyncio.run(run())
