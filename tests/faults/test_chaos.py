"""The Jepsen-style run: a real three-node strom cluster, one network namespace per node, a
workload recording every operation, a seeded nemesis (kill -9 and restart, SIGSTOP/SIGCONT,
isolation, minority/majority partitions), then the checker over the whole history.

A run counts only if its faults happened: it asserts minimum numbers of kills, pauses and
partitions, at least one partition leader change, and acknowledged writes while faults were
active. Any anomaly fails the test and the history stays in the run's folder for replay.
`make chaos SEED=... DURATION=...` runs longer schedules.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from strom.node.meta_properties import format_directories, random_uuid

from . import netns
from .checker import check
from .history import Recorder, load
from .lab import Lab

pytestmark = pytest.mark.faults

NODES = ["n1", "n2", "n3"]
TESTS_DIR = Path(__file__).resolve().parents[1]
FAST = {
    "controller.quorum.election.timeout.ms": 1000,
    "controller.quorum.tick.ms": 100,
    "broker.session.timeout.ms": 3000,
    "broker.heartbeat.interval.ms": 300,
    "replica.lag.time.max.ms": 3000,
    "replica.fetch.wait.max.ms": 200,
    "group.consumer.session.timeout.ms": 4000,
    "group.consumer.heartbeat.interval.ms": 300,
    "group.initial.rebalance.delay.ms": 300,
    "offsets.topic.num.partitions": 3,
    "num.partitions": 3,
    "default.replication.factor": 3,
    "min.insync.replicas": 2,
    "log.level": "INFO",
}


def _seed() -> int:
    return int(os.environ.get("STROM_CHAOS_SEED", random.SystemRandom().randrange(1 << 30)))


def _duration_s() -> float:
    return float(os.environ.get("STROM_CHAOS_DURATION_S", "60"))


@pytest.fixture
def nemesis_recorder(tmp_path: Path) -> Iterator[Recorder]:
    with Recorder(tmp_path / "nemesis.jsonl") as recorder:
        yield recorder


@pytest.fixture
def lab(tmp_path: Path, nemesis_recorder: Recorder) -> Iterator[Lab]:
    netns.require()
    with Lab(
        [*NODES, "c1"], mode="netns", workdir=tmp_path, on_fault=nemesis_recorder.fault
    ) as lab:
        yield lab
    assert not lab.leftovers(), "the lab left processes, namespaces or links behind"


def start_cluster(lab: Lab, workdir: Path) -> dict[str, list[str]]:
    cluster_id = random_uuid()
    voters = ",".join(f"{i}@{lab.addr(h)}:9093" for i, h in enumerate(NODES, 1))
    argvs = {}
    for node_id, host in enumerate(NODES, 1):
        data = workdir / host / "data"
        config = {
            "node.id": node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{lab.addr(host)}:9092,CONTROLLER://{lab.addr(host)}:9093",
            "log.dirs": str(data),
            **FAST,
        }
        (workdir / host).mkdir(parents=True, exist_ok=True)
        path = workdir / host / "node.yaml"
        path.write_text(yaml.safe_dump(config))
        format_directories([data], cluster_id, node_id)
        argvs[host] = [sys.executable, "-m", "strom.node.cli", "node", "run", "--config", str(path)]
        lab.spawn(host, argvs[host], stdout=workdir / f"{host}.log", stderr=workdir / f"{host}.log")
    for host in NODES:
        lab.wait_listening(host, 9092, timeout_s=30)
    return argvs


class Nemesis:
    """A seeded schedule of faults, cycling through every kind so each run has them all."""

    def __init__(self, lab: Lab, argvs: dict[str, list[str]], workdir: Path, seed: int) -> None:
        self.lab, self.argvs, self.workdir = lab, argvs, workdir
        self.rng = random.Random(seed)
        self.counts = {"kill": 0, "pause": 0, "isolate": 0, "partition": 0}
        self.windows: list[tuple[int, int]] = []  # monotonic ns of each fault's span

    def _hold(self) -> None:
        time.sleep(self.rng.uniform(2.5, 4.5))

    def run(self, duration_s: float) -> None:
        kinds = list(self.counts)
        end = time.monotonic() + duration_s
        i = 0
        time.sleep(5)  # let the workload get going first
        while time.monotonic() < end - 5:
            kind = kinds[i % len(kinds)] if i < len(kinds) else self.rng.choice(kinds)
            i += 1
            victim = self.rng.choice(NODES)
            started = time.monotonic_ns()
            if kind == "kill":
                self.lab.kill(victim)
                self._hold()
                self.lab.spawn(victim, self.argvs[victim], stdout=self.workdir / f"{victim}.log",
                               stderr=self.workdir / f"{victim}.log")  # fmt: skip
            elif kind == "pause":
                self.lab.pause(victim)
                self._hold()
                self.lab.resume(victim)
            elif kind == "isolate":
                self.lab.isolate(victim)
                self._hold()
                self.lab.heal()
            else:
                self.lab.partition([victim], [h for h in NODES if h != victim] + ["c1"])
                self._hold()
                self.lab.heal()
            self.counts[kind] += 1
            self.windows.append((started, time.monotonic_ns()))
            time.sleep(self.rng.uniform(1.5, 3.0))

    def heal_all(self) -> None:
        self.lab.heal()
        for host in NODES:
            pid = self.lab.pid(host)
            if pid is None:
                self.lab.spawn(host, self.argvs[host], stdout=self.workdir / f"{host}.log",
                               stderr=self.workdir / f"{host}.log")  # fmt: skip
            else:
                self.lab.resume(host)


def leader_changes(workdir: Path) -> int:
    """Partition leaderships taken after the first one of each partition, from node logs."""
    seen: dict[str, int] = {}
    for host in NODES:
        for match in re.finditer(
            r"(chaos-\d+): leader in epoch (\d+)",
            (workdir / f"{host}.log").read_text(errors="replace"),
        ):
            seen[match[1]] = max(seen.get(match[1], 0), int(match[2]))
    return sum(seen.values())


def test_no_acknowledged_write_is_lost_under_faults(
    lab: Lab, tmp_path: Path, nemesis_recorder: Recorder
) -> None:
    seed, duration = _seed(), _duration_s()
    print(f"\nchaos seed {seed}, {duration:.0f} s (replay: STROM_CHAOS_SEED={seed})")
    argvs = start_cluster(lab, tmp_path)
    bootstrap = ",".join(f"{lab.addr(h)}:9092" for h in NODES)
    history = tmp_path / "history.jsonl"
    healed = tmp_path / "healed"
    spec = {"bootstrap": bootstrap, "topic": "chaos", "duration_s": duration,
            "history": str(history), "healed_flag": str(healed), "workers": 6}  # fmt: skip
    lab.spawn(
        "c1", [sys.executable, "-m", "faults.workload", json.dumps(spec)],
        env={"PYTHONPATH": str(TESTS_DIR)}, cwd=TESTS_DIR,
        stdout=tmp_path / "workload.log", stderr=tmp_path / "workload.log",
    )  # fmt: skip
    nemesis = Nemesis(lab, argvs, tmp_path, seed)
    nemesis.run(duration)
    nemesis.heal_all()
    healed.touch()
    deadline = time.monotonic() + 180
    while lab.pid("c1") is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    workload_log = (tmp_path / "workload.log").read_text(errors="replace")
    assert lab.pid("c1") is None, f"the workload did not finish:\n{workload_log[-3000:]}"
    nemesis_recorder.close()
    ops = load([history, tmp_path / "nemesis.jsonl"])
    report = check(ops)
    print(report)
    print(f"faults: {nemesis.counts}; partition leader changes: {leader_changes(tmp_path)}")
    # The run counts only if its faults happened and writes were acknowledged during them.
    assert all(n >= 1 for n in nemesis.counts.values()), nemesis.counts
    assert leader_changes(tmp_path) >= 1
    acked_during_faults = sum(
        1
        for op in ops
        if op.type == "ok" and op.f == "send"
        and any(start <= op.time_ns <= end for start, end in nemesis.windows)
    )  # fmt: skip
    assert acked_during_faults > 0, "no write was acknowledged while faults were active"
    assert report.acknowledged > 100, "too few acknowledged writes for a meaningful run"
    assert "Traceback" not in workload_log, workload_log[-3000:]
    assert report.ok, f"anomalies (history kept in {tmp_path}):\n{report}"
