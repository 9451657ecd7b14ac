"""The replica side of a partition move (node/replica/manager.py): a broker added to a
partition's replicas starts following its leader outside the ISR; a leader the move removes
stops leading, fails the writes waiting for acknowledgement, and deletes its copy; the leader
counts a new follower in its high watermark only once the follower is in the ISR."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from replica_fixtures import TOPIC_ID, changed, image, manager

from strom.node.metadata.image import PartitionInfo
from strom.node.replica.partition import PartitionError
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import common_pb2


def moving(leader: int, epoch: int, replicas: tuple[int, ...], isr: tuple[int, ...],
           adding: tuple[int, ...] = (), removing: tuple[int, ...] = ()) -> PartitionInfo:  # fmt: skip
    return PartitionInfo(replicas, isr, leader, epoch, epoch, (), adding, removing)


def test_an_added_broker_follows_outside_the_isr(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker3 = manager(tmp_path, broker_id=3, **{"process.roles": "broker"})
        before = image({0: moving(1, 1, (1, 2), (1, 2))})
        broker3.on_metadata(before, changed(before))
        assert broker3.partitions == {} and broker3.logs.get_log("t", 0) is None
        during = image({0: moving(1, 1, (2, 3, 1), (1, 2), adding=(3,), removing=(1,))})
        broker3.on_metadata(during, changed(during))
        follower = broker3.partition_by_name("t", 0)
        assert not follower.is_leader and follower.leader_id == 1
        assert (TOPIC_ID, 0) in broker3.fetchers[1].partitions
        await broker3.stop()
        broker3.logs.close()

    asyncio.run(scenario())


def test_a_removed_leader_stops_fails_waiting_writes_and_deletes_its_copy(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker1 = manager(tmp_path, broker_id=1)
        during = image({0: moving(1, 1, (2, 3, 1), (1, 2, 3), adding=(), removing=(1,))})
        broker1.on_metadata(during, changed(during))
        leader = broker1.partition_by_name("t", 0)
        info = leader.append_as_leader(encode_batch([Record(None, b"x", (), 1)]), -1, 2, 0)
        waiting = asyncio.ensure_future(leader.wait_for_isr(info.last_offset, 2, 5.0))
        await asyncio.sleep(0)
        assert not waiting.done()  # followers 2 and 3 have not fetched it
        folder = tmp_path / "data" / "t-0"
        assert folder.is_dir()
        done = image({0: moving(2, 2, (2, 3), (2, 3))})
        broker1.on_metadata(done, changed(done))
        with pytest.raises(PartitionError) as err:
            await waiting
        assert err.value.code == common_pb2.NOT_LEADER_OR_FOLLOWER  # never acknowledged
        assert not folder.exists() and broker1.partitions == {}
        with pytest.raises(PartitionError) as err:
            broker1.partition_by_name("t", 0)
        assert err.value.code == common_pb2.NOT_LEADER_OR_FOLLOWER
        await broker1.stop()
        broker1.logs.close()

    asyncio.run(scenario())


def test_a_new_follower_counts_in_the_high_watermark_only_once_in_the_isr(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker1 = manager(tmp_path, broker_id=1)
        during = image({0: moving(1, 1, (1, 2, 3), (1, 2), adding=(3,))})
        broker1.on_metadata(during, changed(during))
        leader = broker1.partition_by_name("t", 0)
        leader.append_as_leader(encode_batch([Record(None, b"x", (), 1)]), -1, 1, 0)
        active = {1, 2, 3}
        result = leader.fetch_for_follower(2, 1, -1, 1 << 20, active, now_ms=1)
        assert leader.high_watermark == 1  # 3 is outside the ISR: it does not hold the HW back
        result = leader.fetch_for_follower(3, 1, -1, 1 << 20, active, now_ms=2)
        assert result.isr_change is not None and 3 in result.isr_change.new_isr  # asks to join
        await broker1.stop()
        broker1.logs.close()

    asyncio.run(scenario())


def test_the_move_throttle_bucket() -> None:
    from strom.node.replica.throttle import UNLIMITED, ReplicationThrottle

    unlimited = ReplicationThrottle(UNLIMITED, 0)
    unlimited.charge(10**12, 0)
    assert unlimited.allows(0) and unlimited.wait_ms(0) == 0
    bucket = ReplicationThrottle(1000, 0)
    assert bucket.allows(0)
    bucket.charge(3000, 0)  # a response larger than the budget: owed
    assert not bucket.allows(1000) and bucket.wait_ms(1000) == 1001
    assert bucket.allows(2001)
    bucket = ReplicationThrottle(1000, 0)
    assert bucket.allows(60_000)
    bucket.charge(1001, 60_000)  # idle time does not bank more than one second's worth
    assert not bucket.allows(60_000)


def test_fetchers_leave_moving_replicas_out_while_the_throttle_is_spent(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker3 = manager(
            tmp_path, broker_id=3,
            **{"process.roles": "broker", "follower.replication.throttled.rate": 1000},
        )  # fmt: skip
        img = image(
            {
                0: moving(1, 1, (2, 3, 1), (1, 2), adding=(3,), removing=(1,)),  # being added
                1: moving(1, 1, (1, 2, 3), (1, 2, 3)),  # an ordinary follower
            }
        )
        broker3.on_metadata(img, changed(img))
        fetcher = broker3.fetchers[1]
        request, _ = fetcher._request()
        assert sorted(p.partition for p in request.partitions) == [0, 1]
        broker3.move_throttle.charge(10_000, broker3.clock.now_ms())
        request, _ = fetcher._request()
        assert [p.partition for p in request.partitions] == [1]  # only the moving one waits
        await broker3.stop()
        broker3.logs.close()

    asyncio.run(scenario())


def test_a_leader_sends_nothing_to_a_moving_replica_while_its_throttle_is_spent(
    tmp_path: Path,
) -> None:
    """Kafka's leader.replication.throttled.rate: replica 3, being added and outside the ISR,
    gets no records once the leader's bucket is spent (its position still counts); replica 2,
    in the ISR, is never throttled."""
    from strom.node.replica.service import ReplicaServicer
    from strom.v1 import replica_pb2

    async def scenario() -> None:
        broker1 = manager(tmp_path, broker_id=1, **{"leader.replication.throttled.rate": 500})
        img = image({0: moving(1, 1, (1, 2, 3), (1, 2), adding=(3,))})
        broker1.on_metadata(img, changed(img))
        leader = broker1.partition_by_name("t", 0)
        for _ in range(3):
            leader.append_as_leader(encode_batch([Record(None, b"v" * 600, (), 1)]), 1, 1, 0)
        servicer = ReplicaServicer(broker1)

        async def fetch(replica_id: int, offset: int) -> bytes:
            request = replica_pb2.ReplicaFetchRequest(
                replica_id=replica_id, broker_epoch=10 + replica_id, max_wait_ms=0
            )
            request.partitions.add(
                topic_id=TOPIC_ID, partition=0, fetch_offset=offset, current_leader_epoch=1,
                last_fetched_epoch=-1, partition_max_bytes=700, partition_epoch=1,
            )  # fmt: skip
            response = await servicer.Fetch(request, None)  # type: ignore[arg-type]
            (result,) = response.partitions
            assert result.error_code == common_pb2.NONE, result.error_message
            return result.records

        assert await fetch(3, 0)  # the bucket holds a second's worth: one batch goes
        assert await fetch(3, 1) == b""  # spent by that batch
        assert leader.leader_state is not None
        assert leader.leader_state.followers[3].log_end_offset == 1  # the position counted
        assert await fetch(2, 0) and await fetch(2, 1)  # in the ISR: never throttled
        await broker1.stop()
        broker1.logs.close()

    asyncio.run(scenario())
