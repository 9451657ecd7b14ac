"""Acknowledged writes survive ISR changes and truncation (issue #14, defects 1 and 2).

Real Partition objects over real logs in a temporary folder, the real ReplicaManager loop that
sends AlterPartition, and the real ControllerLogic rules; only the controller's transport is
scripted.

Defect 1: a committed ISR expansion whose answer the leader missed was resent, refused as stale
(INVALID_UPDATE_VERSION), and forgotten: the leader dropped the new member from its
high-watermark computation and acknowledged acks=all writes that member did not hold, though the
committed ISR counted it (and could elect it). Defect 2: truncation left the high watermark above
the new log end, so this replica, once leader, answered acks=all at once for offsets below the
stale HW that no follower held.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_controller_logic import Cluster

from strom.node.config import build_config
from strom.node.controller.errors import ControllerError
from strom.node.metadata.image import PartitionInfo
from strom.node.peers import GrpcPeers
from strom.node.replica.leader_state import IsrChange
from strom.node.replica.manager import ReplicaManager
from strom.node.replica.partition import Partition
from strom.storage.log_manager import LogManager
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import common_pb2, controller_pb2

TOPIC_ID = bytes(range(16))


def records(count: int, start: int = 0) -> bytes:
    return encode_batch([Record(None, f"v{start + i}".encode(), (), 1000) for i in range(count)])


def leader_log(count: int) -> bytes:
    """What a follower fetches: one-record batches at offsets 0..count-1 (so a truncation can
    cut between any two records), stamped with leader epoch 1."""
    return b"".join(
        encode_batch(
            [Record(None, f"v{i}".encode(), (), 1000)], base_offset=i, partition_leader_epoch=1
        )
        for i in range(count)
    )


def info(leader: int, isr: tuple[int, ...], leader_epoch: int = 1, epoch: int = 1) -> PartitionInfo:
    return PartitionInfo(
        replicas=(1, 2, 3), isr=isr, leader=leader, leader_epoch=leader_epoch, partition_epoch=epoch
    )


def partition(tmp_path: Path, broker_id: int = 1) -> Partition:
    log = PartitionLog.open(str(tmp_path / f"orders-0-b{broker_id}"), now_ms=0)
    return Partition("orders", 0, TOPIC_ID, log, broker_id, high_watermark=0)


# ---- defect 2 ---------------------------------------------------------------------------------


def test_truncation_lowers_the_high_watermark(tmp_path: Path) -> None:
    follower = partition(tmp_path, broker_id=2)
    follower.make_follower(info(leader=1, isr=(1, 2, 3)))
    data = leader_log(10)
    follower.append_as_follower(data, leader_hw=10, now_ms=1)
    assert follower.log.log_end_offset == 10
    assert follower.high_watermark == 10
    follower.truncate_to(4, now_ms=2)
    assert follower.high_watermark == 4


def test_a_truncated_replica_that_leads_does_not_ack_what_it_lost(tmp_path: Path) -> None:
    async def scenario() -> bool:
        replica = partition(tmp_path, broker_id=2)
        replica.make_follower(info(leader=1, isr=(1, 2, 3)))
        replica.append_as_follower(leader_log(10), leader_hw=10, now_ms=1)
        replica.truncate_to(4, now_ms=2)
        replica.make_leader(info(leader=2, isr=(2, 3), leader_epoch=2, epoch=2), now_ms=3)
        appended = replica.append_as_leader(records(3), -1, 1, now_ms=4)
        assert appended.first_offset == 4
        # Follower 3 has not fetched yet: nothing at offset 4..6 may count as committed.
        try:
            await replica.wait_for_isr(appended.last_offset, 1, timeout_s=0.05)
        except Exception:
            return False
        return True

    assert asyncio.run(scenario()) is False


# ---- defect 1: the controller's side ------------------------------------------------------


def test_a_resent_isr_change_that_committed_is_answered_with_success() -> None:
    cluster = Cluster()
    for broker in (1, 2, 3):
        cluster.add_broker(broker)
    created, topic_id, _, _ = cluster.logic.create_topic("t", 1, 3, {})
    cluster.commit(created)
    part = cluster.logic.image.partition(topic_id, 0)
    assert part is not None
    shrink, after = cluster.logic.alter_partition(
        part.leader, cluster.epochs[part.leader], topic_id, 0, part.leader_epoch,
        part.partition_epoch, [part.leader],
    )  # fmt: skip
    cluster.commit(shrink)
    # The leader missed the answer and resends the same request, with the old partition epoch.
    again, current = cluster.logic.alter_partition(
        part.leader, cluster.epochs[part.leader], topic_id, 0, part.leader_epoch,
        part.partition_epoch, [part.leader],
    )  # fmt: skip
    assert again == [] and current.isr == (part.leader,) == after.isr
    # A different change on the stale epoch is still refused.
    with pytest.raises(ControllerError) as refused:
        cluster.logic.alter_partition(
            part.leader, cluster.epochs[part.leader], topic_id, 0, part.leader_epoch,
            part.partition_epoch, list(part.replicas)[:2],
        )  # fmt: skip
    assert refused.value.code == common_pb2.INVALID_UPDATE_VERSION


def test_an_added_replica_that_restarted_since_is_ineligible() -> None:
    """KIP-903: the leader saw replica R catch up with broker epoch E; R restarted (maybe with
    a shorter log) and registered with E' != E: adding R on the strength of E is refused."""
    cluster = Cluster()
    for broker in (1, 2, 3):
        cluster.add_broker(broker)
    created, topic_id, _, _ = cluster.logic.create_topic("t", 1, 3, {})
    cluster.commit(created)
    part = cluster.logic.image.partition(topic_id, 0)
    assert part is not None
    leader, follower = part.leader, next(r for r in part.replicas if r != part.leader)
    shrink, _ = cluster.logic.alter_partition(
        leader, cluster.epochs[leader], topic_id, 0, part.leader_epoch, part.partition_epoch,
        [r for r in part.isr if r != follower],
    )  # fmt: skip
    cluster.commit(shrink)
    shrunk = cluster.logic.image.partition(topic_id, 0)
    assert shrunk is not None
    seen_epoch = cluster.epochs[follower]
    cluster.add_broker(follower)  # re-registers: a new broker epoch
    assert cluster.epochs[follower] != seen_epoch
    with pytest.raises(ControllerError) as refused:
        cluster.logic.alter_partition(
            leader, cluster.epochs[leader], topic_id, 0, shrunk.leader_epoch,
            shrunk.partition_epoch, [*shrunk.isr, follower], {follower: seen_epoch},
        )  # fmt: skip
    assert refused.value.code == common_pb2.INELIGIBLE_REPLICA
    _, grown = cluster.logic.alter_partition(
        leader, cluster.epochs[leader], topic_id, 0, shrunk.leader_epoch,
        shrunk.partition_epoch, [*shrunk.isr, follower], {follower: cluster.epochs[follower]},
    )  # fmt: skip
    assert follower in grown.isr


