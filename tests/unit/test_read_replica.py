"""KIP-392, fetch from the closest replica: the rack-aware selector (node/replica/read_replica.py),
the broker's Fetch answering with a preferred read replica on the leader and serving below its
own high watermark on a follower (node/broker/service.py), and the consumer's memory of the
replica it was sent to (client/read_replicas.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from types import MappingProxyType

from replica_fixtures import changed, image, leader_batches, led_by, manager

from strom.client.read_replicas import ReadReplicas
from strom.client.records import ConsumerRecord, TopicPartition
from strom.node.broker.service import BrokerServicer
from strom.node.metadata.image import MetadataImage
from strom.node.replica.read_replica import (
    LEADER_SELECTOR,
    RACK_AWARE_SELECTOR,
    FollowerView,
    preferred_read_replica,
)
from strom.storage.batch_validation import split_batches
from strom.storage.record_batch import Record, encode_batch
from strom.storage.record_decode import decode_batch_as
from strom.v1 import broker_pb2, common_pb2

RACKS = {1: "a", 2: "b", 3: "c"}


def follower(
    broker_id: int, rack: str, leo: int, in_sync: bool = True, active: bool = True
) -> FollowerView:
    return FollowerView(broker_id, rack, leo, in_sync, active)


def test_the_rack_aware_selector_picks_the_most_caught_up_follower_in_the_clients_rack() -> None:
    followers = [follower(2, "b", 10), follower(3, "b", 12), follower(4, "c", 20)]
    assert preferred_read_replica(RACK_AWARE_SELECTOR, "b", "a", followers, 5) == 3
    assert preferred_read_replica(RACK_AWARE_SELECTOR, "c", "a", followers, 5) == 4
    # Ties go to the lowest id, so every leader answers alike.
    tied = [follower(5, "b", 12), follower(3, "b", 12)]
    assert preferred_read_replica(RACK_AWARE_SELECTOR, "b", "a", tied, 5) == 3


def test_the_selector_keeps_the_consumer_on_the_leader_when_nothing_better_serves() -> None:
    followers = [follower(2, "b", 10)]
    assert (
        preferred_read_replica(RACK_AWARE_SELECTOR, "a", "a", followers, 5) is None
    )  # leader's rack
    assert (
        preferred_read_replica(RACK_AWARE_SELECTOR, "", "a", followers, 5) is None
    )  # no client.rack
    assert (
        preferred_read_replica(RACK_AWARE_SELECTOR, "z", "a", followers, 5) is None
    )  # no such rack
    assert preferred_read_replica(LEADER_SELECTOR, "b", "a", followers, 5) is None
    assert preferred_read_replica("", "b", "a", followers, 5) is None  # Kafka's default
    assert preferred_read_replica(RACK_AWARE_SELECTOR, "b", "a", followers, 11) is None  # behind
    unfit = [follower(2, "b", 10, in_sync=False), follower(3, "b", 10, active=False)]
    assert preferred_read_replica(RACK_AWARE_SELECTOR, "b", "a", unfit, 5) is None


def racked(img: MetadataImage) -> MetadataImage:
    brokers = {b: dataclasses.replace(r, rack=RACKS[b]) for b, r in img.brokers.items()}
    return dataclasses.replace(img, brokers=MappingProxyType(brokers))


async def fetch_async(
    servicer: BrokerServicer, offset: int, rack: str = ""
) -> broker_pb2.FetchPartitionResponse:
    request = broker_pb2.FetchRequest(max_wait_ms=0, max_bytes=1 << 20, rack_id=rack)
    request.topics.add(name="t").partitions.add(
        partition=0, fetch_offset=offset, current_leader_epoch=-1
    )
    response = await servicer.Fetch(request, None)  # type: ignore[arg-type]
    (result,) = response.topics[0].partitions
    return result


def fetch(
    servicer: BrokerServicer, offset: int, rack: str = ""
) -> broker_pb2.FetchPartitionResponse:
    return asyncio.run(fetch_async(servicer, offset, rack))


def test_a_rack_aware_leader_sends_a_consumer_to_a_caught_up_follower_in_its_rack(
    tmp_path: Path,
) -> None:
    broker1 = manager(tmp_path, broker_id=1, **{"replica.selector.class": RACK_AWARE_SELECTOR})
    out_of_sync_3 = dataclasses.replace(led_by(1), isr=(1, 2))
    img = racked(image({0: out_of_sync_3}))
    broker1.on_metadata(img, changed(img))
    leader = broker1.partition_by_name("t", 0)
    for i in range(3):
        leader.append_as_leader(encode_batch([Record(None, b"x%d" % i, (), 1)]), 1, 1, 0)
    leader.fetch_for_follower(2, 3, -1, 1 << 20, {1, 2, 3}, now_ms=1)  # 2 holds all three
    servicer = BrokerServicer(broker1, None, "cluster", "PLAINTEXT", None)  # type: ignore[arg-type]

    sent = fetch(servicer, 0, rack="b")
    assert sent.error_code == common_pb2.NONE and sent.preferred_read_replica == 2
    assert sent.records == b""  # read them there
    # Broker 3 (rack c) is out of the ISR: the leader keeps serving that consumer itself.
    stays = fetch(servicer, 0, rack="c")
    assert stays.preferred_read_replica == 0 and stays.records
    assert fetch(servicer, 0, rack="a").records  # the leader's own rack
    assert fetch(servicer, 0).records  # no client.rack
    # An offset the leader cannot serve is answered as such, never sent elsewhere.
    assert fetch(servicer, 9, rack="b").error_code == common_pb2.OFFSET_OUT_OF_RANGE

    asyncio.run(broker1.stop())
    broker1.logs.close()


def test_without_a_selector_the_leader_serves_every_rack(tmp_path: Path) -> None:
    broker1 = manager(tmp_path, broker_id=1)
    img = racked(image({0: dataclasses.replace(led_by(1), isr=(1, 2))}))
    broker1.on_metadata(img, changed(img))
    leader = broker1.partition_by_name("t", 0)
    leader.append_as_leader(encode_batch([Record(None, b"x", (), 1)]), 1, 1, 0)
    leader.fetch_for_follower(2, 1, -1, 1 << 20, {1, 2, 3}, now_ms=1)
    servicer = BrokerServicer(broker1, None, "cluster", "PLAINTEXT", None)  # type: ignore[arg-type]
    answer = fetch(servicer, 0, rack="b")
    assert answer.preferred_read_replica == 0 and answer.records
    asyncio.run(broker1.stop())
    broker1.logs.close()


def test_a_follower_serves_consumers_only_below_the_high_watermark_it_knows(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        broker2 = manager(tmp_path, broker_id=2, **{"process.roles": "broker"})
        img = racked(image({0: led_by(1)}))
        broker2.on_metadata(img, changed(img))
        replica = broker2.partition_by_name("t", 0)
        assert not replica.is_leader
        replica.append_as_follower(leader_batches(0, 5), leader_hw=3, now_ms=1)
        servicer = BrokerServicer(broker2, None, "cluster", "PLAINTEXT", None)  # type: ignore[arg-type]

        served = await fetch_async(servicer, 0, rack="b")
        assert served.error_code == common_pb2.NONE and served.high_watermark == 3
        assert _offsets(served.records) == [0, 1, 2]  # 3 and 4 not yet known committed
        assert (await fetch_async(servicer, 3)).records == b""
        # Past its log end: the consumer goes back to the leader (client/read_replicas.py).
        beyond = await fetch_async(servicer, 6)
        assert beyond.error_code == common_pb2.OFFSET_OUT_OF_RANGE
        replica.follower_update_hw(5)
        assert _offsets((await fetch_async(servicer, 3)).records) == [3, 4]
        await broker2.stop()
        broker2.logs.close()

    asyncio.run(scenario())


def _offsets(data: bytes) -> list[int]:
    out: list[int] = []
    for start, _ in split_batches(data):
        _, records = decode_batch_as(data, start, ConsumerRecord, "t", 0)
        out += [r.offset for r in records]
    return out


def test_the_consumer_reads_from_the_named_replica_until_it_expires_or_is_forgotten() -> None:
    now = [100.0]
    replicas = ReadReplicas(max_age_ms=5_000, clock=lambda: now[0])
    tp, other = TopicPartition("t", 0), TopicPartition("t", 1)
    assert replicas.of(tp) is None
    replicas.choose(tp, 2)
    replicas.choose(other, 3)
    assert replicas.of(tp) == 2
    now[0] += 4.9
    assert replicas.of(tp) == 2
    now[0] += 0.1
    assert replicas.of(tp) is None  # the leader chooses again
    replicas.forget(other)
    assert replicas.of(other) is None
