"""strom's side of bench/peers.py: a local three-node cluster, produce, consume, raw gRPC.

The cluster is `LocalCluster` (three combined nodes as background processes under a temp dir,
as bench/cluster_bench.py starts it), always brought down by `local_cluster()`'s exit.

Produce and consume go through `strom perf produce|consume --output json` in a subprocess when
that CLI exists (`strom perf --help` exits 0): Kafka-style tools that call `send()` once per
record and count acknowledged records, or count what `poll()` hands to the application. Its
flags are read from its `--help` so small naming differences do not break the benchmark. When
the CLI is missing, or a call fails, the same measures run in this process through
bench/cluster_bench.py's `produce()` / `consume()`, and `Strom.via` says which path was used.

The ceiling is cluster_bench's `raw_grpc()`: pre-encoded 2,500-record batches sent with the
Produce RPC, no SDK, at acks=1 on an RF=1 topic and at acks=all on an RF=3 topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cluster_bench

from strom.client.admin import AsyncAdmin, NewTopic
from strom.node.cli.cluster import wait_until_healthy
from strom.node.local_cluster import LocalCluster, free_base_port

RECORD_BYTES = cluster_bench.RECORD_BYTES
PARTITIONS = 3
CLI_TIMEOUT_S = 600.0
# JSON keys of `strom perf produce` (records/s, acknowledged records) and `strom perf consume`
# (nMsg/s over the whole run, like kafka-consumer-perf-test, and the records handed over).
RATE_KEYS = ("records_per_sec", "nmsg_sec")
# The SDK's default producer settings (issue #17: the defaults are part of the product, and
# the targets are measured with them). Add properties here to measure a tuned producer.
PRODUCER_PROPS: tuple[str, ...] = ()
COUNT_KEYS = ("records", "data_consumed_in_nmsg")


@contextlib.contextmanager
def local_cluster(root: Path) -> Iterator[str]:
    """A fresh three-node cluster under `root`; yields its bootstrap string."""
    cluster = LocalCluster(root)
    cluster.create(3, free_base_port(3), {"log.level": "WARNING"})
    try:
        cluster.up()
        wait_until_healthy(cluster.bootstrap(), [1, 2, 3], timeout_s=60)
        yield cluster.bootstrap()
    finally:
        cluster.down()


async def create_topics(bootstrap: str, run: int) -> None:
    async with AsyncAdmin(bootstrap) as admin:
        await admin.create_topics(
            [
                NewTopic(f"rf3-{run}", PARTITIONS, 3, {"min.insync.replicas": "2"}),
                NewTopic(f"rf1-{run}", PARTITIONS, 1),
                NewTopic(f"raw1-{run}", PARTITIONS, 1),
                NewTopic(f"raw3-{run}", PARTITIONS, 3, {"min.insync.replicas": "2"}),
            ]
        )


def _cli_path() -> str | None:
    beside = Path(sys.executable).with_name("strom")
    return str(beside) if beside.exists() else shutil.which("strom")


def _help(cli: str, *words: str) -> str | None:
    try:
        done = subprocess.run(
            [cli, *words, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _pick(help_text: str, *flags: str) -> str | None:
    return next((f for f in flags if f in help_text), None)


def _last_json(stdout: str) -> dict[str, object]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                return parsed
    parsed = json.loads(stdout)
    if not isinstance(parsed, dict):
        raise ValueError("not a JSON object")
    return parsed


class Strom:
    """Runs strom's measures through `strom perf` when it exists, else in this process."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.cli = _cli_path()
        self.perf = self.cli is not None and _help(self.cli, "perf") is not None
        self.via: set[str] = set()
        self._failed: set[str] = set()  # perf actions that failed once: not tried again

    def _perf(self, action: str, argv: list[str], count: int) -> float:
        assert self.cli is not None
        command = [self.cli, "perf", action, *argv, "--output", "json"]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise RuntimeError(f"exit {done.returncode}: {last[0]}")
        result = _last_json(done.stdout)
        rate = next((result[k] for k in RATE_KEYS if k in result), None)
        if not isinstance(rate, int | float):
            raise RuntimeError(f"no records/s among the JSON keys {sorted(result)}")
        done_count = next((result[k] for k in COUNT_KEYS if k in result), None)
        if done_count is not None and done_count != count:
            raise RuntimeError(f"{action} counted {done_count} of {count} records")
        return float(rate)

    def _perf_produce(self, topic: str, count: int, acks: str) -> float:
        assert self.cli is not None
        text = _help(self.cli, "perf", "produce") or ""
        argv = ["--bootstrap-server", self.bootstrap, "--topic", topic]
        argv += [_pick(text, "--num-records", "--records") or "--num-records", str(count)]
        argv += ["--record-size", str(RECORD_BYTES)]
        if "--throughput" in text:
            argv += ["--throughput", "-1"]
        props = ["--producer-props", *PRODUCER_PROPS] if PRODUCER_PROPS else []
        if "--acks" in text:
            argv += ["--acks", acks, *props]
        else:
            argv += ["--producer-props", f"acks={acks}", *PRODUCER_PROPS]
        return self._perf("produce", argv, count)

    def _perf_consume(self, topic: str, count: int) -> float:
        assert self.cli is not None
        text = _help(self.cli, "perf", "consume") or ""
        flag = _pick(text, "--messages", "--num-records", "--num-messages") or "--messages"
        argv = ["--bootstrap-server", self.bootstrap, "--topic", topic, flag, str(count)]
        if "--from-beginning" in text:
            argv.append("--from-beginning")
        return self._perf("consume", argv, count)

    def _fallback(self, action: str, error: Exception) -> None:
        print(
            f"note: `strom perf {action}` failed ({error}); measuring in this process instead",
            file=sys.stderr,
        )
        self._failed.add(action)

    def produce(self, topic: str, count: int, acks: str) -> float:
        if self.perf and "produce" not in self._failed:
            try:
                rate = self._perf_produce(topic, count, acks)
                self.via.add("`strom perf produce`")
                return rate
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                self._fallback("produce", e)
        self.via.add("cluster_bench.produce() in-process")
        return asyncio.run(cluster_bench.produce(self.bootstrap, topic, count, acks))

    def consume(self, topic: str, count: int) -> float:
        if self.perf and "consume" not in self._failed:
            try:
                rate = self._perf_consume(topic, count)
                self.via.add("`strom perf consume`")
                return rate
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                self._fallback("consume", e)
        self.via.add("cluster_bench.consume() in-process")
        return asyncio.run(cluster_bench.consume(self.bootstrap, topic, count))

    def raw_grpc(self, topic: str, count: int, acks: int) -> float:
        return asyncio.run(cluster_bench.raw_grpc(self.bootstrap, topic, count, acks=acks))
