"""The Kafka listener against the gRPC path, same cluster, same run: confluent-kafka (librdkafka,
a C client) on the KAFKA listener beside strom's own SDK on gRPC.

    cd bench && ../.venv/bin/python kafka_vs_grpc.py [--records 200000] [--runs 3]

One local three-node cluster (the nodes and the client on this machine). Each run, alternately
(SDK, Kafka, SDK, Kafka, ...) so drift on a shared machine hits both: produce `--records`
100-byte records to a fresh RF=3 topic with acks=all (the SDK with its defaults and
idempotence; confluent-kafka with enable.idempotence, linger.ms=10, batch.size=256 KiB like the
SDK's defaults), counting acknowledged records only; then consume that topic from the start
(SDK poll vs confluent-kafka consume in batches). Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cluster_bench
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from strom.client.admin import AsyncAdmin, NewTopic
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port

RECORD = b"x" * cluster_bench.RECORD_BYTES


def create_topic(cluster: LocalCluster, topic: str) -> None:
    async def go() -> None:
        async with AsyncAdmin(cluster.bootstrap()) as admin:
            await admin.create_topics([NewTopic(topic, 3, 3, {"min.insync.replicas": "2"})])

    asyncio.run(go())


def kafka_produce(bootstrap: str, topic: str, count: int) -> float:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
         "linger.ms": 10, "batch.size": 262144, "queue.buffering.max.messages": 1_000_000}
    )  # fmt: skip
    acked = 0

    def delivered(err: object, _msg: object) -> None:
        nonlocal acked
        if err is None:
            acked += 1

    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, RECORD, partition=i % 3, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    if acked != count:
        raise RuntimeError(f"{count - acked} records not acknowledged")
    return count / elapsed


def kafka_consume(bootstrap: str, topic: str, count: int) -> float:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
    started = time.perf_counter()
    seen = 0
    try:
        while seen < count:
            seen += sum(m.error() is None for m in consumer.consume(10_000, timeout=1.0))
        return count / (time.perf_counter() - started)
    finally:
        consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="strom-kafka-bench-"))
    cluster = LocalCluster(root / "cluster")
    cluster.create(3, free_base_port(3), {"log.level": "WARNING"})
    results: dict[str, list[float]] = {
        "produce, SDK on gRPC": [], "produce, confluent-kafka on KAFKA": [],
        "consume, SDK on gRPC": [], "consume, confluent-kafka on KAFKA": [],
    }  # fmt: skip
    try:
        cluster.up()
        wait_until_healthy(cluster.bootstrap(), [1, 2, 3], 60, {})
        kafka = cluster.kafka_bootstrap()
        for run in range(args.runs):
            sdk_topic, kafka_topic = f"sdk{run}", f"kafka{run}"
            create_topic(cluster, sdk_topic)
            create_topic(cluster, kafka_topic)
            results["produce, SDK on gRPC"].append(
                asyncio.run(
                    cluster_bench.produce(cluster.bootstrap(), sdk_topic, args.records, "all")
                )
            )
            results["produce, confluent-kafka on KAFKA"].append(
                kafka_produce(kafka, kafka_topic, args.records)
            )
            results["consume, SDK on gRPC"].append(
                asyncio.run(cluster_bench.consume(cluster.bootstrap(), sdk_topic, args.records))
            )
            results["consume, confluent-kafka on KAFKA"].append(
                kafka_consume(kafka, kafka_topic, args.records)
            )
            print(f"run {run}: {results}", file=sys.stderr)
    finally:
        cluster.down()
    print(f"\n`{' '.join(sys.argv)}`: RF=3, 100 B records, median of {args.runs}\n")
    print("| measure | records/s | MB/s | runs |")
    print("|---|---:|---:|---|")
    for name, values in results.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {name} | {median:,.0f} | {median * len(RECORD) / 1e6:.1f} | {runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
