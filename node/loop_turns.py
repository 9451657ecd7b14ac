"""Bounded work per event-loop turn, and a watchdog that reports turns that ran too long.

A node is one event loop (DESIGN.md §3): a handler that works through a request item by item
(the partitions of a produce, fetch or list-offsets request) without yielding holds every other
task, Raft ticks and broker heartbeats included, for as long as the whole request takes. One
request of 600,000 partition entries once froze a node for 12 s, long enough for the controller
to fence it (#15 defect 5). `TurnBudget` bounds that: the handler spends it once per item, and
the budget yields to the loop after `items_max` items or `bytes_max` bytes, whichever comes
first. The bound counts work, not time, so the deterministic simulation (tests/sim), which runs
this code on a virtual clock, schedules the same way on every run.

`LoopStallWatchdog` is the alarm for the cases nobody bounded yet: a thread that notices when
the loop has not come round for `stall_ms`, logs the loop thread's stack once per stall (where
it is stuck), and counts stalls in the metric `strom_event_loop_stalls_total`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

from strom.node import metrics

log = logging.getLogger("strom.loop")

# Per turn: at most this many request items (partitions; one costs tens of microseconds) or
# this many bytes of records validated, so a turn lasts milliseconds, never seconds.
ITEMS_PER_TURN_MAX = 256
BYTES_PER_TURN_MAX = 4 << 20


class TurnBudget:
    """Work a request may do before it lets the loop run others; one per request."""

    __slots__ = ("_bytes", "_items", "bytes_max", "items_max", "turns")

    def __init__(
        self, items_max: int = ITEMS_PER_TURN_MAX, bytes_max: int = BYTES_PER_TURN_MAX
    ) -> None:
        assert items_max >= 1 and bytes_max >= 1
        self.items_max = items_max
        self.bytes_max = bytes_max
        self._items = 0
        self._bytes = 0
        self.turns = 0  # how often it yielded (tests and metrics read it)

    async def spend(self, nbytes: int = 0) -> None:
        """One item done (with `nbytes` of payload): yield to the loop if the turn is used up."""
        self._items += 1
        self._bytes += nbytes
        if self._items >= self.items_max or self._bytes >= self.bytes_max:
            self._items = self._bytes = 0
            self.turns += 1
            await asyncio.sleep(0)


class LoopStallWatchdog:
    """Logs (with the loop thread's stack) and counts event-loop turns longer than `stall_ms`.

    The loop marks a heartbeat every `stall_ms / 4`; a daemon thread checks it. Start and stop
    it from the loop it watches."""

    def __init__(self, stall_ms: int = 500) -> None:
        assert stall_ms > 0
        self.stall_ms = stall_ms
        self.stalls = 0
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop_thread_id = 0

    def start(self) -> None:
        self._loop_thread_id = threading.get_ident()
        self._beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat(), name="loop-beat")
        self._thread = threading.Thread(target=self._watch, name="loop-stall-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    async def _heartbeat(self) -> None:
        period_s = self.stall_ms / 4000
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(period_s)

    def _watch(self) -> None:
        period_s = self.stall_ms / 4000
        reported_beat = -1.0
        while not self._stop.wait(period_s):
            beat = self._beat
            stalled_ms = (time.monotonic() - beat) * 1000
            if stalled_ms < self.stall_ms or beat == reported_beat:
                continue
            reported_beat = beat  # once per stall
            self.stalls += 1
            metrics.record_loop_stall()
            frame = sys._current_frames().get(self._loop_thread_id)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "?"
            log.warning(
                "the event loop has been blocked for %d ms (over %d ms); it is at:\n%s",
                stalled_ms, self.stall_ms, stack,
            )  # fmt: skip
