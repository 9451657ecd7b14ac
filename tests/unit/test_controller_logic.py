"""The active controller's decisions over its speculative image (DESIGN.md §6)."""

from __future__ import annotations

import itertools

import pytest

from strom.node.controller.errors import ControllerError
from strom.node.controller.logic import ControllerLogic, ControllerSettings
from strom.node.controller.placement import place_replicas
from strom.node.metadata.image import (
    NO_LEADER,
    MetadataImage,
    apply_records,
    decode_snapshot,
    encode_snapshot,
)
from strom.v1 import common_pb2, metadata_pb2

DEFAULTS = {"unclean.leader.election.enable": False, "retention.ms": 604800000}


class Cluster:
    """A controller whose proposals commit when the test says so, as Raft would."""

    def __init__(self) -> None:
        ids = itertools.count(1)
        self.logic = ControllerLogic(
            ControllerSettings(
                num_partitions=1, default_replication_factor=1, topic_defaults=DEFAULTS
            ),
            MetadataImage(),
            new_topic_id=lambda: next(ids).to_bytes(16, "big"),
        )
        self.committed = MetadataImage()
        self.epochs: dict[int, int] = {}
        self.now_ms = 0

    def commit(self, records: list[metadata_pb2.MetadataRecord]) -> None:
        index = self.committed.last_index + 1
        self.committed, _ = apply_records(self.committed, records, index, 1)
        self.logic.on_commit(self.committed, active=True)

    def add_broker(self, broker_id: int) -> None:
        records, epoch = self.logic.register_broker(
            broker_id, b"inc", [metadata_pb2.Endpoint(listener="PLAINTEXT", port=9092)], "", 0
        )
        self.commit(records)
        self.epochs[broker_id] = epoch
        self.heartbeat(broker_id)

    def heartbeat(self, broker_id: int, **flags: bool) -> dict[str, bool]:
        records, answer = self.logic.broker_heartbeat(
            broker_id,
            self.epochs[broker_id],
            self.committed.last_index,
            flags.get("want_fence", False),
            flags.get("want_shut_down", False),
            self.now_ms,
        )
        self.commit(records)
        return answer

    def create(self, name: str, partitions: int, rf: int, **configs: str) -> bytes:
        records, topic_id, _, _ = self.logic.create_topic(name, partitions, rf, configs)
        self.commit(records)
        return topic_id


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster()
    for broker_id in (1, 2, 3):
        c.add_broker(broker_id)
    return c


def test_registration_starts_fenced_and_unfences_once_caught_up() -> None:
    c = Cluster()
    records, epoch = c.logic.register_broker(1, b"x", [], "", 0)
    c.epochs[1] = epoch
    assert c.logic.image.brokers[1].fenced
    # Not committed yet: the broker cannot have caught up with its own registration.
    _, answer = c.logic.broker_heartbeat(1, epoch, 10**9, False, False, 0)
    assert answer["is_fenced"] and not answer["is_caught_up"]
    c.commit(records)
    answer = c.heartbeat(1)
    assert answer == {"is_caught_up": True, "is_fenced": False, "should_shut_down": False}
    assert not c.committed.brokers[1].fenced


def test_stale_broker_epoch_is_refused(cluster: Cluster) -> None:
    records, new_epoch = cluster.logic.register_broker(2, b"again", [], "", 0)
    cluster.commit(records)
    assert new_epoch > cluster.epochs[2]
    with pytest.raises(ControllerError) as err:
        cluster.logic.broker_heartbeat(2, cluster.epochs[2], 0, False, False, 0)
    assert err.value.code == common_pb2.STALE_BROKER_EPOCH


def test_create_topic_spreads_replicas_and_leaders(cluster: Cluster) -> None:
    topic_id = cluster.create("order-events", 3, 3)
    topic = cluster.committed.topics[topic_id]
    assert topic.name == "order-events"
    leaders = [topic.partitions[p].leader for p in range(3)]
    assert sorted(leaders) == [1, 2, 3]
    for part in topic.partitions.values():
        assert part.isr == part.replicas and part.leader == part.replicas[0]
        assert sorted(part.replicas) == [1, 2, 3]


