"""Who gets the next scrypt check: bounded, fair scheduling of password derivations.

A derivation costs tens of milliseconds of a core, so a node runs only a few at a time. Before
this queue they ran first come, first served: 500 concurrent wrong passwords for one user held a
first login of another user for 17 s (#15 defect 4). The rules now:

- **Lanes.** A free slot goes to an attempt from a connection with no recent failed login
  first (the clean lane), and only then to attempts from connections that failed recently (the
  suspect lane): failures wait behind everyone else. A connection's failure is remembered for
  `failure_memory_s` (at most `failure_memory_max` connections, oldest forgotten first).
- **Fairness.** Within a lane, usernames take turns (round robin), so a flood on one user
  delays another user's login by at most one derivation per waiting user.
- **Bounds.** At most `pending_per_peer_max` attempts per connection (gRPC peer) and
  `pending_per_user_max` per username and lane wait or run at once, and `pending_max` in all;
  an attempt beyond a bound is refused at once (`LoginRefused`), before any scrypt work. The
  per-user bound is per lane, so a guesser whose connections already failed cannot use up the
  real user's room in the clean lane. Bounds do not depend on whether the user exists.

Only the event loop's thread uses it; the derivation itself runs wherever the caller runs it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

IN_FLIGHT_MAX = 2
PENDING_PER_USER_MAX = 8
PENDING_PER_PEER_MAX = 4
PENDING_MAX = 512
FAILURE_MEMORY_S = 300.0
FAILURE_MEMORY_MAX = 10_000

LANE_CLEAN, LANE_SUSPECT = 0, 1


class LoginRefused(Exception):
    """Too many login attempts in flight for this user, connection or node; retry later."""


@dataclass(slots=True)
class _Waiter:
    username: str
    future: asyncio.Future[None] = field(repr=False)


class _Recent:
    """Keys seen recently (failures), bounded, each forgotten after `memory_s`."""

    def __init__(self, memory_s: float, entries_max: int, clock: Callable[[], float]) -> None:
        self.memory_s = memory_s
        self.entries_max = entries_max
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def add(self, key: str) -> None:
        self._seen[key] = self.clock()
        self._seen.move_to_end(key)
        while len(self._seen) > self.entries_max:
            self._seen.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        seen = self._seen.get(key) if isinstance(key, str) else None
        if seen is None:
            return False
        if self.clock() - seen > self.memory_s:
            del self._seen[key]  # type: ignore[arg-type]
            return False
        return True


class LoginQueue:
    def __init__(
        self,
        *,
        in_flight_max: int = IN_FLIGHT_MAX,
        pending_per_user_max: int = PENDING_PER_USER_MAX,
        pending_per_peer_max: int = PENDING_PER_PEER_MAX,
        pending_max: int = PENDING_MAX,
        failure_memory_s: float = FAILURE_MEMORY_S,
        failure_memory_max: int = FAILURE_MEMORY_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert in_flight_max >= 1
        self.in_flight_max = in_flight_max
        self.pending_per_user_max = pending_per_user_max
        self.pending_per_peer_max = pending_per_peer_max
        self.pending_max = pending_max
        self.failed_peers = _Recent(failure_memory_s, failure_memory_max, clock)
        # lane -> username -> its waiters in arrival order; a username's turn ends after one.
        self._lanes: tuple[OrderedDict[str, deque[_Waiter]], ...] = (OrderedDict(), OrderedDict())
        self._per_user: dict[tuple[int, str], int] = {}
        self._per_peer: dict[str, int] = {}
        self._pending = 0
        self._running = 0

    @property
    def pending(self) -> int:
        """Attempts admitted and not finished (waiting or running)."""
        return self._pending

    def lane_of(self, peer: str) -> int:
        return LANE_SUSPECT if peer in self.failed_peers else LANE_CLEAN

    async def run(self, username: str, peer: str, check: Callable[[], Awaitable[T]]) -> T:
        """Run `check` (one derivation) when this attempt's turn comes. Raises LoginRefused at
        once when a bound is reached."""
        lane = self.lane_of(peer)
        user_key = (lane, username)
        if (
            self._pending >= self.pending_max
            or self._per_user.get(user_key, 0) >= self.pending_per_user_max
            or self._per_peer.get(peer, 0) >= self.pending_per_peer_max
        ):
            raise LoginRefused("too many login attempts in flight; retry later")
        self._admit(user_key, peer, +1)
        try:
            await self._turn(username, lane)
            try:
                return await check()
            finally:
                self._running -= 1
                self._grant()
        finally:
            self._admit(user_key, peer, -1)

    def record_failure(self, peer: str) -> None:
        self.failed_peers.add(peer)

    def _admit(self, user_key: tuple[int, str], peer: str, delta: int) -> None:
        self._pending += delta
        _count(self._per_user, user_key, delta)
        _count(self._per_peer, peer, delta)

    async def _turn(self, username: str, lane: int) -> None:
        if self._running < self.in_flight_max and not any(self._lanes):
            self._running += 1
            return
        waiter = _Waiter(username, asyncio.get_running_loop().create_future())
        self._lanes[lane].setdefault(username, deque()).append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted just as the caller went away: pass the slot on.
                self._running -= 1
                self._grant()
            else:
                self._withdraw(lane, waiter)
            raise

    def _withdraw(self, lane: int, waiter: _Waiter) -> None:
        queue = self._lanes[lane].get(waiter.username)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._lanes[lane][waiter.username]

    def _grant(self) -> None:
        """Hand free slots to the next waiters: clean lane first, usernames in turn."""
        while self._running < self.in_flight_max:
            lane = next((lane for lane in self._lanes if lane), None)
            if lane is None:
                return
            username, queue = next(iter(lane.items()))
            waiter = queue.popleft()
            del lane[username]
            if queue:
                lane[username] = queue  # back of the line: the next username goes first
            if waiter.future.done():
                continue  # its caller went away
            self._running += 1
            waiter.future.set_result(None)


def _count(counts: dict[T, int], key: T, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)
