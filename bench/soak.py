"""Broker memory under steady load: does a node's RSS stay flat?

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 5000] [--sample-s 15]

Starts a fresh local three-node cluster, creates an RF=3 topic (3 partitions, retention 2
minutes so old segments are deleted while the run goes on), then runs for `--minutes`:

- a producer (acks=all, idempotent) sending `--rate` 100-byte records per second;
- a consumer group reading them back (auto-commit), so group offsets, fetch sessions and
  retention all turn over;

and samples every node's resident set size (VmRSS from /proc) every `--sample-s` seconds.
Prints a Markdown table of the samples and, per node, the growth from the first sample after
warm-up (one minute) to the last one. A leak shows as growth proportional to the run length;
a flat line within a few MB is allocator noise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from strom.client.admin import Admin, NewTopic
from strom.client.consumer import Consumer
from strom.client.producer import Producer
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port

TOPIC = "soak"
WARMUP_S = 60.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def produce(bootstrap: str, rate: int, stop: threading.Event, sent: list[int]) -> None:
    value = b"x" * 100
    with Producer(bootstrap, acks="all", linger_ms=5) as producer:
        started = time.perf_counter()
        while not stop.is_set():
            due = int((time.perf_counter() - started) * rate)
            while sent[0] < due:
                producer.send(TOPIC, value)
                sent[0] += 1
            time.sleep(0.005)


def consume(bootstrap: str, stop: threading.Event, received: list[int]) -> None:
    consumer = Consumer(bootstrap, group_id="soak", auto_offset_reset="earliest")
    try:
        consumer.subscribe([TOPIC])
        while not stop.is_set():
            received[0] += len(consumer.poll(timeout_ms=500, max_records=10_000))
    finally:
        consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--sample-s", type=float, default=15)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="strom-soak-"))
    cluster = LocalCluster(data)
    cluster.create(3, free_base_port(3), {"log.level": "WARNING"})
    cluster.up()
    stop = threading.Event()
    sent, received = [0], [0]
    samples: list[tuple[float, list[float], int, int]] = []
    try:
        bootstrap = cluster.bootstrap()
        wait_until_healthy(bootstrap, [1, 2, 3], timeout_s=60)
        with Admin(bootstrap) as admin:
            admin.create_topics(
                [NewTopic(TOPIC, 3, 3, {"retention.ms": "120000", "segment.bytes": "8388608"})]
            )
        pids = [cluster.pid(n) for n in (1, 2, 3)]
        assert all(pids), "a node is not running"
        workers = [
            threading.Thread(target=produce, args=(bootstrap, args.rate, stop, sent)),
            threading.Thread(target=consume, args=(bootstrap, stop, received)),
        ]
        for worker in workers:
            worker.start()
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            samples.append((elapsed, [rss_mb(p) for p in pids if p], sent[0], received[0]))
            print(f"{elapsed:6.0f} s  RSS MB {samples[-1][1]}  sent {sent[0]:,}  "
                  f"received {received[0]:,}", file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(args.sample_s)
        samples.append(
            (time.monotonic() - started, [rss_mb(p) for p in pids if p], *sent, *received)
        )
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    finally:
        stop.set()
        cluster.down()
        shutil.rmtree(data, ignore_errors=True)
    print(f"\n`{' '.join(sys.argv)}`: {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; "
          f"3 nodes + producer + consumer group on one machine, {args.rate:,} records/s of 100 B, "
          f"RF=3 acks=all, retention 2 min\n")  # fmt: skip
    print("| elapsed s | node 1 RSS MB | node 2 RSS MB | node 3 RSS MB | sent | received |")
    print("|---:|---:|---:|---:|---:|---:|")
    for elapsed, rss, n_sent, n_received in samples:
        cells = " | ".join(f"{r:.1f}" for r in rss)
        print(f"| {elapsed:.0f} | {cells} | {n_sent:,} | {n_received:,} |")
    warm = next((s for s in samples if s[0] >= WARMUP_S), samples[0])
    last = samples[-1]
    print()
    for node, (before, after) in enumerate(zip(warm[1], last[1], strict=True), 1):
        print(f"node {node}: {before:.1f} MB at {warm[0]:.0f} s -> {after:.1f} MB at "
              f"{last[0]:.0f} s ({after - before:+.1f} MB)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
