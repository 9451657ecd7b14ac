"""A virtual-time asyncio event loop for the node simulation (node_sim.py).

`VirtualLoop` is asyncio's own selector loop with three changes:

- Time is virtual. `time()` reads a counter that only `select(timeout)` moves: when nothing is
  ready, the loop jumps straight to its next timer. No real time passes while the simulated
  cluster waits, so a 30-second election storm costs what its callbacks cost.
- Executors run inline. `run_in_executor` (and so `asyncio.to_thread`: the Raft driver's fsyncs,
  the replica manager's checkpoints, the log cleaner) calls the function at once and returns a
  finished future: no thread, no real-time race. While a node's disk is stalled
  (`Incarnation.disk_stalled_until`) its jobs run only when the stall ends. With
  `executor_delay` set, every job runs that much virtual time later (a disk's fsync latency:
  what happens meanwhile, a power loss included, happens before it).
- Every callback is owned. A callback scheduled from a context whose `OWNER` is a node's
  `Incarnation` runs only while that incarnation lives and is not paused: a crashed node's tasks,
  timers and handlers never run again (no `finally` block, no flush: a crash), and a paused
  node's are held, in order, until it resumes (SIGSTOP/SIGCONT). Callbacks of the simulation
  itself (the network, the workload) have no owner.

Scheduling is seeded: each timer fires up to `TIMER_JITTER_S` late, drawn from the loop's own
`random.Random`, so ties between timers break differently per seed; callbacks made ready in one
turn still run in the order asyncio promises (FIFO).

`after_turn` (if set) runs after every turn of the loop: the simulation checks its invariants
there, so a violation is caught at the turn that caused it.
"""

from __future__ import annotations

import asyncio
import contextvars
import selectors
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import Any

TIMER_JITTER_S = 0.0005


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is set: the simulated world has stopped."""


@dataclass(eq=False)
class Incarnation:
    """One life of one node: from its start until it crashes or stops."""

    node_id: int
    number: int
    alive: bool = True
    paused: bool = False
    disk_stalled_until: float = 0.0  # its executor jobs (fsyncs) wait until then
    ran: bool = False  # ran a callback since the invariants last looked
    held: list[Any] = field(default_factory=list)  # (handle box, callback, args, context)

    def __repr__(self) -> str:
        return f"n{self.node_id}#{self.number}"


OWNER: contextvars.ContextVar[Incarnation | None] = contextvars.ContextVar(
    "sim_owner", default=None
)


class _VirtualSelector(selectors.BaseSelector):
    """Keeps the loop's own self-pipe registered (asyncio insists) but never polls it; a wait
    becomes a jump of the virtual clock."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # Nothing in the simulation uses threads or signals, so the self-pipe is never written:
        # skipping the poll saves a system call per turn.
        if timeout is None:
            raise Deadlock("no callback is ready and no timer is set")
        self._loop.advance(timeout)
        return []

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Any:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, rng: Random, start_s: float = 0.0) -> None:
        self._now = start_s
        self._rng = rng
        self.turns = 0
        self.after_turn: Callable[[], None] | None = None
        self.executor_delay: Callable[[], float] | None = None
        super().__init__(_VirtualSelector(self))
        self._clock_resolution = 1e-9

    # ---- time ---------------------------------------------------------------------------

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += max(0.0, seconds)

    # ---- ownership ----------------------------------------------------------------------

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if context is None:
            context = contextvars.copy_context()
        if self.is_closed():
            # The run is over: a coroutine closed by the garbage collector may still try to
            # schedule something from a `finally` block; it never runs.
            return asyncio.Handle(callback, args, self, context)
        owner = context.get(OWNER)
        if owner is None:
            return super().call_soon(callback, *args, context=context)
        box: list[asyncio.Handle] = []
        handle = super().call_soon(_guard, owner, box, callback, args, context, context=context)
        box.append(handle)
        return handle

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if context is None:
            context = contextvars.copy_context()
        if self.is_closed():
            return asyncio.TimerHandle(when, callback, args, self, context)
        when += self._rng.random() * TIMER_JITTER_S
        owner = context.get(OWNER)
        if owner is None:
            return super().call_at(when, callback, *args, context=context)
        box: list[asyncio.Handle] = []
        handle = super().call_at(when, _guard, owner, box, callback, args, context, context=context)
        box.append(handle)
        return handle

    def resume(self, owner: Incarnation) -> None:
        """Run what a paused incarnation was kept from running, in order."""
        owner.paused = False
        held, owner.held = owner.held, []
        for box, callback, args, context in held:
            if not box[0].cancelled():  # e.g. a timeout whose block was left meanwhile
                super().call_soon(_guard, owner, box, callback, args, context, context=context)

    # ---- executors run inline -----------------------------------------------------------

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.create_future()

        def run() -> None:
            try:
                future.set_result(func(*args))
            except Exception as exc:
                future.set_exception(exc)

        owner = OWNER.get()
        delay = 0.0 if self.executor_delay is None else self.executor_delay()
        if owner is not None and delay and owner.disk_stalled_until <= self._now:
            self.call_at(self._now + delay, run)
        elif owner is not None and owner.disk_stalled_until > self._now:
            # A stalled disk: the job (an fsync, a checkpoint) runs when the stall ends, as
            # the node; if the node dies first it never runs, and what it would have written
            # is lost, as an unsynced write is.
            self.call_at(owner.disk_stalled_until, run)
        else:
            run()
        return future

    # ---- turns --------------------------------------------------------------------------

    def _run_once(self) -> None:
        super()._run_once()  # type: ignore[misc]
        self.turns += 1
        if self.after_turn is not None:
            self.after_turn()


def _guard(
    owner: Incarnation,
    box: list[asyncio.Handle],
    callback: Callable[..., Any],
    args: tuple[Any, ...],
    context: contextvars.Context,
) -> None:
    """Runs `callback` for `owner`, unless it died; holds it while `owner` is paused. `box`
    holds the callback's own handle, whose cancellation must still count while it is held."""
    if not owner.alive or box[0].cancelled():
        return
    if owner.paused:
        owner.held.append((box, callback, args, context))
        return
    owner.ran = True
    callback(*args)
