"""`strom demo`: the seed document's first example, end to end on a local three-node cluster.

It starts a fresh cluster under `--data-dir` (default .strom/demo), creates `user-events` with
3 partitions replicated 3 ways, produces M1..M6 without keys (round-robin: M1→P0, M2→P1, M3→P2,
M4→P0, ...), reads every partition back from its leader, prints both as tables, and stops the
cluster. Ports are chosen free on this machine, so the demo never collides with a running one.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

from strom.client.admin import AsyncAdmin, NewTopic
from strom.client.consumer import AsyncConsumer
from strom.client.producer import AsyncProducer
from strom.client.records import TopicPartition
from strom.node.local_cluster import PORT_STRIDE, LocalCluster

TOPIC = "user-events"
MESSAGES = [f"M{i}" for i in range(1, 7)]


def _free_base_port(nodes: int) -> int:
    """A base port whose client and controller ports are free for every node."""
    for base in range(19092, 60000, 1000):
        ports = [base + i * PORT_STRIDE + d for i in range(nodes) for d in (0, 1)]
        if all(_free(p) for p in ports):
            return base
    raise RuntimeError("no free ports for the demo cluster")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _table(headers: list[str], rows: Sequence[Sequence[object]]) -> str:
    widths = [max(len(str(x)) for x in [h, *(r[i] for r in rows)]) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    return "\n".join([line, rule, *body])


async def _walkthrough(bootstrap: str) -> None:
    async with AsyncAdmin(bootstrap) as admin:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=3)])
        (topic,) = await admin.describe_topics([TOPIC])
    print(f"Created topic {TOPIC}: 3 partitions, replication factor 3")
    print(
        _table(
            ["Partition", "Leader", "Replicas", "Isr"],
            [
                [
                    f"P{p.partition}",
                    p.leader,
                    ",".join(map(str, p.replicas)),
                    ",".join(map(str, p.isr)),
                ]
                for p in topic.partitions
            ],
        )
    )
    async with AsyncProducer(bootstrap, acks="all", linger_ms=0) as producer:
        sent = []
        for message in MESSAGES:
            # One at a time, so round-robin order is exactly the send order.
            sent.append(await (await producer.send(TOPIC, message.encode())))
    print(f"\nProduced {len(MESSAGES)} messages without keys (round-robin), acks=all")
    print(
        _table(
            ["Message", "Partition", "Offset"],
            [[m, f"P{md.partition}", md.offset] for m, md in zip(MESSAGES, sent, strict=True)],
        )
    )
    async with AsyncConsumer(bootstrap, auto_offset_reset="earliest") as consumer:
        rows = []
        for partition in range(3):
            consumer.assign([TopicPartition(TOPIC, partition)])
            got: list[str] = []
            while len(got) < sum(1 for md in sent if md.partition == partition):
                records = await consumer.poll(timeout_ms=5_000)
                if not records:
                    break
                got += [r.value.decode() for r in records if r.value is not None]
            rows.append([f"P{partition}", ", ".join(got)])
    print("\nRead back from each partition's leader")
    print(_table(["Partition", "Messages"], rows))


def main(args: argparse.Namespace) -> int:
    from strom.node.cli import wait_until_healthy

    data_dir = Path(args.data_dir)
    cluster = LocalCluster(data_dir)
    if cluster.exists():
        cluster.down()
        shutil.rmtree(data_dir)
    cluster.create(3, _free_base_port(3), {"log.level": "WARNING"})
    print(f"Starting a local three-node cluster in {data_dir} ...")
    cluster.up()
    try:
        wait_until_healthy(cluster.bootstrap(), [1, 2, 3], timeout_s=60)
        print(f"Cluster up: {cluster.bootstrap()}\n")
        asyncio.run(_walkthrough(cluster.bootstrap()))
    finally:
        cluster.down()
        print("\nCluster stopped.")
    return 0
