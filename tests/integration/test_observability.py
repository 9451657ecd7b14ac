"""Metrics and readiness of real node processes, scraped from their admin listeners."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_harness import FAST, Cluster, eventually
from prometheus_client.parser import text_string_to_metric_families

from strom.client import Producer
from strom.client.admin import NewTopic
from strom.node.local_cluster import LocalCluster, LocalNode, free_base_port

pytestmark = pytest.mark.integration

TOPIC = "metered"
RECORDS = 250


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, dict[int, LocalNode]]]:
    local = LocalCluster(tmp_path / "cluster")
    _, nodes = local.create(3, free_base_port(3, (0, 1, 2, 3)), dict(FAST), admin=True)
    try:
        local.up()
        cluster = Cluster(local)
        cluster.wait_healthy()
        yield cluster, {n.node_id: n for n in nodes}
    finally:
        try:
            local.down(timeout_s=10)
        finally:
            for node in nodes:
                local.stop(node.node_id, kill=True)


def get(node: LocalNode, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{node.admin_address}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:  # not listening (yet)
        return 0, str(exc)


def scrape(node: LocalNode) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text = get(node, "/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(node: LocalNode, name: str, **labels: str) -> float:
    return scrape(node).get((name, frozenset(labels.items())), 0.0)


def active_controllers(nodes: list[LocalNode]) -> float:
    return sum(value(n, "strom_controller_activecontrollercount") for n in nodes)


def test_metrics_follow_produce_replica_failure_readiness_and_failover(
    cluster: tuple[Cluster, dict[int, LocalNode]],
) -> None:
    harness, nodes = cluster
    local = harness.local
    with harness.admin() as admin:
        admin.create_topics([NewTopic(TOPIC, 1, 3)])
        leader_id = eventually(
            lambda: admin.describe_topics([TOPIC])[0].partitions[0].leader, what="a leader"
        )
    leader = nodes[leader_id]
    followers = [n for i, n in nodes.items() if i != leader_id]
    for node in nodes.values():
        assert get(node, "/healthz") == (200, "ok\n")
        assert get(node, "/readyz") == (200, "ready\n")

    # Counted once per batch on the leader, by the batch's record count.
    messages = "strom_server_brokertopicmetrics_messagesin_total"
    before = value(leader, messages, topic=TOPIC)
    with Producer(harness.bootstrap, acks="all", linger_ms=5) as producer:
        for i in range(RECORDS):
            producer.send(TOPIC, value=b"record-%d" % i)
        producer.flush()
    assert value(leader, messages, topic=TOPIC) == before + RECORDS
    assert all(value(f, messages, topic=TOPIC) == 0 for f in followers)
    assert value(leader, "strom_server_brokertopicmetrics_bytesin_total", topic=TOPIC) > 0
    assert value(leader, "strom_request_duration_seconds_count", rpc="Produce") >= 1
    assert value(leader, "strom_log_end_offset", topic=TOPIC, partition="0") == RECORDS
    eventually(lambda: active_controllers(list(nodes.values())) == 1, what="one active controller")

    # A killed follower leaves the ISR: the leader reports the partition under-replicated.
    under = "strom_server_replicamanager_underreplicatedpartitions"
    assert value(leader, under) == 0
    shrinks = value(leader, "strom_server_replicamanager_isrshrinks_total")
    victim = followers[0]
    local.stop(victim.node_id, kill=True)
    eventually(lambda: value(leader, under) >= 1, what="under-replicated on the leader")
    assert value(leader, "strom_server_replicamanager_isrshrinks_total") > shrinks

    # Alone (no quorum to register with), a restarted broker is alive but not ready.
    for node in nodes.values():
        if node is not victim:
            local.stop(node.node_id, kill=True)  # SIGTERM would wait for a lost quorum
    local.start(victim.node_id)
    eventually(lambda: get(victim, "/healthz")[0] == 200, what="restarted node alive")
    status, reason = get(victim, "/readyz")
    assert status == 503 and ("not registered" in reason or "fenced" in reason), reason
    assert value(victim, "strom_controller_activecontrollercount") == 0

    # With the quorum back it registers, catches up and becomes ready; the ISR heals.
    local.up()
    for node in nodes.values():
        eventually(lambda: get(node, "/readyz")[0] == 200, 30, f"node {node.node_id} ready")  # noqa: B023
    eventually(
        lambda: sum(value(n, under) for n in nodes.values()) == 0, 30, "ISR healed everywhere"
    )
    eventually(lambda: active_controllers(list(nodes.values())) == 1, what="one active controller")

    # Controller failover: the active controller stops; exactly one of the others takes over.
    old = next(n for n in nodes.values() if value(n, "strom_controller_activecontrollercount"))
    local.stop(old.node_id)
    rest = [n for n in nodes.values() if n is not old]
    eventually(lambda: active_controllers(rest) == 1, 30, "one active controller after failover")
