"""The nemesis's schedule against a fake lab and a fake clock (no processes, no namespaces):
every kind in the first pass whatever the duration, one seed one schedule, every fault undone,
and each kind doing what its name says (the controller paused, a non-transitive cut, one
direction only, two faults at once, kill cycles, half the group's consumers on the minority)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from .history import NEMESIS, Recorder
from .nemesis import COMPOSABLE, KINDS, PROCESS_KINDS, TARGETED, Nemesis

pytestmark = pytest.mark.faults

NODES = ["n1", "n2", "n3"]
CLIENTS = ["c1", "c2"]


class FakeLab:
    """Tracks what a real Lab would hold: running, paused, and the blocked directed pairs."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.running = set(NODES)
        self.paused: set[str] = set()
        self.blocked: set[tuple[str, str]] = set()
        self.actions: list[tuple[float, str, Any]] = []

    def pid(self, host: str) -> int | None:
        return 1 if host in self.running else None

    def spawn(self, host: str, argv: Sequence[str], *, stdout: Path, stderr: Path) -> int:
        assert host not in self.running, f"{host} already runs"
        self.running.add(host)
        self.actions.append((self.clock[0], "spawn", host))
        return 1

    def kill(self, host: str) -> int | None:
        assert host in self.running, f"kill of {host}, which is not running"
        self.running.discard(host)
        self.paused.discard(host)
        self.actions.append((self.clock[0], "kill", host))
        return -9

    def pause(self, host: str) -> None:
        assert host in self.running and host not in self.paused, f"pause of {host}"
        self.paused.add(host)
        self.actions.append((self.clock[0], "pause", host))

    def resume(self, host: str) -> None:
        assert host in self.running
        self.paused.discard(host)
        self.actions.append((self.clock[0], "resume", host))

    def isolate(self, host: str) -> None:
        others = [h for h in [*NODES, *CLIENTS] if h != host]
        self.blocked |= {(host, o) for o in others} | {(o, host) for o in others}
        self.actions.append((self.clock[0], "isolate", host))

    def partition(self, group_a: Sequence[str], group_b: Sequence[str]) -> None:
        assert not set(group_a) & set(group_b)
        self.blocked |= {(a, b) for a in group_a for b in group_b}
        self.blocked |= {(b, a) for a in group_a for b in group_b}
        self.actions.append((self.clock[0], "partition", (sorted(group_a), sorted(group_b))))

    def block(self, src: str, dst: str) -> None:
        self.blocked.add((src, dst))
        self.actions.append((self.clock[0], "block", (src, dst)))

    def heal(self) -> None:
        self.blocked.clear()
        self.actions.append((self.clock[0], "heal", None))


def make(
    seed: int, *, controller: str | None = "n2", coordinator: str | None = "n3"
) -> tuple[Nemesis, FakeLab, Recorder, list[float]]:
    now = [0.0]

    def sleep(seconds: float) -> None:
        assert seconds >= 0
        now[0] += seconds

    lab = FakeLab(now)
    recorder = Recorder(clock=lambda: int(now[0] * 1e9))
    argvs = {host: ["node", host] for host in NODES}
    nemesis = Nemesis(
        lab, argvs, Path("/nonexistent"), seed, nodes=NODES, clients=CLIENTS,
        record=recorder.fault, locate_controller=lambda: controller,
        locate_coordinator=lambda: coordinator, sleep=sleep, clock=lambda: now[0],
    )  # fmt: skip
    return nemesis, lab, recorder, now


def started(recorder: Recorder) -> list[dict[str, Any]]:
    """The fault-start records, without their wall-clock stamps."""
    return [
        {k: v for k, v in op.value.items() if k != "wall"}
        for op in recorder.ops
        if op.process == NEMESIS and op.f == "fault-start"
    ]


@pytest.mark.parametrize("seed", range(20))
def test_a_short_run_still_has_every_kind_and_leaves_nothing_behind(seed: int) -> None:
    nemesis, lab, recorder, _ = make(seed)
    nemesis.run(duration_s=1)
    # The last step is still active: the final heal ends it.
    last = started(recorder)[-1]
    assert last["step"] == len(KINDS) + 1 and last["kind"] != "kill-cycle"
    assert (lab.running != set(NODES)) or lab.paused or lab.blocked
    assert [op.f for op in recorder.ops if op.f.startswith("fault-")][-1] == "fault-start"
    nemesis.heal_all()
    assert {step["kind"] for step in started(recorder)} == set(KINDS)
    assert all(n >= 1 for n in nemesis.counts.values())
    assert lab.running == set(NODES) and not lab.paused and not lab.blocked
    stops = [op for op in recorder.ops if op.f == "fault-stop"]
    assert [op.value["step"] for op in stops] == list(range(1, len(KINDS) + 2))
    assert recorder.ops[-1].f == "final-heal"


def test_a_long_run_keeps_faulting_until_its_duration_and_one_seed_is_one_schedule() -> None:
    first, _, recorder, now = make(7)
    first.run(duration_s=300)
    assert 300 - 5 - 30 <= now[0] <= 300 + 30  # a step ends at most one hold after the end
    assert len(started(recorder)) > 2 * len(KINDS)
    again, _, replay, _ = make(7)
    again.run(duration_s=300)
    assert started(replay) == started(recorder)
    other, _, different, _ = make(8)
    other.run(duration_s=300)
    assert started(different) != started(recorder)


