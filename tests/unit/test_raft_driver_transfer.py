"""A leadership transfer left pending never leaves the real Raft driver stuck (issue 14, item 9).

Three RaftDrivers over in-memory stores, wired by an in-process send that can drop messages. The
leader starts a transfer whose TimeoutNow is lost, so leadership never moves; a proposal made
meanwhile waits (the core refuses proposals during a transfer, and the driver keeps them for the
next turn) until the leader abandons the transfer one election timeout after it began (thesis
§3.10, testdata/leadership_transfer_abandoned.txt), then commits. With a core that keeps the
transfer forever, the same proposal never commits: the test can fail.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from strom.node.quorum.driver import RaftDriver
from strom.raft.config import Config as RaftConfig
from strom.raft.core import Raft
from strom.raft.errors import ProposalDropped
from strom.raft.memory_storage import MemoryStorage
from strom.raft.rawnode import RawNode
from strom.raft.storage import Storage
from strom.raft.types import Entry, Message, Role, Snapshot, TimeoutNowRequest

VOTERS = (1, 2, 3)
TICK_S = 0.01
ELECTION_TIMEOUT_TICKS = 5


class KeepTransferRaft(Raft):
    """Never abandons a leadership transfer."""

    def _tick_leader(self) -> None:
        transferee = self.lead_transferee
        super()._tick_leader()
        if self.role is Role.LEADER:
            self.lead_transferee = transferee


class Applied:
    """The state machine: what was applied, in order."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def apply(self, entry: Entry) -> None:
        self.data.append(entry.data)

    def restore(self, snapshot: Snapshot) -> None:
        raise AssertionError("no snapshots in this test")

    def snapshot(self) -> bytes:
        return b""


class Cluster:
    def __init__(self, core: type[Raft]) -> None:
        self.drop: Callable[[Message], bool] = lambda m: False
        self.drivers: dict[int, RaftDriver] = {}
        self.applied: dict[int, Applied] = {}
        for node_id in VOTERS:
            store = MemoryStorage()
            config = RaftConfig(
                node_id=node_id,
                voters=VOTERS,
                election_timeout_ticks=ELECTION_TIMEOUT_TICKS,
                heartbeat_interval_ticks=1,
            )

            class Node(RawNode):
                def _make_raft(
                    self, c: RaftConfig, s: Storage, rand_int: Callable[[int], int]
                ) -> Raft:
                    return core(c, s, rand_int)

            raw = Node(config, store, random.Random(node_id).randrange)
            self.applied[node_id] = Applied()
            self.drivers[node_id] = RaftDriver(
                raw, store, self.applied[node_id], self._send, TICK_S, 1 << 30
            )

    def _send(self, to_id: int, messages: list[Message]) -> None:
        self.drivers[to_id].step([m for m in messages if not self.drop(m)])

    async def leader(self) -> RaftDriver:
        async with asyncio.timeout(5):
            while True:
                leaders = [d for d in self.drivers.values() if d.is_leader]
                if len(leaders) == 1:
                    return leaders[0]
                await asyncio.sleep(TICK_S)


async def _propose_during_lost_transfer(
    core: type[Raft], timeout_s: float
) -> tuple[bytes | None, list[str]]:
    """The data last applied on the leader once the proposal resolved (None if it timed out),
    and the core's refusals of that proposal."""
    cluster = Cluster(core)
    tasks = [asyncio.create_task(d.run()) for d in cluster.drivers.values()]
    try:
        leader = await cluster.leader()
        await leader.propose(b"before", timeout_s=5)  # every voter has heard from this leader
        refusals: list[str] = []
        propose = leader.raw.propose

        def recording_propose(data: bytes) -> int:
            try:
                return propose(data)
            except ProposalDropped as exc:
                refusals.append(str(exc))
                raise

        leader.raw.propose = recording_propose  # type: ignore[method-assign]
        target = next(i for i in VOTERS if not cluster.drivers[i].is_leader)
        cluster.drop = lambda m: isinstance(m, TimeoutNowRequest)
        # Both land in one driver turn, in this order: the transfer starts, then the core
        # refuses the proposal and the driver keeps it for the next turn.
        leader.transfer_leadership(target)
        try:
            await leader.propose(b"during", timeout_s=timeout_s)
        except TimeoutError:
            return None, refusals
        assert leader.is_leader, "the TimeoutNow was lost: leadership must not have moved"
        return cluster.applied[leader.status.node_id].data[-1], refusals
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_a_proposal_during_a_lost_transfer_commits_once_the_transfer_is_abandoned() -> None:
    # The transfer is abandoned after 5 ticks (50 ms); 2 s leaves room for a loaded machine.
    applied, refusals = asyncio.run(_propose_during_lost_transfer(Raft, timeout_s=2))
    assert applied == b"during"
    assert refusals and all("leadership is moving" in r for r in refusals), refusals


def test_a_transfer_kept_forever_would_leave_the_proposal_waiting() -> None:
    applied, refusals = asyncio.run(_propose_during_lost_transfer(KeepTransferRaft, 0.5))
    assert applied is None
    assert refusals
