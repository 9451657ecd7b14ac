"""Delayed operations: requests that wait for something to happen, without polling loops.

`OffsetWaiters` completes futures when a monotonically increasing value (a high watermark, a log
end offset, a Raft commit index) reaches each one's target: acks=all produces wait here for the
HW, Raft proposals for their commit. `ChangeNotifier` wakes long-polling fetches when any of the
partitions they watch changes. Both are completed by the code that changes the value, never by a
timer; the deadline of each wait is the caller's.

Only the event loop's thread touches these (DESIGN.md §3).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Iterable

WAITERS_MAX = 100_000  # bound on parked operations per watched value
# The longest a long-polling fetch (a client's or a follower's) waits, whatever it asks.
FETCH_WAIT_MS_MAX = 60_000


class TooManyWaiters(Exception):
    """More operations wait on one value than WAITERS_MAX: the caller should back off."""


class OffsetWaiters:
    def __init__(self, value: int = 0) -> None:
        self.value = value
        self._heap: list[tuple[int, int, asyncio.Future[int]]] = []
        self._seq = itertools.count()
        self._abandoned = 0

    def advance(self, value: int) -> None:
        """The watched value moved to `value`: complete every waiter whose target it reached."""
        if value < self.value:
            return
        self.value = value
        heap = self._heap
        while heap and heap[0][0] <= value:
            _, _, future = heapq.heappop(heap)
            if not future.done():
                future.set_result(value)

    async def wait_for(self, target: int, timeout_s: float) -> bool:
        """True once the value reaches `target`; False on timeout. Raises what `fail_all` set."""
        if self.value >= target:
            return True
        if len(self._heap) >= WAITERS_MAX:
            raise TooManyWaiters(f"{len(self._heap)} operations already waiting")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (target, next(self._seq), future))
        try:
            async with asyncio.timeout(timeout_s):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            if future.cancelled() or not future.done():
                future.cancel()
                self._abandoned += 1
                self._maybe_compact()

    def _maybe_compact(self) -> None:
        # Timed-out waiters stay in the heap until the value passes them; if the value is stuck
        # (an ISR member is gone) they would pile up, so drop them once they are the majority.
        if self._abandoned > 64 and self._abandoned * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].done()]
            heapq.heapify(self._heap)
            self._abandoned = 0

    def fail_all(self, error: BaseException) -> None:
        """Complete every waiter with `error` (e.g. leadership lost)."""
        heap, self._heap = self._heap, []
        for _, _, future in heap:
            if not future.done():
                future.set_exception(error)

    def __len__(self) -> int:
        return len(self._heap)


class ChangeNotifier:
    """Futures that complete on the next `notify()`; a waiter may watch several notifiers.

    Waiters wake in the order they started waiting (a dict, not a set: a set of futures would
    wake them in memory-address order, which differs from run to run)."""

    def __init__(self) -> None:
        self._futures: dict[asyncio.Future[None], None] = {}
        # Bumped by every notify: a reader that yields to the loop between reading and waiting
        # compares it to see whether it missed a change meanwhile.
        self.version = 0

    def notify(self) -> None:
        self.version += 1
        futures, self._futures = self._futures, {}
        for future in futures:
            if not future.done():
                future.set_result(None)

    def _add(self, future: asyncio.Future[None]) -> None:
        if len(self._futures) >= WAITERS_MAX:
            raise TooManyWaiters(f"{len(self._futures)} fetches already waiting")
        self._futures[future] = None

    def _discard(self, future: asyncio.Future[None]) -> None:
        self._futures.pop(future, None)


async def wait_any(notifiers: Iterable[ChangeNotifier], timeout_s: float) -> bool:
    """Wait until any notifier fires (True) or the timeout passes (False)."""
    watched = list(notifiers)
    if timeout_s <= 0 or not watched:
        return False
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for notifier in watched:
        notifier._add(future)
    try:
        async with asyncio.timeout(timeout_s):
            await future
        return True
    except TimeoutError:
        return False
    finally:
        for notifier in watched:
            notifier._discard(future)
