"""The first acks=all write to a freshly created topic: how long until it is acknowledged.

    cd bench && ../.venv/bin/python fresh_topic.py [--topics 20]

A follower takes up a new partition with its next fetch from the leader. Before the replica
fetcher abandoned its long-poll for a newly added partition (node/replica/fetcher.py), that
fetch could be up to `replica.fetch.wait.max.ms` (500 ms) away whenever the follower already
long-polled that leader for other partitions, and an acks=all write waited for it. This measures
exactly that: one local three-node cluster with a busy topic (3 partitions, RF=3, so every
broker already fetches from every other), then `--topics` times: create a topic (1 partition,
RF=3), then send one record with acks=all from a producer that is already connected, and time
from the send to the acknowledgement (the producer's metadata lookup for the new topic
included). Run it with another checkout's interpreter to measure that code (the nodes run under
the same interpreter as this script).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from strom.client.admin import AsyncAdmin, NewTopic
from strom.client.producer import AsyncProducer
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port


async def measure(bootstrap: str, topics: int) -> list[float]:
    first_ack_ms: list[float] = []
    async with AsyncAdmin(bootstrap) as admin, AsyncProducer(bootstrap, acks="all") as producer:
        await admin.create_topics([NewTopic("busy", 3, 3)])
        await asyncio.sleep(1)  # the busy topic's followers are fetching before the first one
        await asyncio.gather(*[await producer.send("busy", b"warm") for _ in range(10)])
        for i in range(topics):
            await admin.create_topics([NewTopic(f"fresh{i}", 1, 3)])
            started = time.perf_counter()
            await (await producer.send(f"fresh{i}", b"first"))
            first_ack_ms.append((time.perf_counter() - started) * 1000)
    return first_ack_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="strom-fresh-topic-bench-"))
    cluster = LocalCluster(root / "cluster")
    cluster.create(3, free_base_port(3), {"log.level": "WARNING"})
    try:
        cluster.up()
        wait_until_healthy(cluster.bootstrap(), [1, 2, 3], 60, {})
        load = os.getloadavg()[0]
        times = asyncio.run(measure(cluster.bootstrap(), args.topics))
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{sys.executable}: first acks=all write to a fresh topic, {len(times)} topics, load "
        f"{load:.1f}: median {statistics.median(times):.1f} ms, min {min(times):.1f}, max "
        f"{max(times):.1f}; all: {', '.join(f'{t:.0f}' for t in times)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
