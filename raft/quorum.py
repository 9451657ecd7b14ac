"""Majority quorum math, as pure functions (etcd-io/raft's quorum/majority.go).

- `committed_index(voters, match)`: the largest index replicated on a majority of voters: sort
  the voters' match indexes in descending order and take the (n // 2)-th (0-based). A voter with
  no entry in `match` counts as 0.
- `vote_result(voters, votes)`: WON once a majority granted, LOST once a majority can no longer
  be reached, PENDING otherwise. Votes from non-voters are ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping


class VoteResult(enum.Enum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority(voter_count: int) -> int:
    return voter_count // 2 + 1


def committed_index(voters: Collection[int], match: Mapping[int, int]) -> int:
    if not voters:
        return 0
    indexes = sorted((match.get(v, 0) for v in voters), reverse=True)
    return indexes[len(indexes) // 2]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    granted = rejected = 0
    for voter in voters:
        vote = votes.get(voter)
        if vote is True:
            granted += 1
        elif vote is False:
            rejected += 1
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING
