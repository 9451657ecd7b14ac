"""Swarm runs of the Raft simulator (raft_sim.py), and proof that its checker can fail.

- `test_swarm`: seeds 0-299, 2,000 events each, every seed drawing its own fault mix. A failure
  prints the seed, the fault mix and the last events; `pytest tests/sim --seed N` replays it.
- `test_swarm_many_seeds` (slow): 10,000 more seeds, in 40 chunks of 250.
- `test_swarm_long_runs` (slow): seeds 200000-200299 at 50,000 events each, in 30 chunks of 10.
  Long runs grow logs of thousands of entries, and a node restarted late re-applies all of it
  during the heal; `test_heal_waits_for_a_restarted_node_to_replay_its_log` keeps the two seeds
  that showed it (issue 14, item 9) in every run.
- `test_checker_catches_*`: deliberately broken variants that must be caught within seeds
  0-299: committing an old-term entry by counting replicas (Raft §5.4.2, Figure 8), granting
  two votes in one term (§5.2), sending persisted_messages before persisting (§5.1: state
  must be durable before a response that depends on it), and a leader that never resumes a
  paused follower (liveness: the heal's bound must catch a node left behind).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from raft_sim import EVENTS_MAX_DEFAULT, InvariantViolation, Simulation

from strom.raft import (
    Config,
    HeartbeatResponse,
    MemoryStorage,
    Message,
    Raft,
    RawNode,
    Role,
    VoteRequest,
)

SWARM_SEEDS = 300
EVENTS_PER_SEED = EVENTS_MAX_DEFAULT


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "swarm_seed" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--seed")
        seeds = [chosen] if chosen is not None else list(range(SWARM_SEEDS))
        metafunc.parametrize("swarm_seed", seeds)


def test_swarm(swarm_seed: int) -> None:
    sim = Simulation(swarm_seed, events_max=EVENTS_PER_SEED)
    sim.run()
    assert sim.events >= EVENTS_PER_SEED


SLOW_SEEDS = 10_000
SLOW_CHUNK_SEEDS = 250  # CI's slow sample picks whole chunks; `make test-all` runs all 40


@pytest.mark.slow
@pytest.mark.parametrize("first", range(SWARM_SEEDS, SWARM_SEEDS + SLOW_SEEDS, SLOW_CHUNK_SEEDS))
def test_swarm_many_seeds(first: int) -> None:
    for seed in range(first, first + SLOW_CHUNK_SEEDS):
        Simulation(seed, events_max=EVENTS_PER_SEED).run()


LONG_RUN_EVENTS = 50_000
LONG_RUN_FIRST_SEED = 200_000
LONG_RUN_SEEDS = 300
LONG_RUN_CHUNK_SEEDS = 10  # about 15 s, as long as one chunk of test_swarm_many_seeds


@pytest.mark.slow
@pytest.mark.parametrize(
    "first",
    range(LONG_RUN_FIRST_SEED, LONG_RUN_FIRST_SEED + LONG_RUN_SEEDS, LONG_RUN_CHUNK_SEEDS),
)
def test_swarm_long_runs(first: int) -> None:
    for seed in range(first, first + LONG_RUN_CHUNK_SEEDS):
        Simulation(seed, events_max=LONG_RUN_EVENTS).run()


@pytest.mark.parametrize("seed", [200222, 200281])
def test_heal_waits_for_a_restarted_node_to_replay_its_log(seed: int) -> None:
    """No node is stuck in these seeds: the heal's proposals commit on every node within a few
    ticks, but a node restarted late re-applies its whole log (nothing was compacted), one
    entry per Ready at one sync each. The heal used to allow 30 election timeouts for all of
    it and failed; now applying has its own bound (`raft_heal.apply_ticks_max`)."""
    sim = Simulation(seed, events_max=LONG_RUN_EVENTS)
    sim.run()
    commit_ticks, apply_ticks = sim.heal_ticks
    election_timeout_ticks = sim.faults.election_timeout_ticks
    assert commit_ticks < 3 * election_timeout_ticks
    assert apply_ticks > 30 * election_timeout_ticks  # the replay alone outlasts the old bound


# ---- deliberately broken variants ----


class Figure8Raft(Raft):
    """Commits whatever a quorum holds, ignoring that it may be from an earlier term."""

    def _maybe_commit(self) -> bool:
        index = self._quorum_match_index()
        if index <= self.log.committed:
            return False
        self._commit_to(index)
        return True


class DoubleVoteRaft(Raft):
    """Grants a vote to every up-to-date candidate, even after voting in this term."""

    def _can_vote_for(self, m: VoteRequest) -> bool:
        return True


class NoResumeOnHeartbeatRaft(Raft):
    """Takes a heartbeat response only as a sign of life: a follower whose probe or appends
    were lost stays paused for good, since nothing else resumes it (etcd-io/raft resumes the
    probe and frees an inflight slot on MsgHeartbeatResp, as our core does)."""

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, HeartbeatResponse):
            self.progress[m.from_id].recent_active = True
            return
        super()._step_leader(m)


class KeepTransferRaft(Raft):
    """Never abandons a leadership transfer (thesis §3.10 says: after an election timeout)."""

    def _tick_leader(self) -> None:
        transferee = self.lead_transferee
        super()._tick_leader()
        if self.role is Role.LEADER:
            self.lead_transferee = transferee


def _with_core(
    core: type[Raft],
) -> Callable[[Config, MemoryStorage, Callable[[int], int]], RawNode]:
    class BrokenNode(RawNode):
        def _make_raft(
            self, config: Config, storage: object, rand_int: Callable[[int], int]
        ) -> Raft:
            return core(config, storage, rand_int)  # type: ignore[arg-type]

    return BrokenNode


def _first_caught(**kwargs: object) -> tuple[int, str]:
    for seed in range(SWARM_SEEDS):
        try:
            Simulation(seed, events_max=EVENTS_PER_SEED, **kwargs).run()  # type: ignore[arg-type]
        except InvariantViolation as error:
            return seed, str(error)
    raise AssertionError(f"no seed in 0-{SWARM_SEEDS - 1} caught the broken variant")


def _invariant(report: str) -> str:
    return report.split(":", 1)[1].split(":", 1)[0].strip()


def test_checker_catches_commit_of_old_term_entry_figure8() -> None:
    seed, report = _first_caught(raw_node_factory=_with_core(Figure8Raft))
    assert _invariant(report) in {
        "CommittedCannotBeLost",
        "LeaderCompleteness",
        "CommittedNeverChanges",
        "StateMachineSafety",
    }, report
    assert f"--seed {seed}" in report


def test_checker_catches_two_votes_in_one_term() -> None:
    _, report = _first_caught(raw_node_factory=_with_core(DoubleVoteRaft))
    assert _invariant(report) == "ElectionSafety", report


def test_checker_catches_sending_before_persisting() -> None:
    _, report = _first_caught(send_persisted_early=True)
    assert _invariant(report) in {"CommittedIsDurable", "CommittedCannotBeLost"}, report


def test_checker_catches_a_follower_left_behind() -> None:
    _, report = _first_caught(raw_node_factory=_with_core(NoResumeOnHeartbeatRaft))
    assert _invariant(report) == "Liveness", report
    assert "no proposal was committed on every node" in report
