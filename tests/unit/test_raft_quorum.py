"""Quorum math (raft/quorum.py) against naive definitions (Raft §5.2 votes, §5.3 commit)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from strom.raft.quorum import VoteResult, committed_index, majority, vote_result

VOTERS = st.lists(st.integers(1, 9), min_size=1, max_size=7, unique=True)


def _naive_committed(voters: list[int], match: dict[int, int]) -> int:
    """The largest index that at least a majority of voters have matched."""
    best = 0
    for candidate in {0, *match.values()}:
        if sum(1 for v in voters if match.get(v, 0) >= candidate) * 2 > len(voters):
            best = max(best, candidate)
    return best


def _naive_vote(voters: list[int], votes: dict[int, bool]) -> VoteResult:
    yes = sum(1 for v in voters if votes.get(v) is True)
    unknown = sum(1 for v in voters if v not in votes)
    if yes * 2 > len(voters):
        return VoteResult.WON
    if (yes + unknown) * 2 > len(voters):
        return VoteResult.PENDING
    return VoteResult.LOST


@given(VOTERS, st.data())
def test_committed_index_matches_naive(voters: list[int], data: st.DataObject) -> None:
    ids = st.sampled_from([*voters, 42])  # 42 is not a voter: its match must not count
    match = data.draw(st.dictionaries(ids, st.integers(0, 20)))
    assert committed_index(voters, match) == _naive_committed(voters, match)


@given(VOTERS, st.data())
def test_vote_result_matches_naive(voters: list[int], data: st.DataObject) -> None:
    ids = st.sampled_from([*voters, 42])
    votes = data.draw(st.dictionaries(ids, st.booleans()))
    assert vote_result(voters, votes) == _naive_vote(voters, votes)


def test_majorities() -> None:
    assert [majority(n) for n in range(1, 6)] == [1, 2, 2, 3, 3]
    assert committed_index([1, 2, 3], {1: 5, 2: 4}) == 4
    assert committed_index([1, 2, 3, 4], {1: 5, 2: 4}) == 0
    assert vote_result([1, 2, 3], {1: True, 2: False}) is VoteResult.PENDING
    assert vote_result([1, 2, 3], {1: False, 2: False}) is VoteResult.LOST
