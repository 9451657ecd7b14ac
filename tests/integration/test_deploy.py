"""The deployment users run: docker-compose.yml and deploy/Dockerfile, checked without an engine.

The compose file is validated with a real compose implementation (docker-compose v1,
`config -q`), checked for consistency, and its topology is run as local processes from its own
environment (`strom cluster up --from-compose`). test_compose.py runs it in real containers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cluster_harness import free_base_port
from kafka import KafkaAdminClient

from strom.client.admin import Admin, NewTopic
from strom.node.config import build_config
from strom.node.local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def services() -> dict[str, dict[str, object]]:
    """The strom nodes (the optional `monitoring` profile adds Prometheus and Grafana)."""
    every = dict(yaml.safe_load(COMPOSE.read_text())["services"])
    return {name: s for name, s in every.items() if name.startswith("strom")}


def env_of(service: dict[str, object]) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(service["environment"]).items()}  # type: ignore[arg-type]


def test_compose_file_is_valid_for_a_real_compose_implementation() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: .ci/run must install it (apt docker-compose)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    result = subprocess.run(
        [tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_compose_services_are_consistent() -> None:
    nodes = services()
    assert len(nodes) == 3
    ids = {name: int(env_of(s)["STROM_NODE_ID"]) for name, s in nodes.items()}
    assert sorted(ids.values()) == [1, 2, 3]
    published: set[str] = set()
    volumes: set[str] = set()
    for name, service in nodes.items():
        env = env_of(service)
        # The environment alone is a valid node configuration (what the container runs).
        config = build_config({}, environ=env)
        assert config.node_id == ids[name]
        assert config.roles == {"broker", "controller"}
        voters = {v.node_id: v for v in config.voters}
        assert set(voters) == {1, 2, 3}
        assert voters[config.node_id].host == name, "each voter address names its own service"
        listeners = {e.listener: e for e in config.listeners}
        assert voters[config.node_id].port == listeners["CONTROLLER"].port
        advertised = {e.listener: e for e in config.advertised_listeners}
        assert advertised["INTERNAL"].host == name
        assert advertised["EXTERNAL"].host == "localhost"
        # The external listener is published on the same port it advertises.
        ports = [str(p) for p in service["ports"]]  # type: ignore[union-attr]
        assert f"{advertised['EXTERNAL'].port}:{listeners['EXTERNAL'].port}" in ports
        # Kafka clients outside Docker: the KAFKA listener, published likewise.
        assert config.kafka_listener_names == ("KAFKA",)
        assert advertised["KAFKA"].host == "localhost"
        assert f"{advertised['KAFKA'].port}:{listeners['KAFKA'].port}" in ports
        published |= set(ports)
        volumes |= {str(v).split(":")[0] for v in service["volumes"]}  # type: ignore[union-attr]
        healthcheck = service["healthcheck"]["test"]  # type: ignore[index]
        assert healthcheck[1:4] == ["strom", "node", "ready"], "healthy means ready (/readyz)"
        assert "depends_on" not in service, "voters must not wait for each other's health"
    assert len(published) == 6 and len(volumes) == 3


def test_dockerfile_installs_the_package_and_its_commands_exist() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile, "users' default base"
    assert "USER 10001:10001" in dockerfile
    entrypoint = ROOT / "deploy" / "entrypoint.sh"
    assert os.access(entrypoint, os.X_OK)
    result = subprocess.run(["sh", "-n", str(entrypoint)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in (["node", "health", "--help"], ["storage", "format", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "strom.node.cli", *command], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


@pytest.mark.integration
def test_compose_topology_runs_as_local_processes(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path / "compose")
    nodes = local.create_from_compose(COMPOSE, free_base_port(3))
    try:
        local.up()
        bootstrap = local.bootstrap()
        from cluster_harness import Cluster

        Cluster(local).wait_healthy([n.node_id for n in nodes])
        with Admin(bootstrap, request_timeout_ms=5_000) as admin:
            admin.create_topics([NewTopic("from-compose", 3, 3)])
            (topic,) = admin.describe_topics(["from-compose"])
            # Asked on EXTERNAL, the cluster names every broker's EXTERNAL address.
            brokers = {b.node_id: f"{b.host}:{b.port}" for b in admin.describe_cluster().brokers}
        assert brokers == {n.node_id: n.bootstrap for n in nodes}
        assert all(len(p.isr) == 3 for p in topic.partitions)  # min.insync.replicas=2 from env
        health = subprocess.run(
            [sys.executable, "-m", "strom.node.cli", "node", "health", "--address", nodes[0].bootstrap],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert health.returncode == 0 and "SERVING" in health.stdout
        # Kafka clients find the KAFKA listener's addresses, remapped like the others.
        kafka = KafkaAdminClient(
            bootstrap_servers=local.kafka_bootstrap(), request_timeout_ms=5_000
        )
        try:
            assert "from-compose" in kafka.list_topics()
            ports = {b["port"] for b in kafka.describe_cluster()["brokers"]}
            assert ports == {n.kafka_port for n in nodes}
        finally:
            kafka.close()
    finally:
        local.down(timeout_s=10)
