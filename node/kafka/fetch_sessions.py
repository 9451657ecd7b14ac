"""Incremental fetch sessions (KIP-227), as a broker keeps them for Fetch v7+.

A consumer that opens a session (epoch 0) sends its partitions once; later fetches (epoch 1, 2,
...) name only the partitions whose fetch position changed and those it forgets, and the answer
names only partitions with something new: records, an error, or a changed high watermark, last
stable offset or log start offset. The broker keeps each session's partitions and what it last told about them.

- epoch -1: no session (a full fetch); with a session id, that session is closed first.
- epoch 0: a new session from this full fetch (a session id given is closed first); session id
  0 in the answer when the cache is full and no session is old enough to evict.
- epoch N > 0: the session must exist (else FETCH_SESSION_ID_NOT_FOUND) and expect N (else
  INVALID_FETCH_SESSION_EPOCH); it then expects N + 1.

The cache is bounded (`slots`): when full, the least recently used session is evicted if it has
been idle for `evict_idle_ms`, else the new session is not created (the client fetches without
one, as Kafka's brokers answer).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
FINAL_EPOCH = -1
INITIAL_EPOCH = 0
SLOTS_DEFAULT = 1000
EVICT_IDLE_MS_DEFAULT = 120_000

Key = tuple[str, int]


class FetchSessionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class CachedPartition:
    request: dict[str, Any]  # the partition's fields as last sent (fetch offset, max bytes...)
    # What the last answer told: (error code, high watermark, last stable offset, log start
    # offset); None: nothing yet.
    told: tuple[int, int, int, int] | None = None


@dataclass(slots=True)
class FetchSession:
    session_id: int
    epoch: int  # the epoch the next request must carry
    last_used_ms: int
    partitions: dict[Key, CachedPartition] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """What to fetch and how to answer: every partition (in order) and the session, if any."""

    session: FetchSession | None
    incremental: bool
    partitions: list[tuple[Key, dict[str, Any]]]


class FetchSessionCache:
    def __init__(
        self,
        now_ms: Callable[[], int],
        slots: int = SLOTS_DEFAULT,
        evict_idle_ms: int = EVICT_IDLE_MS_DEFAULT,
        new_id: Callable[[], int] | None = None,
    ) -> None:
        self.now_ms = now_ms
        self.slots = slots
        self.evict_idle_ms = evict_idle_ms
        self.new_id = new_id or (lambda: random.randint(1, 2**31 - 1))
        self.sessions: OrderedDict[int, FetchSession] = OrderedDict()

    def plan(
        self,
        session_id: int,
        epoch: int,
        partitions: list[tuple[Key, dict[str, Any]]],
        forgotten: list[Key],
    ) -> FetchPlan:
        """The fetch a request asks for, with its session updated; FetchSessionError when the
        session it names is unknown or expects another epoch."""
        now = self.now_ms()
        if epoch in (FINAL_EPOCH, INITIAL_EPOCH):
            if session_id:
                self.sessions.pop(session_id, None)
            session = self._create(now, partitions) if epoch == INITIAL_EPOCH else None
            return FetchPlan(session, False, partitions)
        session = self.sessions.get(session_id)
        if session is None:
            raise FetchSessionError(
                FETCH_SESSION_ID_NOT_FOUND, f"fetch session {session_id} is not known here"
            )
        if epoch != session.epoch:
            raise FetchSessionError(
                INVALID_FETCH_SESSION_EPOCH,
                f"fetch session {session_id} expects epoch {session.epoch}, not {epoch}",
            )
        for key in forgotten:
            session.partitions.pop(key, None)
        for key, fields in partitions:
            cached = session.partitions.get(key)
            if cached is None:
                session.partitions[key] = CachedPartition(dict(fields))
            else:
                cached.request = dict(fields)
        session.epoch = _next_epoch(epoch)
        session.last_used_ms = now
        self.sessions.move_to_end(session_id)
        return FetchPlan(session, True, [(key, c.request) for key, c in session.partitions.items()])

    def _create(
        self, now: int, partitions: list[tuple[Key, dict[str, Any]]]
    ) -> FetchSession | None:
        if len(self.sessions) >= self.slots:
            oldest = next(iter(self.sessions.values()), None)
            if oldest is None or now - oldest.last_used_ms < self.evict_idle_ms:
                return None
            del self.sessions[oldest.session_id]
        session_id = self.new_id()
        while session_id in self.sessions:
            session_id = self.new_id()
        session = FetchSession(session_id, 1, now)
        session.partitions = {key: CachedPartition(dict(fields)) for key, fields in partitions}
        self.sessions[session_id] = session
        return session

    @staticmethod
    def worth_answering(
        plan: FetchPlan,
        key: Key,
        has_records: bool,
        error: int,
        high: int,
        log_start: int,
        last_stable: int = -1,
    ) -> bool:
        """Whether a partition goes in the answer, remembering what it tells: every partition
        of a full fetch; in an incremental one, only what changed."""
        cached = plan.session.partitions.get(key) if plan.session is not None else None
        told = (error, high, last_stable, log_start)
        changed = cached is None or cached.told != told
        if cached is not None:
            cached.told = told
        return not plan.incremental or has_records or error != 0 or changed


def _next_epoch(epoch: int) -> int:
    return 1 if epoch >= 2**31 - 1 else epoch + 1
