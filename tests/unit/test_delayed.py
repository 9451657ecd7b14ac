"""Delayed operations complete when their value moves, not by polling."""

from __future__ import annotations

import asyncio

import pytest

from strom.node.delayed import ChangeNotifier, OffsetWaiters, wait_any


async def settle() -> None:
    """Let every ready task run (a few loop iterations, no wall-clock wait)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_waiters_complete_in_target_order() -> None:
    async def scenario() -> list[int]:
        waiters = OffsetWaiters(0)
        done: list[int] = []

        async def wait(target: int) -> None:
            assert await waiters.wait_for(target, timeout_s=5)
            done.append(target)

        tasks = [asyncio.create_task(wait(t)) for t in (30, 10, 20)]
        await settle()
        waiters.advance(15)
        await settle()
        assert done == [10]
        waiters.advance(30)
        await asyncio.gather(*tasks)
        return done

    assert asyncio.run(scenario()) == [10, 20, 30]


def test_waiter_times_out_and_fail_all_raises() -> None:
    async def scenario() -> None:
        waiters = OffsetWaiters(0)
        assert not await waiters.wait_for(5, timeout_s=0.01)
        task = asyncio.create_task(waiters.wait_for(5, timeout_s=5))
        await asyncio.sleep(0)
        waiters.fail_all(RuntimeError("leadership lost"))
        with pytest.raises(RuntimeError, match="leadership lost"):
            await task
        assert await waiters.wait_for(0, timeout_s=0)  # already reached: no wait at all

    asyncio.run(scenario())


def test_abandoned_waiters_do_not_pile_up() -> None:
    async def scenario() -> int:
        waiters = OffsetWaiters(0)
        for _ in range(200):
            await waiters.wait_for(10, timeout_s=0)
        return len(waiters)

    assert asyncio.run(scenario()) <= 130


def test_wait_any_wakes_on_one_of_several() -> None:
    async def scenario() -> tuple[bool, bool]:
        a, b = ChangeNotifier(), ChangeNotifier()
        task = asyncio.create_task(wait_any([a, b], timeout_s=5))
        await asyncio.sleep(0)
        b.notify()
        woke = await task
        timed_out = await wait_any([a, b], timeout_s=0.01)
        return woke, timed_out

    assert asyncio.run(scenario()) == (True, False)


def test_change_notifier_wakes_waiters_in_the_order_they_came() -> None:
    """FIFO, not memory-address order: the node simulation replays a seed only if the fetches
    a produce wakes resume in the same order every run (a set of futures did not)."""

    async def scenario() -> list[int]:
        notifier = ChangeNotifier()
        woke: list[int] = []

        async def wait(n: int) -> None:
            assert await wait_any([notifier], timeout_s=5)
            woke.append(n)

        tasks = [asyncio.create_task(wait(n)) for n in range(64)]
        await settle()
        notifier.notify()
        await asyncio.gather(*tasks)
        return woke

    assert asyncio.run(scenario()) == list(range(64))
