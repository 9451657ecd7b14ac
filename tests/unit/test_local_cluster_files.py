"""What `strom cluster up` writes: node.yaml may hold node.sasl.password, so it is 0600 like the
TLS keys (issue #15 weaker spot: it was written 0644)."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from strom.node.local_cluster import ClusterError, LocalCluster


def _create(cluster: LocalCluster, overrides: dict[str, str]) -> None:
    for base in range(41_000, 60_000, 1_000):  # the first range whose ports are free
        try:
            cluster.create(2, base, overrides)
            return
        except ClusterError:
            continue
    raise AssertionError("no free port range")


def test_node_configs_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster")
    secret = {"node.sasl.username": "node", "node.sasl.password": "s3cret"}
    _create(cluster, secret)
    broker = cluster.add_broker(3, secret)
    for node_id in (1, 2, broker.node_id):
        path = cluster.node_dir(node_id) / "node.yaml"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert yaml.safe_load(path.read_text())["node.sasl.password"] == "s3cret"


def test_an_older_world_readable_file_is_narrowed_when_rewritten(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster")
    path = cluster.node_dir(1) / "node.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("old: true\n")
    path.chmod(0o644)
    _create(cluster, {})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "old" not in yaml.safe_load(path.read_text())
