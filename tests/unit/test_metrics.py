"""Metrics: the scrape-time collector, the per-batch counters, the admin HTTP endpoints, readiness,
the operator commands' parsing, and the Grafana dashboard's references."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from strom.client.admin import (
    BrokerInfo,
    ClusterDescription,
    PartitionDescription,
    TopicDescription,
)
from strom.node import metrics
from strom.node.admin_http import AdminHttpServer, parse_address, readiness
from strom.node.cli.cluster import describe_cluster_rows
from strom.node.cli.node import key_numbers
from strom.node.config import ConfigError, build_config
from strom.node.metadata.image import BrokerRegistration, MetadataImage, PartitionInfo, TopicImage

ROOT = Path(__file__).resolve().parents[2]


# ---- fakes shaped like the node's objects ------------------------------------------------


def fake_partition(topic: str, index: int, leader: bool, replicas: tuple[int, ...],
                   isr: tuple[int, ...], size: int = 100, segments: int = 1, leo: int = 5) -> Any:  # fmt: skip
    log = SimpleNamespace(
        size_in_bytes=size, segment_base_offsets=tuple(range(segments)), log_end_offset=leo
    )
    return SimpleNamespace(
        topic=topic, partition=index, is_leader=leader, replicas=replicas, isr=isr, log=log
    )


def fake_node(*, active: bool = True, is_broker: bool = True) -> Any:
    partitions = {
        # led here, fully replicated
        (b"a", 0): fake_partition("orders", 0, True, (1, 2, 3), (1, 2, 3), size=300, segments=2),
        # led here, under-replicated but at min.insync.replicas=2
        (b"a", 1): fake_partition("orders", 1, True, (1, 2, 3), (1, 2)),
        # led here, under min ISR
        (b"a", 2): fake_partition("orders", 2, True, (1, 2, 3), (1,)),
        # a follower replica: never counted as under-replicated here
        (b"b", 0): fake_partition("events", 0, False, (2, 1), (2,)),
    }
    manager = SimpleNamespace(
        partitions=partitions,
        caught_up=True,
        min_insync_replicas=lambda topic: 2,
        offline_replicas=lambda: [(b"c", 0)],  # a replica whose log failed here
    )
    image = MetadataImage(
        last_index=42,
        brokers={
            1: BrokerRegistration(1, 10, b"", (), "", fenced=False),
            2: BrokerRegistration(2, 11, b"", (), "", fenced=True),
        },
        topics={
            b"a": TopicImage("orders", b"a", {0: PartitionInfo((1,), (1,), 1, 0, 0)}),
            b"b": TopicImage(
                "events",
                b"b",
                {0: PartitionInfo((2,), (2,), -1, 0, 0), 1: PartitionInfo((2,), (2,), -1, 0, 0)},
            ),
        },
    )
    return SimpleNamespace(
        config=SimpleNamespace(is_broker=is_broker),
        manager=manager if is_broker else None,
        lifecycle=SimpleNamespace(fenced=False, broker_epoch=10) if is_broker else None,
        controller_service=SimpleNamespace(active=active),
        driver=SimpleNamespace(leader_id=3, term=7, committed_index=41),
        metadata=SimpleNamespace(image=image),
        coordinator=SimpleNamespace(lag={("inventory-group", "orders", 0): 7})
        if is_broker
        else None,
        stopping=False,
    )


def scrape(node: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(metrics.NodeCollector(node))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# ---- the collector -----------------------------------------------------------------------


def test_collector_derives_replica_manager_gauges_from_partitions() -> None:
    values = scrape(fake_node())
    assert values[("strom_server_replicamanager_underreplicatedpartitions", ())] == 2
    assert values[("strom_server_replicamanager_underminisrpartitioncount", ())] == 1
    assert values[("strom_server_replicamanager_partitioncount", ())] == 4
    assert values[("strom_server_replicamanager_leadercount", ())] == 3
    assert values[("strom_server_replicamanager_offlinereplicacount", ())] == 1
    assert values[("strom_server_brokerstate_fenced", ())] == 0
    labels = (("partition", "0"), ("topic", "orders"))
    assert values[("strom_log_size_bytes", labels)] == 300
    assert values[("strom_log_segments", labels)] == 2
    assert values[("strom_log_end_offset", labels)] == 5


def test_group_lag_comes_from_the_coordinators_cache() -> None:
    labels = (("group", "inventory-group"), ("partition", "0"), ("topic", "orders"))
    assert scrape(fake_node())[("strom_consumergroup_lag", labels)] == 7
    assert not any(
        name == "strom_consumergroup_lag" for name, _ in scrape(fake_node(is_broker=False))
    )


def test_only_the_active_controller_reports_cluster_counts() -> None:
    active = scrape(fake_node(active=True))
    assert active[("strom_controller_activecontrollercount", ())] == 1
    assert active[("strom_controller_offlinepartitionscount", ())] == 2
    assert active[("strom_controller_fencedbrokercount", ())] == 1
    assert active[("strom_controller_activebrokercount", ())] == 1
    standby = scrape(fake_node(active=False))
    assert standby[("strom_controller_activecontrollercount", ())] == 0
    assert standby[("strom_controller_offlinepartitionscount", ())] == 0


def test_collector_reports_raft_numbers_and_skips_missing_roles() -> None:
    node = fake_node(is_broker=False)
    values = scrape(node)
    assert values[("strom_raft_current_leader", ())] == 3
    assert values[("strom_raft_current_epoch", ())] == 7
    assert values[("strom_raft_high_watermark", ())] == 41
    assert values[("strom_metadata_last_applied_offset", ())] == 42
    assert not any(name.startswith("strom_server_") for name, _ in values)
    node.driver.leader_id = 0  # strom.raft.types.NONE
    assert scrape(node)[("strom_raft_current_leader", ())] == -1
    node.driver = None
    assert not any(name.startswith("strom_raft_") for name, _ in scrape(node))


def test_every_collected_name_is_declared() -> None:
    names = {name for name, _ in scrape(fake_node())}
    assert names <= set(metrics.COLLECTED_NAMES)
    assert set(metrics.COLLECTED_NAMES) - names == set()


# ---- counters: one call per batch --------------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_produce_counts_records_and_bytes_per_batch() -> None:
    before = _sample("strom_server_brokertopicmetrics_messagesin_total", topic="unit-t")
    bytes_before = _sample("strom_server_brokertopicmetrics_bytesin_total", topic="unit-t")
    metrics.record_produce("unit-t", record_count=500, size_bytes=12_345)
    metrics.record_produce("unit-t", record_count=0, size_bytes=99)  # a retried duplicate
    assert _sample("strom_server_brokertopicmetrics_messagesin_total", topic="unit-t") == (
        before + 500
    )
    assert _sample("strom_server_brokertopicmetrics_bytesin_total", topic="unit-t") == (
        bytes_before + 12_345
    )
    metrics.record_fetch("unit-t", 0)
    metrics.record_fetch("unit-t", 77)
    assert _sample("strom_server_brokertopicmetrics_bytesout_total", topic="unit-t") >= 77


def test_isr_changes_count_shrinks_and_expands() -> None:
    shrinks = _sample("strom_server_replicamanager_isrshrinks_total")
    expands = _sample("strom_server_replicamanager_isrexpands_total")
    metrics.record_isr_change((1, 2, 3), (1, 2))
    metrics.record_isr_change((1, 2), (1, 2, 3))
    metrics.record_isr_change((1, 2), (2, 1))  # order only: no change
    assert _sample("strom_server_replicamanager_isrshrinks_total") == shrinks + 1
    assert _sample("strom_server_replicamanager_isrexpands_total") == expands + 1


# ---- readiness ---------------------------------------------------------------------------


def test_broker_readiness_needs_registration_unfencing_and_catching_up() -> None:
    node = fake_node()
    assert readiness(node) == (True, "ready")
    node.manager.caught_up = False
    assert readiness(node)[0] is False and "catching up" in readiness(node)[1]
    node.manager.caught_up = True
    node.lifecycle.fenced = True
    assert readiness(node)[0] is False and "fenced" in readiness(node)[1]
    node.lifecycle.broker_epoch = -1
    assert "not registered" in readiness(node)[1]
    node.lifecycle = None
    assert readiness(node) == (False, "broker starting")


def test_controller_only_readiness_needs_a_known_raft_leader() -> None:
    node = fake_node(is_broker=False)
    assert readiness(node) == (True, "ready")
    node.driver.leader_id = 0
    assert readiness(node) == (False, "no Raft leader known")
    node.driver.leader_id = 2
    node.stopping = True
    assert readiness(node) == (False, "shutting down")


# ---- the HTTP endpoints ------------------------------------------------------------------


async def _get(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
    assert len(body) == length
    return status, body


def test_admin_http_serves_metrics_health_and_readiness() -> None:
    node = fake_node()
    registry = CollectorRegistry()
    registry.register(metrics.NodeCollector(node))

    async def scenario() -> list[tuple[int, bytes]]:
        server = AdminHttpServer("127.0.0.1:0", lambda: readiness(node), registry)
        await server.start()
        try:
            out = [await _get(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")]
            out.append(await _get(server.port, b"GET /readyz HTTP/1.1\r\n\r\n"))
            node.lifecycle.fenced = True
            out.append(await _get(server.port, b"GET /readyz HTTP/1.1\r\n\r\n"))
            out.append(await _get(server.port, b"GET /metrics HTTP/1.1\r\n\r\n"))
            out.append(await _get(server.port, b"GET /nope HTTP/1.1\r\n\r\n"))
            out.append(await _get(server.port, b"POST /metrics HTTP/1.1\r\n\r\n"))
            out.append(await _get(server.port, b"garbage\r\n\r\n"))
            return out
        finally:
            await server.stop()

    healthz, ready, fenced, scraped, missing, post, garbage = asyncio.run(scenario())
    assert healthz == (200, b"ok\n")
    assert ready == (200, b"ready\n")
    assert fenced[0] == 503 and b"fenced" in fenced[1]
    assert scraped[0] == 200
    assert b"strom_server_replicamanager_underreplicatedpartitions 2.0" in scraped[1]
    assert missing[0] == 404 and post[0] == 405 and garbage[0] == 400


def test_parse_address_and_config_key() -> None:
    assert parse_address("localhost:9644") == ("localhost", 9644)
    assert parse_address(":9644") == ("", 9644)
    assert parse_address("[::1]:9644") == ("::1", 9644)
    with pytest.raises(ValueError):
        parse_address("localhost")
    base = {"node.id": 1, "controller.quorum.voters": "1@localhost:9093"}
    assert build_config(base, environ={})["admin.listener"] == ""
    env = {"STROM_ADMIN_LISTENER": "0.0.0.0:9644"}
    assert build_config(base, environ=env)["admin.listener"] == "0.0.0.0:9644"
    with pytest.raises(ConfigError, match="admin.listener"):
        build_config({**base, "admin.listener": "9644"}, environ={})


# ---- operator commands -------------------------------------------------------------------


def test_key_numbers_sum_over_labels() -> None:
    registry = CollectorRegistry()
    registry.register(metrics.NodeCollector(fake_node()))
    text = generate_latest(registry).decode() + (
        'strom_server_brokertopicmetrics_messagesin_total{topic="a"} 3.0\n'
        'strom_server_brokertopicmetrics_messagesin_total{topic="b"} 4.0\n'
    )
    numbers = key_numbers(text)
    assert numbers["under-replicated partitions"] == 2
    assert numbers["active controller"] == 1
    assert numbers["log bytes"] == 300 + 100 * 3
    assert numbers["raft epoch"] == 7


def test_cluster_describe_counts_replicas_and_leaders_per_broker() -> None:
    description = ClusterDescription(
        "cid",
        2,
        (
            BrokerInfo(2, "h2", 9192, "r2", False, False),
            BrokerInfo(1, "h1", 9092, "", True, False),
            BrokerInfo(3, "h3", 9292, "", False, True),
        ),
    )
    topics = [
        TopicDescription(
            "t",
            "id",
            (
                PartitionDescription(0, 1, 0, (1, 2, 3), (1, 2, 3), offline_replicas=(1,)),
                PartitionDescription(1, 2, 0, (2, 3), (2,), offline_replicas=(3,)),
                PartitionDescription(2, -1, 0, (3,), (3,), offline_replicas=(3,)),
            ),
            {},
        )
    ]
    rows = describe_cluster_rows(description, topics)
    summary = [
        (r.id, r.state, r.partitions, r.leaders, r.active_controller, r.offline) for r in rows
    ]
    assert summary == [
        (1, "fenced", 1, 1, False, 1),
        (2, "unfenced", 2, 1, True, 0),
        (3, "shutting down", 3, 0, False, 2),  # e.g. its log of t-1 and t-2 failed
    ]
    assert rows[1].address == "h2:9192" and rows[1].rack == "r2"


# ---- the Grafana dashboard ---------------------------------------------------------------


def test_grafana_dashboard_references_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "strom.json").read_text())
    exported = set(metrics.COLLECTED_NAMES) | set(metrics.EVENT_NAMES)
    histogram_series = {
        f"{name}{suffix}"
        for name in metrics.EVENT_NAMES
        if name.endswith("_seconds")
        for suffix in ("_bucket", "_sum", "_count")
    }
    referenced = set()
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["targets"], panel
        for target in panel["targets"]:
            referenced |= set(re.findall(r"\bstrom_[a-z_]+", target["expr"]))
    assert referenced, "the dashboard queries nothing"
    assert referenced <= exported | histogram_series, referenced - exported - histogram_series
    for wanted in (
        "strom_server_replicamanager_underreplicatedpartitions",
        "strom_controller_offlinepartitionscount",
        "strom_controller_activecontrollercount",
        "strom_server_brokertopicmetrics_messagesin_total",
        "strom_server_brokertopicmetrics_bytesin_total",
        "strom_server_brokertopicmetrics_bytesout_total",
        "strom_request_duration_seconds_bucket",
    ):
        assert wanted in referenced, f"the dashboard has no panel for {wanted}"


def test_prometheus_scrapes_every_compose_node_on_its_admin_listener() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    nodes = {n: s for n, s in compose["services"].items() if n.startswith("strom")}
    monitoring = {
        n for n, s in compose["services"].items() if "monitoring" in s.get("profiles", [])
    }
    assert monitoring == {"prometheus", "grafana"}
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    expected = set()
    for name, service in nodes.items():
        env = {**compose["x-strom-common"]["environment"], **service["environment"]}
        _, port = parse_address(env["STROM_ADMIN_LISTENER"])
        expected.add(f"{name}:{port}")
    assert targets == expected
