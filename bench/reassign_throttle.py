"""What the move throttles do to a partition move: the rate at which a new replica copies a
partition's log, throttled by the follower (`follower.replication.throttled.rate`, in broker 4's
file), by the leader (`leader.replication.throttled.rate`, set on node 1 at run time as a dynamic
broker config, as `strom partitions reassign --throttle` does), and unthrottled.

    cd bench && ../.venv/bin/python reassign_throttle.py [--megabytes 24] [--rate 2000000]

One local cluster: three combined nodes, broker 4 with the throttle (`--rate` bytes/s), broker 5
without. Three one-replica topics on node 1 are filled with `--megabytes` of 10 KB records each
(acks=1), then each gets a replica added by a reassignment, one after the other: on broker 4;
on broker 5 while node 1's leader throttle is `--rate`; on broker 5 once that throttle is deleted.
A move's rate is the leader's log size over the time from the request until the move completed
(`list_partition_reassignments` no longer shows it). A throttled move should take about
size/rate (the bucket starts with one second's worth, so a little less), the unthrottled one far
less.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from strom.client.admin import AsyncAdmin, NewTopic
from strom.client.producer import AsyncProducer
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port

RECORD = b"x" * 10_000
TOPICS = ("throttled", "leader-throttled", "free")


async def fill(bootstrap: str, topic: str, megabytes: int) -> None:
    async with AsyncProducer(bootstrap, acks="1", linger_ms=5) as producer:
        futures = [
            await producer.send(topic, RECORD, partition=0)
            for _ in range(megabytes * 1_000_000 // len(RECORD))
        ]
        await producer.flush()
        for future in futures:
            future.result()


async def move(bootstrap: str, topic: str, broker: int) -> tuple[int, float]:
    """(bytes copied, seconds) of adding a replica of `topic`-0 on `broker`."""
    async with AsyncAdmin(bootstrap) as admin:
        (description,) = await admin.describe_topics([topic])
        leader = description.partitions[0].leader
        size = next(
            p.size_bytes
            for d in await admin.describe_log_dirs([topic])
            if d.broker_id == leader
            for p in d.partitions
        )
        started = time.perf_counter()
        await admin.alter_partition_reassignments({(topic, 0): [leader, broker]})
        while (topic, 0) in await admin.list_partition_reassignments():
            await asyncio.sleep(0.05)
        return size, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=24)
    parser.add_argument("--rate", type=int, default=2_000_000, help="broker 4's bytes/s")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="strom-throttle-bench-"))
    cluster = LocalCluster(root / "cluster")
    cluster.create(3, free_base_port(5), {"log.level": "WARNING"})
    cluster.add_broker(4, {"follower.replication.throttled.rate": str(args.rate)})
    cluster.add_broker(5)
    results = {}
    try:
        cluster.up()
        wait_until_healthy(cluster.bootstrap(), [1, 2, 3, 4, 5], 60, {})

        async def run() -> None:
            async with AsyncAdmin(cluster.bootstrap()) as admin:
                # Both start on node 1 (a reassignment right after creation), so each move
                # copies from the same leader.
                await admin.create_topics([NewTopic(t, 1, 1) for t in TOPICS])
                for topic in TOPICS:
                    await admin.alter_partition_reassignments({(topic, 0): [1]})
                    while (topic, 0) in await admin.list_partition_reassignments():
                        await asyncio.sleep(0.05)
            for topic in TOPICS:
                await fill(cluster.bootstrap(), topic, args.megabytes)
            results["broker 4, follower-throttled"] = await move(
                cluster.bootstrap(), "throttled", 4
            )
            async with AsyncAdmin(cluster.bootstrap()) as admin:
                rate = {"leader.replication.throttled.rate": str(args.rate)}
                await admin.alter_broker_configs(1, rate)
                results["broker 5, leader-throttled"] = await move(
                    cluster.bootstrap(), "leader-throttled", 5
                )
                await admin.alter_broker_configs(1, {}, list(rate))
            results["broker 5, unthrottled"] = await move(cluster.bootstrap(), "free", 5)

        asyncio.run(run())
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n`{' '.join(sys.argv)}`: one replica added by a reassignment, "
          f"throttles at {args.rate:,} B/s\n")  # fmt: skip
    print("| new replica on | bytes | seconds | bytes/s |")
    print("|---|---:|---:|---:|")
    for name, (size, seconds) in results.items():
        print(f"| {name} | {size:,} | {seconds:.2f} | {size / seconds:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
