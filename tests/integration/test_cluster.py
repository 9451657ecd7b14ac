"""The cluster with three real node processes on loopback (issue: the cluster).

Each test starts its own cluster (tests/integration/conftest.py) with second-scale timeouts.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster_harness import Cluster, eventually

from strom.client.admin import NewTopic
from strom.client.consumer import AsyncConsumer
from strom.client.errors import StromError
from strom.client.producer import AsyncProducer
from strom.client.records import TopicPartition

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, values: list[bytes], **options: object) -> list[int]:
    async def run() -> list[int]:
        async with AsyncProducer(bootstrap, linger_ms=0, **options) as producer:  # type: ignore[arg-type]
            futures = [await producer.send(topic, v, partition=0) for v in values]
            return [(await f).offset for f in futures]

    return asyncio.run(run())


def consume_all(bootstrap: str, topic: str, partition: int, expected: int) -> list[bytes]:
    async def run() -> list[bytes]:
        async with AsyncConsumer(bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([TopicPartition(topic, partition)])
            out: list[bytes] = []
            for _ in range(50):
                out += [r.value or b"" for r in await consumer.poll(timeout_ms=500)]
                if len(out) >= expected:
                    break
            return out

    return asyncio.run(run())


def test_controller_failover_keeps_metadata(cluster: Cluster) -> None:
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("before", 3, 3)])
    first = cluster.controller_id()
    cluster.local.stop(first, kill=True)
    # A new active controller is elected among the survivors, with the topic intact.
    new = eventually(
        lambda: (c := cluster.controller_id()) != first and c > 0 and c, what="a new controller"
    )
    assert new != first
    with cluster.admin() as admin:
        # Topics can be created while one controller is down.
        admin.create_topics([NewTopic("during", 1, 2)])
        assert {"before", "during"} <= set(admin.list_topics())
        assert len(admin.describe_topics(["before"])[0].partitions) == 3
    cluster.local.up()
    cluster.wait_healthy()
    with cluster.admin() as admin:
        assert {"before", "during"} <= set(admin.list_topics())


def test_fenced_broker_partition_goes_offline_and_comes_back(cluster: Cluster) -> None:
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("solo", 1, 1)])
        leader = admin.describe_topics(["solo"])[0].partitions[0].leader
    produce(cluster.bootstrap, "solo", [b"kept"], acks=1)
    cluster.local.stop(leader, kill=True)

    def offline() -> bool:
        with cluster.admin() as admin:
            part = admin.describe_topics(["solo"])[0].partitions[0]
            fenced = {b.node_id for b in admin.describe_cluster().brokers if b.fenced}
            return part.leader == -1 and part.isr == (leader,) and leader in fenced

    eventually(offline, what="the partition offline with its last ISR member kept")
    cluster.local.up()

    def back() -> bool:
        with cluster.admin() as admin:
            return admin.describe_topics(["solo"])[0].partitions[0].leader == leader

    eventually(back, what="the returning broker leading again")
    assert consume_all(cluster.bootstrap, "solo", 0, 1) == [b"kept"]


def test_produce_and_fetch_on_leaders(cluster: Cluster) -> None:
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("orders", 1, 3)])
    values = [f"order-{i}".encode() for i in range(50)]
    offsets = produce(cluster.bootstrap, "orders", values, acks="all")
    assert offsets == list(range(50))
    assert consume_all(cluster.bootstrap, "orders", 0, 50) == values


def test_observer_broker_joins_and_never_votes(cluster: Cluster) -> None:
    cluster.local.add_broker(4)
    cluster.local.up()
    cluster.wait_healthy([1, 2, 3, 4])
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("wide", 4, 4)])
        (topic,) = admin.describe_topics(["wide"])
        assert all(4 in p.replicas for p in topic.partitions)
        quorum = admin.describe_quorum()
    assert sorted(v.replica_id for v in quorum.voters) == [1, 2, 3]
    assert [o.replica_id for o in quorum.observers] == [4]  # once (it was listed twice)


def test_restart_after_many_records_loads_a_snapshot(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(3, **{"metadata.log.max.record.bytes.between.snapshots": "4096"})
    with cluster.admin() as admin:
        admin.create_topics([NewTopic(f"t{i}", 1, 1) for i in range(60)])
        for i in range(0, 60, 2):
            admin.alter_topic_configs(f"t{i}", {"retention.ms": str(1000 + i)})
    victim = next(n for n in (1, 2, 3) if n != cluster.controller_id())
    cluster.local.stop(victim)
    cluster.local.up()
    cluster.wait_healthy()
    assert "loaded metadata snapshot" in cluster.log_of(victim) or "metadata snapshot at" in (
        cluster.log_of(victim)
    )
    with cluster.admin() as admin:
        assert len([t for t in admin.list_topics() if t.startswith("t")]) == 60


def test_recreated_topic_never_serves_old_data(cluster: Cluster) -> None:
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("phoenix", 1, 3)])
        old_id = admin.describe_topics(["phoenix"])[0].topic_id
    produce(cluster.bootstrap, "phoenix", [b"old-1", b"old-2"], acks="all")
    with cluster.admin() as admin:
        leader = admin.describe_topics(["phoenix"])[0].partitions[0].leader
    down = next(n for n in (1, 2, 3) if n != leader)
    folder = cluster.local.node_dir(down) / "data" / "phoenix-0"
    assert folder.exists()
    cluster.local.stop(down, kill=True)
    with cluster.admin() as admin:
        admin.delete_topics(["phoenix"])
        admin.create_topics([NewTopic("phoenix", 1, 2)])  # only two brokers are up
        new_id = admin.describe_topics(["phoenix"])[0].topic_id
    assert new_id != old_id
    produce(cluster.bootstrap, "phoenix", [b"new-1"], acks="all")
    cluster.local.up()
    cluster.wait_healthy()
    # The returning broker must drop its folder of the old incarnation (it is no replica of the
    # new topic), and nobody may ever serve the old records.
    eventually(lambda: not folder.exists() or old_id not in (folder / "partition.metadata").read_text(),
               what="the stale folder removed")  # fmt: skip
    assert consume_all(cluster.bootstrap, "phoenix", 0, 1) == [b"new-1"]


def test_bad_admin_requests_get_clear_errors(cluster: Cluster) -> None:
    with cluster.admin() as admin:
        cases = [
            (NewTopic("bad name", 1, 1), "INVALID_TOPIC_EXCEPTION"),
            (NewTopic("x" * 250, 1, 1), "INVALID_TOPIC_EXCEPTION"),
            (NewTopic("too-many-replicas", 1, 4), "INVALID_REPLICATION_FACTOR"),
            (NewTopic("no-partitions", 0, 1), "INVALID_PARTITIONS"),
            (NewTopic("bad-config", 1, 1, {"retention.ms": "soon"}), "INVALID_CONFIG"),
        ]
        for topic, name in cases:
            with pytest.raises(StromError) as err:
                admin.create_topics([topic])
            assert err.value.name == name
            assert err.value.message
        with pytest.raises(StromError) as err:
            admin.describe_topics(["missing"])
        assert err.value.name == "UNKNOWN_TOPIC_OR_PARTITION"


def test_offset_out_of_range_is_reported(cluster: Cluster) -> None:
    async def run() -> str:
        async with AsyncConsumer(cluster.bootstrap, auto_offset_reset="none") as consumer:
            with cluster.admin() as admin:
                admin.create_topics([NewTopic("short", 1, 1)])
            consumer.assign([TopicPartition("short", 0)])
            consumer.seek(TopicPartition("short", 0), 100)
            try:
                await consumer.poll(timeout_ms=2_000)
            except StromError as exc:
                return exc.name
            return "no error"

    assert asyncio.run(run()) == "OFFSET_OUT_OF_RANGE"


def test_unknown_config_key_and_foreign_data_dir_stop_the_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("node.id: 9\ncontroller.quorum.voters: 9@localhost:1\nnum.partition: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "strom.node.cli", "node", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert "unknown config key 'num.partition'" in result.stderr
    # A node pointed at another node's (or another cluster's) data directory refuses to start.
    node1 = cluster.local.node_dir(1)
    foreign = tmp_path / "foreign.yaml"
    foreign.write_text(
        "node.id: 2\ncontroller.quorum.voters: 2@localhost:1\n"
        f"log.dirs: {node1 / 'data'}\nlisteners: CONTROLLER://localhost:1,PLAINTEXT://localhost:2\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "strom.node.cli", "node", "run", "--config", str(foreign)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert "belongs to node 1, not node.id 2" in result.stderr


def test_retention_deletes_old_segments_whether_consumed_or_not(cluster: Cluster) -> None:
    with cluster.admin() as admin:
        admin.create_topics(
            [NewTopic("short-lived", 1, 3, {"segment.bytes": "1024", "retention.ms": "1000"})]
        )
    # Small batches: a batch larger than segment.bytes is refused (RECORD_LIST_TOO_LARGE).
    produce(cluster.bootstrap, "short-lived", [b"x" * 100 for _ in range(60)], acks="all",
            batch_size=300)  # fmt: skip

    def log_start() -> int:
        with cluster.admin() as admin:
            return admin.list_offsets([("short-lived", 0)], -2)[("short-lived", 0)]

    # Nobody consumed anything: retention deletes whole segments by age all the same.
    assert eventually(lambda: log_start() > 0, what="old segments deleted") > 0
    with cluster.admin() as admin:
        assert admin.list_offsets([("short-lived", 0)], -1)[("short-lived", 0)] == 60


def test_topics_are_auto_created_on_first_produce(cluster: Cluster) -> None:
    produce(cluster.bootstrap, "auto-made", [b"hello"], acks="all")
    with cluster.admin() as admin:
        (topic,) = admin.describe_topics(["auto-made"])
    assert len(topic.partitions) == 3  # num.partitions of the local cluster


def test_unknown_topic_with_auto_create_off(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(3, **{"auto.create.topics.enable": "false"})
    with pytest.raises(StromError) as err:
        produce(cluster.bootstrap, "never-made", [b"x"], acks="all")
    assert err.value.name == "UNKNOWN_TOPIC_OR_PARTITION"
    assert "never-made" in err.value.message