def test_placement_round_robin() -> None:
    assert place_replicas([3, 1, 2], 3, 2, start=0) == [(1, 2), (2, 3), (3, 1)]
    with pytest.raises(ControllerError) as err:
        place_replicas([1, 2], 1, 3, start=0)
    assert err.value.code == common_pb2.INVALID_REPLICATION_FACTOR
    assert "larger than the 2 available brokers" in err.value.message


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("", common_pb2.INVALID_TOPIC_EXCEPTION),
        ("..", common_pb2.INVALID_TOPIC_EXCEPTION),
        ("a" * 250, common_pb2.INVALID_TOPIC_EXCEPTION),
        ("bad name", common_pb2.INVALID_TOPIC_EXCEPTION),
        ("orders/2", common_pb2.INVALID_TOPIC_EXCEPTION),
    ],
)
def test_bad_topic_names(cluster: Cluster, name: str, code: int) -> None:
    with pytest.raises(ControllerError) as err:
        cluster.logic.create_topic(name, 1, 1, {})
    assert err.value.code == code


def test_bad_topic_requests(cluster: Cluster) -> None:
    cluster.create("user.events", 1, 1)
    cases = [
        (("user.events", 1, 1, {}), common_pb2.TOPIC_ALREADY_EXISTS),
        (("user_events", 1, 1, {}), common_pb2.INVALID_TOPIC_EXCEPTION),
        (("t", 0, 1, {}), common_pb2.INVALID_PARTITIONS),
        (("t", 1, 4, {}), common_pb2.INVALID_REPLICATION_FACTOR),
        (("t", 1, 1, {"retention.hours": "1"}), common_pb2.INVALID_CONFIG),
        (("t", 1, 1, {"retention.ms": "soon"}), common_pb2.INVALID_CONFIG),
    ]
    for args, code in cases:
        with pytest.raises(ControllerError) as err:
            cluster.logic.create_topic(*args)
        assert err.value.code == code, args


def test_speculative_state_refuses_a_duplicate_before_commit(cluster: Cluster) -> None:
    cluster.logic.create_topic("t", 1, 1, {})  # proposed, not committed
    with pytest.raises(ControllerError) as err:
        cluster.logic.create_topic("t", 1, 1, {})
    assert err.value.code == common_pb2.TOPIC_ALREADY_EXISTS
    cluster.logic.reset(cluster.committed, now_ms=0)  # leadership lost: proposals gone
    cluster.logic.create_topic("t", 1, 1, {})


def test_fencing_moves_leadership_within_the_isr(cluster: Cluster) -> None:
    topic_id = cluster.create("t", 3, 3)
    cluster.now_ms = 10_000
    for broker_id in (1, 3):
        cluster.heartbeat(broker_id)
    assert cluster.logic.expired_brokers(cluster.now_ms, 9_000) == [2]
    cluster.commit(cluster.logic.fence_broker(2))
    for part in cluster.committed.topics[topic_id].partitions.values():
        assert part.leader != 2 and 2 not in part.isr and part.leader in part.isr


def test_last_isr_member_stays_and_the_partition_goes_offline(cluster: Cluster) -> None:
    topic_id = cluster.create("single", 1, 1)
    leader = cluster.committed.topics[topic_id].partitions[0].leader
    cluster.commit(cluster.logic.fence_broker(leader))
    part = cluster.committed.topics[topic_id].partitions[0]
    assert part.leader == NO_LEADER and part.isr == (leader,)
    epoch_before = part.leader_epoch
    # It returns: caught up, unfenced, and leads again with a new leader epoch.
    records, epoch = cluster.logic.register_broker(leader, b"new", [], "", 0)
    cluster.commit(records)
    cluster.epochs[leader] = epoch
    cluster.heartbeat(leader)
    part = cluster.committed.topics[topic_id].partitions[0]
    assert part.leader == leader and part.leader_epoch > epoch_before


def test_unclean_election_only_when_the_topic_allows_it(cluster: Cluster) -> None:
    clean = cluster.create("clean", 1, 2)
    unclean = cluster.create("unclean", 1, 2, **{"unclean.leader.election.enable": "true"})
    for topic_id in (clean, unclean):
        part = cluster.committed.topics[topic_id].partitions[0]
        leader, follower = part.replicas
        # The follower fell out of the ISR, then the leader dies.
        records, _ = cluster.logic.alter_partition(
            leader, cluster.epochs[leader], topic_id, 0, part.leader_epoch,
            part.partition_epoch, [leader],
        )  # fmt: skip
        cluster.commit(records)
        cluster.commit(cluster.logic.fence_broker(leader))
        part = cluster.committed.topics[topic_id].partitions[0]
        if topic_id == clean:
            assert part.leader == NO_LEADER and part.isr == (leader,)
        else:
            assert part.leader == follower and part.isr == (follower,)
        records, epoch = cluster.logic.register_broker(leader, b"back", [], "", 0)
        cluster.commit(records)
        cluster.epochs[leader] = epoch
        cluster.heartbeat(leader)


