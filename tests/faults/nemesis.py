"""The chaos nemesis: a seeded schedule of real faults against a three-node cluster in a Lab.

Kinds (`KINDS`); a step starts one, holds it, undoes it, then waits before the next:

    kill                SIGKILL a node, keep it down, start it again from its disk
    pause               SIGSTOP a node, SIGCONT it (a GC pause, a stuck disk)
    isolate             cut one node off from every host, both ways
    partition           one node | the other nodes and the clients (a minority partition)
    pause-controller    SIGSTOP the active controller (the metadata quorum's leader) for 3-12 s
    nontransitive       cut A <-> B while both still reach C and the clients
    one-way             drop the packets of one direction of one node-to-node link only (half
                        the time the direction towards the active controller)
    kill-cycle          kill and restart one node 3-5 times in quick succession (some kills land
                        while it is still starting up or catching up)
    minority-consumers  the minority side of a partition holds one node and the client host of
                        half the group's consumers (half the time the node is the group's
                        coordinator); the hold outlasts the group session timeout
    double              two of the kinds in `COMPOSABLE` at once, on different victims where
                        both stop a process

Targeted kinds, run only when a test asks for them by name (`step`), never drawn by `run`:

    kill-coordinator    SIGKILL the node `locate_coordinator` names (a group's or a
                        transactional id's coordinator: the test decides), restart it after the
                        hold; the coordinator's state must move to another node and back
    pause-coordinator   SIGSTOP that node for the hold, then SIGCONT

The first pass runs every kind once, in a seeded order, even when the run's duration is over
before it ends: a run of any length has every kind. Later steps draw kinds at random. The last
step stays active until `heal_all` (the final heal) ends it, so the recovery after the final heal
is measured from a real fault. Every step
is recorded around its faults as a `fault-start` record (kind, victims, hold) and a `fault-stop`
record with the same step number; `heal_all` ends the run with a `final-heal` record. The lab
records each raw action (kill, pause, partition, ...) in between, so the history shows both.

Victims that depend on the cluster (the active controller, the group coordinator) are found at
run time through the `locate_*` callables; everything else is drawn from the seed. Draws do not
depend on run-time answers, so one seed gives one sequence of kinds, holds and draws.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SINGLE_HOLD_S = (2.0, 4.0)
CONTROLLER_PAUSE_S = (3.0, 12.0)
KILL_CYCLES = (3, 5)
KILL_CYCLE_DOWN_S = (0.2, 1.0)
KILL_CYCLE_UP_S = (0.5, 2.5)
# Longer than the group session timeout (4 s in the chaos config), so the group does move.
MINORITY_HOLD_S = (5.0, 8.0)
GAP_S = (1.0, 2.0)
WARM_UP_S = 5.0

COMPOSABLE = (
    "kill",
    "pause",
    "isolate",
    "partition",
    "pause-controller",
    "nontransitive",
    "one-way",
)
KINDS = (*COMPOSABLE, "kill-cycle", "minority-consumers", "double")
LEFT_ACTIVE = tuple(kind for kind in KINDS if kind != "kill-cycle")  # the run's last step
PROCESS_KINDS = frozenset({"kill", "pause", "pause-controller"})
TARGETED = ("kill-coordinator", "pause-coordinator")


class FaultLab(Protocol):
    """What the nemesis uses of `Lab` (a fake one drives the unit tests)."""

    def pid(self, host: str) -> int | None: ...
    def spawn(self, host: str, argv: Sequence[str], *, stdout: Path, stderr: Path) -> int: ...
    def kill(self, host: str) -> int | None: ...
    def pause(self, host: str) -> None: ...
    def resume(self, host: str) -> None: ...
    def isolate(self, host: str) -> None: ...
    def partition(self, group_a: Sequence[str], group_b: Sequence[str]) -> None: ...
    def block(self, src: str, dst: str) -> None: ...
    def heal(self) -> None: ...


Record = Callable[[str, dict[str, Any]], object]
Locate = Callable[[], str | None]


@dataclass(slots=True)
class _Active:
    """One running fault: what `stop` must undo."""

    kind: str
    details: dict[str, Any]
    killed: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    network: bool = False


class Nemesis:
    """See the module docstring. `nodes` are the cluster's hosts, `clients` the client hosts
    (the first runs the producers; the second, if any, the minority-side group consumers)."""

    def __init__(
        self,
        lab: FaultLab,
        argvs: dict[str, list[str]],
        workdir: Path,
        seed: int,
        *,
        nodes: Sequence[str],
        clients: Sequence[str],
        record: Record,
        locate_controller: Locate,
        locate_coordinator: Locate,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert len(nodes) == 3, "the kinds are written for three nodes (a majority of two)"
        self.lab, self.argvs, self.workdir = lab, argvs, workdir
        self.nodes, self.clients = list(nodes), list(clients)
        self.rng = random.Random(seed)
        self._record, self._sleep, self._clock = record, sleep, clock
        self._locate_controller, self._locate_coordinator = locate_controller, locate_coordinator
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.steps = 0
        self._left_active: tuple[int, str] | None = None  # (step, kind) that heal_all ends

    # --- the schedule ---

    def run(self, duration_s: float) -> None:
        """Fault the cluster for about `duration_s` (longer if the first pass needs it). The
        last step is left active: `heal_all` ends it, so the recovery measured from the final
        heal is a recovery from a real fault."""
        end = self._clock() + duration_s
        first_pass = list(KINDS)
        self.rng.shuffle(first_pass)
        self._sleep(WARM_UP_S)  # let the workload get going first
        while first_pass or self._clock() < end - WARM_UP_S:
            kind = first_pass.pop(0) if first_pass else self.rng.choice(KINDS)
            self.step(kind)
            self._sleep(self.rng.uniform(*GAP_S))
        self.step(self.rng.choice(LEFT_ACTIVE), leave_active=True)

    def step(self, kind: str, *, leave_active: bool = False) -> None:
        """Start one fault of `kind`, hold it, undo it; recorded as fault-start/fault-stop.
        With `leave_active` it is held until `heal_all`, which records its stop."""
        assert kind in KINDS or kind in TARGETED, f"unknown fault kind {kind!r}"
        self.steps += 1
        number = self.steps
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "kill-cycle":
            assert not leave_active, "a kill cycle ends by itself"
            self._kill_cycle(number)
            self._record("fault-stop", {"step": number, "kind": kind})
            return
        hold = self._hold(kind)
        if kind == "double":
            one, two = self.rng.sample(COMPOSABLE, 2)
            first = self._start(one, set())
            parts = [first, self._start(two, {*first.killed, *first.paused})]
            details: dict[str, Any] = {"parts": [{"kind": f.kind, **f.details} for f in parts]}
        else:
            parts = [self._start(kind, set())]
            details = dict(parts[0].details)
        self._record(
            "fault-start",
            {"step": number, "kind": kind, "hold_s": hold, "wall": _wall(), **details},
        )
        if leave_active:
            self._left_active = (number, kind)
            return
        self._sleep(hold)
        for fault in parts:
            self._stop(fault)
        self._record("fault-stop", {"step": number, "kind": kind})

    def _hold(self, kind: str) -> float:
        if kind == "pause-controller":
            return self.rng.uniform(*CONTROLLER_PAUSE_S)
        if kind == "minority-consumers":
            return self.rng.uniform(*MINORITY_HOLD_S)
        return self.rng.uniform(*SINGLE_HOLD_S)

    def _pick(self, draw: float, exclude: set[str]) -> str:
        """A node chosen by `draw` in [0, 1) among those not in `exclude` (draws are made
        whether or not a choice is needed, so the seed's sequence never depends on the run)."""
        choices = [n for n in self.nodes if n not in exclude] or self.nodes
        return choices[int(draw * len(choices))]

    # --- single faults ---

    def _start(self, kind: str, taken: set[str]) -> _Active:
        """Start one composable fault (or minority-consumers). `taken`: nodes another running
        fault already stopped or killed, which a process fault must not pick again."""
        a, b, c = self.rng.random(), self.rng.random(), self.rng.random()
        if kind == "kill":
            victim = self._pick(a, taken)
            self.lab.kill(victim)
            return _Active(kind, {"host": victim}, killed=[victim])
        if kind == "pause":
            victim = self._pick(a, taken)
            self.lab.pause(victim)
            return _Active(kind, {"host": victim}, paused=[victim])
        if kind == "pause-controller":
            found = self._locate_controller()
            victim = found if found in self.nodes and found not in taken else self._pick(a, taken)
            self.lab.pause(victim)
            return _Active(kind, {"host": victim, "controller": found == victim}, paused=[victim])
        if kind in TARGETED:
            found = self._locate_coordinator()
            victim = found if found in self.nodes and found not in taken else self._pick(a, taken)
            details = {"host": victim, "coordinator": found == victim}
            if kind == "kill-coordinator":
                self.lab.kill(victim)
                return _Active(kind, details, killed=[victim])
            self.lab.pause(victim)
            return _Active(kind, details, paused=[victim])
        if kind == "isolate":
            victim = self._pick(a, set())
            self.lab.isolate(victim)
            return _Active(kind, {"host": victim}, network=True)
        if kind == "partition":
            victim = self._pick(a, set())
            majority = [n for n in self.nodes if n != victim] + self.clients
            self.lab.partition([victim], majority)
            return _Active(kind, {"minority": [victim]}, network=True)
        if kind == "nontransitive":
            x = self._pick(a, set())
            y = self._pick(b, {x})
            self.lab.partition([x], [y])
            bridge = [n for n in self.nodes if n not in (x, y)]
            return _Active(kind, {"cut": [x, y], "bridge": bridge}, network=True)
        if kind == "one-way":
            # Half the time towards the active controller: a broker whose requests to the
            # controller vanish while the controller's packets still reach it.
            controller = self._locate_controller() if c < 0.5 else None
            dst = controller if controller in self.nodes else self._pick(b, set())
            src = self._pick(a, {dst})
            self.lab.block(src, dst)
            details = {"src": src, "dst": dst, "to_controller": controller == dst}
            return _Active(kind, details, network=True)
        if kind == "minority-consumers":
            coordinator = self._locate_coordinator() if c < 0.5 else None
            victim = coordinator if coordinator in self.nodes else self._pick(a, set())
            minority = [victim, *self.clients[1:]]
            majority = [n for n in self.nodes if n != victim] + self.clients[:1]
            self.lab.partition(minority, majority)
            details = {"minority": minority, "coordinator": coordinator == victim}
            return _Active(kind, details, network=True)
        raise AssertionError(f"unknown fault kind {kind!r}")

    def _stop(self, fault: _Active) -> None:
        if fault.network:
            self.lab.heal()
        for host in fault.paused:
            self.lab.resume(host)
        for host in fault.killed:
            self._start_node(host)

    def _kill_cycle(self, number: int) -> None:
        victim = self._pick(self.rng.random(), set())
        cycles = self.rng.randint(*KILL_CYCLES)
        self._record("fault-start", {"step": number, "kind": "kill-cycle", "host": victim,
                                     "cycles": cycles, "wall": _wall()})  # fmt: skip
        for _ in range(cycles):
            down, up = self.rng.uniform(*KILL_CYCLE_DOWN_S), self.rng.uniform(*KILL_CYCLE_UP_S)
            self.lab.kill(victim)
            self._sleep(down)
            self._start_node(victim)
            self._sleep(up)

    def _start_node(self, host: str) -> None:
        log = self.workdir / f"{host}.log"
        self.lab.spawn(host, self.argvs[host], stdout=log, stderr=log)

    # --- the end ---

    def heal_all(self) -> None:
        """Undo everything (heal the network, resume paused nodes, start dead ones)."""
        self.lab.heal()
        for host in self.nodes:
            if self.lab.pid(host) is None:
                self._start_node(host)
            else:
                self.lab.resume(host)
        if self._left_active is not None:
            number, kind = self._left_active
            self._record("fault-stop", {"step": number, "kind": kind})
            self._left_active = None
        self._record("final-heal", {"wall": _wall()})


def _wall() -> str:
    """Wall-clock time as node logs print it, to find a step in them (histories keep
    CLOCK_MONOTONIC, which the logs do not show)."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
