"""Partition reassignment in the controller (KIP-455; node/controller/reassignment.py): each step
is one metadata record, so a new controller replaying the log resumes a move where it stood."""

from __future__ import annotations

import itertools

import pytest

from strom.node.controller.errors import ControllerError
from strom.node.controller.logic import ControllerLogic, ControllerSettings
from strom.node.metadata.image import (
    MetadataImage,
    PartitionInfo,
    apply_records,
    decode_snapshot,
    encode_snapshot,
)
from strom.v1 import common_pb2, metadata_pb2

Record = metadata_pb2.MetadataRecord
DEFAULTS = {"unclean.leader.election.enable": False}


class Cluster:
    """An active controller over a metadata log the test commits to; `failover()` replaces the
    controller with a new one that knows only the committed log, as after a crash."""

    def __init__(self, brokers: tuple[int, ...] = (1, 2, 3, 4)) -> None:
        self.ids = itertools.count(1)
        self.log: list[list[Record]] = []
        self.committed = MetadataImage()
        self.logic = self._new_controller()
        self.epochs: dict[int, int] = {}
        for broker_id in brokers:
            records, self.epochs[broker_id] = self.logic.register_broker(broker_id, b"i", [], "", 0)
            self.commit(records)
            self.heartbeat(broker_id)

    def _new_controller(self) -> ControllerLogic:
        settings = ControllerSettings(1, 1, DEFAULTS)
        logic = ControllerLogic(
            settings, self.committed, lambda: next(self.ids).to_bytes(16, "big")
        )
        logic.reset(self.committed, 0)
        return logic

    def failover(self) -> None:
        self.logic = self._new_controller()

    def commit(self, records: list[Record]) -> None:
        if records:
            self.log.append(records)
            index = self.committed.last_index + 1
            self.committed, _ = apply_records(self.committed, records, index, 1)
        self.logic.on_commit(self.committed, active=True)

    def heartbeat(self, broker_id: int) -> None:
        records, _ = self.logic.broker_heartbeat(
            broker_id, self.epochs[broker_id], self.committed.last_index, False, False, 0
        )
        self.commit(records)

    def create(self, name: str, replicas: tuple[int, ...]) -> bytes:
        """A one-partition topic on exactly `replicas` (created, then moved there)."""
        records, topic_id, _, _ = self.logic.create_topic(name, 1, len(replicas), {})
        self.commit(records)
        self.reassign(name, replicas)
        part = self.part(topic_id)
        while part.reassigning:
            self.join_isr(topic_id, part.adding_replicas[0])
            part = self.part(topic_id)
        if part.leader != replicas[0]:
            records, _ = self.logic.elect_preferred_leaders()
            self.commit(records)
        assert self.part(topic_id).replicas == replicas
        return topic_id

    def part(self, topic_id: bytes) -> PartitionInfo:
        return self.committed.topics[topic_id].partitions[0]

    def reassign(self, name: str, target: tuple[int, ...] | None) -> None:
        self.commit(self.logic.reassign_partition(name, 0, target))

    def join_isr(self, topic_id: bytes, replica: int) -> None:
        """The leader's AlterPartition adding `replica`, which caught up."""
        part = self.part(topic_id)
        records, _ = self.logic.alter_partition(
            part.leader,
            self.epochs[part.leader],
            topic_id,
            0,
            part.leader_epoch,
            part.partition_epoch,
            [*part.isr, replica],
        )
        self.commit(records)


def test_move_adds_followers_outside_the_isr_then_completes_and_moves_leadership() -> None:
    c = Cluster()
    topic_id = c.create("orders", (1, 2, 3))
    assert c.part(topic_id).leader == 1
    c.reassign("orders", (2, 3, 4))
    part = c.part(topic_id)
    assert part.replicas == (2, 3, 4, 1)  # target first, then the replicas being removed
    assert part.adding_replicas == (4,) and part.removing_replicas == (1,)
    assert part.isr == (2, 3, 1) and part.leader == 1  # 4 catches up outside the ISR
    c.join_isr(topic_id, 4)
    done = c.part(topic_id)
    assert done.replicas == (2, 3, 4) and done.isr == (2, 3, 4)
    assert done.adding_replicas == () and done.removing_replicas == () and not done.reassigning
    assert done.leader == 2 and done.leader_epoch == part.leader_epoch + 1


