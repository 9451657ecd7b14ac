"""The README's main command: `strom demo` prints the seed document's tables, from a real
three-node cluster it starts and stops itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cluster_harness import assert_seed_tables

from strom.node.local_cluster import LocalCluster

pytestmark = pytest.mark.integration


def test_demo_prints_the_seed_tables(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "strom.node.cli", "demo", "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        # The demo was killed before it could stop its cluster: stop the nodes here, or they
        # run on beside every later test.
        cluster = LocalCluster(data_dir)
        if cluster.exists():
            cluster.down(timeout_s=10)
        raise
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert_seed_tables(result.stdout)
    assert "Cluster stopped." in result.stdout
