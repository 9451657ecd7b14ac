"""The one place a node reads the wall clock.

Components take a `Clock` when they are built (the node passes `SYSTEM_CLOCK`); none reads
`time.time()` on its own. Wall-clock milliseconds since the epoch are what Kafka stores and
compares: record timestamps, retention, session expiry, heartbeat ages. Durations and deadlines
use the event loop's own clock (`loop.time()`, `asyncio.sleep`), which a test can also replace.

The deterministic simulation (tests/sim) runs every node of a cluster on one event loop whose
time is virtual, and gives them a `LoopClock` that derives the wall clock from it, so that time
moves only when the simulation says so and a seed replays exactly.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock milliseconds since the Unix epoch."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)


SYSTEM_CLOCK: Clock = SystemClock()


class LoopClock:
    """Wall clock derived from an event loop's clock: `epoch_ms` at loop time 0."""

    def __init__(self, loop: asyncio.AbstractEventLoop, epoch_ms: int) -> None:
        self._loop = loop
        self._epoch_ms = epoch_ms

    def now_ms(self) -> int:
        return self._epoch_ms + int(self._loop.time() * 1000)
