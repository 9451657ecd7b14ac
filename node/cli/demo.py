"""`strom demo`: the seed document's walkthroughs, end to end on a local three-node cluster.

It starts a fresh cluster under `--data-dir` (default .strom/demo) on free ports, then:

1. `user-events`, 3 partitions: M1..M6 produced without keys land round-robin; consumers C1 and
   C2 in `group-A` split the partitions (C1: P0, P1; C2: P2) and process M1, M2, M4, M5 / M3, M6;
   a third consumer makes it one partition each; removing C2 gives C1 all three.
2. `order-events`, the e-commerce example: Consumer-A and Consumer-B share the work in
   `order-processor-group`; in separate groups (`inventory-group`, `payment-group`) each sees
   every order; event chaining through `payment-requests`; a replay after resetting offsets.

Every table is printed from what the cluster actually did, and the cluster is stopped at the end.
With `--bootstrap-server`, the same walkthrough runs against a cluster that is already up (the
docker-compose cluster, say) and leaves it running; its topics must not exist yet.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from strom.client.admin import AsyncAdmin, NewTopic
from strom.client.consumer import AsyncConsumer
from strom.client.producer import AsyncProducer
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port

WAIT_S = 60
DEMO_OVERRIDES = {
    "log.level": "WARNING",
    "group.initial.rebalance.delay.ms": "300",
    "group.consumer.heartbeat.interval.ms": "200",
    "group.consumer.session.timeout.ms": "6000",
    "offsets.topic.num.partitions": "10",
}


def table(headers: list[str], rows: Sequence[Sequence[object]]) -> str:
    widths = [max(len(str(x)) for x in [h, *(r[i] for r in rows)]) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    return "\n".join([line, rule, *body])


class Demo:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def consumer(self, name: str, group: str) -> AsyncConsumer:
        return AsyncConsumer(
            self.bootstrap,
            group_id=group,
            client_id=name,
            auto_offset_reset="earliest",
            auto_commit_interval_ms=200,
        )

    async def produce(self, topic: str, values: list[str]) -> list[tuple[str, int, int]]:
        async with AsyncProducer(self.bootstrap, acks="all", linger_ms=0) as producer:
            out = []
            for value in values:  # one at a time: round-robin follows the send order
                md = await (await producer.send(topic, value.encode()))
                out.append((value, md.partition, md.offset))
            return out

    async def run_group(
        self,
        consumers: dict[str, AsyncConsumer],
        done: Callable[[dict[str, list[str]]], bool],
        seen: dict[str, list[str]] | None = None,
    ) -> dict[str, list[str]]:
        """Poll every consumer until `done(seen)`; returns what each one processed."""
        seen = seen if seen is not None else {}
        for name in consumers:
            seen.setdefault(name, [])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not done(seen):
            if loop.time() > deadline:
                raise RuntimeError(f"the demo did not converge within {WAIT_S} s: {seen}")
            batches = await asyncio.gather(*(c.poll(timeout_ms=200) for c in consumers.values()))
            for name, records in zip(consumers, batches, strict=True):
                seen[name] += [r.value.decode() for r in records if r.value]
        return seen


def owned(consumer: AsyncConsumer) -> list[int]:
    return sorted(tp.partition for tp in consumer.assignment())


def assignment_table(consumers: dict[str, AsyncConsumer]) -> str:
    return table(
        ["Consumer", "Partitions Assigned"],
        [[name, ", ".join(f"P{p}" for p in owned(c)) or "(idle)"] for name, c in consumers.items()],
    )


async def user_events(demo: Demo) -> None:
    print("== 1. Topic user-events: 3 partitions, 2 consumers in group-A ==\n")
    async with AsyncAdmin(demo.bootstrap) as admin:
        await admin.create_topics([NewTopic("user-events", 3, 3)])
    sent = await demo.produce("user-events", [f"M{i}" for i in range(1, 7)])
    print("Producer sends M1..M6 without keys (round-robin):")
    print(table(["Message", "Partition"], [[m, f"P{p}"] for m, p, _ in sent]))
    c1, c2 = demo.consumer("C1", "group-A"), demo.consumer("C2", "group-A")
    group = {"C1": c1, "C2": c2}
    for c in group.values():
        c.subscribe(["user-events"])
    seen = await demo.run_group(
        group, lambda s: sum(map(len, s.values())) == 6 and owned(c1) == [0, 1] and owned(c2) == [2]
    )
    print("\nPartition assignment:")
    print(assignment_table(group))
    print("\nWho processed what:")
    print(table(["Consumer", "Processes"], [[n, ", ".join(sorted(v))] for n, v in seen.items()]))

    c3 = demo.consumer("C3", "group-A")
    c3.subscribe(["user-events"])
    group["C3"] = c3
    await demo.run_group(group, lambda _: [owned(c) for c in group.values()] == [[0], [1], [2]])
    print("\nA 3rd consumer joins: Kafka rebalances, each consumer gets 1 partition:")
    print(assignment_table(group))
    await c3.close()
    del group["C3"]
    await demo.run_group(group, lambda _: owned(c1) == [0, 1] and owned(c2) == [2])
    await c2.close()
    del group["C2"]
    await demo.run_group(group, lambda _: owned(c1) == [0, 1, 2])
    print("\nRemove C2: P2 moves to C1, which now handles all 3 partitions:")
    print(assignment_table(group))
    await c1.close()


async def order_events(demo: Demo) -> None:
    print("\n== 2. E-commerce: topic order-events, 3 partitions ==\n")
    orders = [f"Order{i}" for i in range(1, 7)]
    async with AsyncAdmin(demo.bootstrap) as admin:
        await admin.create_topics(
            [NewTopic("order-events", 3, 3), NewTopic("payment-requests", 3, 3)]
        )
    sent = await demo.produce("order-events", orders)
    print(table(["Order ID", "Partition"], [[o, f"P{p}"] for o, p, _ in sent]))

    a = demo.consumer("Consumer-A", "order-processor-group")
    b = demo.consumer("Consumer-B", "order-processor-group")
    shared = {"Consumer-A": a, "Consumer-B": b}
    for c in shared.values():
        c.subscribe(["order-events"])
    seen = await demo.run_group(
        shared, lambda s: sum(map(len, s.values())) == 6 and owned(a) == [0, 1]
    )
    print("\nSame group (order-processor-group): the consumers share the work")
    print(assignment_table(shared))
    print(table(["Consumer", "Processes"], [[n, ", ".join(sorted(v))] for n, v in seen.items()]))
    for c in shared.values():
        await c.close()

    inventory = demo.consumer("Consumer-A", "inventory-group")
    payment = demo.consumer("Consumer-B", "payment-group")
    fan_out = {"Consumer-A (inventory-group)": inventory, "Consumer-B (payment-group)": payment}
    for c in fan_out.values():
        c.subscribe(["order-events"])
    seen = await demo.run_group(fan_out, lambda s: all(len(v) == 6 for v in s.values()))
    print("\nSeparate groups: each service gets its own copy of every order")
    print(table(["Consumer", "Processes"], [[n, ", ".join(sorted(v))] for n, v in seen.items()]))

    # Event chaining: the inventory service forwards each order to payment-requests.
    await demo.produce(
        "payment-requests", [f"pay-{o}" for o in sorted(seen["Consumer-A (inventory-group)"])]
    )
    payer = demo.consumer("Payment-Service", "payment-service")
    payer.subscribe(["payment-requests"])
    paid = await demo.run_group(
        {"Payment-Service": payer}, lambda s: len(s["Payment-Service"]) == 6
    )
    print("\nEvent chaining: Consumer-A updates inventory, then emits to payment-requests")
    print(
        table(
            ["Consumer", "Processes"],
            [["Payment-Service", ", ".join(sorted(paid["Payment-Service"]))]],
        )
    )
    for c in (inventory, payment, payer):
        await c.close()

    async with AsyncAdmin(demo.bootstrap) as admin:
        await admin.alter_group_offsets(
            "inventory-group", {("order-events", p): 0 for p in range(3)}
        )
    replay_consumer = demo.consumer("Consumer-A", "inventory-group")
    replay_consumer.subscribe(["order-events"])
    replay = await demo.run_group(
        {"Consumer-A": replay_consumer}, lambda s: len(s["Consumer-A"]) == 6
    )
    print(
        "\nReplay: inventory-group's offsets reset to the beginning; it processes every order again"
    )
    print(
        table(["Consumer", "Processes"], [["Consumer-A", ", ".join(sorted(replay["Consumer-A"]))]])
    )
    await replay_consumer.close()


async def walkthrough(bootstrap: str) -> None:
    demo = Demo(bootstrap)
    await user_events(demo)
    await order_events(demo)


def _run_demo(args: argparse.Namespace) -> int:
    if args.bootstrap_server:
        print(f"Running the walkthrough against {args.bootstrap_server}\n")
        asyncio.run(walkthrough(args.bootstrap_server))
        return 0
    data_dir = Path(args.data_dir)
    cluster = LocalCluster(data_dir)
    if cluster.exists():
        cluster.down()
        shutil.rmtree(data_dir)
    cluster.create(3, free_base_port(3), DEMO_OVERRIDES)
    print(f"Starting a local three-node cluster in {data_dir} ...")
    cluster.up()
    try:
        wait_until_healthy(cluster.bootstrap(), [1, 2, 3], timeout_s=60)
        print(f"Cluster up: {cluster.bootstrap()}")
        print(f"Kafka clients (bootstrap.servers): {cluster.kafka_bootstrap()}\n")
        asyncio.run(walkthrough(cluster.bootstrap()))
    finally:
        cluster.down()
        print("\nCluster stopped.")
    return 0


def add_commands(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run the seed document's walkthrough as tables")
    demo.add_argument("--data-dir", default=".strom/demo")
    demo.add_argument(
        "--bootstrap-server",
        help="run the walkthrough against this running cluster instead of starting one",
    )
    demo.set_defaults(handler=_run_demo)
