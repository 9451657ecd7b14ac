"""How the broker answers one partition it cannot serve (issue #19's per-partition helper): the
real BrokerServicer over a real ReplicaManager, with a partition this broker leads and one it
follows. Fetch and ListOffsets share the KIP-320 epoch check (only ListOffsets needs the leader:
a follower serves fetches, KIP-392); every refusal
fills the partition's code and message; a storage error that reaches a handler is answered with
the Kafka code it names."""

from __future__ import annotations

import asyncio
from pathlib import Path

from replica_fixtures import changed, image, manager

from strom.node.broker.service import BrokerServicer
from strom.node.metadata.image import PartitionInfo
from strom.node.replica.partition import PartitionError, refusal
from strom.storage.errors import CorruptRecordError, StorageError
from strom.v1 import broker_pb2, common_pb2

LED, FOLLOWED = 0, 1


def broker(tmp_path: Path) -> BrokerServicer:
    replicas = manager(tmp_path)
    img = image(
        {
            LED: PartitionInfo(replicas=(1, 2), isr=(1, 2), leader=1, leader_epoch=3,
                               partition_epoch=3),
            FOLLOWED: PartitionInfo(replicas=(2, 1), isr=(2, 1), leader=2, leader_epoch=5,
                                    partition_epoch=5),
        }
    )  # fmt: skip
    replicas.on_metadata(img, changed(img))
    return BrokerServicer(replicas, None, "cluster", "PLAINTEXT", None)  # type: ignore[arg-type]


def fetch(partition: int, epoch: int) -> broker_pb2.FetchRequest:
    request = broker_pb2.FetchRequest(max_wait_ms=0, min_bytes=0, max_bytes=1 << 20)
    request.topics.add(name="t").partitions.add(
        partition=partition, fetch_offset=0, current_leader_epoch=epoch
    )
    return request


def list_offsets(partition: int, epoch: int) -> broker_pb2.ListOffsetsRequest:
    request = broker_pb2.ListOffsetsRequest()
    request.topics.add(name="t").partitions.add(
        partition=partition, timestamp=-1, current_leader_epoch=epoch
    )
    return request


def test_fetch_and_list_offsets_refuse_a_wrong_epoch_alike(tmp_path: Path) -> None:
    async def scenario() -> None:
        servicer = broker(tmp_path)
        cases = [
            (LED, 2, common_pb2.FENCED_LEADER_EPOCH, "leader epoch 2 is older than 3"),
            (LED, 4, common_pb2.UNKNOWN_LEADER_EPOCH, "leader epoch 4 is newer than"),
            (LED, 3, common_pb2.NONE, ""),
            (LED, -1, common_pb2.NONE, ""),
        ]
        for partition, epoch, code, message in cases:
            fetched = (await servicer.Fetch(fetch(partition, epoch), None)).topics[0]  # type: ignore[arg-type]
            listed = (await servicer.ListOffsets(list_offsets(partition, epoch), None)).topics[0]  # type: ignore[arg-type]
            for result in (fetched.partitions[0], listed.partitions[0]):
                assert (result.error_code, message in result.error_message) == (code, True)

    asyncio.run(scenario())


def test_a_follower_serves_fetches_but_not_list_offsets(tmp_path: Path) -> None:
    """Fetch from a follower is KIP-392's (node/replica/read_replica.py): served below the high
    watermark it knows. ListOffsets stays the leader's, and tells the client where it is."""

    async def scenario() -> None:
        servicer = broker(tmp_path)
        fetched = (await servicer.Fetch(fetch(FOLLOWED, -1), None)).topics[0].partitions[0]  # type: ignore[arg-type]
        assert fetched.error_code == common_pb2.NONE
        listed = (await servicer.ListOffsets(list_offsets(FOLLOWED, -1), None)).topics[0]  # type: ignore[arg-type]
        (refused,) = listed.partitions
        assert refused.error_code == common_pb2.NOT_LEADER_OR_FOLLOWER
        assert "does not lead t-1 (leader: 2)" in refused.error_message
        # Fetch tells the client where the leader is when it cannot serve.
        hint = (await servicer.Fetch(fetch(FOLLOWED, 6), None)).topics[0].partitions[0]  # type: ignore[arg-type]
        assert hint.error_code == common_pb2.UNKNOWN_LEADER_EPOCH
        assert (hint.current_leader.leader_id, hint.current_leader.leader_epoch) == (2, 5)

    asyncio.run(scenario())


def test_a_storage_error_is_answered_with_the_code_it_names() -> None:
    corrupt = refusal(CorruptRecordError("crc mismatch"))
    assert corrupt.code == common_pb2.CORRUPT_MESSAGE and "crc mismatch" in corrupt.message
    unnamed = StorageError("disk gone")
    unnamed.error_name = "NOT_A_KAFKA_CODE"
    assert refusal(unnamed).code == common_pb2.KAFKA_STORAGE_ERROR
    own = PartitionError(common_pb2.NOT_LEADER_OR_FOLLOWER, "x")
    assert refusal(own) is own
