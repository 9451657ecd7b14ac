"""Partition replication with real node processes: ISR, high watermark, acks, failover,
divergence and rolling restarts (DESIGN.md §7).

Five-node clusters are three combined nodes (the Raft quorum) plus two broker-only nodes, so two
replicas can be lost or paused without losing the metadata quorum.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster_harness import Cluster, SteadyProducer, eventually, read_partition

from strom.client.admin import NewTopic
from strom.client.errors import StromError
from strom.client.producer import AsyncProducer

pytestmark = pytest.mark.integration


def five_nodes(factory: Callable[..., Cluster], **overrides: str) -> Cluster:
    cluster = factory(3, **overrides)
    cluster.local.add_broker(4)
    cluster.local.add_broker(5)
    cluster.local.up()
    cluster.wait_healthy([1, 2, 3, 4, 5])
    return cluster


def partition_led_outside(cluster: Cluster, topic: str, followers: set[int]) -> tuple[int, int]:
    """Create `topic` with 5 partitions, RF 3; return (partition, leader) of one whose two
    followers are exactly `followers`."""
    with cluster.admin() as admin:
        admin.create_topics([NewTopic(topic, 5, 3, {"min.insync.replicas": "2"})])
        (description,) = admin.describe_topics([topic])
    for p in description.partitions:
        if set(p.replicas[1:]) == followers:
            return p.partition, p.leader
    raise AssertionError(f"no partition with followers {followers}: {description.partitions}")


def signal_node(cluster: Cluster, node_id: int, sig: signal.Signals) -> None:
    pid = cluster.local.pid(node_id)
    assert pid is not None, f"node {node_id} is not running"
    os.kill(pid, sig)


def isr_of(cluster: Cluster, topic: str, partition: int) -> tuple[int, ...]:
    with cluster.admin() as admin:
        return admin.describe_topics([topic])[0].partitions[partition].isr


def assert_all_acked_readable(
    cluster: Cluster, topic: str, partition: int, acked: list[tuple[int, bytes]]
) -> None:
    assert acked, "nothing was acknowledged"
    stored = dict(read_partition(cluster.bootstrap, topic, partition, max(o for o, _ in acked) + 1))
    lost = [(o, v) for o, v in acked if stored.get(o) != v]
    assert not lost, f"{len(lost)} acknowledged records lost or moved, e.g. {lost[:5]}"


def test_leader_killed_during_steady_produce_loses_nothing(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(3)
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("steady", 1, 3, {"min.insync.replicas": "2"})])
        leader = admin.describe_topics(["steady"])[0].partitions[0].leader
    with SteadyProducer(cluster.bootstrap, "steady", 0) as producer:
        eventually(lambda: len(producer.acked) > 200, what="acknowledged writes")
        killed_at = time.monotonic()
        cluster.local.stop(leader, kill=True)

        def new_leader() -> int:
            with cluster.admin() as admin:
                p = admin.describe_topics(["steady"])[0].partitions[0]
            return p.leader if p.leader not in (-1, leader) else 0

        eventually(new_leader, what="a new leader from the ISR")
        failover_s = time.monotonic() - killed_at
        before = len(producer.acked)
        eventually(lambda: len(producer.acked) > before + 200, what="writes after failover")
    assert failover_s < 10
    assert not producer.errors, producer.errors
    assert_all_acked_readable(cluster, "steady", 0, producer.acked)


def test_paused_follower_leaves_and_rejoins_the_isr(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = five_nodes(cluster_factory)
    partition, _ = partition_led_outside(cluster, "paused", {4, 5})
    with SteadyProducer(cluster.bootstrap, "paused", partition) as producer:
        eventually(lambda: len(producer.acked) > 50, what="acknowledged writes")
        signal_node(cluster, 5, signal.SIGSTOP)
        try:
            eventually(lambda: 5 not in isr_of(cluster, "paused", partition), what="5 out of ISR")
            before = len(producer.acked)
            eventually(lambda: len(producer.acked) > before + 100, what="writes without 5")
        finally:
            signal_node(cluster, 5, signal.SIGCONT)
        eventually(lambda: 5 in isr_of(cluster, "paused", partition), what="5 back in the ISR")
    assert not producer.errors, producer.errors
    assert_all_acked_readable(cluster, "paused", partition, producer.acked)


def test_acks_all_needs_min_insync_replicas(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = five_nodes(cluster_factory)
    partition, leader = partition_led_outside(cluster, "guarded", {4, 5})
    cluster.local.stop(4, kill=True)
    cluster.local.stop(5, kill=True)
    eventually(
        lambda: isr_of(cluster, "guarded", partition) == (leader,), what="ISR shrunk to the leader"
    )

    async def send(acks: str) -> str:
        async with AsyncProducer(
            cluster.bootstrap, acks=acks, linger_ms=0, delivery_timeout_ms=3_000
        ) as p:
            try:
                await (await p.send("guarded", b"x", partition=partition))
                return "NONE"
            except StromError as exc:
                return exc.name

    assert asyncio.run(send("all")) in ("NOT_ENOUGH_REPLICAS", "REQUEST_TIMED_OUT")
    assert asyncio.run(send("1")) == "NONE"


def test_divergent_suffix_is_truncated_byte_for_byte(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = five_nodes(cluster_factory, **{"replica.lag.time.max.ms": "10000"})
    partition, old_leader = partition_led_outside(cluster, "diverge", {4, 5})

    async def produce(values: list[bytes], acks: str) -> None:
        async with AsyncProducer(
            cluster.bootstrap, acks=acks, linger_ms=0, delivery_timeout_ms=5_000
        ) as p:
            for v in values:
                await (await p.send("diverge", v, partition=partition))

    asyncio.run(produce([b"common-1", b"common-2"], "all"))
    for follower in (4, 5):
        signal_node(cluster, follower, signal.SIGSTOP)
    # A fetch the followers parked at the leader before they stopped would carry the next append
    # into their socket buffers; let those long polls expire empty first (replica.fetch.wait.max.ms).
    time.sleep(1.0)
    try:
        # Acknowledged by the leader alone (acks=1): these never reach the followers.
        asyncio.run(produce([b"lost-1", b"lost-2", b"lost-3"], "1"))
        cluster.local.stop(old_leader, kill=True)
    finally:
        for follower in (4, 5):
            signal_node(cluster, follower, signal.SIGCONT)

    def new_leader() -> int:
        with cluster.admin() as admin:
            p = admin.describe_topics(["diverge"])[0].partitions[partition]
        return p.leader if p.leader in (4, 5) else 0

    leader = eventually(new_leader, timeout_s=30, what="a follower elected leader")
    asyncio.run(produce([b"new-1"], "all"))
    cluster.local.up()  # the old leader returns as a follower and must truncate

    def same_bytes() -> bool:
        return _log_bytes(cluster, old_leader, partition) == _log_bytes(cluster, leader, partition)

    eventually(same_bytes, timeout_s=30, what="the old leader's log identical to the new one's")
    values = [v for _, v in read_partition(cluster.bootstrap, "diverge", partition, 3)]
    assert values == [b"common-1", b"common-2", b"new-1"]


def _log_bytes(cluster: Cluster, node_id: int, partition: int) -> bytes:
    folder = cluster.local.node_dir(node_id) / "data" / f"diverge-{partition}"
    return b"".join(p.read_bytes() for p in sorted(Path(folder).glob("*.log")))


def test_rolling_restart_loses_nothing_and_restores_preferred_leaders(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(3)
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("rolling", 3, 3, {"min.insync.replicas": "2"})])

    def under_replicated() -> int:
        with cluster.admin() as admin:
            return sum(
                len(p.isr) < len(p.replicas)
                for p in admin.describe_topics(["rolling"])[0].partitions
            )

    with SteadyProducer(cluster.bootstrap, "rolling", 0) as producer:
        eventually(lambda: len(producer.acked) > 100, what="acknowledged writes")
        for node in (1, 2, 3):
            cluster.local.stop(node)  # SIGTERM: controlled shutdown
            cluster.local.up()
            cluster.wait_healthy()
            eventually(
                lambda: under_replicated() == 0, timeout_s=30, what="no under-replicated partitions"
            )
        before = len(producer.acked)
        eventually(lambda: len(producer.acked) > before + 100, what="writes after the restarts")
    assert not producer.errors, producer.errors
    assert_all_acked_readable(cluster, "rolling", 0, producer.acked)

    def preferred() -> bool:
        with cluster.admin() as admin:
            return all(
                p.leader == p.replicas[0] for p in admin.describe_topics(["rolling"])[0].partitions
            )

    eventually(preferred, timeout_s=30, what="leaders back on their preferred replicas")