def test_a_move_waits_for_every_target_replica() -> None:
    c = Cluster((1, 2, 3, 4, 5))
    topic_id = c.create("t", (1, 2, 3))
    c.reassign("t", (3, 4, 5))
    c.join_isr(topic_id, 4)
    part = c.part(topic_id)
    assert part.reassigning and part.isr == (3, 4, 1, 2) and part.leader == 1
    c.join_isr(topic_id, 5)
    part = c.part(topic_id)
    assert part.replicas == (3, 4, 5) and part.isr == (3, 4, 5) and part.leader == 3


def test_shrink_or_reorder_completes_at_once() -> None:
    c = Cluster()
    topic_id = c.create("t", (1, 2, 3))
    c.reassign("t", (3, 2))
    part = c.part(topic_id)
    assert part.replicas == (3, 2) and part.isr == (3, 2) and part.leader == 3
    assert not part.reassigning
    assert c.logic.reassign_partition("t", 0, (3, 2)) == []  # already so: no record


def test_cancel_returns_to_the_original_replicas() -> None:
    c = Cluster((1, 2, 3, 4, 5))
    topic_id = c.create("t", (1, 2, 3))
    before = c.part(topic_id)
    c.reassign("t", (2, 4, 5))
    c.join_isr(topic_id, 4)  # one new replica in sync, the move not done
    c.reassign("t", None)
    part = c.part(topic_id)
    # Kafka's revert: `replicas` minus the adding ones, so the order is the move's, (2, 1, 3).
    assert part.replicas == (2, 1, 3) and set(part.isr) == set(before.isr)
    assert part.leader == 1 and not part.reassigning
    with pytest.raises(ControllerError) as err:
        c.logic.reassign_partition("t", 0, None)
    assert err.value.code == common_pb2.NO_REASSIGNMENT_IN_PROGRESS


def test_a_new_target_replaces_the_move_in_progress() -> None:
    c = Cluster((1, 2, 3, 4, 5))
    topic_id = c.create("t", (1, 2, 3))
    c.reassign("t", (2, 3, 4))
    c.reassign("t", (2, 3, 5))  # measured from the original (1, 2, 3), not from (2, 3, 4, 1)
    part = c.part(topic_id)
    assert part.replicas == (2, 3, 5, 1)
    assert part.adding_replicas == (5,) and part.removing_replicas == (1,)
    c.join_isr(topic_id, 5)
    assert c.part(topic_id).replicas == (2, 3, 5)


def test_cancel_that_would_need_an_unclean_election_is_refused() -> None:
    c = Cluster()
    topic_id = c.create("t", (1,))
    c.reassign("t", (1, 2, 3))
    c.join_isr(topic_id, 2)
    assert c.part(topic_id).isr == (1, 2)
    # Broker 1, the only original replica, is fenced: it stays in no ISR, 2 leads.
    c.commit(c.logic.fence_broker(1))
    assert c.part(topic_id).isr == (2,) and c.part(topic_id).leader == 2
    with pytest.raises(ControllerError) as err:
        c.logic.reassign_partition("t", 0, None)
    assert err.value.code == common_pb2.INVALID_REPLICA_ASSIGNMENT
    assert "unclean election" in err.value.message


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ((), "empty"),
        ((2, 2, 3), "more than once"),
        ((2, 3, 9), "not registered"),
    ],
)
def test_bad_targets_are_refused(target: tuple[int, ...], message: str) -> None:
    c = Cluster()
    c.create("t", (1, 2, 3))
    with pytest.raises(ControllerError) as err:
        c.logic.reassign_partition("t", 0, target)
    assert err.value.code == common_pb2.INVALID_REPLICA_ASSIGNMENT and message in err.value.message


def test_a_move_that_changes_the_replication_factor_is_refused_when_asked() -> None:
    """KIP-860: with keep_replication_factor a target must have as many replicas as the
    partition had before the move in progress (not counting the replicas being added)."""
    c = Cluster((1, 2, 3, 4, 5))
    topic_id = c.create("t", (1, 2, 3))
    for target in ((1, 2), (1, 2, 3, 4)):
        with pytest.raises(ControllerError) as err:
            c.logic.reassign_partition("t", 0, target, keep_replication_factor=True)
        assert err.value.code == common_pb2.INVALID_REPLICATION_FACTOR
        assert f"from 3 to {len(target)}" in err.value.message
    assert not c.part(topic_id).reassigning  # nothing was recorded
    c.commit(c.logic.reassign_partition("t", 0, (2, 3, 4), keep_replication_factor=True))
    assert c.part(topic_id).replicas == (2, 3, 4, 1)  # moving: the original count is still 3
    c.commit(c.logic.reassign_partition("t", 0, (3, 4, 5), keep_replication_factor=True))
    with pytest.raises(ControllerError):
        c.logic.reassign_partition("t", 0, (3, 4, 5, 2), keep_replication_factor=True)
    c.commit(c.logic.reassign_partition("t", 0, (3, 4, 5, 2)))  # allowed by default
    assert c.part(topic_id).adding_replicas == (4, 5)


