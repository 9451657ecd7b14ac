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
