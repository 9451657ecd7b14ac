"""`strom perf produce|consume|end-to-end` against a real cluster: Kafka-style lines, JSON that
bench/ scripts read, and counts that match what was sent (no timing is asserted)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from cluster_harness import Cluster

from strom.client.admin import Admin


def _strom(cluster: Cluster, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strom.node.cli", "perf", *argv,
         "--bootstrap-server", cluster.bootstrap],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_produce_then_consume_count_every_record(cluster: Cluster) -> None:
    for api in ("async", "sync"):
        done = _strom(cluster, "produce", "--topic", "perf", "--create-topic", "3:3",
                      "--num-records", "3000", "--record-size", "50", "--api", api)  # fmt: skip
        assert done.returncode == 0, done.stderr
        last = done.stdout.strip().splitlines()[-1]
        assert re.fullmatch(
            r"3000 records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, "
            r"[\d.]+ ms max latency, \d+ ms 50th, \d+ ms 95th, \d+ ms 99th, \d+ ms 99\.9th\.",
            last,
        ), last
    with Admin(cluster.bootstrap) as admin:
        ends = admin.list_offsets([("perf", p) for p in range(3)], -1)
    assert sum(ends.values()) == 6000  # acknowledged means written

    done = _strom(cluster, "consume", "--topic", "perf", "--messages", "6000", "--output", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["data_consumed_in_nmsg"] == 6000
    assert abs(result["data_consumed_in_mb"] - 6000 * 50 / 1024 / 1024) < 1e-6

    text = _strom(cluster, "consume", "--topic", "perf", "--messages", "6000", "--group", "g")
    assert text.returncode == 0, text.stderr
    header, line = text.stdout.strip().splitlines()
    assert header.startswith("start.time, end.time, data.consumed.in.MB, MB.sec")
    assert line.split(", ")[4] == "6000"


def test_end_to_end_reports_latency_percentiles_as_json(cluster: Cluster) -> None:
    for api in ("async", "sync"):
        done = _strom(cluster, "end-to-end", "--topic", "e2e", "--create-topic", "1:3",
                      "--num-records", "2000", "--throughput", "1000", "--output", "json",
                      "--api", api)  # fmt: skip
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["records"] == 2000
        assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_latency_ms"]


def test_end_to_end_refuses_records_too_small_for_the_send_time(cluster: Cluster) -> None:
    done = _strom(cluster, "end-to-end", "--topic", "nope", "--num-records", "10",
                  "--record-size", "4")  # fmt: skip
    assert done.returncode == 1
    assert "record-size must be at least 8" in done.stderr


def test_bad_producer_props_are_refused_before_anything_is_sent() -> None:
    for props, message in (
        ("bogus", "expects key=value"),
        ("nosuch=1", "unknown producer property 'nosuch'"),
        ("linger.ms=soon", "is not a number"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "strom.node.cli", "perf", "produce", "--topic", "t",
             "--num-records", "1", "--bootstrap-server", "localhost:1", "--producer-props", props],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1
        assert message in done.stderr, done.stderr
