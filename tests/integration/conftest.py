"""Real node processes on loopback: a fresh local cluster per test, with short timeouts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster_harness import FAST, Cluster, free_base_port

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
