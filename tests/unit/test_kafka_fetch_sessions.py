"""Incremental fetch sessions (KIP-227, strom.node.kafka.fetch_sessions): a session keeps the
partitions a consumer sent once, answers only what changed, checks its epoch, and the cache is
bounded."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from strom.node.kafka.fetch_sessions import (
    FETCH_SESSION_ID_NOT_FOUND,
    INVALID_FETCH_SESSION_EPOCH,
    FetchSessionCache,
    FetchSessionError,
)


class Clock:
    ms = 0

    def __call__(self) -> int:
        return self.ms


def part(offset: int) -> dict[str, Any]:
    return {"fetch_offset": offset, "partition_max_bytes": 1024}


def new_cache(clock: Clock, slots: int = 10) -> FetchSessionCache:
    ids = itertools.count(100)
    return FetchSessionCache(clock, slots=slots, evict_idle_ms=1_000, new_id=lambda: next(ids))


def test_a_session_keeps_its_partitions_and_answers_only_what_changed() -> None:
    cache = new_cache(Clock())
    full = cache.plan(0, 0, [(("t", 0), part(0)), (("t", 1), part(0))], [])
    assert full.session is not None and not full.incremental
    sid = full.session.session_id
    for key in (("t", 0), ("t", 1)):  # a full fetch answers every partition
        assert cache.worth_answering(full, key, False, 0, 5, 0)

    # Epoch 1 names only t-0 (its position moved); t-1 is fetched from the session.
    inc = cache.plan(sid, 1, [(("t", 0), part(5))], [])
    assert inc.incremental and [(k, p["fetch_offset"]) for k, p in inc.partitions] == [
        (("t", 0), 5), (("t", 1), 0),
    ]  # fmt: skip
    assert not cache.worth_answering(inc, ("t", 1), False, 0, 5, 0)  # nothing new
    assert cache.worth_answering(inc, ("t", 0), True, 0, 5, 0)  # records
    assert cache.worth_answering(inc, ("t", 1), False, 0, 9, 0)  # high watermark moved
    # Forgetting a partition drops it from the session.
    forgot = cache.plan(sid, 2, [], [("t", 1)])
    assert [k for k, _ in forgot.partitions] == [("t", 0)]


def test_unknown_sessions_and_wrong_epochs_are_refused_and_epoch_minus_one_closes() -> None:
    cache = new_cache(Clock())
    with pytest.raises(FetchSessionError) as unknown:
        cache.plan(12345, 1, [], [])
    assert unknown.value.code == FETCH_SESSION_ID_NOT_FOUND
    sid = cache.plan(0, 0, [(("t", 0), part(0))], []).session.session_id  # type: ignore[union-attr]
    with pytest.raises(FetchSessionError) as stale:
        cache.plan(sid, 2, [], [])
    assert stale.value.code == INVALID_FETCH_SESSION_EPOCH
    closing = cache.plan(sid, -1, [(("t", 0), part(0))], [])
    assert closing.session is None and not closing.incremental
    with pytest.raises(FetchSessionError):
        cache.plan(sid, 1, [], [])


def test_the_cache_is_bounded_and_evicts_only_idle_sessions() -> None:
    clock = Clock()
    cache = new_cache(clock, slots=2)
    first = cache.plan(0, 0, [], []).session
    second = cache.plan(0, 0, [], []).session
    assert first is not None and second is not None
    assert cache.plan(0, 0, [], []).session is None  # full, nobody idle: no session
    clock.ms = 1_000
    cache.plan(second.session_id, 1, [], [])  # second is in use, first idle since 0
    third = cache.plan(0, 0, [], []).session
    assert third is not None and set(cache.sessions) == {second.session_id, third.session_id}


def test_a_moved_last_stable_offset_is_answered_in_an_incremental_fetch() -> None:
    cache = new_cache(Clock())
    full = cache.plan(0, 0, [(("t", 0), part(0))], [])
    assert full.session is not None
    assert cache.worth_answering(full, ("t", 0), False, 0, 9, 0, last_stable=5)
    inc = cache.plan(full.session.session_id, 1, [], [])
    assert not cache.worth_answering(inc, ("t", 0), False, 0, 9, 0, last_stable=5)
    assert cache.worth_answering(inc, ("t", 0), False, 0, 9, 0, last_stable=9)  # a commit
