"""The controller shell over a real Raft driver: back-pressure never switches a controller off.

A single-voter quorum (RawNode over MemoryStorage, driven by the real RaftDriver) elects itself,
commits its no-op and makes its ControllerService active. Issue #14, defect 3: a proposal the
driver refused for back-pressure (too many in flight, a leadership transfer, the uncommitted-bytes
bound) used to be reported as lost leadership; the service then switched itself off for the rest
of its term and answered NOT_CONTROLLER naming itself, so no broker was ever fenced again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import AsyncIterator

import pytest

from strom.node.config import build_config
from strom.node.controller.logic import ControllerLogic, ControllerSettings
from strom.node.controller.service import ControllerService
from strom.node.metadata.state import MetadataState
from strom.node.quorum import driver as raft_driver
from strom.node.quorum.driver import RaftDriver
from strom.raft.config import Config as RaftConfig
from strom.raft.errors import NotLeader, ProposalDropped
from strom.raft.memory_storage import MemoryStorage
from strom.raft.rawnode import RawNode
from strom.raft.types import Entry, HardState
from strom.v1 import common_pb2, controller_pb2, metadata_pb2

CLUSTER_ID = "test-cluster"


class Quorum:
    def __init__(self) -> None:
        config = build_config(
            {
                "node.id": 1,
                "controller.quorum.voters": "1@localhost:9093",
                "controller.quorum.request.timeout.ms": 500,
            },
            environ={},
        )
        store = MemoryStorage()
        raw = RawNode(
            RaftConfig(
                node_id=1, voters=(1,), election_timeout_ticks=2, heartbeat_interval_ticks=1
            ),
            store,
            random.Random(7).randrange,
        )
        self.raw = raw
        self.metadata = MetadataState(CLUSTER_ID)
        self.driver = RaftDriver(
            raw, store, self.metadata, lambda peer, messages: None, 0.01, 1 << 30
        )
        ids = iter(range(1, 1_000))
        logic = ControllerLogic(
            ControllerSettings(num_partitions=1, default_replication_factor=1, topic_defaults={}),
            self.metadata.image,
            new_topic_id=lambda: next(ids).to_bytes(16, "big"),
        )
        self.service = ControllerService(config, CLUSTER_ID, self.driver, self.metadata, logic)
        self.driver.on_role_change = self.service.on_role_change
        self.driver.on_leader_ready = self.service.on_leader_ready

    async def register(self, broker_id: int) -> controller_pb2.BrokerRegistrationResponse:
        request = controller_pb2.BrokerRegistrationRequest(
            broker_id=broker_id,
            cluster_id=CLUSTER_ID,
            incarnation_id=bytes(16),
            listeners=[metadata_pb2.Endpoint(listener="PLAINTEXT", host="h", port=9092)],
        )
        return await self.service.RegisterBroker(request, None)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_quorum() -> AsyncIterator[Quorum]:
    """A quorum whose controller is active (its no-op committed)."""
    q = Quorum()
    task = asyncio.create_task(q.driver.run())
    try:
        async with asyncio.timeout(5):
            while not q.service.active:
                await asyncio.sleep(0.01)
        yield q
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_too_many_proposals_is_retriable_and_the_controller_stays_active(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        async with running_quorum() as quorum:
            monkeypatch.setattr(raft_driver, "PROPOSALS_MAX", 0)
            busy = await quorum.register(1)
            assert busy.status.error_code == common_pb2.REQUEST_TIMED_OUT
            assert quorum.service.active
            monkeypatch.setattr(raft_driver, "PROPOSALS_MAX", 10_000)
            registered = await quorum.register(1)
            assert registered.status.error_code == common_pb2.NONE, registered.status
            assert 1 in quorum.metadata.image.brokers

    asyncio.run(scenario())


def test_a_proposal_the_core_defers_still_commits_in_order() -> None:
    """ProposalDropped (a transfer in progress, the uncommitted-bytes bound) means "not now":
    the batch waits for the next turn instead of failing, and later batches keep their order."""

    async def scenario() -> None:
        async with running_quorum() as quorum:
            propose = quorum.raw.propose
            refusals = iter(range(3))

            def flaky_propose(data: bytes) -> int:
                if next(refusals, None) is not None:
                    raise ProposalDropped("leadership is moving")
                return propose(data)

            quorum.raw.propose = flaky_propose  # type: ignore[method-assign]
            first, second = await asyncio.gather(quorum.register(1), quorum.register(2))
            assert first.status.error_code == common_pb2.NONE, first.status
            assert second.status.error_code == common_pb2.NONE, second.status
            assert quorum.service.active
            brokers = quorum.metadata.image.brokers
            assert brokers[1].registered_index < brokers[2].registered_index  # in order

    asyncio.run(scenario())


def test_leadership_lost_in_an_older_term_does_not_switch_off_a_newer_term() -> None:
    """A proposal of term T that fails after the node became active again in a later term
    (re-elected while the proposal was in flight) must leave the controller active."""

    async def scenario() -> None:
        async with running_quorum() as quorum:
            service = quorum.service
            old_term = service.active_term

            proposal: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            def lost(data: bytes) -> asyncio.Future[int]:
                return proposal

            service.driver.submit = lost  # type: ignore[method-assign]
            task = asyncio.create_task(service._commit([metadata_pb2.MetadataRecord()]))
            await asyncio.sleep(0)  # the proposal is in flight, in the old term
            service.on_leader_ready(old_term + 1)
            proposal.set_exception(
                raft_driver.NotLeaderError(0, "proposal lost to a leader change")
            )
            with pytest.raises(raft_driver.NotLeaderError):
                await task
            assert service.active and service.active_term == old_term + 1

    asyncio.run(scenario())


def test_a_proposal_whose_caller_timed_out_fails_quietly() -> None:
    """The caller of `propose` gave up (timeout) and the proposal fails later (leadership
    lost): nobody awaits it any more, and asyncio must not log "Future exception was never
    retrieved" at ERROR for it (the node simulation saw it after every leader change)."""

    async def scenario() -> list[dict[str, object]]:
        reported: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, c: reported.append(c))
        async with running_quorum() as quorum:

            def not_now(data: bytes) -> int:
                raise ProposalDropped("leadership is moving")

            quorum.raw.propose = not_now  # type: ignore[method-assign]
            with pytest.raises(TimeoutError):
                await quorum.driver.propose(b"x", timeout_s=0.05)

            def lost(data: bytes) -> int:
                raise NotLeader(1, 0)

            quorum.raw.propose = lost  # type: ignore[method-assign]
            quorum.driver._wake.set()
            await asyncio.sleep(0.05)
            gc.collect()
            await asyncio.sleep(0)
        return reported

    reported = asyncio.run(scenario())
    assert not [c for c in reported if "never retrieved" in str(c.get("message"))], reported


