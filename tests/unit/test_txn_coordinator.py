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
from strom.node.txn.state_log import load_states, state_partition
from strom.storage.batch_validation import split_batches
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


def states_in_log(cluster: Cluster) -> list[TxnState]:
    """The states of TID persisted so far, in order (one batch per transition)."""
    data = cluster.logs.get(OWN, b"")
    found = []
    for position, size in split_batches(data):
        one: dict[str, TxnMetadata] = {}
        load_states(data[position : position + size], one, lambda o, why: None)
        found.extend(m.state for t, m in one.items() if t == TID)
    return found


async def settled(coordinator: TxnCoordinator) -> None:
    """Let the completion tasks run to their end (bounded)."""
    for _ in range(1_000):
        if not any(coordinator.completing(t) for t in list(coordinator.states)):
            return
        await asyncio.sleep(0.001)
    raise AssertionError("completion tasks still running")


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
        decided = await coordinator.end_txn(TID, 100, 0, commit=True)
        # answered once the decision is persisted; the markers follow
        assert decided.state == TxnState.PREPARE_COMMIT
        assert states_in_log(cluster)[-1] == TxnState.PREPARE_COMMIT
        await settled(coordinator)
        assert cluster.markers == [(100, 0, True, P)]
        assert states_in_log(cluster)[-1] == TxnState.COMPLETE_COMMIT
        # a retried EndTxn answers the same and writes nothing more
        retried = await coordinator.end_txn(TID, 100, 0, commit=True)
        assert retried.state == TxnState.COMPLETE_COMMIT
        await settled(coordinator)
        assert len(cluster.markers) == 1
        await coordinator.add_partitions(TID, 100, 0, frozenset({("orders", 0)}))
        await coordinator.end_txn(TID, 100, 0, commit=False)
        await settled(coordinator)
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
        decided = await old.end_txn(TID, 100, 0, commit=True)  # answered: the decision
        assert decided.state == TxnState.PREPARE_COMMIT and old.completing(TID)
        old.unload(OWN)  # the old coordinator's completion task stops with its partition
        await asyncio.sleep(0)
        assert not old.completing(TID)
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
        await old.end_txn(TID, 100, 0, commit=True)
        old.unload(OWN)
        new = await loaded(cluster)  # does not raise: the load itself succeeded
        assert new.owns(OWN) and new.states[TID].state == TxnState.PREPARE_COMMIT
        assert new.completing(TID)  # its completion task retries with backoff
        assert await new.complete_pending() == []  # left to that task
        cluster.markers_fail = False
        await settled(new)
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
        await settled(coordinator)
        assert cluster.markers == [(100, 1, False, P)]
        assert coordinator.states[TID].state == TxnState.COMPLETE_ABORT

    asyncio.run(scenario())


def test_requests_while_markers_are_written_get_concurrent_transactions_then_succeed() -> None:
    """Kafka's rule: after EndTxn is answered, the same producer's next AddPartitionsToTxn or
    InitProducerId is refused CONCURRENT_TRANSACTIONS (retriable) until the markers are written;
    a request waits a bounded time for them first."""

    async def scenario() -> None:
        cluster = Cluster()
        coordinator = await loaded(cluster)
        coordinator.concurrent_wait_ms_max = 20
        await coordinator.init_producer_id(TID, 60_000, cluster.fresh_id)
        await coordinator.add_partitions(TID, 100, 0, P)
        cluster.markers_fail = True
        await coordinator.end_txn(TID, 100, 0, commit=True)
        for request in (
            coordinator.add_partitions(TID, 100, 0, P),
            coordinator.init_producer_id(TID, 60_000, cluster.fresh_id),
        ):
            with pytest.raises(TxnError) as busy:
                await request
            assert busy.value.code == common_pb2.CONCURRENT_TRANSACTIONS
        # the opposite outcome is refused; the same one answers the decision again
        with pytest.raises(TxnError) as opposite:
            await coordinator.end_txn(TID, 100, 0, commit=False)
        assert opposite.value.code == common_pb2.INVALID_TXN_STATE
        assert (await coordinator.end_txn(TID, 100, 0, True)).state == TxnState.PREPARE_COMMIT
        assert cluster.markers == []
        cluster.markers_fail = False
        # markers written within the bounded wait: the next transaction starts at once
        coordinator.concurrent_wait_ms_max = 5_000
        added = await coordinator.add_partitions(TID, 100, 0, frozenset({("orders", 0)}))
        assert added.state == TxnState.ONGOING
        assert cluster.markers == [(100, 0, True, P)]
        assert states_in_log(cluster)[-3:] == [
            TxnState.PREPARE_COMMIT, TxnState.COMPLETE_COMMIT, TxnState.ONGOING
        ]  # fmt: skip
        await coordinator.stop()

    asyncio.run(scenario())
