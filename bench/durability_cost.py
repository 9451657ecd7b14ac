"""What fsync-before-ack costs: produce throughput to a topic with the default flush policy
(the page cache) and to one with flush.messages=1 (every write fsynced on the leader and on
every follower before it counts), same cluster, same run.

    cd bench && ../.venv/bin/python durability_cost.py [--records 100000] [--runs 3]

One local three-node cluster whose data lives in a folder on this machine's disk (not tmpfs:
`--data-dir`, default a new folder under the current one, so fsyncs cost what they cost here).
Each run produces the same records with the SDK's defaults (RF=3, acks=all, 100-byte records,
as cluster_bench.py) to both topics, alternately (A, B, A, B, ...) so drift on a shared
machine hits both, and reports medians and the ratio (issue #17's target: fsync-before-ack keeps
at least 50% of the throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import cluster_bench

from strom.client.admin import AsyncAdmin, NewTopic
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port

POLICIES: dict[str, dict[str, str]] = {
    "page cache (default)": {},
    "flush.messages=1": {"flush.messages": "1"},
}


def measure(cluster: LocalCluster, count: int, run: int, configs: dict[str, str]) -> float:
    topic = f"t{run}-{'sync' if configs else 'cache'}"

    async def go() -> float:
        async with AsyncAdmin(cluster.bootstrap()) as admin:
            await admin.create_topics(
                [NewTopic(topic, 3, 3, {"min.insync.replicas": "2", **configs})]
            )
        return await cluster_bench.produce(cluster.bootstrap(), topic, count, "all")

    return asyncio.run(go())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-dir", default=".", help="a folder on the disk to measure")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="strom-durability-bench-", dir=args.data_dir))
    cluster = LocalCluster(root / "cluster")
    cluster.create(3, free_base_port(3), {"log.level": "WARNING"})
    results: dict[str, list[float]] = {name: [] for name in POLICIES}
    try:
        cluster.up()
        wait_until_healthy(cluster.bootstrap(), [1, 2, 3], 60, {})
        for run in range(args.runs):
            for name, configs in POLICIES.items():
                results[name].append(measure(cluster, args.records, run, configs))
            print(f"run {run}: {results}", file=sys.stderr)
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n`{' '.join(sys.argv)}`: RF=3 acks=all, SDK defaults, 100 B records, "
          f"median of {args.runs}\n")  # fmt: skip
    print("| topic | records/s | runs |")
    print("|---|---:|---|")
    for name, values in results.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {name} | {statistics.median(values):,.0f} | {runs} |")
    cache, sync = (statistics.median(results[name]) for name in POLICIES)
    print(f"\nfsync before ack keeps {100 * sync / cache:.0f}% of the page-cache throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