def test_an_answer_without_records_waits_for_the_batches_it_read() -> None:
    """A decision that writes nothing (an AlterPartition whose ISR is "already so", a heartbeat
    answered "unfenced") read the speculative image: it is answered only once the batches
    proposed before it have committed, and fails with them if leadership is lost. The node
    simulation (seed 19) saw a leader told "already so" about an ISR that an uncommitted fencing
    had emptied; the fencing was lost with the controller's leadership, and the leader waited
    forever for metadata that never came: its ISR stayed frozen for the rest of its epoch."""

    async def scenario() -> None:
        async with running_quorum() as quorum:
            propose = quorum.raw.propose

            def not_yet(data: bytes) -> int:
                raise ProposalDropped("leadership is moving")

            quorum.raw.propose = not_yet  # type: ignore[method-assign]
            records, _ = quorum.service.logic.register_broker(7, bytes(16), [], "", 0)
            first = asyncio.create_task(quorum.service._commit(records))
            await asyncio.sleep(0.05)
            empty = asyncio.create_task(quorum.service._commit([]))
            await asyncio.sleep(0.05)
            assert not empty.done(), "answered before what it read had committed"
            quorum.raw.propose = propose  # type: ignore[method-assign]
            await asyncio.wait_for(asyncio.gather(first, empty), 5)
            assert 7 in quorum.metadata.image.brokers

    asyncio.run(scenario())


def test_an_answer_without_records_never_leans_on_a_batch_that_timed_out() -> None:
    """The caller of the last batch timed out, but the batch may still commit (or be lost with
    the leadership): an answer that read it must not succeed before it has committed (node
    simulation seed 175: a controller resumed from a pause answered "already so" on such a
    batch, which was then lost)."""

    async def scenario() -> None:
        async with running_quorum() as quorum:

            def not_yet(data: bytes) -> int:
                raise ProposalDropped("leadership is moving")

            quorum.raw.propose = not_yet  # type: ignore[method-assign]
            quorum.service.propose_timeout_s = 0.05
            records, _ = quorum.service.logic.register_broker(7, bytes(16), [], "", 0)
            with pytest.raises(TimeoutError):
                await quorum.service._commit(records)
            with pytest.raises(TimeoutError):
                await quorum.service._commit([])

    asyncio.run(scenario())


def test_replaying_a_long_log_lets_other_tasks_run_between_slices() -> None:
    """A restarted controller applies its committed log in slices and yields between them:
    a heartbeat-like task keeps running during the replay instead of waiting for all of it."""
    entries = [Entry(term=1, index=i, data=b"x" * 1_000) for i in range(1, 201)]

    async def scenario() -> tuple[int, int]:
        store = MemoryStorage()
        store.append(entries)
        store.set_hard_state(HardState(term=1, vote=1, commit=len(entries)))
        raw = RawNode(
            RaftConfig(
                node_id=1, voters=(1,), election_timeout_ticks=100, heartbeat_interval_ticks=1,
                committed_bytes_per_ready_max=10_000,
            ),
            store,
            random.Random(1).randrange,
        )  # fmt: skip
        applied: list[int] = []
        ticks_during_replay = 0

        class Machine:
            def apply(self, entry: Entry) -> None:
                applied.append(entry.index)

            def restore(self, snapshot: object) -> None:
                raise AssertionError("no snapshot here")

            def snapshot(self) -> bytes:
                return b""

        driver = RaftDriver(raw, store, Machine(), lambda peer, messages: None, 0.01, 1 << 30)
        task = asyncio.create_task(driver.run())
        while len(applied) < len(entries):
            await asyncio.sleep(0)
            if 0 < len(applied) < len(entries):
                ticks_during_replay += 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return len(applied), ticks_during_replay

    count, ticks = asyncio.run(scenario())
    assert count == len(entries)
    assert ticks >= 10  # ~20 slices of 10 entries, with the other task running between them
