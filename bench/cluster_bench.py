"""Cluster benchmarks: produce and consume throughput on a local three-node cluster.

    .venv/bin/python bench/cluster_bench.py [--records 200000] [--runs 3]

One invocation starts a fresh local cluster (three combined nodes on this machine, the client in
this process) and measures, side by side in the same run, with 100-byte records:

- producer: RF=3 acks=all (idempotent) vs RF=1 acks=1, records/s and MB/s, counting only
  acknowledged records (`send()` once per record, as Kafka's perf tool does);
- consumer: records/s and MB/s handed to the application by `poll()`;
- the ceiling: a raw gRPC loop that sends the same batch bytes with Produce, no SDK.

Prints a Markdown table (median of --runs) to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from strom.client.admin import AsyncAdmin, NewTopic
from strom.client.consumer import AsyncConsumer
from strom.client.producer import AsyncProducer
from strom.client.records import TopicPartition
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import broker_pb2

RECORD_BYTES = 100


async def produce(
    bootstrap: str, topic: str, count: int, acks: str, options: dict[str, Any] | None = None
) -> float:
    """`options`: more SDK options (a TLS cluster's security options, for bench/tls_cost.py)."""
    value = b"x" * RECORD_BYTES
    async with AsyncProducer(bootstrap, acks=acks, **(options or {})) as producer:  # defaults
        started = time.perf_counter()
        futures = [await producer.send(topic, value, partition=i % 3) for i in range(count)]
        await producer.flush()
        for future in futures:
            future.result()
        return count / (time.perf_counter() - started)


async def consume(bootstrap: str, topic: str, count: int) -> float:
    async with AsyncConsumer(bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        started = time.perf_counter()
        seen = 0
        while seen < count:
            seen += len(await consumer.poll(timeout_ms=1000, max_records=100_000))
        return count / (time.perf_counter() - started)


async def raw_grpc(
    bootstrap: str, topic: str, count: int, acks: int = 1, options: dict[str, Any] | None = None
) -> float:
    """The ceiling: pre-encoded batches of 2,500 records, `acks` (1, or -1 for all), one request
    in flight per partition leader at a time, no SDK. Also used by bench/peers.py."""
    async with AsyncProducer(bootstrap, **(options or {})) as producer:  # metadata, channels
        meta = await producer.cluster.topic(topic)
        per_batch = 2_500
        batch = encode_batch([Record(None, b"x" * RECORD_BYTES, (), 0)] * per_batch)
        started = time.perf_counter()

        async def to_partition(p: int, batches: int) -> None:
            address = producer.cluster.address_of(meta.partitions[p].leader)
            assert address is not None
            stub = producer.cluster.broker_stub(address)
            for _ in range(batches):
                request = broker_pb2.ProduceRequest(acks=acks, timeout_ms=30_000)
                request.topics.add(name=topic).partitions.add(partition=p, records=batch)
                reply = (await stub.Produce(request)).topics[0].partitions[0]
                # Count only acknowledged records: an error reply is a failed benchmark.
                if reply.error_code:
                    raise RuntimeError(f"Produce failed: {reply.error_message}")

        batches = count // per_batch // 3
        await asyncio.gather(*(to_partition(p, batches) for p in range(3)))
        return batches * 3 * per_batch / (time.perf_counter() - started)


async def run_once(bootstrap: str, count: int, run: int) -> dict[str, float]:
    async with AsyncAdmin(bootstrap) as admin:
        await admin.create_topics(
            [
                NewTopic(f"rf3-{run}", 3, 3, {"min.insync.replicas": "2"}),
                NewTopic(f"rf1-{run}", 3, 1),
                NewTopic(f"raw-{run}", 3, 1),
            ]
        )
    return {
        "produce RF=3 acks=all (idempotent)": await produce(bootstrap, f"rf3-{run}", count, "all"),
        "produce RF=1 acks=1": await produce(bootstrap, f"rf1-{run}", count, "1"),
        "consume (RF=3 topic)": await consume(bootstrap, f"rf3-{run}", count),
        "raw gRPC Produce, RF=1 acks=1 (ceiling)": await raw_grpc(bootstrap, f"raw-{run}", count),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="strom-bench-"))
    cluster = LocalCluster(data)
    cluster.create(3, free_base_port(3), {"log.level": "WARNING"})
    cluster.up()
    try:
        wait_until_healthy(cluster.bootstrap(), [1, 2, 3], timeout_s=60)
        results: dict[str, list[float]] = {}
        for run in range(args.runs):
            for name, rate in asyncio.run(run_once(cluster.bootstrap(), args.records, run)).items():
                results.setdefault(name, []).append(rate)
                print(f"run {run}: {name}: {rate:,.0f} records/s", file=sys.stderr)
    finally:
        cluster.down()
        shutil.rmtree(data, ignore_errors=True)
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    print(f"\n`{' '.join(sys.argv)}` — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu}, "
          f"Python {platform.python_version()}; 3 nodes + client on one machine, "
          f"{args.records:,} records of {RECORD_BYTES} B per measure, median of {args.runs}\n")  # fmt: skip
    print("| measure | records/s | MB/s |")
    print("|---|---:|---:|")
    for name, rates in results.items():
        median = statistics.median(rates)
        print(f"| {name} | {median:,.0f} | {median * RECORD_BYTES / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
