"""Transactions under real faults (issue #21): the transactional workload (txn_workload.py: a
producer writing two partitions per transaction, committing or aborting at random, and a
read_committed reader) against a three-node cluster in network namespaces, while the nemesis
kills, pauses, isolates and partitions nodes, and kills and pauses the node that coordinates the
workload's transactional id (found at run time: its coordinator moves with each failover, and
a kill between EndTxn's answer and the markers leaves a decided transaction for the next
coordinator to finish); then txn_checker.py over the history: no aborted record read, every
transaction read all or nothing and in order, no acknowledged commit lost, no last stable
offset going backwards for the reader.

A separate, slow test rather than part of test_chaos.py: that run's budget (about 75 s in CI)
has no room for a second workload's warm-up, coordinator failovers and final drain.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .history import Recorder, load
from .lab import Lab, RemoteCallError
from .nemesis import Nemesis
from .scripted import transaction_coordinator
from .test_chaos import CLIENTS, NODES, TESTS_DIR, lab, nemesis_recorder, start_cluster
from .txn_checker import check_transactions

__all__ = ["lab", "nemesis_recorder"]  # the fixtures this module uses

KINDS = ("kill", "pause", "isolate", "partition", "kill-coordinator", "pause-coordinator")
TRANSACTIONAL_ID = "chaos-txn"  # txn_workload.TRANSACTIONAL_ID
TXN_CONFIG = {
    "transaction.state.log.num.partitions": 3,
    "transaction.state.log.replication.factor": 3,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": 500,
}

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(400)]


def test_transactions_stay_atomic_under_faults(
    lab: Lab, tmp_path: Path, nemesis_recorder: Recorder
) -> None:
    seed = int(os.environ.get("STROM_CHAOS_SEED", random.SystemRandom().randrange(1 << 30)))
    print(f"\ntransactional chaos seed {seed} (replay: STROM_CHAOS_SEED={seed})")
    argvs = start_cluster(lab, tmp_path, TXN_CONFIG)
    bootstrap = ",".join(f"{lab.addr(h)}:9092" for h in NODES)
    healed, history = tmp_path / "healed", tmp_path / "history-txn.jsonl"
    spec = {"bootstrap": bootstrap, "topic": "chaos-txn", "history": str(history),
            "healed_flag": str(healed), "seed": seed, "after_heal_s": 5}  # fmt: skip
    log = tmp_path / "workload-c1.log"
    lab.spawn(
        "c1", [sys.executable, "-m", "faults.txn_workload", json.dumps(spec)],
        env={"PYTHONPATH": str(TESTS_DIR)}, cwd=TESTS_DIR, stdout=log, stderr=log,
    )  # fmt: skip
    nemesis = Nemesis(
        lab, argvs, tmp_path, seed, nodes=NODES, clients=CLIENTS,
        record=nemesis_recorder.fault, locate_controller=lambda: None,
        locate_coordinator=coordinator_of(lab, bootstrap, TRANSACTIONAL_ID),
    )  # fmt: skip
    time.sleep(8)  # the cluster makes its internal topics and the first transactions commit
    kinds = list(KINDS)
    random.Random(seed).shuffle(kinds)
    for kind in kinds:
        nemesis.step(kind)
        time.sleep(2)
    nemesis.heal_all()
    (tmp_path / "healed.tmp").write_text(str(time.monotonic_ns()))
    (tmp_path / "healed.tmp").rename(healed)
    deadline = time.monotonic() + 240
    while lab.pid("c1") is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    text = log.read_text(errors="replace")
    assert lab.pid("c1") is None, f"the transactional workload did not finish:\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    nemesis_recorder.close()
    ops = load([history, tmp_path / "nemesis.jsonl"])
    report = check_transactions(ops)
    print(report)
    targeted = [op.value for op in ops if op.f == "fault-start" and "coordinator" in op.value]
    print("coordinator faults: " + ", ".join(
        f"{v['kind']} {v['host']} (the coordinator: {v['coordinator']})" for v in targeted
    ))  # fmt: skip
    assert report.faults.get("fault-start", 0) == len(KINDS), report.faults
    assert report.committed >= 10 and report.aborted >= 3, (
        f"too few transactions for a meaningful run:\n{report}"
    )
    assert report.ok, f"anomalies (history kept in {tmp_path}):\n{report}"


def coordinator_of(lab: Lab, bootstrap: str, transactional_id: str) -> Callable[[], str | None]:
    """The host coordinating `transactional_id` now, asked from c1 (None when no node said)."""
    by_address = {f"{lab.addr(h)}:9092": h for h in NODES}

    def locate() -> str | None:
        for _ in range(3):  # the previous fault may have left the coordinator moving
            try:
                answer = lab.call_in("c1", transaction_coordinator, bootstrap, transactional_id,
                                     3_000, timeout_s=20)  # fmt: skip
            except (RemoteCallError, subprocess.TimeoutExpired):
                answer = None
            if answer is not None:
                return by_address.get(answer)
        return None

    return locate
