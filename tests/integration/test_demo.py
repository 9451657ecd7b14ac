"""The README's main command: `strom demo` prints the seed document's tables, from a real
three-node cluster it starts and stops itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_prints_the_seed_tables(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "strom.node.cli", "demo", "--data-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    for message, partition in [("M1", "P0"), ("M2", "P1"), ("M3", "P2"), ("M4", "P0")]:
        assert f"| {message}      | {partition}        |" in out
    assert "| C1       | P0, P1              |" in out
    assert "| C1       | M1, M2, M4, M5 |" in out
    assert "| C2       | M3, M6         |" in out
    assert "| C3       | P2                  |" in out
    assert "| C1       | P0, P1, P2          |" in out
    assert "| Consumer-A | Order1, Order2, Order4, Order5 |" in out
    assert out.count("Order1, Order2, Order3, Order4, Order5, Order6") >= 3  # fan-out, replay
    assert "pay-Order1, pay-Order2" in out
    assert "Cluster stopped." in out
