"""The private event-loop thread behind the synchronous SDK classes.

The asyncio classes are the real implementation (DESIGN.md §2); the synchronous ones submit whole
operations to one loop running in a daemon thread, so both share one code path. Only whole
operations (a batch, a poll, an admin call) cross the thread boundary, never single records.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread; `run` blocks the caller until a coroutine finishes."""

    def __init__(self, name: str = "strom-client") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a synchronous strom call was made from the client's own loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