def test_unknown_partition_is_refused() -> None:
    c = Cluster()
    c.create("t", (1, 2, 3))
    for topic, partition in (("nope", 0), ("t", 5)):
        with pytest.raises(ControllerError) as err:
            c.logic.reassign_partition(topic, partition, (1,))
        assert err.value.code == common_pb2.UNKNOWN_TOPIC_OR_PARTITION


def test_a_fenced_new_replica_cannot_join_so_the_move_waits() -> None:
    c = Cluster()
    topic_id = c.create("t", (1, 2, 3))
    c.commit(c.logic.fence_broker(4))
    c.reassign("t", (2, 3, 4))  # a registered but fenced broker is a valid target
    with pytest.raises(ControllerError) as err:
        c.join_isr(topic_id, 4)
    assert err.value.code == common_pb2.INELIGIBLE_REPLICA
    assert c.part(topic_id).reassigning


def test_failover_at_every_step_resumes_the_move() -> None:
    """Run a move, then for each prefix of its records, a new controller that saw only that
    prefix committed finishes the move: the same final assignment each time, and replaying the
    records (or a snapshot taken mid-move) rebuilds the same image."""
    reference = Cluster((1, 2, 3, 4, 5))
    topic_id = reference.create("t", (1, 2, 3))
    start = len(reference.log)
    reference.reassign("t", (3, 4, 5))
    reference.join_isr(topic_id, 4)
    reference.join_isr(topic_id, 5)
    steps = reference.log[start:]
    assert len(steps) == 3
    final = reference.part(topic_id)
    assert final.replicas == (3, 4, 5) and final.leader == 3

    for cut in range(len(steps) + 1):
        c = Cluster((1, 2, 3, 4, 5))
        assert c.create("t", (1, 2, 3)) == topic_id
        for records in steps[:cut]:
            c.commit(records)
        c.failover()  # the new controller knows only the committed log
        mid = c.part(topic_id)
        assert decode_snapshot(encode_snapshot(c.committed, "x"))[0].topics == c.committed.topics
        replayed = MetadataImage()
        for index, records in enumerate(c.log, start=1):
            replayed, _ = apply_records(replayed, records, index, 1)
        assert replayed.topics == c.committed.topics
        if cut == 0:
            c.reassign("t", (3, 4, 5))
        for replica in (4, 5):
            if replica not in c.part(topic_id).isr and c.part(topic_id).reassigning:
                c.join_isr(topic_id, replica)
        done = c.part(topic_id)
        assert (done.replicas, done.isr, done.leader, done.reassigning) == (
            final.replicas,
            final.isr,
            final.leader,
            False,
        ), f"failover after step {cut} ({mid})"


def test_unregister_only_a_stopped_broker_that_hosts_nothing() -> None:
    c = Cluster()
    topic_id = c.create("t", (2, 3, 4))

    def refusal(broker_id: int, voters: tuple[int, ...] = (1, 2, 3)) -> str:
        with pytest.raises(ControllerError) as err:
            c.logic.unregister_broker(broker_id, voters)
        return err.value.message

    assert "still hosts 1 replicas (t-0)" in refusal(4)
    assert "controller voter" in refusal(3)
    c.reassign("t", (1, 2, 3))
    c.join_isr(topic_id, 1)
    assert c.part(topic_id).replicas == (1, 2, 3)
    assert "stop it first" in refusal(4)
    c.commit(c.logic.fence_broker(4))
    c.commit(c.logic.unregister_broker(4, (1, 2, 3)))
    assert 4 not in c.committed.brokers
    assert set(decode_snapshot(encode_snapshot(c.committed, "x"))[0].brokers) == {1, 2, 3}
    with pytest.raises(ControllerError) as err:
        c.logic.unregister_broker(4, (1, 2, 3))
    assert err.value.code == common_pb2.BROKER_ID_NOT_REGISTERED
    # It may come back later, with a larger epoch than any it had.
    old_epoch = c.epochs[4]
    records, c.epochs[4] = c.logic.register_broker(4, b"again", [], "", 0)
    c.commit(records)
    assert c.epochs[4] > old_epoch and 4 in c.committed.brokers