def run_kind(kind: str, seed: int = 1, **where: str | None) -> tuple[FakeLab, dict[str, Any]]:
    nemesis, lab, recorder, _ = make(seed, **where)
    nemesis.step(kind)
    (step,) = started(recorder)
    assert lab.running == set(NODES) and not lab.paused and not lab.blocked, "not undone"
    return lab, step


def test_pause_controller_pauses_the_node_the_cluster_names_for_3_to_12_s() -> None:
    for seed in range(10):
        lab, step = run_kind("pause-controller", seed, controller="n2")
        pause = [a for a in lab.actions if a[1] == "pause"]
        resume = [a for a in lab.actions if a[1] == "resume"]
        assert pause[0][2] == resume[0][2] == "n2" and step["controller"] is True
        assert 3 <= resume[0][0] - pause[0][0] <= 12
    lab, step = run_kind("pause-controller", controller=None)  # the cluster did not say
    assert step["controller"] is False and [a[1] for a in lab.actions] == ["pause", "resume"]


def test_nontransitive_cuts_two_nodes_that_both_still_reach_the_third() -> None:
    lab, step = run_kind("nontransitive")
    (_, _, (a, b)) = next(a for a in lab.actions if a[1] == "partition")
    assert len(a) == len(b) == 1 and sorted(step["cut"]) == sorted([*a, *b])
    (bridge,) = step["bridge"]
    assert bridge not in (*a, *b)


def test_one_way_drops_one_direction_only() -> None:
    nemesis, lab, _, _ = make(3)
    blocked: list[set[tuple[str, str]]] = []
    real_block = lab.block

    def block(src: str, dst: str) -> None:
        real_block(src, dst)
        blocked.append(set(lab.blocked))

    lab.block = block  # type: ignore[method-assign]
    nemesis.step("one-way")
    ((src, dst),) = blocked[0]
    assert src != dst and src in NODES and dst in NODES and (dst, src) not in blocked[0]
    towards = set()
    for seed in range(20):
        lab, step = run_kind("one-way", seed, controller="n2")
        towards.add(step["to_controller"])
        if step["to_controller"]:
            assert (step["src"], step["dst"]) == (step["src"], "n2") and step["src"] != "n2"
    assert towards == {True, False}


def test_double_holds_two_faults_at_once_on_different_process_victims() -> None:
    seen: set[tuple[str, str]] = set()
    for seed in range(60):
        lab, step = run_kind("double", seed, controller="n1")
        first, second = step["parts"]
        assert first["kind"] != second["kind"]
        seen.add((first["kind"], second["kind"]))
        if first["kind"] in PROCESS_KINDS and second["kind"] in PROCESS_KINDS:
            assert first["host"] != second["host"]
        # both started before either was undone
        undo = [i for i, a in enumerate(lab.actions) if a[1] in ("heal", "resume", "spawn")]
        do = [i for i, a in enumerate(lab.actions) if a[1] not in ("heal", "resume", "spawn")]
        assert len(do) == 2 and max(do) < min(undo)
    assert {kind for pair in seen for kind in pair} == set(COMPOSABLE)


def test_kill_cycle_kills_and_restarts_one_node_three_to_five_times() -> None:
    for seed in range(10):
        lab, step = run_kind("kill-cycle", seed)
        kills = [a for a in lab.actions if a[1] == "kill"]
        spawns = [a for a in lab.actions if a[1] == "spawn"]
        assert 3 <= len(kills) == len(spawns) == step["cycles"] <= 5
        assert {a[2] for a in kills + spawns} == {step["host"]}


def test_minority_consumers_puts_the_second_client_host_with_one_node() -> None:
    coordinators = set()
    for seed in range(20):
        lab, step = run_kind("minority-consumers", seed, coordinator="n3")
        (_, _, (a, b)) = next(a for a in lab.actions if a[1] == "partition")
        minority, majority = (a, b) if "c2" in a else (b, a)
        assert len([h for h in minority if h in NODES]) == 1 and "c2" in minority
        assert "c1" in majority and len([h for h in majority if h in NODES]) == 2
        coordinators.add(step["coordinator"])
        if step["coordinator"]:
            assert "n3" in minority
        assert step["hold_s"] > 4  # outlasts the chaos config's group session timeout
    assert coordinators == {True, False}


def test_coordinator_kinds_fault_the_node_the_cluster_names_and_are_never_drawn() -> None:
    for kind, action, undo in (("kill-coordinator", "kill", "spawn"),
                               ("pause-coordinator", "pause", "resume")):  # fmt: skip
        lab, step = run_kind(kind, coordinator="n3")
        assert [a[1:] for a in lab.actions] == [(action, "n3"), (undo, "n3")]
        assert step["host"] == "n3" and step["coordinator"] is True
        lab, step = run_kind(kind, coordinator=None)  # the cluster did not say: a drawn node
        assert step["coordinator"] is False and [a[1] for a in lab.actions] == [action, undo]
    nemesis, _, recorder, _ = make(3)
    nemesis.run(duration_s=300)
    assert not {step["kind"] for step in started(recorder)} & set(TARGETED)
    with pytest.raises(AssertionError, match="unknown fault kind"):
        nemesis.step("kill-everything")
