"""What transactions cost the producer (issue #21): produce throughput of a transactional
producer committing every 1,000 records and every 100 records, against the idempotent producer
without transactions, same cluster, same run.

    cd bench && ../.venv/bin/python txn_produce.py [--records 30000] [--runs 3]

One local three-node cluster (LocalCluster, data under a new folder of the current one), topics
of 3 partitions, RF=3, min.insync.replicas=2, acks=all, 100-byte records spread over the three
partitions as cluster_bench.py does. Each run measures the three modes alternately (A, B, C,
A, B, C, ...) so drift on a shared machine hits all of them; a mode's figure is records
delivered (and, transactional, committed) per second from the first send to the last commit,
median of the runs. Every transaction is begin_transaction, `batch` awaited send()s, then
commit_transaction (which flushes first), so the commit's round trips are counted (EndTxn,
answered once the decision is replicated; the markers on every partition, which the next
transaction's AddPartitionsToTxn waits for), and one transaction's records are all acknowledged
before the next one starts: the serialisation a transactional producer pays.

`transaction.state.log.num.partitions` is 3 (not Kafka's 50) so the cluster is ready in
seconds; it changes how the coordinator's state is spread, not the cost of one transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cluster_bench

from strom.client.admin import AsyncAdmin, NewTopic
from strom.client.producer import AsyncProducer
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port

# mode name -> records per transaction (None: idempotent producer, no transactions)
MODES: dict[str, int | None] = {
    "idempotent (no transactions)": None,
    "transactional, commit every 1,000": 1_000,
    "transactional, commit every 100": 100,
}


async def transactional(bootstrap: str, topic: str, count: int, batch: int, tid: str) -> float:
    value = b"x" * cluster_bench.RECORD_BYTES
    async with AsyncProducer(bootstrap, acks="all", transactional_id=tid) as producer:
        await producer.init_transactions()  # outside the clock: once per producer's life
        started = time.perf_counter()
        sent = 0
        while sent < count:
            producer.begin_transaction()
            futures = [
                await producer.send(topic, value, partition=i % 3)
                for i in range(sent, min(count, sent + batch))
            ]
            await producer.commit_transaction()
            for future in futures:
                future.result()  # delivered; commit_transaction raised if not
            sent += len(futures)
        return count / (time.perf_counter() - started)


def measure(cluster: LocalCluster, count: int, run: int, name: str, batch: int | None) -> float:
    topic = f"t{run}-{batch or 'idem'}"

    async def go() -> float:
        async with AsyncAdmin(cluster.bootstrap()) as admin:
            await admin.create_topics([NewTopic(topic, 3, 3, {"min.insync.replicas": "2"})])
        if batch is None:
            return await cluster_bench.produce(cluster.bootstrap(), topic, count, "all")
        return await transactional(cluster.bootstrap(), topic, count, batch, f"bench-{topic}")

    return asyncio.run(go())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-dir", default=".", help="where the cluster's data lives")
    args = parser.parse_args()
    if args.records < 1 or args.runs < 1:
        parser.error("--records and --runs must be at least 1")
    root = Path(tempfile.mkdtemp(prefix="strom-txn-bench-", dir=args.data_dir))
    cluster = LocalCluster(root / "cluster")
    cluster.create(
        3, free_base_port(3),
        {"log.level": "WARNING", "transaction.state.log.num.partitions": "3"},
    )  # fmt: skip
    results: dict[str, list[float]] = {name: [] for name in MODES}
    try:
        cluster.up()
        wait_until_healthy(cluster.bootstrap(), [1, 2, 3], 60, {})
        for run in range(args.runs):
            for name, batch in MODES.items():
                results[name].append(measure(cluster, args.records, run, name, batch))
            print(f"run {run}: {results}", file=sys.stderr)
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n`{' '.join(sys.argv)}`: RF=3 acks=all, 100 B records, {args.records:,} records "
          f"per measure, median of {args.runs}\n")  # fmt: skip
    print("| producer | records/s | ÷ idempotent | runs |")
    print("|---|---:|---:|---|")
    base = statistics.median(results[next(iter(MODES))])
    for name, values in results.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {median / base:.2f}× | {runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
