"""What TLS costs: produce throughput over plaintext and over mutual TLS, same run.

    cd bench && ../.venv/bin/python tls_cost.py [--records 60000] [--runs 3]

Two local three-node clusters: one plaintext, one made by `cluster up --tls` (every listener
TLS with client certificates required: clients, replica fetches, Raft and controller traffic
all encrypted). Each run produces the same records to both, alternately (A, B, A, B, ...) so
drift on a shared machine hits both, and reports medians:

- SDK: `AsyncProducer.send()` per 100-byte record, RF=3, acks=all (as cluster_bench.py).
- batches: pre-encoded 2,500-record batches over raw gRPC Produce, RF=3, acks=all: fewer
  Python cycles per byte, so the cost of encryption shows more plainly.

Wall-clock throughput on a shared machine swings by 2x between runs, so the script also counts
CPU time (user + system, from /proc) spent by the three node processes and by this client
process per record during the batch phase: contention moves that far less than throughput.
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

import cluster_bench

from strom.client.admin import AsyncAdmin, NewTopic
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port


def nodes_cpu_s(cluster: LocalCluster) -> float:
    """User + system CPU seconds the cluster's node processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for node in cluster.load()[1]:
        pid = cluster.pid(node.node_id)
        assert pid is not None, f"node {node.node_id} is not running"
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def measure(cluster: LocalCluster, count: int, run: int) -> tuple[float, float, float, float]:
    """(SDK records/s, batch records/s, node CPU µs per record, client CPU µs per record)."""
    options = cluster.client_options()

    async def go() -> tuple[float, float, float, float]:
        async with AsyncAdmin(cluster.bootstrap(), **options) as admin:
            for name in (f"s{run}", f"b{run}"):
                await admin.create_topics([NewTopic(name, 3, 3, {"min.insync.replicas": "2"})])
        sdk = await cluster_bench.produce(cluster.bootstrap(), f"s{run}", count, "all", options)
        records = count * 5
        nodes_before, client_before = nodes_cpu_s(cluster), time.process_time()
        raw = await cluster_bench.raw_grpc(cluster.bootstrap(), f"b{run}", records, -1, options)
        nodes_us = (nodes_cpu_s(cluster) - nodes_before) * 1e6 / records
        client_us = (time.process_time() - client_before) * 1e6 / records
        return sdk, raw, nodes_us, client_us

    return asyncio.run(go())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="strom-tls-bench-"))
    clusters = {"plaintext": LocalCluster(root / "plain"), "mutual TLS": LocalCluster(root / "tls")}
    clusters["plaintext"].create(3, free_base_port(3), {"log.level": "WARNING"})
    clusters["mutual TLS"].create(3, free_base_port(3) + 5000, {"log.level": "WARNING"}, tls=True)
    sdk: dict[str, list[float]] = {name: [] for name in clusters}
    raw: dict[str, list[float]] = {name: [] for name in clusters}
    node_cpu: dict[str, list[float]] = {name: [] for name in clusters}
    client_cpu: dict[str, list[float]] = {name: [] for name in clusters}
    try:
        for cluster in clusters.values():
            cluster.up()
            wait_until_healthy(cluster.bootstrap(), [1, 2, 3], 60, cluster.client_options())
        for run in range(args.runs):
            for name, cluster in clusters.items():
                one = measure(cluster, args.records, run)
                for series, value in zip((sdk, raw, node_cpu, client_cpu), one, strict=True):
                    series[name].append(value)
            print(f"run {run}: sdk {sdk} batches {raw} node µs {node_cpu}", file=sys.stderr)
    finally:
        for cluster in clusters.values():
            cluster.down()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n`{' '.join(sys.argv)}`: RF=3 acks=all, 100 B records, median of {args.runs}\n")
    print("| producer | plaintext records/s | mutual TLS records/s | cost of TLS |")
    print("|---|---:|---:|---:|")
    for label, results in (("SDK send() per record", sdk), ("raw 2,500-record batches", raw)):
        plain = statistics.median(results["plaintext"])
        tls = statistics.median(results["mutual TLS"])
        print(f"| {label} | {plain:,.0f} | {tls:,.0f} | {100 * (1 - tls / plain):.1f}% |")
    print("\n| CPU per record, batch phase | plaintext µs | mutual TLS µs | cost of TLS |")
    print("|---|---:|---:|---:|")
    for label, results in (("3 nodes together", node_cpu), ("client", client_cpu)):
        plain = statistics.median(results["plaintext"])
        tls = statistics.median(results["mutual TLS"])
        print(f"| {label} | {plain:.2f} | {tls:.2f} | {100 * (tls / plain - 1):+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
