"""The pure helpers of bench/peers.py (bench/bench_report.py): medians, ratios, the tables.

bench/ is not an installed package, so the module is loaded from its file; no server runs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "bench" / "bench_report.py"
_spec = importlib.util.spec_from_file_location("bench_report", PATH)
assert _spec is not None and _spec.loader is not None
report = importlib.util.module_from_spec(_spec)
sys.modules["bench_report"] = report  # dataclasses resolve annotations through sys.modules
_spec.loader.exec_module(report)


def _results() -> report.Results:
    r = report.Results(record_bytes=100)
    for rate in (30_000.0, 10_000.0, 20_000.0):
        r.add("strom.rf3", "strom RF=3", report.PRODUCE, rate)
    for rate in (5_000.0, 40_000.0, 10_000.0):
        r.add("peer", "peer R3", report.PRODUCE, rate)
    r.add("strom.consume", "strom consume", report.CONSUME, 50_000.0)
    return r


def test_median_of_runs_not_mean_and_missing_is_none() -> None:
    r = _results()
    assert r.median("strom.rf3") == 20_000.0
    assert r.median("peer") == 10_000.0  # the mean would be 18,333
    assert r.median("nothing") is None


def test_ratio_is_reference_over_row_with_small_ratios_readable() -> None:
    assert report.format_ratio(20_000.0, 10_000.0) == "2.00×"
    assert report.format_ratio(21_000.0, 11_000_000.0) == "0.0019×"
    assert report.format_ratio(None, 1.0) == "–"
    assert report.format_ratio(1.0, 0.0) == "–"


def test_produce_table_rows_columns_and_units() -> None:
    columns = [report.RatioColumn("strom.rf3", "strom ÷ this")]
    lines = report.render_table(_results(), report.PRODUCE, columns)
    assert lines[0] == (
        "| measure | records/s (median) | MB/s | runs min–max | strom ÷ this |"
    )  # fmt: skip
    assert lines[1] == "|---|---:|---:|---:|---:|"
    # 20,000 records/s of 100 B = 2.0 MB/s; the consume row is not in the produce table.
    assert lines[2] == "| strom RF=3 | 20,000 | 2.0 | 10k–30k | 1.00× |"
    assert lines[3] == "| peer R3 | 10,000 | 1.0 | 5k–40k | 2.00× |"
    assert len(lines) == 4


def test_missing_reference_gives_dash_and_empty_kind_gives_no_table() -> None:
    r = report.Results(record_bytes=100)
    r.add("peer", "peer", report.CONSUME, 1_000.0)
    lines = report.render_table(r, report.CONSUME, [report.RatioColumn("strom.consume", "x")])
    assert lines[-1] == "| peer | 1,000 | 0.1 | – | – |"
    assert report.render_table(r, report.PRODUCE, []) == []


def test_skipped_systems_are_listed_one_line_each() -> None:
    r = report.Results(record_bytes=100)
    r.skip("nats", "nats-server not found")
    assert report.render_skipped(r) == ["- skipped: nats — nats-server not found"]
    with pytest.raises(AssertionError):
        r.add("k", "label", "neither", 1.0)
