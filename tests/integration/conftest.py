"""Real node processes on loopback: a fresh local cluster per test, with short timeouts; and the
node image for the tests that run docker-compose.yml in containers, built once per session."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster_harness import FAST, Cluster, free_base_port
from compose_harness import TEST_IMAGE, build_image, docker_or_skip, remove_image

from strom.node.local_cluster import LocalCluster


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[LocalCluster] = []

    def make(nodes: int = 3, admin: bool = False, **overrides: str) -> Cluster:
        local = LocalCluster(tmp_path / f"cluster{len(made)}")
        local.create(nodes, free_base_port(nodes), {**FAST, **overrides}, admin=admin)
        made.append(local)
        local.up()
        cluster = Cluster(local)
        cluster.wait_healthy()
        return cluster

    yield make
    for local in made:
        try:
            local.down(timeout_s=10)
        finally:
            _, nodes = local.load()
            for node in nodes:
                local.stop(node.node_id, kill=True)


@pytest.fixture
def cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(3)


@pytest.fixture(scope="session")
def strom_image() -> Iterator[str]:
    """The node image, built as a user without a registry builds it (deploy/base-image.sh,
    deploy/wheels.sh, docker build); removed at the end, while the Debian base stays cached."""
    docker_or_skip()
    start = time.monotonic()
    try:
        timings = build_image(sys.executable)
        steps = ", ".join(f"{step} {s:.1f}" for step, s in timings.items())
        print(
            f"\nimage {TEST_IMAGE} built in {time.monotonic() - start:.1f} s ({steps}; seconds unless named)"
        )
        yield TEST_IMAGE
    finally:
        remove_image()
