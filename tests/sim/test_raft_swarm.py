"""Swarm runs of the Raft simulator (raft_sim.py), and proof that its checker can fail.

- `test_swarm`: seeds 0-299, 2,000 events each, every seed drawing its own fault mix. A failure
  prints the seed, the fault mix and the last events; `pytest tests/sim --seed N` replays it.
- `test_swarm_many_seeds` (slow): 10,000 more seeds, in 40 chunks of 250.
- `test_checker_catches_*`: deliberately broken variants that must be caught within seeds
  0-299: committing an old-term entry by counting replicas (Raft §5.4.2, Figure 8), granting
  two votes in one term (§5.2), and sending persisted_messages before persisting (§5.1: state
  must be durable before a response that depends on it).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from raft_sim import InvariantViolation, Simulation

from strom.raft import Config, MemoryStorage, Raft, RawNode, VoteRequest

SWARM_SEEDS = 300
EVENTS_PER_SEED = 2000


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