def test_alter_partition_checks_leader_epochs_and_eligibility(cluster: Cluster) -> None:
    topic_id = cluster.create("t", 1, 3)
    part = cluster.committed.topics[topic_id].partitions[0]
    leader = part.leader
    follower = part.replicas[1]
    epoch = cluster.epochs[leader]

    def alter(broker: int, leader_epoch: int, partition_epoch: int, isr: list[int]) -> int:
        try:
            cluster.commit(
                cluster.logic.alter_partition(
                    broker, cluster.epochs[broker], topic_id, 0, leader_epoch, partition_epoch, isr
                )[0]
            )
        except ControllerError as exc:
            return exc.code
        return common_pb2.NONE

    assert alter(follower, 0, 0, [follower]) == common_pb2.NOT_LEADER_OR_FOLLOWER
    assert alter(leader, 1, 0, [leader]) == common_pb2.FENCED_LEADER_EPOCH
    assert alter(leader, 0, 7, [leader]) == common_pb2.INVALID_UPDATE_VERSION
    assert alter(leader, 0, 0, [follower]) == common_pb2.INVALID_REQUEST
    shrunk = [r for r in part.replicas if r != follower]
    assert alter(leader, 0, 0, shrunk) == common_pb2.NONE
    part = cluster.committed.topics[topic_id].partitions[0]
    assert part.partition_epoch == 1 and part.leader_epoch == 0 and follower not in part.isr
    # A fenced replica may not rejoin.
    cluster.commit(cluster.logic.fence_broker(follower))
    part = cluster.committed.topics[topic_id].partitions[0]
    assert alter(leader, 0, part.partition_epoch, list(part.replicas)) == (
        common_pb2.INELIGIBLE_REPLICA
    )
    with pytest.raises(ControllerError) as err:
        cluster.logic.alter_partition(leader, epoch + 100, topic_id, 0, 0, 1, [leader])
    assert err.value.code == common_pb2.STALE_BROKER_EPOCH


def test_controlled_shutdown_moves_leaders_then_allows_stopping(cluster: Cluster) -> None:
    topic_id = cluster.create("t", 3, 3)
    answer = cluster.heartbeat(1, want_shut_down=True)
    assert answer["should_shut_down"]
    for part in cluster.committed.topics[topic_id].partitions.values():
        assert part.leader != 1 and 1 not in part.isr


def test_preferred_leader_election(cluster: Cluster) -> None:
    topic_id = cluster.create("t", 3, 3)
    cluster.commit(cluster.logic.fence_broker(1))
    records, epoch = cluster.logic.register_broker(1, b"back", [], "", 0)
    cluster.commit(records)
    cluster.epochs[1] = epoch
    cluster.heartbeat(1)
    moved = cluster.committed.topics[topic_id].partitions
    p = next(i for i, part in moved.items() if part.preferred_leader == 1)
    assert moved[p].leader != 1
    # Broker 1 rejoins the ISR (as its leader would ask), then the election moves it back.
    part = moved[p]
    leader = part.leader
    records, _ = cluster.logic.alter_partition(
        leader, cluster.epochs[leader], topic_id, p, part.leader_epoch, part.partition_epoch,
        list(part.replicas),
    )  # fmt: skip
    cluster.commit(records)
    records, results = cluster.logic.elect_preferred_leaders()
    cluster.commit(records)
    assert results[(topic_id, p)][0] == common_pb2.NONE
    assert cluster.committed.topics[topic_id].partitions[p].leader == 1


def test_delete_and_recreate_gets_a_new_topic_id(cluster: Cluster) -> None:
    first = cluster.create("t", 1, 1)
    records, removed = cluster.logic.delete_topic("t")
    cluster.commit(records)
    assert removed == first and cluster.committed.topic_by_name("t") is None
    second = cluster.create("t", 1, 1)
    assert second != first
    with pytest.raises(ControllerError) as err:
        cluster.logic.delete_topic("missing")
    assert err.value.code == common_pb2.UNKNOWN_TOPIC_OR_PARTITION


def test_partitions_only_grow(cluster: Cluster) -> None:
    topic_id = cluster.create("t", 2, 2)
    cluster.commit(cluster.logic.create_partitions("t", 5))
    assert len(cluster.committed.topics[topic_id].partitions) == 5
    with pytest.raises(ControllerError) as err:
        cluster.logic.create_partitions("t", 3)
    assert err.value.code == common_pb2.INVALID_PARTITIONS


