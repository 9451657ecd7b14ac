"""KIP-392 with real node processes: a consumer with `client_rack` reads from the follower in its
rack, which the leader names, and goes back to the leader when that follower dies.

Three combined nodes with no rack and a broker-only node 4 in rack "east"; every node has the
rack-aware `replica.selector.class`. Who served the consumer is read from each broker's
`strom_server_brokertopicmetrics_bytesout` (consumer fetches only, replication excluded).
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Callable

import pytest
from cluster_harness import Cluster, eventually

from strom.client.admin import NewTopic
from strom.client.consumer import AsyncConsumer
from strom.client.producer import AsyncProducer
from strom.client.records import TopicPartition
from strom.node.replica.read_replica import RACK_AWARE_SELECTOR

pytestmark = pytest.mark.integration

TOPIC = "near"


def bytes_out(cluster: Cluster, node_id: int) -> float:
    _, nodes = cluster.local.load()
    (node,) = [n for n in nodes if n.node_id == node_id]
    with urllib.request.urlopen(f"http://{node.admin_address}/metrics", timeout=5) as page:
        text = page.read().decode()
    pattern = rf'^strom_server_brokertopicmetrics_bytesout_total{{topic="{TOPIC}"}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def produce(bootstrap: str, values: list[bytes]) -> None:
    async with AsyncProducer(bootstrap, acks="all", linger_ms=2) as producer:
        futures = [await producer.send(TOPIC, v, partition=0) for v in values]
        for future in futures:
            await future


async def read(consumer: AsyncConsumer, count: int) -> list[bytes]:
    got: list[bytes] = []
    for _ in range(100):
        got += [r.value or b"" for r in await consumer.poll(timeout_ms=300)]
        if len(got) >= count:
            break
    return got


def racked_cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    """Nodes 1-3 without a rack, broker 4 in rack east; TOPIC on {1, 2, 4} led by 1."""
    cluster = cluster_factory(3, admin=True, **{"replica.selector.class": RACK_AWARE_SELECTOR})
    cluster.local.add_broker(4, {"broker.rack": "east"})
    cluster.local.up()
    cluster.wait_healthy([1, 2, 3, 4])
    with cluster.admin() as admin:
        admin.create_topics([NewTopic(TOPIC, 1, 3)])
        admin.alter_partition_reassignments({(TOPIC, 0): [1, 2, 4]})
        eventually(
            lambda: set(admin.describe_topics([TOPIC])[0].partitions[0].isr) == {1, 2, 4},
            what="broker 4 in the ISR",
        )
        admin.elect_preferred_leaders([(TOPIC, 0)])
        eventually(
            lambda: admin.describe_topics([TOPIC])[0].partitions[0].leader == 1,
            what="broker 1 leading",
        )
    return cluster


def test_a_consumer_reads_from_its_racks_follower_and_falls_back_to_the_leader(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = racked_cluster(cluster_factory)
    first = [b"a%d" % i for i in range(200)]
    later = [b"b%d" % i for i in range(200)]

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        await produce(cluster.bootstrap, first)
        async with AsyncConsumer(
            cluster.bootstrap, auto_offset_reset="earliest", client_rack="east",
            request_timeout_ms=5_000,
        ) as consumer:  # fmt: skip
            consumer.assign([TopicPartition(TOPIC, 0)])
            before = await read(consumer, len(first))
            assert bytes_out(cluster, 4) > 0 and bytes_out(cluster, 1) == 0
            cluster.local.stop(4, kill=True)
            await produce(cluster.bootstrap, later)
            after = await read(consumer, len(later))
            return before, after

    before, after = asyncio.run(scenario())
    assert before == first  # all of it, in order, from broker 4
    assert after == later  # from the leader once broker 4 is gone
    assert bytes_out(cluster, 1) > 0


@pytest.mark.slow
def test_a_kafka_client_with_client_rack_reads_from_the_follower_too(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """librdkafka (confluent-kafka) speaks KIP-392 over the Kafka listener: Fetch v11's rack_id
    and preferred_read_replica."""
    from confluent_kafka import OFFSET_BEGINNING
    from confluent_kafka import Consumer as ConfluentConsumer
    from confluent_kafka import TopicPartition as ConfluentPartition

    cluster = racked_cluster(cluster_factory)
    values = [b"k%d" % i for i in range(100)]
    asyncio.run(produce(cluster.bootstrap, values))
    consumer = ConfluentConsumer(
        {"bootstrap.servers": cluster.local.kafka_bootstrap(), "group.id": "racked",
         "client.rack": "east", "enable.auto.commit": False}
    )  # fmt: skip
    consumer.assign([ConfluentPartition(TOPIC, 0, OFFSET_BEGINNING)])
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(seen) < len(values) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen.append(message.value())
    consumer.close()
    assert seen == values
    assert bytes_out(cluster, 4) > 0
