"""Offset commits and coordinator fencing (issue #14, defects 7 and 8).

The real GroupCoordinator over a real ReplicaManager whose `__consumer_offsets` partition (RF=1,
led here) is a real log in a temporary folder; the metadata image comes from the real
ControllerLogic. Defect 7: the member epoch was checked before awaiting end-offset look-ups, so a
member fenced meanwhile had its commit written after the new owner's (the committed offset went
backwards); and a commit above the partition's HW was refused, which Kafka does not do.
Defect 8: a coordinator cut off from the controller kept serving its members after another broker
could have taken their group over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from test_controller_logic import Cluster

from strom.node.config import build_config
from strom.node.group.coordinator import GroupCoordinator, GroupError
from strom.node.group.offsets_log import OFFSETS_TOPIC
from strom.node.metadata.image import MetadataImage
from strom.node.metadata.state import full_delta
from strom.node.peers import GrpcPeers
from strom.node.replica.manager import NEW_LOGS_INLINE_MAX, NEW_LOGS_PER_TURN_MAX, ReplicaManager
from strom.storage.log_manager import LogManager
from strom.v1 import common_pb2

GROUP = "billing"


class Lookups:
    """End-offset look-ups that the test can hold (the old coordinator awaited them)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.end_offset = 0  # the old coordinator refused commits above this

    async def __call__(self, topic: str, partition: int) -> int:
        await self.gate.wait()
        return self.end_offset


class Broker:
    def __init__(self, tmp_path: Path) -> None:
        cluster = Cluster()
        cluster.add_broker(1)
        cluster.create(OFFSETS_TOPIC, 1, 1, **{"cleanup.policy": "compact"})
        cluster.create("orders", 2, 1)
        self.image: MetadataImage = cluster.committed
        config = build_config(
            {
                "node.id": 1,
                "controller.quorum.voters": "1@localhost:9093",
                "offsets.topic.num.partitions": 1,
                "group.initial.rebalance.delay.ms": 0,
            },
            environ={},
        )
        self.logs = LogManager(str(tmp_path / "data"), now_ms=0)
        self.manager = ReplicaManager(config, self.logs, None, lambda: 1, GrpcPeers())  # type: ignore[arg-type]
        self.lookups = Lookups()
        self.lease = True
        self.coordinator = GroupCoordinator(
            config, self.manager, self.lookups, has_lease=lambda: self.lease
        )

    async def start(self) -> None:
        self.manager.on_metadata(self.image, full_delta(MetadataImage(), self.image))
        self.manager.start_acting()
        self.coordinator.on_metadata(self.image, full_delta(MetadataImage(), self.image))
        await self.loaded()

    async def loaded(self) -> None:
        async with asyncio.timeout(5):
            while 0 not in self.coordinator.loaded:
                await asyncio.sleep(0.01)

    def join(self, member_id: str) -> tuple[str, int, dict[str, tuple[int, ...]]]:
        return self.coordinator.heartbeat(
            GROUP, member_id, 0, member_id, "", "h", ["orders"], "range", None
        )

    def heartbeat(
        self, member_id: str, epoch: int, owned: dict[str, list[int]]
    ) -> tuple[str, int, dict[str, tuple[int, ...]]]:
        return self.coordinator.heartbeat(
            GROUP, member_id, epoch, member_id, "", "h", None, "", owned
        )


@asynccontextmanager
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    b = Broker(tmp_path)
    try:
        await b.start()
        yield b
    finally:
        await b.coordinator.stop()
        b.logs.close()


def test_a_commit_above_the_high_watermark_is_accepted(tmp_path: Path) -> None:
    """Right after a leader change the new leader's HW can trail offsets consumers already
    read from the old leader; Kafka stores such commits."""

    async def scenario() -> dict[tuple[str, int], tuple[int, str]]:
        async with broker(tmp_path) as b:
            return await b.coordinator.commit(GROUP, "", -1, [("orders", 0, 42, "")])

    assert asyncio.run(scenario()) == {("orders", 0): (common_pb2.NONE, "")}


