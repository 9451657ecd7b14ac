"""Kafka's classic group protocol (strom.node.group.classic): joins gather every member into one
generation, the leader's SyncGroup hands out assignments, heartbeats and commits are fenced by
generation, a leave or an expired session starts a rebalance."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from strom.node.group.classic import (
    COMPLETING,
    EMPTY,
    ILLEGAL_GENERATION,
    INCONSISTENT_GROUP_PROTOCOL,
    MEMBER_ID_REQUIRED,
    PREPARING,
    REBALANCE_IN_PROGRESS,
    STABLE,
    UNKNOWN_MEMBER_ID,
    ClassicGroup,
    ClassicGroupError,
)


class FakeClock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


def new_group(clock: FakeClock, initial_delay_ms: int = 0) -> ClassicGroup:
    ids = (f"m{i}" for i in itertools.count(1))
    return ClassicGroup("g", "consumer", clock, initial_delay_ms, lambda: next(ids))


def join(group: ClassicGroup, member_id: str = "", protocols: list[str] | None = None):  # type: ignore[no-untyped-def]
    return group.join(
        member_id, None, "client", "host", 10_000, 1_000, "consumer",
        [(p, p.encode()) for p in protocols or ["range"]],
    )  # fmt: skip


def test_two_members_join_one_generation_and_the_leader_assigns() -> None:
    async def run() -> None:
        clock = FakeClock()
        group = new_group(clock, initial_delay_ms=50)
        first = join(group, protocols=["range", "roundrobin"])
        second = join(group, protocols=["roundrobin", "range"])
        assert group.state == PREPARING
        a, b = await asyncio.gather(first, second)
        assert group.state == COMPLETING and a.generation == b.generation == 1
        assert a.protocol_name == b.protocol_name
        leader, follower = (a, b) if a.member_id == a.leader else (b, a)
        assert len(leader.members) == 2 and follower.members == []
        waiting = group.sync(follower.member_id, 1, {})
        assert not waiting.done()
        done = group.sync(leader.member_id, 1, {leader.member_id: b"L", follower.member_id: b"F"})
        assert (await done)[1] == b"L" and (await waiting)[1] == b"F"
        assert group.state == STABLE
        group.heartbeat(follower.member_id, 1)
        group.validate_commit(leader.member_id, 1)
        with pytest.raises(ClassicGroupError) as stale:
            group.validate_commit(leader.member_id, 0)
        assert stale.value.code == ILLEGAL_GENERATION

    asyncio.run(run())


def test_a_new_member_rebalances_and_old_members_must_rejoin() -> None:
    async def run() -> None:
        clock = FakeClock()
        group = new_group(clock)
        a = await join(group)
        await group.sync(a.member_id, 1, {a.member_id: b"all"})
        newcomer = join(group)
        assert group.state == PREPARING
        with pytest.raises(ClassicGroupError) as rebalancing:
            group.heartbeat(a.member_id, 1)
        assert rebalancing.value.code == REBALANCE_IN_PROGRESS
        with pytest.raises(ClassicGroupError):
            group.validate_commit(a.member_id, 1)  # its partitions may already be moving
        assert not newcomer.done()
        again = await join(group, a.member_id)
        b = await newcomer
        assert again.generation == b.generation == 2

    asyncio.run(run())


def test_a_member_that_does_not_rejoin_is_removed_at_the_rebalance_timeout() -> None:
    async def run() -> None:
        clock = FakeClock()
        group = new_group(clock)
        a = await join(group)
        await group.sync(a.member_id, 1, {})
        b = await asyncio.wait_for(join(group), 5)  # a never rejoins: dropped after 1 s
        assert b.generation == 2 and list(group.members) == [b.member_id]
        with pytest.raises(ClassicGroupError) as gone:
            group.heartbeat(a.member_id, 2)
        assert gone.value.code == UNKNOWN_MEMBER_ID

    asyncio.run(run())


def test_leave_and_expiry_empty_the_group() -> None:
    async def run() -> None:
        clock = FakeClock()
        group = new_group(clock)
        a = await join(group)
        await group.sync(a.member_id, 1, {})
        group.leave(a.member_id)
        await asyncio.sleep(0)
        assert group.state in (PREPARING, EMPTY)
        b = await join(group)
        await group.sync(b.member_id, b.generation, {})
        clock.ms += 10_001
        assert group.expire() == [b.member_id]
        await asyncio.sleep(0.01)
        assert group.state == EMPTY and not group.members

    asyncio.run(run())


def test_protocols_must_be_shared_and_of_the_groups_type() -> None:
    async def run() -> None:
        group = new_group(FakeClock())
        await join(group, protocols=["range"])
        with pytest.raises(ClassicGroupError) as disjoint:
            join(group, protocols=["sticky"])
        assert disjoint.value.code == INCONSISTENT_GROUP_PROTOCOL
        with pytest.raises(ClassicGroupError) as other_type:
            group.join("", None, "c", "h", 10_000, 1_000, "connect", [("x", b"")])
        assert other_type.value.code == INCONSISTENT_GROUP_PROTOCOL

    asyncio.run(run())


def test_a_join_without_member_id_gets_one_to_rejoin_with_kip_394() -> None:
    """JoinGroup v4+: the first join only hands out an id (MEMBER_ID_REQUIRED); the member
    joins when it comes back with it. An id not used within the session timeout expires."""

    async def run() -> None:
        clock = FakeClock()
        group = new_group(clock)

        def join_v4(member_id: str = "", instance_id: str | None = None):  # type: ignore[no-untyped-def]
            return group.join(
                member_id, instance_id, "client", "host", 10_000, 1_000, "consumer",
                [("range", b"range")], require_known_member_id=True,
            )  # fmt: skip

        first = await join_v4()
        assert first.error_code == MEMBER_ID_REQUIRED and first.member_id
        assert group.members == {} and group.state == EMPTY
        joined = await join_v4(first.member_id)
        assert joined.error_code == 0 and joined.member_id == first.member_id
        assert joined.leader == first.member_id and list(group.members) == [first.member_id]

        lost = await join_v4()
        clock.ms += 10_000  # the session timeout of the member that asked
        with pytest.raises(ClassicGroupError) as expired:
            join_v4(lost.member_id)
        assert expired.value.code == UNKNOWN_MEMBER_ID
        assert group.pending_member_ids == {}

        static = join_v4(instance_id="instance-1")  # static members keep their identity
        assert group.state == PREPARING and not static.done()
        static.cancel()

    asyncio.run(run())
