"""A partition leader and transactions: transactional batches only from producers the
coordinator registered (or whose transaction the log holds open), markers from the coordinator,
and read_committed reads that stop at the last stable offset and name the aborted
transactions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from replica_fixtures import TOPIC_ID, changed, image, manager, until

from strom.node.broker.service import BrokerServicer
from strom.node.metadata.image import PartitionInfo
from strom.node.replica.partition import Partition, PartitionError
from strom.node.replica.service import ReplicaServicer
from strom.node.txn.host import TxnCoordinatorHost, answered
from strom.node.txn.state import TxnMetadata, TxnState
from strom.node.txn.state_log import encode_states
from strom.storage.control_records import TxnMarker
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import Record, encode_batch
from strom.storage.record_decode import decode_batches
from strom.storage.txn_index import AbortedTxn
from strom.v1 import broker_pb2, common_pb2, replica_pb2

NOW = 1_700_000_000_000


def txn_batch(pid: int, seq: int, epoch: int = 0, count: int = 2) -> bytes:
    records = [Record(None, f"{pid}-{seq + i}".encode(), (), NOW) for i in range(count)]
    return encode_batch(
        records, producer_id=pid, producer_epoch=epoch, base_sequence=seq, is_transactional=True
    )


def plain(value: bytes) -> bytes:
    return encode_batch([Record(None, value, (), NOW)])


@pytest.fixture
def leader(tmp_path: Path) -> Partition:
    log = PartitionLog.open(str(tmp_path / "t-0"), now_ms=NOW)
    partition = Partition("t", 0, TOPIC_ID, log, broker_id=1, high_watermark=0)
    partition.make_leader(
        PartitionInfo(replicas=(1,), isr=(1,), leader=1, leader_epoch=1, partition_epoch=1), NOW
    )
    return partition


def append(partition: Partition, data: bytes) -> None:
    partition.append_as_leader(data, acks=1, min_insync_replicas=1, now_ms=NOW)


def test_unregistered_transactional_producers_are_refused(leader: Partition) -> None:
    with pytest.raises(PartitionError) as refused:
        append(leader, txn_batch(5, 0))
    assert refused.value.code == common_pb2.INVALID_TXN_STATE
    leader.register_transaction(5, 0)
    append(leader, txn_batch(5, 0))
    leader.write_markers([TxnMarker(5, 0, commit=True, coordinator_epoch=0)], NOW)
    # the marker ended the registration: a new transaction needs a new AddPartitionsToTxn
    with pytest.raises(PartitionError):
        append(leader, txn_batch(5, 2))


def test_a_zombie_cannot_join_its_successors_transaction(leader: Partition) -> None:
    """Epoch 0 wrote here and committed; a new instance (epoch 1) added this partition to its
    transaction but has not written yet, so the log still knows epoch 0. The fenced instance's
    next batch was accepted (registration was checked by producer id only) and opened a
    transaction that epoch 1's commit marker then made visible: a zombie write read by
    read_committed consumers (the node simulation with transactions, issue #21)."""
    leader.register_transaction(5, 0)
    append(leader, txn_batch(5, 0, epoch=0))  # 0-1
    leader.write_markers([TxnMarker(5, 0, commit=True, coordinator_epoch=0)], NOW)  # 2
    leader.register_transaction(5, 1)  # the successor's AddPartitionsToTxn
    with pytest.raises(PartitionError) as refused:
        append(leader, txn_batch(5, 2, epoch=0))  # the zombie, in sequence for epoch 0
    assert refused.value.code == common_pb2.INVALID_TXN_STATE
    append(leader, txn_batch(5, 0, epoch=1))  # 3-4: the successor's own batch is welcome
    append(leader, txn_batch(5, 2, epoch=1))  # 5-6: its transaction is open here now
    leader.write_markers([TxnMarker(5, 1, commit=True, coordinator_epoch=0)], NOW)  # 7
    data, aborted = leader.read_stable(0, 1 << 20)
    assert aborted == []
    values = [r.value for r in decode_batches(data) if r.value and r.value.startswith(b"5-")]
    assert values == [b"5-0", b"5-1", b"5-0", b"5-1", b"5-2", b"5-3"]  # no zombie record


def test_read_committed_stops_at_the_lso_and_names_aborted_transactions(
    leader: Partition,
) -> None:
    append(leader, plain(b"before"))  # 0
    leader.register_transaction(5, 0)
    leader.register_transaction(6, 0)
    append(leader, txn_batch(5, 0))  # 1-2, to be aborted
    append(leader, txn_batch(6, 0))  # 3-4, to be committed
    append(leader, plain(b"between"))  # 5
    assert leader.high_watermark == 6 and leader.last_stable_offset == 1
    data, aborted = leader.read_stable(0, 1 << 20)
    assert [r.value for r in decode_batches(data)] == [b"before"] and aborted == []
    assert leader.read_stable(1, 1 << 20) == (b"", [])  # nothing stable there yet
    leader.write_markers([TxnMarker(5, 0, commit=False, coordinator_epoch=0)], NOW)  # 6
    assert leader.last_stable_offset == 3  # pid 6 still open
    leader.write_markers([TxnMarker(6, 0, commit=True, coordinator_epoch=0)], NOW)  # 7
    assert leader.last_stable_offset == leader.high_watermark == 8
    data, aborted = leader.read_stable(0, 1 << 20)
    assert aborted == [AbortedTxn(5, 1, 6, 3)]
    values = [r.value for r in decode_batches(data)]
    assert values[:6] == [b"before", b"5-0", b"5-1", b"6-0", b"6-1", b"between"]
    # a fetch past the abort does not hear of it
    assert leader.read_stable(7, 1 << 20)[1] == []


def test_markers_need_leadership_and_refuse_an_older_epoch(leader: Partition) -> None:
    leader.register_transaction(5, 3)
    append(leader, txn_batch(5, 0, epoch=3))
    with pytest.raises(PartitionError) as refused:
        leader.write_markers([TxnMarker(5, 2, commit=True, coordinator_epoch=0)], NOW)
    assert refused.value.code == common_pb2.INVALID_PRODUCER_EPOCH
    leader.make_follower(
        PartitionInfo(replicas=(1, 2), isr=(1, 2), leader=2, leader_epoch=2, partition_epoch=2)
    )
    with pytest.raises(PartitionError) as refused:
        leader.write_markers([TxnMarker(5, 3, commit=True, coordinator_epoch=0)], NOW)
    assert refused.value.code == common_pb2.NOT_LEADER_OR_FOLLOWER


def test_a_new_leader_accepts_a_transaction_the_log_holds_open(tmp_path: Path) -> None:
    log = PartitionLog.open(str(tmp_path / "t-0"), now_ms=NOW)
    log.append(txn_batch(5, 0), 0, now_ms=NOW, transactional_producers={(5, 0)})
    partition = Partition("t", 0, TOPIC_ID, log, broker_id=1, high_watermark=0)
    partition.make_leader(
        PartitionInfo(replicas=(1,), isr=(1,), leader=1, leader_epoch=1, partition_epoch=1), NOW
    )
    append(partition, txn_batch(5, 2))  # registered with the old leader; open in the log
    assert partition.last_stable_offset == 0


def test_fetch_with_read_committed_serves_below_the_lso_with_the_aborted_list(
    tmp_path: Path,
) -> None:
    """Through the real BrokerServicer: the isolation level picks the bound, and the answer
    carries the LSO and the aborted transactions a consumer needs to drop records."""

    async def scenario() -> None:
        replicas = manager(tmp_path)
        img = image({0: PartitionInfo(replicas=(1,), isr=(1,), leader=1, leader_epoch=1,
                                      partition_epoch=1)})  # fmt: skip
        replicas.on_metadata(img, changed(img))
        servicer = BrokerServicer(replicas, None, "cluster", "PLAINTEXT", None)  # type: ignore[arg-type]
        partition = replicas.partition_by_name("t", 0)
        partition.register_transaction(5, 0)
        append(partition, txn_batch(5, 0))  # 0-1
        partition.write_markers([TxnMarker(5, 0, commit=False, coordinator_epoch=0)], NOW)  # 2
        partition.register_transaction(6, 0)
        append(partition, txn_batch(6, 0))  # 3-4, open

        async def fetch(level: int) -> broker_pb2.FetchPartitionResponse:
            request = broker_pb2.FetchRequest(
                max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, isolation_level=level
            )
            request.topics.add(name="t").partitions.add(
                partition=0, fetch_offset=0, current_leader_epoch=-1
            )
            answer = await servicer.Fetch(request, None)  # type: ignore[arg-type]
            return answer.topics[0].partitions[0]

        committed = await fetch(broker_pb2.READ_COMMITTED)
        assert committed.error_code == common_pb2.NONE, committed
        assert (committed.high_watermark, committed.last_stable_offset) == (5, 3)
        assert [r.offset for r in decode_batches(committed.records)] == [0, 1, 2]
        assert [(t.producer_id, t.first_offset) for t in committed.aborted_transactions] == [(5, 0)]
        uncommitted = await fetch(broker_pb2.READ_UNCOMMITTED)
        assert [r.offset for r in decode_batches(uncommitted.records)] == [0, 1, 2, 3, 4]
        assert not uncommitted.aborted_transactions

        async def latest(level: int) -> int:
            request = broker_pb2.ListOffsetsRequest(isolation_level=level)
            request.topics.add(name="t").partitions.add(
                partition=0, current_leader_epoch=-1, timestamp=-1
            )
            answer = await servicer.ListOffsets(request, None)  # type: ignore[arg-type]
            return answer.topics[0].partitions[0].offset

        assert await latest(broker_pb2.READ_COMMITTED) == 3
        assert await latest(broker_pb2.READ_UNCOMMITTED) == 5

    asyncio.run(scenario())


def test_coordinator_rpcs_register_write_markers_and_fence_old_coordinators(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        replicas = manager(tmp_path)
        img = image({0: PartitionInfo(replicas=(1,), isr=(1,), leader=1, leader_epoch=1,
                                      partition_epoch=1)})  # fmt: skip
        replicas.on_metadata(img, changed(img))
        servicer = ReplicaServicer(replicas)
        where = [replica_pb2.TxnPartition(topic_id=TOPIC_ID, partition=0)]
        registered = await servicer.RegisterTxnPartitions(
            replica_pb2.TxnPartitionsRequest(
                producer_id=5, producer_epoch=0, coordinator_epoch=2, partitions=where
            ),
            None,  # type: ignore[arg-type]
        )
        assert registered.partitions[0].error_code == common_pb2.NONE
        partition = replicas.partition_by_name("t", 0)
        append(partition, txn_batch(5, 0))

        async def marker(coordinator_epoch: int) -> replica_pb2.TxnPartitionResult:
            answer = await servicer.WriteTxnMarkers(
                replica_pb2.WriteTxnMarkersRequest(
                    producer_id=5, producer_epoch=0, coordinator_epoch=coordinator_epoch,
                    commit=True, partitions=where,
                ),
                None,  # type: ignore[arg-type]
            )  # fmt: skip
            return answer.partitions[0]

        stale = await marker(1)  # a coordinator that lost the transactional id
        assert stale.error_code == common_pb2.TRANSACTION_COORDINATOR_FENCED
        assert partition.last_stable_offset == 0
        assert (await marker(2)).error_code == common_pb2.NONE
        assert partition.last_stable_offset == partition.high_watermark == 3
        unknown = await servicer.WriteTxnMarkers(
            replica_pb2.WriteTxnMarkersRequest(
                producer_id=5,
                partitions=[replica_pb2.TxnPartition(topic_id=TOPIC_ID, partition=9)],
            ),
            None,  # type: ignore[arg-type]
        )
        assert unknown.partitions[0].error_code != common_pb2.NONE

    asyncio.run(scenario())


def test_a_marker_refused_by_a_broker_not_hosting_the_partition_yet_is_retried() -> None:
    """The coordinator counts UNKNOWN_TOPIC_OR_PARTITION as done only when the metadata no
    longer has the partition (a deleted topic). A restarted leader still opening its logs
    answers the same code; counting that as written completed the transaction without the
    marker, leaving it open there for ever (node simulation, transactional seed 50)."""
    img = image({0: PartitionInfo(replicas=(1,), isr=(1,), leader=1, leader_epoch=1,
                                  partition_epoch=1)})  # fmt: skip
    unknown = common_pb2.UNKNOWN_TOPIC_OR_PARTITION

    def result(code: int, partition: int = 0) -> replica_pb2.TxnPartitionResult:
        return replica_pb2.TxnPartitionResult(
            topic_id=TOPIC_ID,
            partition=partition,
            error_code=code,  # type: ignore[arg-type]
        )

    assert answered(img, result(common_pb2.NONE))
    assert not answered(img, result(unknown))  # the partition exists: not written yet
    assert answered(img, result(unknown, partition=7))  # gone from the metadata
    assert not answered(img, result(common_pb2.NOT_LEADER_OR_FOLLOWER))


def test_a_new_coordinator_acts_only_on_committed_state(tmp_path: Path) -> None:
    """A new leader of __transaction_state whose log ends in a record its predecessor never
    committed (here a PREPARE_COMMIT above the HW) loads nothing until the HW covers it: a
    later leader may lack that record, and finishing it would commit part of a transaction
    that coordinator aborts. Found by the node simulation (transactional seed 66)."""

    async def scenario() -> None:
        replicas = manager(tmp_path, **{"transaction.state.log.num.partitions": 1})
        info = PartitionInfo(replicas=(1, 2), isr=(1, 2), leader=1, leader_epoch=1,
                             partition_epoch=1)  # fmt: skip
        img = image({0: info}, topic="__transaction_state")
        replicas.on_metadata(img, changed(img))
        state_log = replicas.partition_by_name("__transaction_state", 0)
        preparing = TxnMetadata("tx", 7, 0, 60_000, TxnState.PREPARE_COMMIT, frozenset({("t", 0)}))
        state_log.append_as_leader(encode_states([("tx", preparing)], NOW), -1, 1, NOW)
        assert state_log.high_watermark == 0  # broker 2 has not fetched it: not committed
        host = TxnCoordinatorHost(replicas.config, replicas, peers=None)  # type: ignore[arg-type]
        loading = asyncio.ensure_future(host._load(0))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not loading.done() and not host.coordinator.owns(0)
        state_log.fetch_for_follower(2, 1, -1, 1 << 20, {1, 2}, NOW, partition_epoch=1)
        assert state_log.high_watermark == 1
        await until(lambda: host.coordinator.owns(0))
        await host.coordinator.stop()  # before its marker writing, which this test does not serve
        await replicas.stop()
        replicas.logs.close()

    asyncio.run(scenario())
