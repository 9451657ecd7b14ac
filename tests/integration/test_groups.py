"""Consumer groups with real node processes: every table of the seed document, as a test.

Consumers are named C1, C2, ... by client id; the range assignor orders members by client id,
so the seed's tables come out exactly (DESIGN.md §8).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from cluster_harness import Cluster

from strom.client.admin import NewTopic
from strom.client.consumer import AsyncConsumer
from strom.client.errors import StromError
from strom.client.producer import AsyncProducer

pytestmark = pytest.mark.integration

ORDERS = [f"Order{i}" for i in range(1, 7)]
TIMEOUT_S = 30


@pytest.fixture
def orders(cluster: Cluster) -> Cluster:
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("order-events", 3, 3)])

    async def produce() -> list[int]:
        async with AsyncProducer(cluster.bootstrap, linger_ms=0) as producer:
            return [
                (await (await producer.send("order-events", o.encode()))).partition for o in ORDERS
            ]

    assert asyncio.run(produce()) == [0, 1, 2, 0, 1, 2]  # round-robin, as the seed's table
    return cluster


def consumer(cluster: Cluster, name: str, group: str, **options: object) -> AsyncConsumer:
    return AsyncConsumer(
        cluster.bootstrap,
        group_id=group,
        client_id=name,
        auto_offset_reset="earliest",
        auto_commit_interval_ms=200,
        **options,  # type: ignore[arg-type]
    )


def owned(c: AsyncConsumer) -> list[int]:
    return sorted(tp.partition for tp in c.assignment())


async def poll_until(
    consumers: dict[str, AsyncConsumer],
    done: Callable[[dict[str, list[str]]], bool],
    seen: dict[str, list[str]] | None = None,
) -> dict[str, list[str]]:
    seen = seen if seen is not None else {name: [] for name in consumers}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_S
    while not done(seen):
        assert loop.time() < deadline, f"not reached in {TIMEOUT_S} s: {seen}, " + str(
            {n: owned(c) for n, c in consumers.items()}
        )
        batches = await asyncio.gather(*(c.poll(timeout_ms=200) for c in consumers.values()))
        for name, records in zip(consumers, batches, strict=True):
            seen.setdefault(name, []).extend(r.value.decode() for r in records if r.value)
    return seen


def test_two_consumers_share_three_partitions_then_rebalance(orders: Cluster) -> None:
    async def scenario() -> None:
        c1 = consumer(orders, "C1", "order-processor-group")
        c2 = consumer(orders, "C2", "order-processor-group")
        c1.subscribe(["order-events"])
        c2.subscribe(["order-events"])
        group = {"C1": c1, "C2": c2}
        seen = await poll_until(
            group, lambda s: len(s["C1"]) + len(s["C2"]) == 6 and owned(c1) == [0, 1]
            and owned(c2) == [2],
        )  # fmt: skip
        # The seed's table: C1 has P0, P1 and processes Order1, Order2, Order4, Order5.
        assert sorted(seen["C1"]) == ["Order1", "Order2", "Order4", "Order5"]
        assert sorted(seen["C2"]) == ["Order3", "Order6"]

        # A third consumer joins: each gets one partition.
        c3 = consumer(orders, "C3", "order-processor-group")
        c3.subscribe(["order-events"])
        group["C3"] = c3
        await poll_until(group, lambda _: [owned(c) for c in group.values()] == [[0], [1], [2]])
        await c3.close()
        del group["C3"]
        await poll_until(group, lambda _: owned(c1) == [0, 1] and owned(c2) == [2])

        # C2 leaves: C1 takes all three; nothing is processed again (offsets were committed).
        await c2.close()
        del group["C2"]
        again = await poll_until({"C1": c1}, lambda _: owned(c1) == [0, 1, 2])
        await asyncio.sleep(0.5)
        again = await poll_until({"C1": c1}, lambda _: True, again)
        assert again["C1"] == []
        await c1.close()

    asyncio.run(scenario())


def test_more_consumers_than_partitions_leaves_one_idle(orders: Cluster) -> None:
    async def scenario() -> None:
        group = {f"C{i}": consumer(orders, f"C{i}", "crowd") for i in range(1, 5)}
        for c in group.values():
            c.subscribe(["order-events"])
        await poll_until(group, lambda _: [owned(c) for c in group.values()] == [[0], [1], [2], []])
        for c in group.values():
            await c.close()

    asyncio.run(scenario())


def test_separate_groups_each_get_every_message_and_events_chain(orders: Cluster) -> None:
    async def scenario() -> None:
        inventory = consumer(orders, "Consumer-A", "inventory-group")
        payment = consumer(orders, "Consumer-B", "payment-group")
        inventory.subscribe(["order-events"])
        payment.subscribe(["order-events"])
        seen = await poll_until(
            {"A": inventory, "B": payment},
            lambda s: len(s["A"]) == 6 and len(s["B"]) == 6,
        )
        assert sorted(seen["A"]) == sorted(seen["B"]) == ORDERS
        # Event chaining: the inventory service forwards each order to payment-requests.
        async with AsyncProducer(orders.bootstrap, linger_ms=0) as producer:
            for order in seen["A"]:
                await (await producer.send("payment-requests", f"pay {order}".encode()))
        payer = consumer(orders, "Payment", "payment-service")
        payer.subscribe(["payment-requests"])
        paid = await poll_until({"P": payer}, lambda s: len(s["P"]) == 6)
        assert sorted(paid["P"]) == sorted(f"pay {o}" for o in ORDERS)
        for c in (inventory, payment, payer):
            await c.close()

    asyncio.run(scenario())


def test_replay_after_resetting_offsets(orders: Cluster) -> None:
    async def scenario() -> None:
        first = consumer(orders, "C1", "replayers")
        first.subscribe(["order-events"])
        await poll_until({"C1": first}, lambda s: len(s["C1"]) == 6)
        await first.close()  # commits, leaves: the group is empty now
        admin_consumer = consumer(orders, "admin", "replayers")
        from strom.client.records import TopicPartition

        await admin_consumer.commit({TopicPartition("order-events", p): 0 for p in range(3)})
        again = consumer(orders, "C1", "replayers")
        again.subscribe(["order-events"])
        replay = await poll_until({"C1": again}, lambda s: len(s["C1"]) == 6)
        assert sorted(replay["C1"]) == ORDERS
        # While the group has a member, an offset reset is refused with the reason.
        with pytest.raises(StromError) as err:
            await admin_consumer.commit({TopicPartition("order-events", 0): 0})
        assert err.value.name == "NON_EMPTY_GROUP"
        # An offset beyond the log end is stored as given, as Kafka does (the consumer resets
        # when it fetches there; `groups reset-offsets` clamps into the log's range itself).
        await again.commit({TopicPartition("order-events", 0): 999})
        await again.close()
        await admin_consumer.close()

    asyncio.run(scenario())


def test_group_survives_the_loss_of_its_coordinator(cluster: Cluster) -> None:
    from strom.client.admin import AsyncAdmin

    with cluster.admin() as admin:
        admin.create_topics([NewTopic("work", 3, 3)])

    async def scenario() -> None:
        async with AsyncProducer(cluster.bootstrap, linger_ms=5) as producer:
            for i in range(300):
                await producer.send("work", f"job-{i}".encode())
            await producer.flush()
        c = consumer(cluster, "C1", "workers", enable_auto_commit=False)
        c.subscribe(["work"])
        processed: list[tuple[int, int]] = []
        committed_at_kill: dict[int, int] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        killed = False
        kill_index = 0
        committed_all = False
        while not committed_all:
            assert loop.time() < deadline, (
                f"processed {len(set(processed))} of 300; owned {c.assignment()}, positions "
                f"{c._positions}, consumed {c._consumed}, group epoch "
                f"{c.group.member_epoch if c.group else None}"
            )
            try:
                records = await c.poll(timeout_ms=300, max_records=20)
                processed += [(r.partition, r.offset) for r in records]
                await c.commit()  # every processed record is committed before the next poll
                if len(set(processed)) == 300 and not records:
                    # Records processed while the member was being replaced may not have been
                    # committed (at least once): done when the group's offsets say so.
                    async with AsyncAdmin(cluster.bootstrap) as admin:
                        offsets = await admin.list_group_offsets("workers")
                    committed_all = sum(offsets.values()) == 300
            except StromError:
                continue  # the coordinator is moving: poll again
            if not killed and len(processed) >= 100:
                async with AsyncAdmin(cluster.bootstrap) as admin:
                    coordinator = (await admin.describe_group("workers")).coordinator_id
                    committed_at_kill = {
                        tp[1]: o for tp, o in (await admin.list_group_offsets("workers")).items()
                    }
                cluster.local.stop(coordinator, kill=True)
                killed = True
                kill_index = len(processed)
        await c.close()
        # Nothing committed before the kill was processed a second time.
        again = [(p, o) for p, o in processed[kill_index:] if o < committed_at_kill.get(p, 0)]
        assert not again, f"processed again after the coordinator moved: {again[:5]}"
        assert committed_at_kill and sum(committed_at_kill.values()) >= 100
        async with AsyncAdmin(cluster.bootstrap) as admin:
            final = await admin.list_group_offsets("workers")
        assert sum(final.values()) == 300, (final, committed_at_kill)

    asyncio.run(scenario())


def test_unknown_group_and_cli_refusals_are_clear(cluster: Cluster) -> None:
    import subprocess
    import sys

    from strom.client.admin import Admin

    with Admin(cluster.bootstrap) as admin, pytest.raises(StromError) as err:
        admin.describe_group("no-such-group")
    assert err.value.name == "GROUP_ID_NOT_FOUND"
    assert "no-such-group" in err.value.message
    result = subprocess.run(
        [sys.executable, "-m", "strom.node.cli", "groups", "describe", "no-such-group",
         "--bootstrap-server", cluster.bootstrap],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "GROUP_ID_NOT_FOUND" in result.stderr and "no-such-group" in result.stderr
