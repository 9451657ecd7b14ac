"""`__consumer_offsets` belongs to the cluster (issue #15, defects 2 and 3).

Defect 2: any client could produce to the offsets topic. A forged commit reset another group's
offsets at the next load, and one record whose key was not an offset key killed the coordinator's
load task, so every group of that partition stayed unavailable. Now a client's produce to an
internal topic is refused with INVALID_TOPIC_EXCEPTION, and the loader passes over (and counts) a
record it cannot decode.

Defect 3: a client could create `__consumer_offsets` (with 1 partition, while the coordinator
hashed groups over the configured 50) or delete it (every group's offsets). Now client requests
naming an internal topic are refused with INVALID_REQUEST, nothing in the cluster deletes or grows
it, and the coordinator hashes over the partitions the topic really has.

The real GroupCoordinator, ReplicaManager, BrokerServicer and AdminServicer over real logs in a
temporary folder; the metadata image comes from the real ControllerLogic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from test_controller_logic import Cluster

from strom.node.broker.admin_service import AdminServicer
from strom.node.broker.service import BrokerServicer
from strom.node.config import build_config
from strom.node.controller.errors import ControllerError
from strom.node.group.coordinator import GroupCoordinator, GroupError
from strom.node.group.coordinator_key import coordinator_partition
from strom.node.group.offsets_log import OFFSETS_TOPIC, OffsetEntry, encode_records, offset_key
from strom.node.group.service import GroupServicer
from strom.node.metadata.image import MetadataImage
from strom.node.metadata.state import full_delta
from strom.node.peers import GrpcPeers
from strom.node.replica.manager import ReplicaManager
from strom.storage.log_manager import LogManager
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import admin_pb2, broker_pb2, common_pb2, group_pb2

SKIPPED = "strom_group_coordinator_offsets_records_skipped_total"


async def _end_offset(topic: str, partition: int) -> int:
    return 0


class Broker:
    """One broker leading every partition of `__consumer_offsets` (created with
    `offsets_partitions`) and of topic `orders`, with its coordinator loaded."""

    def __init__(self, tmp_path: Path, offsets_partitions: int, configured: int) -> None:
        cluster = Cluster()
        cluster.add_broker(1)
        cluster.create(OFFSETS_TOPIC, offsets_partitions, 1, **{"cleanup.policy": "compact"})
        cluster.create("orders", 2, 1)
        self.image: MetadataImage = cluster.committed
        self.config = build_config(
            {
                "node.id": 1,
                "controller.quorum.voters": "1@localhost:9093",
                "offsets.topic.num.partitions": configured,
                "group.initial.rebalance.delay.ms": 0,
            },
            environ={},
        )
        self.logs = LogManager(str(tmp_path / "data"), now_ms=0)
        self.manager = ReplicaManager(self.config, self.logs, None, lambda: 1, GrpcPeers())  # type: ignore[arg-type]
        self.coordinator = self.new_coordinator()

    def new_coordinator(self) -> GroupCoordinator:
        return GroupCoordinator(self.config, self.manager, _end_offset)

    async def load(self, coordinator: GroupCoordinator) -> None:
        coordinator.on_metadata(self.image, full_delta(MetadataImage(), self.image))
        topic = self.image.topic_by_name(OFFSETS_TOPIC)
        assert topic is not None
        async with asyncio.timeout(5):
            while coordinator.loaded != set(topic.partitions):
                await asyncio.sleep(0.01)

    def offsets_log_end(self, partition: int = 0) -> int:
        return self.manager.partition_by_name(OFFSETS_TOPIC, partition).log.log_end_offset


@asynccontextmanager
async def broker(
    tmp_path: Path, offsets_partitions: int = 1, configured: int = 1
) -> AsyncIterator[Broker]:
    b = Broker(tmp_path, offsets_partitions, configured)
    b.manager.on_metadata(b.image, full_delta(MetadataImage(), b.image))
    b.manager.start_acting()
    try:
        await b.load(b.coordinator)
        yield b
    finally:
        await b.coordinator.stop()
        b.logs.close()


# ---- defect 2: produce -----------------------------------------------------------------------


def test_a_client_cannot_produce_to_the_offsets_topic(tmp_path: Path) -> None:
    """A forged commit (a valid offset key of another group) is refused whole, and the group's
    offset is what its members committed (main: appended, and applied at the next load)."""

    async def scenario() -> None:
        async with broker(tmp_path) as b:
            await b.coordinator.commit("billing", "", -1, [("orders", 0, 42, "")])
            end = b.offsets_log_end()
            forged = encode_records(
                [("billing", "orders", 0, OffsetEntry(0, "", 0), -1)], now_ms=1000
            )
            servicer = BrokerServicer(b.manager, None, "cluster", "PLAINTEXT", None)  # type: ignore[arg-type]
            request = broker_pb2.ProduceRequest(acks=1, timeout_ms=1000)
            request.topics.add(name=OFFSETS_TOPIC).partitions.add(partition=0, records=forged)
            response = await servicer.Produce(request, None)  # type: ignore[arg-type]
            (result,) = response.topics[0].partitions
            assert result.error_code == common_pb2.INVALID_TOPIC_EXCEPTION
            assert OFFSETS_TOPIC in result.error_message
            assert b.offsets_log_end() == end  # nothing appended

            reloaded = b.new_coordinator()
            await b.load(reloaded)
            entry = reloaded.fetch_offsets("billing", [("orders", 0)])[("orders", 0)]
            assert entry is not None and entry.offset == 42

    asyncio.run(scenario())


# ---- defect 2: the loader --------------------------------------------------------------------


UNDECODABLE = [
    Record(b"\x00\x01\xff\xff\xff", b"", (), 1000),  # an offsets key whose body is not protobuf
    Record(offset_key("billing", "orders", 1), b"\xff\xff\xff", (), 1000),  # a garbled value
    Record(offset_key("", "orders", 0), None, (), 1000),  # no group: never written by us
    Record(None, b"hello", (), 1000),  # not an offsets key at all
]


def test_the_loader_passes_over_records_it_cannot_decode_and_counts_them(tmp_path: Path) -> None:
    """Records an older version let clients plant in the offsets partition, between two
    groups' commits: every group of the partition still loads with its offsets (main: the load
    task died on the first, and the groups stayed unavailable)."""

    async def scenario() -> None:
        async with broker(tmp_path) as b:
            await b.coordinator.commit("billing", "", -1, [("orders", 0, 7, "")])
            replica = b.manager.partition_by_name(OFFSETS_TOPIC, 0)
            for record in UNDECODABLE:  # appended as the old produce path did
                replica.append_as_leader(encode_batch([record]), 1, 1, now_ms=1000)
            await b.coordinator.commit("shipping", "", -1, [("orders", 1, 9, "")])
            before = REGISTRY.get_sample_value(SKIPPED) or 0.0

            reloaded = b.new_coordinator()
            await b.load(reloaded)
            offsets = {
                group: {tp: e.offset for tp, e in reloaded.groups[group].offsets.items()}
                for group in ("billing", "shipping")
            }
            assert offsets == {"billing": {("orders", 0): 7}, "shipping": {("orders", 1): 9}}
            assert set(reloaded.groups) == {"billing", "shipping"}
            assert REGISTRY.get_sample_value(SKIPPED) == before + len(UNDECODABLE)

    asyncio.run(scenario())


# ---- defect 3: creating and deleting ---------------------------------------------------------


class RecordingController:
    """The controller client seam: answers NONE for every item and remembers what reached it."""

    controller_id = 1

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def call(self, method: Any, request: Any, deadline_s: float) -> Any:
        name = method(_Names())
        self.calls.append((name, request))
        if name == "CreateTopics":
            return admin_pb2.CreateTopicsResponse(
                topics=[admin_pb2.CreateTopicResult(name=t.name) for t in request.topics]
            )
        if name == "DeleteTopics":
            return admin_pb2.DeleteTopicsResponse(
                topics=[admin_pb2.DeleteTopicResult(name=n) for n in request.names]
            )
        if name == "CreatePartitions":
            return admin_pb2.CreatePartitionsResponse(
                topics=[admin_pb2.CreatePartitionsResult(name=t.name) for t in request.topics]
            )
        raise AssertionError(name)


class _Names:
    def __getattr__(self, name: str) -> str:
        return name


def test_clients_cannot_create_delete_or_grow_internal_topics() -> None:
    """Refused at the Admin service, where client requests enter; the other topics of the same
    request still reach the controller, and answers keep request order."""
    config = build_config({"node.id": 1, "controller.quorum.voters": "1@h:9093"}, environ={})
    controller = RecordingController()
    admin = AdminServicer(config, "cluster", controller, MetadataImage)  # type: ignore[arg-type]
    admin.timeout_s = 0.01

    async def scenario() -> None:
        created = await admin.CreateTopics(
            admin_pb2.CreateTopicsRequest(
                topics=[
                    admin_pb2.CreatableTopic(name=OFFSETS_TOPIC, num_partitions=1),
                    admin_pb2.CreatableTopic(name="orders", num_partitions=1),
                ],
                validate_only=True,
            ),
            None,  # type: ignore[arg-type]
        )
        assert [(t.name, t.error_code) for t in created.topics] == [
            (OFFSETS_TOPIC, common_pb2.INVALID_REQUEST),
            ("orders", common_pb2.NONE),
        ]
        assert "internal topic" in created.topics[0].error_message
        deleted = await admin.DeleteTopics(
            admin_pb2.DeleteTopicsRequest(names=[OFFSETS_TOPIC]),
            None,  # type: ignore[arg-type]
        )
        assert [(t.name, t.error_code) for t in deleted.topics] == [
            (OFFSETS_TOPIC, common_pb2.INVALID_REQUEST)
        ]
        grown = await admin.CreatePartitions(
            admin_pb2.CreatePartitionsRequest(
                topics=[admin_pb2.CreatePartitionsTopic(name=OFFSETS_TOPIC, count=60)]
            ),
            None,  # type: ignore[arg-type]
        )
        assert grown.topics[0].error_code == common_pb2.INVALID_REQUEST
        reached = [(name, [t.name for t in request.topics]) for name, request in controller.calls]
        assert reached == [("CreateTopics", ["orders"])]

    asyncio.run(scenario())


def test_the_controller_never_deletes_or_grows_an_internal_topic() -> None:
    """Behind the Admin service too: nothing in the cluster deletes `__consumer_offsets` or
    changes its partition count (groups are placed by it)."""
    cluster = Cluster()
    cluster.add_broker(1)
    cluster.create(OFFSETS_TOPIC, 3, 1)
    with pytest.raises(ControllerError) as deleting:
        cluster.logic.delete_topic(OFFSETS_TOPIC)
    assert deleting.value.code == common_pb2.INVALID_REQUEST
    with pytest.raises(ControllerError) as growing:
        cluster.logic.create_partitions(OFFSETS_TOPIC, 50)
    assert growing.value.code == common_pb2.INVALID_REQUEST


def test_metadata_never_auto_creates_an_internal_topic(tmp_path: Path) -> None:
    config = build_config({"node.id": 1, "controller.quorum.voters": "1@h:9093"}, environ={})
    manager = ReplicaManager(
        config, LogManager(str(tmp_path), now_ms=0), None, lambda: 1, GrpcPeers()
    )  # type: ignore[arg-type]
    controller = RecordingController()
    servicer = BrokerServicer(manager, controller, "cluster", "PLAINTEXT", None)  # type: ignore[arg-type]
    request = broker_pb2.MetadataRequest(topics=[OFFSETS_TOPIC], allow_auto_topic_creation=True)
    response = asyncio.run(servicer.Metadata(request, None))  # type: ignore[arg-type]
    assert response.topics[0].error_code == common_pb2.UNKNOWN_TOPIC_OR_PARTITION
    assert controller.calls == []


def test_the_coordinator_hashes_over_the_partitions_the_topic_really_has(
    tmp_path: Path,
) -> None:
    """`__consumer_offsets` exists with 1 partition while offsets.topic.num.partitions is 50:
    a group hashing to partition 17 of 50 is coordinated on partition 0 (main: 17, which does
    not exist, so the group was never available)."""
    group = next(g for g in (f"g{i}" for i in range(100)) if coordinator_partition(g, 50) != 0)

    async def scenario() -> None:
        async with broker(tmp_path, offsets_partitions=1, configured=50) as b:
            assert b.coordinator.partition_for(group) == 0
            await b.coordinator.commit(group, "", -1, [("orders", 0, 3, "")])
            assert b.coordinator.fetch_offsets(group, [("orders", 0)])[("orders", 0)] is not None

    asyncio.run(scenario())


def test_before_the_topic_exists_the_configured_count_is_used(tmp_path: Path) -> None:
    config = build_config(
        {"node.id": 1, "controller.quorum.voters": "1@h:9093", "offsets.topic.num.partitions": 50},
        environ={},
    )
    manager = ReplicaManager(
        config, LogManager(str(tmp_path), now_ms=0), None, lambda: 1, GrpcPeers()
    )  # type: ignore[arg-type]
    coordinator = GroupCoordinator(config, manager, _end_offset)
    assert coordinator.partition_for("g7") == coordinator_partition("g7", 50)
    with pytest.raises(GroupError):
        coordinator.fetch_offsets("g7", None)


# ---- weaker spots: bounded commit metadata and group ids ------------------------------------


def test_commit_metadata_is_bounded_by_offset_metadata_max_bytes(tmp_path: Path) -> None:
    """Kafka's offset.metadata.max.bytes (4096): a larger metadata string is refused per
    partition with OFFSET_METADATA_TOO_LARGE and nothing is written for it (main: 1 MB
    accepted, kept in memory and in the offsets log)."""

    async def scenario() -> None:
        async with broker(tmp_path) as b:
            end = b.offsets_log_end()
            results = await b.coordinator.commit(
                "billing", "", -1, [("orders", 0, 5, "x" * 4096), ("orders", 1, 6, "y" * 4097)]
            )
            assert results[("orders", 0)] == (common_pb2.NONE, "")
            assert results[("orders", 1)][0] == common_pb2.OFFSET_METADATA_TOO_LARGE
            assert "offset.metadata.max.bytes" in results[("orders", 1)][1]
            assert b.offsets_log_end() == end + 1  # only the accepted commit
            assert b.coordinator.fetch_offsets("billing", [("orders", 1)])[("orders", 1)] is None

    asyncio.run(scenario())


def test_group_ids_are_bounded(tmp_path: Path) -> None:
    """A 100 KB group id (main: accepted, in every offset key) is INVALID_GROUP_ID wherever a
    group is named; 255 bytes is the limit."""
    longest = "g" * 255

    async def scenario() -> None:
        async with broker(tmp_path) as b:
            await b.coordinator.commit(longest, "", -1, [("orders", 0, 1, "")])
            for too_long in ("g" * 256, "é" * 128, "g" * 100_000):  # é: two bytes in UTF-8
                with pytest.raises(GroupError) as refused:
                    await b.coordinator.commit(too_long, "", -1, [("orders", 0, 1, "")])
                assert refused.value.code == common_pb2.INVALID_GROUP_ID
                with pytest.raises(GroupError):
                    b.coordinator.heartbeat(too_long, "", 0, "c", "", "h", ["orders"], "", None)
            servicer = GroupServicer(b.coordinator, b.manager, None, "PLAINTEXT")  # type: ignore[arg-type]
            found = await servicer.FindCoordinator(
                group_pb2.FindCoordinatorRequest(key="g" * 100_000),
                None,  # type: ignore[arg-type]
            )
            assert found.error_code == common_pb2.INVALID_GROUP_ID

    asyncio.run(scenario())
