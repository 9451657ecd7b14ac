"""The Jepsen-style run: a real three-node strom cluster, one network namespace per node, a
workload on two client hosts recording every operation, a seeded nemesis (nemesis.py: kills,
pauses, the active controller paused, isolations, minority, non-transitive and one-way
partitions, two faults at once, rapid kill/restart cycles, group consumers on the minority
side), then the checker over the whole history and the run's availability (availability.py).

A run counts only if its faults happened: the history must show every fault kind, at least one
partition leader change and acknowledged writes while faults were active. Any anomaly fails the
test, and so does a cluster that takes no write within `RECOVERY_BOUND_S` of the final heal (a
correctness bound, far above a healthy recovery); the history stays in the run's folder.
`make chaos SEED=... DURATION=...` runs any length: the test's timeout derives from the duration.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from strom.node.meta_properties import format_directories, random_uuid

from . import netns
from .availability import fault_steps, measure
from .checker import Report, check
from .history import NEMESIS, Op, Recorder, load
from .lab import Lab, RemoteCallError
from .nemesis import KINDS, Nemesis
from .scripted import group_coordinator, quorum_leader

NODES = ["n1", "n2", "n3"]
CLIENTS = ["c1", "c2"]  # c1: producers, reader, half the group; c2: the other half
GROUP = "chaos-group"
RECOVERY_BOUND_S = 30.0
AFTER_HEAL_MAX_S = 45.0
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


def timeout_s(duration_s: float) -> float:
    """The test's timeout for a run of `duration_s`: the nemesis's own time plus the worst case
    of everything around it (start-up, the first pass running past a short duration, the
    recovery wait, the workload's end and final drain)."""
    setup_s, first_pass_overrun_s, workload_end_s = 90, 120, 180
    return duration_s + setup_s + first_pass_overrun_s + AFTER_HEAL_MAX_S + workload_end_s


pytestmark = [pytest.mark.faults, pytest.mark.timeout(timeout_s(_duration_s()))]


@pytest.fixture
def nemesis_recorder(tmp_path: Path) -> Iterator[Recorder]:
    with Recorder(tmp_path / "nemesis.jsonl") as recorder:
        yield recorder


@pytest.fixture
def lab(tmp_path: Path, nemesis_recorder: Recorder) -> Iterator[Lab]:
    netns.require()
    with Lab(
        [*NODES, *CLIENTS], mode="netns", workdir=tmp_path, on_fault=nemesis_recorder.fault
    ) as lab:
        yield lab
    assert not lab.leftovers(), "the lab left processes, namespaces or links behind"


def start_cluster(
    lab: Lab, workdir: Path, extra: dict[str, Any] | None = None
) -> dict[str, list[str]]:
    """`extra`: node configuration over FAST (test_txn_chaos.py's transaction settings)."""
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
            **(extra or {}),
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


def locators(lab: Lab, bootstrap: str) -> tuple[Callable[[], str | None], Callable[[], str | None]]:
    """The nemesis's run-time lookups, asked from c1: the active controller's host and the
    group coordinator's host (None when the cluster did not say in time)."""
    by_address = {f"{lab.addr(h)}:9092": h for h in NODES}

    def ask(fn: Callable[..., Any], *args: Any) -> Any:
        for _ in range(3):  # the previous fault may have left an election under way
            try:
                answer = lab.call_in("c1", fn, bootstrap, *args, 3_000, timeout_s=20)
            except (RemoteCallError, subprocess.TimeoutExpired):
                answer = None
            if answer is not None:
                return answer
        return None

    def controller() -> str | None:
        node_id = ask(quorum_leader)
        return NODES[node_id - 1] if isinstance(node_id, int) and 0 < node_id <= 3 else None

    def coordinator() -> str | None:
        return by_address.get(ask(group_coordinator, GROUP) or "")

    return controller, coordinator


def start_workload(lab: Lab, host: str, spec: dict[str, Any], workdir: Path) -> None:
    log = workdir / f"workload-{host}.log"
    lab.spawn(
        host, [sys.executable, "-m", "faults.workload", json.dumps(spec)],
        env={"PYTHONPATH": str(TESTS_DIR)}, cwd=TESTS_DIR, stdout=log, stderr=log,
    )  # fmt: skip


def steps_by_kind(ops: list[Op]) -> dict[str, list[dict[str, Any]]]:
    """The nemesis's fault steps in the history, by kind (what the run really did)."""
    steps: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for op in ops:
        if op.process == NEMESIS and op.f == "fault-start":
            steps[op.value["kind"]].append(op.value)
    return steps


def explain_group_anomalies(ops: list[Op], report: Report) -> str:
    """Who the members of each group-exclusivity anomaly were (consumer process, client host)
    and which fault steps ran around it: what a bug report needs."""
    processes = {
        op.value["member"]: op.process for op in ops if op.f == "assign" and op.type == "ok"
    }
    origin = ops[0].time_ns if ops else 0
    lines = []
    for anomaly in report.anomalies.get("group-exclusivity", [])[:5]:
        (a0, a1), (b0, b1) = anomaly.detail["windows_ns"]
        who = [processes.get(m, m) for m in anomaly.detail["members"]]
        lines.append(
            f"partition {anomaly.detail['partition']}: {who[0]} owned it "
            f"{(a0 - origin) / 1e9:.1f}-{(a1 - origin) / 1e9:.1f} s, {who[1]} "
            f"{(b0 - origin) / 1e9:.1f}-{(b1 - origin) / 1e9:.1f} s (c1: g0 g1, c2: g2 g3)"
        )
        low, high = min(a0, b0) - 10 * 10**9, max(a1, b1)
        lines.extend(
            f"  fault {(start - origin) / 1e9:.1f}-{(stop - origin) / 1e9:.1f} s: {value}"
            for start, stop, value in fault_steps(ops)
            if start < high and stop > low
        )
    return "\n".join(lines)


def test_no_acknowledged_write_is_lost_under_faults(
    lab: Lab, tmp_path: Path, nemesis_recorder: Recorder
) -> None:
    seed, duration = _seed(), _duration_s()
    print(f"\nchaos seed {seed}, {duration:.0f} s (replay: STROM_CHAOS_SEED={seed})")
    argvs = start_cluster(lab, tmp_path)
    bootstrap = ",".join(f"{lab.addr(h)}:9092" for h in NODES)
    healed = tmp_path / "healed"
    base = {"bootstrap": bootstrap, "topic": "chaos", "healed_flag": str(healed),
            "after_heal_max_s": AFTER_HEAL_MAX_S}  # fmt: skip
    histories = [tmp_path / f"history-{host}.jsonl" for host in CLIENTS]
    start_workload(lab, "c1", {**base, "history": str(histories[0]), "workers": 6,
                               "group_consumers": ["g0", "g1"]}, tmp_path)  # fmt: skip
    start_workload(lab, "c2", {**base, "history": str(histories[1]), "produce": False,
                               "read": False, "group_consumers": ["g2", "g3"]}, tmp_path)  # fmt: skip
    controller, coordinator = locators(lab, bootstrap)
    nemesis = Nemesis(
        lab, argvs, tmp_path, seed, nodes=NODES, clients=CLIENTS,
        record=nemesis_recorder.fault, locate_controller=controller,
        locate_coordinator=coordinator,
    )  # fmt: skip
    nemesis.run(duration)
    nemesis.heal_all()
    (tmp_path / "healed.tmp").write_text(str(time.monotonic_ns()))
    (tmp_path / "healed.tmp").rename(healed)  # the workload never reads half a number
    deadline = time.monotonic() + AFTER_HEAL_MAX_S + 180
    while any(lab.pid(c) is not None for c in CLIENTS) and time.monotonic() < deadline:
        time.sleep(0.5)
    logs = {c: (tmp_path / f"workload-{c}.log").read_text(errors="replace") for c in CLIENTS}
    for c in CLIENTS:
        assert lab.pid(c) is None, f"the workload on {c} did not finish:\n{logs[c][-3000:]}"
    nemesis_recorder.close()
    ops = load([*histories, tmp_path / "nemesis.jsonl"])
    report = check(ops)
    availability = measure(ops)
    steps = steps_by_kind(ops)
    changes = leader_changes(tmp_path)
    print(report)
    print(availability)
    print("fault steps: " + ", ".join(f"{kind}={len(found)}" for kind, found in steps.items()))
    print(f"partition leader changes: {changes}")
    # The run counts only if its faults happened and writes were acknowledged during them.
    assert not [kind for kind, found in steps.items() if not found], steps
    assert any(step["controller"] for step in steps["pause-controller"]), (
        "no pause-controller step paused the node the cluster named as its controller"
    )
    assert changes >= 1
    assert availability.acked_during_faults > 0, (
        "no write was acknowledged while faults were active"
    )
    assert report.acknowledged > 100, "too few acknowledged writes for a meaningful run"
    for c in CLIENTS:
        assert "Traceback" not in logs[c], logs[c][-3000:]
    assert report.ok, (
        f"anomalies (history kept in {tmp_path}):\n{report}\n"
        + explain_group_anomalies(ops, report)
    )
    recovered = availability.first_write_after_heal_s
    assert recovered is not None and recovered <= RECOVERY_BOUND_S, (
        f"no write acknowledged within {RECOVERY_BOUND_S:.0f} s of the final heal "
        f"(history kept in {tmp_path}):\n{availability}"
    )
    full = availability.full_recovery_after_heal_s
    assert full is not None and full <= RECOVERY_BOUND_S, (
        f"some partition took no write within {RECOVERY_BOUND_S:.0f} s of the final heal "
        f"(history kept in {tmp_path}):\n{availability}"
    )
