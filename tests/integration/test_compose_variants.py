"""The compose override files brought up for real (slow set): five brokers over the three-node
quorum (deploy/docker-compose.5-nodes.yml), and mutual TLS on every listener
(deploy/docker-compose.tls.yml) with certificates from `strom certs create`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from compose_harness import Compose, docker_or_skip, port_free

from strom.client.admin import Admin, NewTopic
from strom.client.consumer import Consumer
from strom.client.errors import StromError
from strom.client.producer import Producer

# The first test also waits for the image build and `up` (fixtures count towards its timeout).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def ports(*numbers: int) -> list[str]:
    return [f"localhost:{n}" for n in numbers]


@contextlib.contextmanager
def bring_up(files: list[str], external: list[str], **env: str) -> Iterator[Compose]:
    tool = docker_or_skip()
    busy = [a for a in external if not port_free(int(a.rsplit(":", 1)[1]))]
    assert not busy, f"host ports taken (the compose files publish them): {busy}"
    project = Compose(tool, files, f"stromvariant{os.getpid()}")
    project.env.update(env)
    try:
        project.up()
        project.wait_healthy(project.nodes())
        yield project
    finally:
        project.down()
        assert project.leftovers() == {"containers": [], "networks": [], "volumes": []}


def round_trip(bootstrap: str, topic: str, partitions: int, **security: str) -> None:
    with Admin(bootstrap, request_timeout_ms=5_000, **security) as admin:
        admin.create_topics([NewTopic(topic, partitions, 3)])
    values = {f"{topic}-{i}" for i in range(partitions * 4)}
    with Producer(bootstrap, acks="all", **security) as producer:
        for value in values:
            producer.send(topic, value.encode())
        producer.flush()
    seen: set[str] = set()
    with Consumer(bootstrap, group_id=f"{topic}-group", auto_offset_reset="earliest",
                  **security) as consumer:  # fmt: skip
        consumer.subscribe([topic])
        for _ in range(120):
            seen |= {r.value.decode() for r in consumer.poll(timeout_ms=500) if r.value}
            if seen == values:
                break
    assert seen == values


def test_five_brokers_over_three_controllers(strom_image: str) -> None:
    external = ports(9092, 9192, 9292, 9392, 9492)
    files = ["docker-compose.yml", "deploy/docker-compose.5-nodes.yml"]
    with bring_up(files, external) as compose:
        assert compose.nodes() == [f"strom{n}" for n in range(1, 6)]
        bootstrap = ",".join(external)
        with Admin(bootstrap, request_timeout_ms=5_000) as admin:
            brokers = {b.node_id: f"{b.host}:{b.port}" for b in admin.describe_cluster().brokers}
            voters = {v.replica_id for v in admin.describe_quorum().voters}
        assert brokers == dict(enumerate(external, start=1))
        assert voters == {1, 2, 3}
        round_trip(bootstrap, "five-brokers", 5)


def test_tls_override_serves_mutual_tls_to_host_clients(strom_image: str, tmp_path: Path) -> None:
    certs = tmp_path / "tls"
    nodes = [arg for n in (1, 2, 3) for arg in ("--node", f"strom{n}")]
    subprocess.run(
        [sys.executable, "-m", "strom.node.cli", "certs", "create", "--out", str(certs), *nodes],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    # The README's step: the node keys belong to the containers' user (uid 10001).
    certs.chmod(0o755)
    for n in (1, 2, 3):
        os.chown(certs / f"strom{n}.key", 10001, 10001)
    external = ports(9092, 9192, 9292)
    files = ["docker-compose.yml", "deploy/docker-compose.tls.yml"]
    with bring_up(files, external, STROM_TLS_DIR=str(certs)):
        security = {
            "security_protocol": "SSL",
            "ssl_cafile": str(certs / "ca.crt"),
            "ssl_certfile": str(certs / "strom-admin.crt"),
            "ssl_keyfile": str(certs / "strom-admin.key"),
        }
        round_trip(",".join(external), "over-tls", 3, **security)
        with pytest.raises(StromError), Admin(external[0], request_timeout_ms=3_000) as admin:
            admin.list_topics()  # plaintext is refused
