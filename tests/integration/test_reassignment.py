"""Partition reassignment with real node processes (KIP-455; node/controller/reassignment.py).

Three combined nodes (the Raft quorum) and a broker-only node 4, the kind that comes and goes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster_harness import Cluster, SteadyProducer, eventually, read_partition

from strom.client.admin import NewTopic
from strom.node.cli.reassign import THROTTLE_KEYS

pytestmark = pytest.mark.integration


def strom(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strom.node.cli", *args, "--bootstrap-server", cluster.bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_move_under_acks_all_load_loses_nothing_and_deletes_the_old_replica(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    """{1, 2, 3} led by 1 -> {2, 3, 4} with the CLI while a producer writes with acks=all:
    broker 4 catches up, leadership leaves broker 1, broker 1's copy is deleted, and every
    acknowledged record is readable at its offset afterwards."""
    cluster = cluster_factory(3)
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("moving", 1, 3, {"min.insync.replicas": "2"})])
    cluster.local.add_broker(4)
    cluster.local.up()
    cluster.wait_healthy([1, 2, 3, 4])
    with cluster.admin() as admin:
        # A reorder completes at once; the preferred-leader election then puts broker 1 first.
        admin.alter_partition_reassignments({("moving", 0): [1, 2, 3]})
        admin.elect_preferred_leaders([("moving", 0)])
        eventually(
            lambda: admin.describe_topics(["moving"])[0].partitions[0].leader == 1,
            what="broker 1 leading",
        )
    old_copy = cluster.local.node_dir(1) / "data" / "moving-0"
    assert old_copy.is_dir()

    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps({"version": 1, "partitions": [{"topic": "moving", "partition": 0,
                                                  "replicas": [2, 3, 4]}]})
    )  # fmt: skip
    with SteadyProducer(cluster.bootstrap, "moving", 0) as producer:
        eventually(lambda: len(producer.acked) > 300, what="acknowledged writes before the move")
        started = strom(cluster, "partitions", "reassign", "--execute",
                        "--reassignment-json-file", str(plan))  # fmt: skip
        assert started.returncode == 0, started.stderr
        assert '"replicas": [1, 2, 3]' in started.stdout  # the rollback file
        assert "Successfully started partition reassignments for moving-0" in started.stdout

        def verified() -> bool:
            result = strom(cluster, "partitions", "reassign", "--verify",
                           "--reassignment-json-file", str(plan))  # fmt: skip
            return result.returncode == 0 and "moving-0 is completed" in result.stdout

        eventually(verified, timeout_s=60, what="the move completed")
        moved_at = len(producer.acked)
        eventually(lambda: len(producer.acked) > moved_at + 300, what="writes after the move")
    assert not producer.errors, producer.errors

    with cluster.admin() as admin:
        (part,) = admin.describe_topics(["moving"])[0].partitions
        assert part.replicas == (2, 3, 4) and part.leader in (2, 3, 4)
        assert set(part.isr) == {2, 3, 4}
        assert admin.list_partition_reassignments() == {}
    eventually(lambda: not old_copy.exists(), what="broker 1's copy deleted")
    new_copy = cluster.local.node_dir(4) / "data" / "moving-0"
    assert new_copy.is_dir()

    acked = producer.acked
    stored = dict(read_partition(cluster.bootstrap, "moving", 0, max(o for o, _ in acked) + 1))
    lost = [(o, v) for o, v in acked if stored.get(o) != v]
    assert not lost, f"{len(lost)} acknowledged records lost or moved, e.g. {lost[:5]}"


def test_decommission_a_broker_under_load_then_rebalance_onto_a_new_one(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """Broker 4 is decommissioned while a producer writes (acks=all) to a partition it hosts:
    its replicas move to 1-3, it is stopped and unregistered; then broker 5 joins and
    `strom cluster rebalance` gives it its share."""
    cluster = cluster_factory(3)
    cluster.local.add_broker(4)
    cluster.local.up()
    cluster.wait_healthy([1, 2, 3, 4])
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("spread", 4, 3, {"min.insync.replicas": "2"})])
        (topic,) = admin.describe_topics(["spread"])
    on_4 = next(p.partition for p in topic.partitions if 4 in p.replicas)
    with SteadyProducer(cluster.bootstrap, "spread", on_4) as producer:
        eventually(lambda: len(producer.acked) > 200, what="acknowledged writes")
        dry = strom(cluster, "brokers", "decommission", "4", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "partition(s) to move" in dry.stdout
        with cluster.admin() as admin:
            assert any(4 in p.replicas for p in admin.describe_topics(["spread"])[0].partitions)
        done = strom(cluster, "brokers", "decommission", "4", "--timeout-s", "60")
        assert done.returncode == 0, done.stderr
        assert "Broker 4 holds no replicas." in done.stdout and "stop it" in done.stdout
        moved_at = len(producer.acked)
        eventually(lambda: len(producer.acked) > moved_at + 200, what="writes after the move")
    assert not producer.errors, producer.errors
    with cluster.admin() as admin:
        for p in admin.describe_topics(["spread"])[0].partitions:
            assert 4 not in p.replicas and sorted(p.replicas) == [1, 2, 3]
    refused = strom(cluster, "brokers", "unregister", "4")
    assert refused.returncode == 1 and "stop it first" in refused.stderr
    cluster.local.stop(4)

    def unregistered() -> bool:
        result = strom(cluster, "brokers", "unregister", "4")
        return result.returncode == 0

    eventually(unregistered, timeout_s=30, what="broker 4 unregistered once stopped")
    with cluster.admin() as admin:
        assert 4 not in {b.node_id for b in admin.describe_cluster().brokers}
    acked = producer.acked
    stored = dict(read_partition(cluster.bootstrap, "spread", on_4, max(o for o, _ in acked) + 1))
    assert not [(o, v) for o, v in acked if stored.get(o) != v], "acknowledged records lost"

    cluster.local.add_broker(5)
    cluster.local.start(5)  # not `up`: that would start the retired broker 4 again
    cluster.wait_healthy([1, 2, 3, 5])
    plan = strom(cluster, "cluster", "rebalance", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "Proposed partition reassignment configuration" in plan.stdout
    ran = strom(cluster, "cluster", "rebalance", "--timeout-s", "60")
    assert ran.returncode == 0, ran.stderr
    with cluster.admin() as admin:
        partitions = admin.describe_topics(["spread"])[0].partitions
    on_5 = sum(1 for p in partitions if 5 in p.replicas)
    assert on_5 == 3, partitions  # 12 replicas over 4 brokers


def test_a_move_survives_kill_9_of_the_active_controller(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """The move to broker 4 waits (4 is stopped) when the active controller is killed -9; a new
    controller, knowing the move only from the metadata log, completes it once 4 is back."""
    cluster = cluster_factory(3)
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("resume", 1, 2)])
        original = admin.describe_topics(["resume"])[0].partitions[0].replicas
    cluster.local.add_broker(4)
    cluster.local.up()
    cluster.wait_healthy([1, 2, 3, 4])
    cluster.local.stop(4)
    controller = cluster.controller_id()
    keep = next(r for r in original if r != controller)
    with cluster.admin() as admin:
        eventually(
            lambda: next(b for b in admin.describe_cluster().brokers if b.node_id == 4).fenced,
            what="broker 4 fenced",
        )
        admin.alter_partition_reassignments({("resume", 0): [keep, 4]})
        assert admin.list_partition_reassignments()[("resume", 0)].adding_replicas == (4,)
    described = strom(cluster, "topics", "describe", "resume")
    assert "\tAdding Replicas: 4\tRemoving Replicas: " in described.stdout, described.stdout
    flagged = strom(cluster, "topics", "describe", "--under-replicated-partitions")
    assert "resume" not in flagged.stdout  # replicas still being added do not count
    cluster.local.stop(controller, kill=True)
    eventually(lambda: cluster.controller_id() not in (controller, -1), what="a new controller")
    cluster.local.start(4)

    def completed() -> bool:
        with cluster.admin() as admin:
            part = admin.describe_topics(["resume"])[0].partitions[0]
            return part.replicas == (keep, 4) and not admin.list_partition_reassignments()

    eventually(completed, timeout_s=30, what="the move completed by the new controller")
    cluster.local.start(controller)
    cluster.wait_healthy([1, 2, 3, 4])


def test_throttle_is_set_on_the_moving_brokers_and_cleared_by_verify(
    cluster: Cluster, tmp_path: Path
) -> None:
    """`--execute --throttle` sets both replication throttle rates on the brokers the move
    involves (and no other) before it starts; the --verify that finds it complete clears them."""
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("slowly", 1, 1)])
        admin.alter_partition_reassignments({("slowly", 0): [1]})
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps({"version": 1, "partitions": [{"topic": "slowly", "partition": 0,
                                                  "replicas": [2]}]})
    )  # fmt: skip
    refused = strom(cluster, "partitions", "reassign", "--verify", "--throttle", "100",
                    "--reassignment-json-file", str(plan))  # fmt: skip
    assert refused.returncode == 1 and "--throttle goes with --execute" in refused.stderr
    grow = tmp_path / "grow.json"
    grow.write_text(
        json.dumps({"version": 1, "partitions": [{"topic": "slowly", "partition": 0,
                                                  "replicas": [2, 3]}]})
    )  # fmt: skip
    kept = strom(cluster, "partitions", "reassign", "--execute",
                 "--disallow-replication-factor-change", "--reassignment-json-file", str(grow))  # fmt: skip
    assert kept.returncode == 1 and "replication factor from 1 to 2" in kept.stderr, kept.stderr
    started = strom(cluster, "partitions", "reassign", "--execute", "--throttle", "50000000",
                    "--reassignment-json-file", str(plan))  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "The inter-broker throttle limit was set to 50000000 B/s" in started.stdout

    def rates(broker: int) -> set[tuple[str, str]]:
        with cluster.admin() as admin:
            configs = admin.describe_broker_configs(broker)
        return {
            (k, configs[k].value) for k in THROTTLE_KEYS if configs[k].source != "DEFAULT_CONFIG"
        }

    assert rates(1) == rates(2) == {(k, "50000000") for k in THROTTLE_KEYS}
    assert rates(3) == set()

    def verified() -> str:
        result = strom(cluster, "partitions", "reassign", "--verify",
                       "--reassignment-json-file", str(plan))  # fmt: skip
        return result.stdout if result.returncode == 0 else ""

    out = eventually(verified, timeout_s=30, what="the move completed")
    assert "Clearing broker-level throttles on brokers 1,2,3" in out
    assert rates(1) == rates(2) == set()