def test_configs_set_and_delete(cluster: Cluster) -> None:
    cluster.create("t", 1, 1, **{"retention.ms": "1000"})
    assert cluster.committed.topic_configs("t") == {"retention.ms": "1000"}
    cluster.commit(
        cluster.logic.alter_topic_configs("t", {"segment.bytes": "1024"}, ["retention.ms"])
    )
    assert cluster.committed.topic_configs("t") == {"segment.bytes": "1024"}


def test_producer_id_blocks_never_overlap(cluster: Cluster) -> None:
    starts = []
    for broker_id in (1, 2, 1):
        records, start = cluster.logic.allocate_producer_ids(broker_id, cluster.epochs[broker_id])
        cluster.commit(records)
        starts.append(start)
    assert starts == [0, 1000, 2000]


def test_snapshot_rebuilds_the_same_image(cluster: Cluster) -> None:
    cluster.create("a", 3, 2, **{"retention.ms": "5"})
    cluster.create("b", 1, 3)
    cluster.commit(cluster.logic.fence_broker(3))
    cluster.commit(cluster.logic.allocate_producer_ids(1, cluster.epochs[1])[0])
    image, cluster_id = decode_snapshot(encode_snapshot(cluster.committed, "cid"))
    assert cluster_id == "cid"
    for field in ("last_index", "topics", "topic_ids", "configs", "next_producer_id"):
        assert getattr(image, field) == getattr(cluster.committed, field), field
    for broker_id, broker in cluster.committed.brokers.items():
        rebuilt = image.brokers[broker_id]
        assert (rebuilt.broker_epoch, rebuilt.fenced, rebuilt.endpoints) == (
            broker.broker_epoch,
            broker.fenced,
            broker.endpoints,
        )


def test_a_fenced_broker_is_unfenced_only_once_it_has_applied_its_fencing(
    cluster: Cluster,
) -> None:
    """A broker cut off long enough to be fenced comes back with the image it had: it must not
    be unfenced (and so act as leader or group coordinator on that stale image) before it has
    applied the batch that fenced it and moved its leaderships away (the node simulation found
    a returning coordinator serving an offset older than one already acknowledged)."""
    topic_id = cluster.create("t", 1, 3)
    stale_offset = cluster.committed.last_index
    leader = cluster.committed.topics[topic_id].partitions[0].leader
    cluster.commit(cluster.logic.fence_broker(leader))
    fenced = cluster.committed.brokers[leader]
    assert fenced.fenced and fenced.fenced_index == cluster.committed.last_index
    assert cluster.committed.topics[topic_id].partitions[0].leader != leader
    records, answer = cluster.logic.broker_heartbeat(
        leader, cluster.epochs[leader], stale_offset, False, False, 0
    )
    assert answer["is_fenced"] and not answer["is_caught_up"] and not records
    answer = cluster.heartbeat(leader)  # now at the committed end
    assert not answer["is_fenced"] and answer["is_caught_up"]
    assert not cluster.committed.brokers[leader].fenced


def test_unclean_election_on_request_gives_an_offline_partition_a_live_replica(
    cluster: Cluster,
) -> None:
    topic_id = cluster.create("t", 1, 2)
    first, second = cluster.committed.topics[topic_id].partitions[0].replicas
    cluster.commit(cluster.logic.fence_broker(second))
    cluster.commit(cluster.logic.fence_broker(first))  # the last ISR member: offline, not unclean
    part = cluster.committed.topics[topic_id].partitions[0]
    assert part.leader == NO_LEADER and part.isr == (first,)
    cluster.heartbeat(second)  # back, but outside the ISR: a clean election cannot pick it
    assert cluster.committed.topics[topic_id].partitions[0].leader == NO_LEADER
    other = cluster.create("u", 1, 1)
    records, results = cluster.logic.elect_unclean_leaders()
    cluster.commit(records)
    part = cluster.committed.topics[topic_id].partitions[0]
    assert part.leader == second and part.isr == (second,)
    assert results[(topic_id, 0)] == (common_pb2.NONE, "")
    assert results[(other, 0)][0] == common_pb2.ELECTION_NOT_NEEDED
    cluster.commit(cluster.logic.fence_broker(second))
    _, results = cluster.logic.elect_unclean_leaders([(topic_id, 0)])
    assert results[(topic_id, 0)][0] == common_pb2.ELIGIBLE_LEADERS_NOT_AVAILABLE
