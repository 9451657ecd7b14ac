"""The transaction coordinator's logic (node/txn/coordinator.py) over scripted seams: every
transition persisted before it is acted on, markers for each outcome, fencing of older
instances and of timed-out transactions, and a new coordinator finishing what the old one
decided (failover between the decision and the markers)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from strom.node.txn.coordinator import TxnCoordinator
from strom.node.txn.state import TxnError, TxnMetadata, TxnState
from strom.node.txn.state_log import state_partition
from strom.v1 import common_pb2

PARTITIONS = 4
TID = "payments-app"
OWN = state_partition(TID, PARTITIONS)
P = frozenset({("orders", 0), ("payments", 2)})


class Cluster:
    """The seams: a state log per partition, the markers written, the registrations."""

    def __init__(self) -> None:
        self.logs: dict[int, bytes] = {}
        self.markers: list[tuple[int, int, bool, frozenset[tuple[str, int]]]] = []
        self.registered: list[tuple[int, int, frozenset[tuple[str, int]]]] = []
        self.markers_fail = False
        self.clock = 1_000
        self.ids = itertools.count(100)

    def coordinator(self) -> TxnCoordinator:
        return TxnCoordinator(
            PARTITIONS, self.persist, self.send_markers, self.register, lambda: self.clock
        )

    async def persist(self, partition: int, records: bytes) -> None:
        self.logs[partition] = self.logs.get(partition, b"") + records

    async def send_markers(self, metadata: TxnMetadata, commit: bool) -> None:
        if self.markers_fail:
            raise ConnectionError("leaders unreachable")
        self.markers.append(
            (metadata.producer_id, metadata.producer_epoch, commit, metadata.partitions)
        )

    async def register(self, metadata: TxnMetadata, partitions: frozenset[tuple[str, int]]) -> None:
        self.registered.append((metadata.producer_id, metadata.producer_epoch, partitions))

    def fresh_id(self) -> int:
        return next(self.ids)


async def loaded(cluster: Cluster) -> TxnCoordinator:
    coordinator = cluster.coordinator()
    await coordinator.load(OWN, cluster.logs.get(OWN, b""))
    return coordinator


def test_commit_and_abort_write_markers_after_persisting_the_decision() -> None:
    async def scenario() -> None:
        cluster = Cluster()
        coordinator = await loaded(cluster)
        meta = await coordinator.init_producer_id(TID, 60_000, cluster.fresh_id)
        assert (meta.producer_id, meta.producer_epoch) == (100, 0)
        await coordinator.add_partitions(TID, 100, 0, P)
        assert cluster.registered == [(100, 0, P)]
        done = await coordinator.end_txn(TID, 100, 0, commit=True)
        assert done.state == TxnState.COMPLETE_COMMIT
        assert cluster.markers == [(100, 0, True, P)]
        # a retried EndTxn answers the same and writes nothing more
        assert (await coordinator.end_txn(TID, 100, 0, commit=True)).state == done.state
        assert len(cluster.markers) == 1
        await coordinator.add_partitions(TID, 100, 0, frozenset({("orders", 0)}))
        await coordinator.end_txn(TID, 100, 0, commit=False)
        assert cluster.markers[-1] == (100, 0, False, frozenset({("orders", 0)}))

    asyncio.run(scenario())


def test_a_new_instance_aborts_the_open_transaction_and_fences_the_zombie() -> None:
    async def scenario() -> None:
        cluster = Cluster()
        coordinator = await loaded(cluster)
        await coordinator.init_producer_id(TID, 60_000, cluster.fresh_id)
        await coordinator.add_partitions(TID, 100, 0, P)
        newer = await coordinator.init_producer_id(TID, 60_000, cluster.fresh_id)
        assert (newer.producer_id, newer.producer_epoch) == (100, 2)
        assert cluster.markers == [(100, 1, False, P)]  # aborted with the fencing epoch
        with pytest.raises(TxnError) as zombie:
            await coordinator.end_txn(TID, 100, 0, commit=True)
        assert zombie.value.code == common_pb2.INVALID_PRODUCER_EPOCH

    asyncio.run(scenario())


def test_a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() -> None:
    async def scenario() -> None:
        cluster = Cluster()
        coordinator = await loaded(cluster)
        await coordinator.init_producer_id(TID, 5_000, cluster.fresh_id)
        await coordinator.add_partitions(TID, 100, 0, P)
        cluster.clock += 5_000
        assert await coordinator.abort_expired() == []
        cluster.clock += 1
        assert await coordinator.abort_expired() == [TID]
        assert cluster.markers == [(100, 1, False, P)]
        assert coordinator.states[TID].state == TxnState.COMPLETE_ABORT
        with pytest.raises(TxnError) as late:
            await coordinator.add_partitions(TID, 100, 0, P)
        assert late.value.code == common_pb2.INVALID_PRODUCER_EPOCH

    asyncio.run(scenario())


def test_a_new_coordinator_completes_a_decided_commit() -> None:
    async def scenario() -> None:
        cluster = Cluster()
        old = await loaded(cluster)
        await old.init_producer_id(TID, 60_000, cluster.fresh_id)
        await old.add_partitions(TID, 100, 0, P)
        cluster.markers_fail = True
        with pytest.raises(ConnectionError):
            await old.end_txn(TID, 100, 0, commit=True)  # decided, markers not written
        old.unload(OWN)
        with pytest.raises(TxnError) as moved:
            await old.end_txn(TID, 100, 0, commit=True)
        assert moved.value.code == common_pb2.NOT_COORDINATOR
        cluster.markers_fail = False
        new = await loaded(cluster)  # failover: replays the state partition
        assert cluster.markers == [(100, 0, True, P)]
        assert new.states[TID].state == TxnState.COMPLETE_COMMIT
        # the producer's retried EndTxn now succeeds with the same outcome
        assert (await new.end_txn(TID, 100, 0, commit=True)).state == TxnState.COMPLETE_COMMIT

    asyncio.run(scenario())


def test_unknown_ids_are_refused() -> None:
    async def scenario() -> None:
        coordinator = await loaded(Cluster())
        with pytest.raises(TxnError) as unknown:
            await coordinator.end_txn(TID, 1, 0, commit=True)
        assert unknown.value.code == common_pb2.INVALID_PRODUCER_ID_MAPPING

    asyncio.run(scenario())


def test_markers_that_cannot_be_written_at_failover_are_retried_not_lost() -> None:
    """A new coordinator whose leaders are unreachable still takes the partition over; the
    decided transaction stays PREPARE_COMMIT until `complete_pending` writes its markers."""

    async def scenario() -> None:
        cluster = Cluster()
        old = await loaded(cluster)
        await old.init_producer_id(TID, 60_000, cluster.fresh_id)
        await old.add_partitions(TID, 100, 0, P)
        cluster.markers_fail = True
        with pytest.raises(ConnectionError):
            await old.end_txn(TID, 100, 0, commit=True)
        new = await loaded(cluster)  # does not raise: the load itself succeeded
        assert new.owns(OWN) and new.states[TID].state == TxnState.PREPARE_COMMIT
        assert await new.complete_pending() == []  # still unreachable
        cluster.markers_fail = False
        assert await new.complete_pending() == [TID]
        assert cluster.markers == [(100, 0, True, P)]
        assert new.states[TID].state == TxnState.COMPLETE_COMMIT

    asyncio.run(scenario())


def test_a_timed_out_transaction_is_decided_even_when_its_markers_must_wait() -> None:
    async def scenario() -> None:
        cluster = Cluster()
        coordinator = await loaded(cluster)
        await coordinator.init_producer_id(TID, 1_000, cluster.fresh_id)
        await coordinator.add_partitions(TID, 100, 0, P)
        cluster.clock += 1_001
        cluster.markers_fail = True
        assert await coordinator.abort_expired() == [TID]
        assert coordinator.states[TID].state == TxnState.PREPARE_ABORT  # decided, persisted
        with pytest.raises(TxnError) as fenced:  # the late producer is fenced already
            await coordinator.end_txn(TID, 100, 0, commit=True)
        assert fenced.value.code == common_pb2.INVALID_PRODUCER_EPOCH
        cluster.markers_fail = False
        assert await coordinator.complete_pending() == [TID]
        assert cluster.markers == [(100, 1, False, P)]

    asyncio.run(scenario())
