"""What the metrics cost: produce throughput with and without the admin listener, same run.

    .venv/bin/python bench/metrics_overhead.py [--records 100000] [--runs 3]

Two local three-node clusters, one without `admin.listener` (metrics are still counted, nobody
scrapes) and one with it and a scraper polling every node's /metrics once a second, measured
alternately (A, B, A, B, ...) so drift on a shared machine hits both. RF=3, acks=all, 100-byte
records; prints the medians and the ratio. Without the admin listener a node has no request
timing interceptor, collector or HTTP server; the per-batch counters (one increment per
appended batch) run in both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from cluster_bench import produce

from strom.client.admin import AsyncAdmin, NewTopic
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port


def scrape_forever(ports: list[int], stop: Any) -> None:
    """Runs in its own process, like Prometheus: it must not take the client's GIL."""
    while not stop.wait(1.0):
        for port in ports:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=2).read()


def measure(cluster: LocalCluster, count: int, run: int) -> float:
    async def go() -> float:
        async with AsyncAdmin(cluster.bootstrap()) as admin:
            await admin.create_topics([NewTopic(f"m{run}", 3, 3, {"min.insync.replicas": "2"})])
        return await produce(cluster.bootstrap(), f"m{run}", count, "all")

    return asyncio.run(go())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="strom-metrics-bench-"))
    plain, scraped = LocalCluster(root / "plain"), LocalCluster(root / "scraped")
    plain.create(3, free_base_port(3), {"log.level": "WARNING"})
    _, nodes = scraped.create(3, free_base_port(3) + 5000, {"log.level": "WARNING"}, admin=True)
    stop = multiprocessing.Event()
    results: dict[str, list[float]] = {"without admin listener": [], "with metrics scraped": []}
    try:
        for cluster in (plain, scraped):
            cluster.up()
            wait_until_healthy(cluster.bootstrap(), [1, 2, 3], timeout_s=60)
        scraper = multiprocessing.Process(
            target=scrape_forever, args=([n.admin_port for n in nodes], stop), daemon=True
        )
        scraper.start()
        for run in range(args.runs):
            results["without admin listener"].append(measure(plain, args.records, run))
            results["with metrics scraped"].append(measure(scraped, args.records, run))
            print(f"run {run}: {results}", file=sys.stderr)
    finally:
        stop.set()
        plain.down()
        scraped.down()
        shutil.rmtree(root, ignore_errors=True)
    base = statistics.median(results["without admin listener"])
    with_metrics = statistics.median(results["with metrics scraped"])
    print(f"\n`{' '.join(sys.argv)}`: RF=3 acks=all, {args.records:,} records of 100 B, "
          f"median of {args.runs}\n")  # fmt: skip
    print("| cluster | records/s |")
    print("|---|---:|")
    print(f"| without admin listener | {base:,.0f} |")
    print(f"| with admin listener, scraped every second | {with_metrics:,.0f} |")
    print(f"| cost of metrics | {100 * (1 - with_metrics / base):.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
