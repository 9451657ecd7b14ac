"""`strom demo` (storage level): the seed's round-robin table comes out of real logs."""

from __future__ import annotations

import pytest
from strom.node.cli import main


def test_demo_prints_the_seed_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for order, partition, offset in [
        ("Order1", "P0", "0"),
        ("Order2", "P1", "0"),
        ("Order3", "P2", "0"),
        ("Order4", "P0", "1"),
        ("Order5", "P1", "1"),
        ("Order6", "P2", "1"),
    ]:
        assert f"| {order}   | {partition}        | {offset}      |" in out
    assert "0:Order1, 1:Order4" in out and "0:Order3, 1:Order6" in out