# ---- defect 1: the leader's side --------------------------------------------------------------


class ScriptedController:
    """Answers every AlterPartition with the given per-partition error code."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.requests: list[controller_pb2.AlterPartitionRequest] = []

    async def call(self, method: Any, request: Any, deadline_s: float) -> Any:
        self.requests.append(request)
        return controller_pb2.AlterPartitionResponse(
            status=controller_pb2.ControllerStatus(),
            partitions=[controller_pb2.AlterPartitionResult(error_code=self.code)],
        )


@pytest.mark.parametrize(
    ("code", "forgotten"),
    [
        (common_pb2.INVALID_UPDATE_VERSION, False),
        (common_pb2.FENCED_LEADER_EPOCH, False),
        (common_pb2.INELIGIBLE_REPLICA, True),
    ],
)
def test_only_a_refusal_that_proves_nothing_was_applied_forgets_a_pending_expansion(
    tmp_path: Path, code: int, forgotten: bool
) -> None:
    async def scenario() -> tuple[IsrChange | None, int, list[Any]]:
        config = build_config(
            {"node.id": 1, "controller.quorum.voters": "1@localhost:9093"}, environ={}
        )
        logs = LogManager(str(tmp_path / "data"), now_ms=0)
        controller = ScriptedController(code)
        manager = ReplicaManager(config, logs, controller, lambda: 5, GrpcPeers())  # type: ignore[arg-type]
        leader = partition(tmp_path)
        leader.make_leader(info(leader=1, isr=(1, 2)), now_ms=0)
        leader.append_as_leader(records(5), -1, 1, now_ms=1)
        # Follower 2 holds everything; follower 3 catches up to the HW and is proposed.
        leader.fetch_for_follower(2, 5, -1, 1 << 20, {1, 2, 3}, now_ms=2, broker_epoch=7)
        fetched = leader.fetch_for_follower(3, 5, -1, 1 << 20, {1, 2, 3}, now_ms=2, broker_epoch=9)
        change = fetched.isr_change
        assert change is not None and change.new_isr == (1, 2, 3)
        assert change.broker_epochs == (-1, 7, 9)
        manager.submit_isr_change(leader, change)
        await asyncio.sleep(0.05)
        # More records: with 3 still pending, the HW must wait for it too.
        leader.append_as_leader(records(5, start=5), -1, 1, now_ms=3)
        leader.fetch_for_follower(2, 10, -1, 1 << 20, {1, 2, 3}, now_ms=4, broker_epoch=7)
        assert leader.leader_state is not None
        return leader.leader_state.pending, leader.high_watermark, controller.requests

    pending, hw, requests = asyncio.run(scenario())
    assert len(requests) == 1
    sent = requests[0].partitions[0]
    assert [(m.broker_id, m.broker_epoch) for m in sent.new_isr_with_epochs] == [
        (1, -1), (2, 7), (3, 9),
    ]  # fmt: skip
    if forgotten:
        assert pending is None and hw == 10
    else:
        assert pending is not None and hw == 5  # replica 3 (maybe in the ISR) holds only 5