def test_a_fenced_members_commit_never_lands_after_the_new_owners(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        async with broker(tmp_path) as b:
            member, epoch, assigned = b.join("a")
            assert assigned == {"orders": (0, 1)}
            b.lookups.end_offset = 1_000  # not the point of this test
            b.lookups.gate.clear()  # the old coordinator parks the commit here
            late = asyncio.create_task(
                b.coordinator.commit(GROUP, member, epoch, [("orders", 0, 5, "")])
            )
            await asyncio.sleep(0.01)
            # Member a is fenced (it left, say by session expiry); b takes the partition over
            # and commits further along.
            b.heartbeat(member, -1, {})
            new, new_epoch, new_assigned = b.join("b")
            assert "orders" in new_assigned
            b.lookups.gate.set()
            done = await b.coordinator.commit(GROUP, new, new_epoch, [("orders", 0, 9, "")])
            assert done == {("orders", 0): (common_pb2.NONE, "")}
            with contextlib.suppress(GroupError):  # refused is fine: it was fenced
                await late
            in_memory = b.coordinator.fetch_offsets(GROUP, [("orders", 0)])[("orders", 0)]
            # A coordinator that loads the partition afresh reads the same answer.
            b.coordinator._unload(0)
            b.coordinator.on_metadata(b.image, full_delta(MetadataImage(), b.image))
            await b.loaded()
            reloaded = b.coordinator.fetch_offsets(GROUP, [("orders", 0)])[("orders", 0)]
            assert in_memory is not None and reloaded is not None
            return in_memory.offset, reloaded.offset

    assert asyncio.run(scenario()) == (9, 9)


def test_a_coordinator_without_a_lease_stops_answering_and_reloads_as_taken_over(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with broker(tmp_path) as b:
            b.coordinator.start()
            member, epoch, _ = b.join("a")
            b.lease = False  # no heartbeat answered for a broker session timeout
            with pytest.raises(GroupError) as refused:
                b.heartbeat(member, epoch, {"orders": [0, 1]})
            assert refused.value.code == common_pb2.COORDINATOR_NOT_AVAILABLE
            async with asyncio.timeout(5):
                while b.coordinator.loaded:
                    await asyncio.sleep(0.05)  # the maintenance task unloads every group
            b.lease = True
            await b.loaded()
            # Another coordinator may have served the group meanwhile: hand out nothing for a
            # session timeout.
            _, _, assigned = b.join("c")
            assert assigned == {}
            assert b.coordinator.group_state(b.coordinator.describe(GROUP)) == "Assigning"

    asyncio.run(scenario())


def test_a_members_commit_to_a_group_this_coordinator_does_not_know_is_unknown_member(
    tmp_path: Path,
) -> None:
    """A commit naming a member, to a coordinator with no such group (it has just taken the
    group over, or the group expired), tells the member to rejoin; it used to trip an assert and
    fail the RPC with UNKNOWN (node simulation seed 1070)."""

    async def scenario() -> int:
        async with broker(tmp_path) as b:
            with pytest.raises(GroupError) as refused:
                await b.coordinator.commit(GROUP, "m-gone", 3, [("orders", 0, 5, "")])
            return refused.value.code

    assert asyncio.run(scenario()) == common_pb2.UNKNOWN_MEMBER_ID


def test_partitions_first_seen_without_a_lease_load_once_it_comes(tmp_path: Path) -> None:
    """The broker acts on its image for the first time while its lease is already over (the
    heartbeat that unfenced it was answered after a session timeout): nothing is loaded then,
    and the partitions must load when the lease comes. They never did: with nothing loaded the
    lease did not count as lost, and a quiet cluster sent no new metadata (node simulation
    seed 33: a group that could never find its coordinator)."""

    async def scenario() -> None:
        b = Broker(tmp_path)
        b.lease = False
        b.manager.on_metadata(b.image, full_delta(MetadataImage(), b.image))
        b.manager.start_acting()
        b.coordinator.on_metadata(b.image, full_delta(MetadataImage(), b.image))
        b.coordinator.start()
        try:
            await asyncio.sleep(0.6)
            assert not b.coordinator.loaded
            b.lease = True
            await b.loaded()
        finally:
            await b.coordinator.stop()
            b.logs.close()

    asyncio.run(scenario())


def test_offsets_partitions_opened_in_later_slices_still_load(tmp_path: Path) -> None:
    """New replica logs open in the background, a few per loop turn (ReplicaManager): the
    coordinator learns it leads an offsets partition before the log is open. It gave up on
    such a partition ("does not host") and never tried again, so every group there answered
    NOT_COORDINATOR forever (librdkafka's JoinGroup looped on it in a fresh cluster)."""
    count = NEW_LOGS_INLINE_MAX + NEW_LOGS_PER_TURN_MAX * 3

    async def scenario() -> None:
        cluster = Cluster()
        cluster.add_broker(1)
        cluster.create(OFFSETS_TOPIC, count, 1, **{"cleanup.policy": "compact"})
        config = build_config(
            {"node.id": 1, "controller.quorum.voters": "1@localhost:9093",
             "offsets.topic.num.partitions": count},
            environ={},
        )  # fmt: skip
        logs = LogManager(str(tmp_path / "data"), now_ms=0)
        manager = ReplicaManager(config, logs, None, lambda: 1, GrpcPeers())  # type: ignore[arg-type]
        coordinator = GroupCoordinator(config, manager, Lookups())
        image = cluster.committed
        try:
            manager.start_acting()
            manager.on_metadata(image, full_delta(MetadataImage(), image))
            coordinator.on_metadata(image, full_delta(MetadataImage(), image))
            async with asyncio.timeout(5):
                while coordinator.loaded != set(range(count)):
                    await asyncio.sleep(0.01)
        finally:
            await coordinator.stop()
            await manager.stop()
            logs.close()

    asyncio.run(scenario())
