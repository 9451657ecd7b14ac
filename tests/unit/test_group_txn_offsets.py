"""Offsets committed inside a transaction (TxnOffsetCommit, KIP-98/447): the real
GroupCoordinator over a real `__consumer_offsets` log (the harness of
test_group_commit_safety). They are written as the producer's transactional records, stay
invisible until the transaction's marker, become the group's offsets on a commit marker and
vanish on an abort marker; a coordinator that loads the partition afresh decides them from the
markers in the log the same way, and keeps undecided ones pending."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_group_commit_safety import GROUP, Broker, broker

from strom.node.group.coordinator import GroupError
from strom.node.group.offsets_log import OFFSETS_TOPIC
from strom.node.metadata.image import MetadataImage
from strom.node.metadata.state import full_delta
from strom.storage.control_records import TxnMarker
from strom.v1 import common_pb2

PID, EPOCH = 7, 0


def offset_of(b: Broker, partition: int = 0) -> int | None:
    entry = b.coordinator.fetch_offsets(GROUP, [("orders", partition)])[("orders", partition)]
    return None if entry is None else entry.offset


def end_txn(b: Broker, commit: bool, pid: int = PID) -> None:
    """What WriteTxnMarkers does on the offsets partition's leader."""
    replica = b.manager.partition_by_name(OFFSETS_TOPIC, 0)
    marker = TxnMarker(pid, EPOCH, commit, coordinator_epoch=0)
    replica.write_markers([marker], 0)
    b.coordinator.on_txn_marker(OFFSETS_TOPIC, 0, marker)


async def txn_commit(b: Broker, offset: int, pid: int = PID) -> None:
    b.manager.partition_by_name(OFFSETS_TOPIC, 0).register_transaction(pid, EPOCH)  # AddOffsets
    done = await b.coordinator.txn_commit(GROUP, pid, EPOCH, "", -1, [("orders", 0, offset, "")])
    assert done == {("orders", 0): (common_pb2.NONE, "")}


async def reload(b: Broker) -> None:
    b.coordinator._unload(0)
    b.coordinator.on_metadata(b.image, full_delta(MetadataImage(), b.image))
    await b.loaded()


def test_offsets_of_a_transaction_count_only_once_it_commits(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with broker(tmp_path) as b:
            await b.coordinator.commit(GROUP, "", -1, [("orders", 0, 3, "")])
            await txn_commit(b, 10)
            assert offset_of(b) == 3  # pending: not visible to OffsetFetch
            end_txn(b, commit=True)
            assert offset_of(b) == 10
            await txn_commit(b, 20)  # the producer's next transaction (sequence continues)
            end_txn(b, commit=False)
            assert offset_of(b) == 10  # aborted: dropped
            await reload(b)  # a new coordinator decides them from the markers in the log
            assert offset_of(b) == 10

    asyncio.run(scenario())


def test_a_reloaded_coordinator_keeps_undecided_offsets_pending(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with broker(tmp_path) as b:
            await txn_commit(b, 5)
            await reload(b)  # failover between the commit and the marker
            assert offset_of(b) is None
            end_txn(b, commit=True)  # the transaction coordinator completes it
            assert offset_of(b) == 5

    asyncio.run(scenario())


def test_a_producer_that_did_not_add_the_offsets_partition_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with broker(tmp_path) as b:
            with pytest.raises(GroupError) as refused:
                await b.coordinator.txn_commit(GROUP, 9, 0, "", -1, [("orders", 0, 5, "")])
            assert refused.value.code == common_pb2.INVALID_TXN_STATE
            with pytest.raises(GroupError) as no_producer:
                await b.coordinator.txn_commit(GROUP, -1, 0, "", -1, [("orders", 0, 5, "")])
            assert no_producer.value.code == common_pb2.INVALID_PRODUCER_ID_MAPPING
            assert offset_of(b) is None

    asyncio.run(scenario())


def test_offset_fetch_requiring_stable_offsets_answers_unstable_while_pending(
    tmp_path: Path,
) -> None:
    """KIP-447 through the Group service's OffsetFetch: with require_stable, a partition whose
    offset is pending in a transaction answers UNSTABLE_OFFSET_COMMIT (listing all offsets
    too); without it, the last stable offset (Kafka's older clients); after the marker, the
    transaction's offset."""
    from strom.node.group.service import GroupServicer
    from strom.v1 import group_pb2

    async def fetch(servicer: GroupServicer, stable: bool, all_: bool = False) -> dict:
        request = group_pb2.OffsetFetchRequest(group_id=GROUP, require_stable=stable)
        if not all_:
            request.topics.add(topic="orders", partitions=[0, 1])
        response = await servicer.OffsetFetch(request, None)  # type: ignore[arg-type]
        assert response.error_code == common_pb2.NONE
        return {
            (t.name, p.partition): (p.offset, common_pb2.ErrorCode.Name(p.error_code))
            for t in response.topics
            for p in t.partitions
        }

    async def scenario() -> None:
        async with broker(tmp_path) as b:
            servicer = GroupServicer(b.coordinator, b.manager, None, "internal")  # type: ignore[arg-type]
            await b.coordinator.commit(GROUP, "", -1, [("orders", 0, 3, ""), ("orders", 1, 4, "")])
            await txn_commit(b, 10)
            assert await fetch(servicer, stable=True) == {
                ("orders", 0): (-1, "UNSTABLE_OFFSET_COMMIT"), ("orders", 1): (4, "NONE"),
            }  # fmt: skip
            assert (await fetch(servicer, stable=True, all_=True))[("orders", 0)] == (
                -1, "UNSTABLE_OFFSET_COMMIT",
            )  # fmt: skip
            assert (await fetch(servicer, stable=False))[("orders", 0)] == (3, "NONE")
            end_txn(b, commit=True)
            assert (await fetch(servicer, stable=True))[("orders", 0)] == (10, "NONE")
            await txn_commit(b, 20)
            await reload(b)  # a new coordinator still knows the undecided offset
            assert (await fetch(servicer, stable=True))[("orders", 0)] == (
                -1, "UNSTABLE_OFFSET_COMMIT",
            )  # fmt: skip
            end_txn(b, commit=False)
            assert (await fetch(servicer, stable=True))[("orders", 0)] == (10, "NONE")

    asyncio.run(scenario())
