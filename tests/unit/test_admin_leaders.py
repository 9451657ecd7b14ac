"""Admin requests answered by partitions' leaders (ListOffsets, DeleteRecords) share one loop:
partitions grouped by leader, the leaders asked concurrently, a partition whose leader moved
looked up again with fresh metadata and the cluster's growing backoff, a bounded number of times.
Scripted metadata and leaders; the admin's own loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from strom.client.admin import LEADER_ATTEMPTS_MAX, AsyncAdmin, PartitionAnswers
from strom.client.cluster import PartitionMeta, TopicMeta
from strom.client.errors import StromError
from strom.v1 import common_pb2

NONE, NOT_LEADER = common_pb2.NONE, common_pb2.NOT_LEADER_OR_FOLLOWER


class ScriptedCluster:
    """Topic t: partition 0 led by broker 1, partition 1 by broker 2 until metadata is
    refreshed (invalidate), then by broker 1."""

    retry_backoff_ms = 1
    retry_backoff_max_ms = 4

    def __init__(self) -> None:
        self.refreshed = 0

    async def topic(self, name: str) -> TopicMeta:
        second_leader = 1 if self.refreshed else 2
        partitions = {
            p: PartitionMeta(p, leader, 1, (1, 2), (1, 2))
            for p, leader in ((0, 1), (1, second_leader))
        }
        return TopicMeta(name, b"id", partitions)

    def address_of(self, node_id: int) -> str:
        return f"broker{node_id}"

    def invalidate(self, topic: str) -> None:
        self.refreshed += 1


def admin_over(cluster: ScriptedCluster) -> AsyncAdmin:
    admin = AsyncAdmin("localhost:1")
    admin.cluster = cluster  # type: ignore[assignment]
    return admin


def test_a_moved_leader_is_asked_again_after_fresh_metadata() -> None:
    cluster = ScriptedCluster()
    asked: list[tuple[str, list[tuple[str, int]]]] = []

    async def ask(address: str, partitions: list[tuple[str, int]]) -> PartitionAnswers:
        asked.append((address, partitions))
        # broker2 no longer leads partition 1: it says so.
        code = NOT_LEADER if address == "broker2" else NONE
        return {tp: (code, "moved", 10 + tp[1]) for tp in partitions}

    answers = asyncio.run(admin_over(cluster)._ask_leaders([("t", 0), ("t", 1), ("t", 0)], ask))
    assert answers == {("t", 0): 10, ("t", 1): 11}
    assert sorted(asked[:2]) == [("broker1", [("t", 0)]), ("broker2", [("t", 1)])]
    assert asked[2:] == [("broker1", [("t", 1)])] and cluster.refreshed == 1


def test_a_leader_that_stays_stale_is_an_error_after_the_last_attempt() -> None:
    cluster = ScriptedCluster()
    calls = []

    async def ask(address: str, partitions: list[tuple[str, int]]) -> Any:
        calls.append(address)
        return {tp: (NOT_LEADER, "still moving", -1) for tp in partitions}

    with pytest.raises(StromError) as raised:
        asyncio.run(admin_over(cluster)._ask_leaders([("t", 0)], ask))
    assert raised.value.name == "NOT_LEADER_OR_FOLLOWER" and "still moving" in str(raised.value)
    assert len(calls) == LEADER_ATTEMPTS_MAX


def test_a_partition_the_topic_lacks_is_refused_before_any_leader_is_asked() -> None:
    async def ask(address: str, partitions: list[tuple[str, int]]) -> Any:
        raise AssertionError("no leader should be asked")

    with pytest.raises(StromError) as raised:
        asyncio.run(admin_over(ScriptedCluster())._ask_leaders([("t", 7)], ask))
    assert raised.value.name == "UNKNOWN_TOPIC_OR_PARTITION"
