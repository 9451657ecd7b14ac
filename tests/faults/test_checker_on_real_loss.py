"""The checker can fail on a real cluster: a scripted run that loses acknowledged writes.

Followers paused, acks=1 writes acknowledged by the leader alone, the leader killed, unclean
leader election on: a follower without those writes becomes leader, the old leader comes back
and truncates them. The checker must report lost writes — if it did not, a clean chaos run would
prove nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from strom.node.meta_properties import format_directories, random_uuid

from . import netns, scripted
from .checker import check
from .history import Recorder, load
from .lab import Lab
from .test_chaos import FAST

pytestmark = pytest.mark.faults

VOTERS = ["n1", "n2", "n3"]
BROKERS = ["n4", "n5"]  # broker-only: pausing them keeps the metadata quorum


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    netns.require()
    with Lab([*VOTERS, *BROKERS, "c1"], mode="netns", workdir=tmp_path) as lab:
        yield lab


def test_unclean_election_after_acks_1_loses_writes_and_the_checker_says_so(
    lab: Lab, tmp_path: Path
) -> None:
    cluster_id = random_uuid()
    voters = ",".join(f"{i}@{lab.addr(h)}:9093" for i, h in enumerate(VOTERS, 1))
    argvs: dict[str, list[str]] = {}
    for node_id, host in enumerate([*VOTERS, *BROKERS], 1):
        data = tmp_path / host / "data"
        config = {
            **FAST,
            "node.id": node_id,
            "controller.quorum.voters": voters,
            "log.dirs": str(data),
            "listeners": f"PLAINTEXT://{lab.addr(host)}:9092"
            + (f",CONTROLLER://{lab.addr(host)}:9093" if host in VOTERS else ""),
            "process.roles": "broker,controller" if host in VOTERS else "broker",
            "min.insync.replicas": 1,
        }
        (tmp_path / host).mkdir()
        (tmp_path / host / "node.yaml").write_text(yaml.safe_dump(config))
        format_directories([data], cluster_id, node_id)
        argvs[host] = [sys.executable, "-m", "strom.node.cli", "node", "run", "--config",
                       str(tmp_path / host / "node.yaml")]  # fmt: skip
        lab.spawn(
            host, argvs[host], stdout=tmp_path / f"{host}.log", stderr=tmp_path / f"{host}.log"
        )
    for host in [*VOTERS, *BROKERS]:
        lab.wait_listening(host, 9092, timeout_s=30)
    bootstrap = ",".join(f"{lab.addr(h)}:9092" for h in VOTERS)
    env_ok = {"timeout_s": 60.0}

    # Listening is not registered: placement spreads replicas over the unfenced brokers only,
    # and this script needs a partition whose followers are exactly the two broker-only nodes.
    deadline = time.monotonic() + 60
    while True:
        try:
            if lab.call_in("c1", scripted.active_brokers, bootstrap) == [1, 2, 3, 4, 5]:
                break
        except Exception:
            pass
        assert time.monotonic() < deadline, "the five brokers never all registered"
        time.sleep(0.5)
    while True:
        try:
            placements = lab.call_in("c1", scripted.create_topic, bootstrap, "fragile",
                                     {"unclean.leader.election.enable": "true"}, **env_ok)  # fmt: skip
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    fragile = [(p, r) for p, r in placements if set(r[1:]) == {4, 5}]
    assert fragile, f"no partition is led by a voter and followed by 4 and 5: {placements}"
    partition, replicas = fragile[0]
    leader_host = VOTERS[replicas[0] - 1]
    histories = [tmp_path / f"h{i}.jsonl" for i in range(4)]
    assert lab.call_in("c1", scripted.produce, bootstrap, "fragile", partition, "before", 20,
                       str(histories[0]), **env_ok) == 20  # fmt: skip
    with Recorder(tmp_path / "nemesis.jsonl") as nemesis:
        for host in BROKERS:
            lab.pause(host)
            nemesis.fault("pause", {"host": host})
        deadline = time.monotonic() + 30
        while lab.call_in("c1", scripted.isr, bootstrap, "fragile", partition)[1] != [replicas[0]]:
            assert time.monotonic() < deadline, "the paused followers never left the ISR"
            time.sleep(0.5)
        # Acknowledged by the leader alone: nobody else has these.
        assert lab.call_in("c1", scripted.produce, bootstrap, "fragile", partition, "doomed", 20,
                           str(histories[1]), **env_ok) == 20  # fmt: skip
        lab.kill(leader_host)
        nemesis.fault("kill", {"host": leader_host})
        for host in BROKERS:
            lab.resume(host)
            nemesis.fault("resume", {"host": host})
        deadline = time.monotonic() + 30
        while lab.call_in("c1", scripted.isr, bootstrap, "fragile", partition)[0] not in (4, 5):
            assert time.monotonic() < deadline, "no unclean election happened"
            time.sleep(0.5)
        lab.call_in("c1", scripted.produce, bootstrap, "fragile", partition, "after", 20,
                    str(histories[2]), **env_ok)  # fmt: skip
        lab.spawn(leader_host, argvs[leader_host], stdout=tmp_path / f"{leader_host}.log",
                  stderr=tmp_path / f"{leader_host}.log")  # fmt: skip
        nemesis.fault("restart", {"host": leader_host})
    lab.call_in("c1", scripted.drain, bootstrap, "fragile", partition, str(histories[3]), **env_ok)
    report = check(load([*histories, tmp_path / "nemesis.jsonl"]))
    print(report)
    assert not report.ok
    assert report.count("lost-write") >= 1, str(report)
