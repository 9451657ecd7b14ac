"""A group member cut off from its coordinator drops its partitions within its session, counted
from when its last successful heartbeat was sent, even while a heartbeat hangs: the coordinator
expires the member one session after it *received* that heartbeat and hands the partitions to
another member, so a later drop would let two members consume one partition (the chaos suite's
minority-consumers fault found this as group-exclusivity anomalies)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from strom.client.cluster import ClusterClient
from strom.client.consumer import AsyncConsumer
from strom.client.errors import RetriableError
from strom.client.group import GroupMembership
from strom.client.records import TopicPartition
from strom.v1 import common_pb2, group_pb2

SESSION_MS = 600
REQUEST_TIMEOUT_S = 5.0  # far longer than the session, as in the chaos suite (5 s vs 4 s)


class Coordinator:
    """Answers a few heartbeats, slowly, then none: each later one hangs until its timeout
    (a partition) or fails at once (`hang=False`: the coordinator is gone)."""

    def __init__(self, answer_delay_s: float, answers: int, *, hang: bool) -> None:
        self.answer_delay_s = answer_delay_s
        self.answers_left = answers
        self.hang = hang
        self.received_ms: list[float] = []  # when each answered heartbeat reached it

    async def heartbeat(self, request: Any, timeout_s: float) -> Any:
        if self.answers_left == 0:
            if self.hang:
                await asyncio.sleep(timeout_s)  # a partition: the request vanishes
                raise RetriableError(common_pb2.REQUEST_TIMED_OUT, "no answer")
            raise RetriableError(common_pb2.COORDINATOR_NOT_AVAILABLE, "refused at once")
        self.answers_left -= 1
        self.received_ms.append(time.monotonic() * 1000)
        await asyncio.sleep(self.answer_delay_s)  # the answer is slow to come back
        return group_pb2.ConsumerGroupHeartbeatResponse(
            error_code=common_pb2.NONE,
            member_id="m1",
            member_epoch=1,
            heartbeat_interval_ms=50,
            session_timeout_ms=SESSION_MS,
            assignment=[group_pb2.TopicPartitions(topic="t", partitions=[0])],
        )


class FakeCluster(ClusterClient):
    def __init__(self, coordinator: Coordinator) -> None:
        super().__init__("c:1", request_timeout_ms=int(REQUEST_TIMEOUT_S * 1000))
        self.coordinator = coordinator

    async def call_any(self, pick: Any, request: Any, timeout_s: float | None = None) -> Any:
        return group_pb2.FindCoordinatorResponse(error_code=common_pb2.NONE, host="c", port=1)

    async def call(self, address: str, fn: Any, request: Any, timeout_s: float) -> Any:
        return await self.coordinator.heartbeat(request, timeout_s)


async def drop_time_after_cut(answer_delay_s: float, *, hang: bool) -> tuple[float, float]:
    """(when the coordinator last heard the member, when the member dropped its partitions)."""
    coordinator = Coordinator(answer_delay_s, answers=3, hang=hang)
    member = GroupMembership(FakeCluster(coordinator), "g", client_id="c")
    member.subscribe(["t"])
    member.start()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S * 2):
            while member.assignment != {TopicPartition("t", 0)}:
                await asyncio.sleep(0.005)
            while member.assignment:
                await asyncio.sleep(0.005)
        return coordinator.received_ms[-1], time.monotonic() * 1000
    finally:
        await member.leave()


def test_a_member_whose_heartbeat_hangs_drops_its_partitions_within_its_session() -> None:
    last_heard_ms, dropped_ms = asyncio.run(drop_time_after_cut(answer_delay_s=0.0, hang=True))
    # Before the fix the member waited for the hanging request (5 s) before checking.
    assert dropped_ms - last_heard_ms <= SESSION_MS + 250


def test_the_session_counts_from_the_send_of_the_last_answered_heartbeat() -> None:
    # Answers take 500 ms to come back: a session counted from the answer would end 500 ms
    # after the coordinator's, which by then may have given the partition to someone else.
    last_heard_ms, dropped_ms = asyncio.run(drop_time_after_cut(answer_delay_s=0.5, hang=False))
    assert dropped_ms - last_heard_ms <= SESSION_MS + 250


async def hang(*args: Any, **kwargs: Any) -> Any:
    await asyncio.sleep(3600)


def owning_consumer(tp: TopicPartition) -> AsyncConsumer:
    """A group consumer that owns `tp` at position 0, talking to nobody."""
    consumer = AsyncConsumer("localhost:1", group_id="g", auto_commit_interval_ms=1)
    group = consumer.group
    assert group is not None
    group.member_epoch, group.owned, group.assignment = 1, {tp}, {tp}
    consumer._assignment = [tp]
    consumer._positions[tp] = consumer._consumed[tp] = 0
    return consumer


def test_poll_returns_within_its_timeout_when_the_coordinator_and_the_leader_hang() -> None:
    # A member on the minority side of a partition: auto-commits and fetches get no answer.
    # Before the fix poll() waited for the auto-commit (up to 20 coordinator calls of a request
    # timeout each) and for the fetch (a request timeout), so the application could not see
    # that its session had ended.
    tp = TopicPartition("t", 0)
    consumer = owning_consumer(tp)
    consumer.commit = hang  # type: ignore[method-assign]
    consumer._fetch = hang  # type: ignore[method-assign]

    async def run() -> float:
        started = time.monotonic()
        async with asyncio.timeout(10):
            for _ in range(3):
                assert await consumer.poll(timeout_ms=100) == []
        for task in (consumer._auto_commit, consumer._prefetch):
            if task is not None:
                task.cancel()
        return time.monotonic() - started

    assert asyncio.run(run()) < 3 * 0.1 + 1.0


def test_lost_partitions_are_dropped_without_committing_their_offsets() -> None:
    tp = TopicPartition("t", 0)
    consumer = owning_consumer(tp)
    commits: list[Any] = []

    async def commit(offsets: Any = None) -> None:
        commits.append(offsets)

    consumer.commit = commit  # type: ignore[method-assign]
    consumer._fetch = hang  # type: ignore[method-assign]
    group = consumer.group
    assert group is not None

    async def run() -> None:
        group._check_session()  # no-op: the session is young
        assert not group.lost and group.assignment == {tp}
        group.last_success_ms -= group.session_timeout_ms  # no successful heartbeat since
        group._check_session()
        assert group.lost and group.assignment == set()
        await consumer._apply_assignment()
        assert group.owned == set() and not consumer.assignment()
        assert commits == [], "a lost partition's offset was committed"
        assert not group.lost
        group.member_epoch, group.assignment = 2, set()  # rejoined with nothing
        group.owned, group.assignment = {tp}, set()  # a plain revocation does commit
        consumer._consumed[tp] = 5
        await consumer._apply_assignment()
        assert commits == [{tp: 5}]

    asyncio.run(run())
