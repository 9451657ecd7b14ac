"""A partition added to a follower's fetcher while its fetch long-polls is fetched at once
(node/replica/fetcher.py): the fetch in flight is abandoned and a new one asks for every
partition, as long as fewer than FETCH_RESTARTS_MAX fetches in a row were abandoned.

Real ReplicaManager, Partition and ReplicaFetcher over real logs; leader 2 is scripted through
the `peers` seam and never answers a fetch on its own (a long-poll with nothing new), so a
follower that waited for the answer before asking for a new partition would wait forever: no
wall-clock timing is involved."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replica_fixtures import changed, image, led_by, manager, until

from strom.node.replica import fetcher as fetcher_module
from strom.v1 import replica_pb2


@dataclass
class ParkedFetch:
    partitions: list[int]
    release: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: str = "parked"  # then "cancelled" or "answered"


class LongPollingLeader:
    """The `peers` seam: every Fetch parks until the test releases it (answered, empty) or the
    follower cancels it; `fetches` records each one in order."""

    def __init__(self) -> None:
        self.fetches: list[ParkedFetch] = []

    def stub(self, stub_type: Any, address: str, security: Any) -> Any:
        leader = self

        class Stub:
            async def Fetch(
                self, request: replica_pb2.ReplicaFetchRequest, timeout: float
            ) -> replica_pb2.ReplicaFetchResponse:
                fetch = ParkedFetch(sorted(p.partition for p in request.partitions))
                leader.fetches.append(fetch)
                try:
                    await fetch.release.wait()
                except asyncio.CancelledError:
                    fetch.outcome = "cancelled"
                    raise
                fetch.outcome = "answered"
                return replica_pb2.ReplicaFetchResponse()

        return Stub()

    def asked(self) -> list[list[int]]:
        return [fetch.partitions for fetch in self.fetches]

    async def close(self) -> None:
        pass


async def _settle() -> None:
    """Let every ready task run (the leader is scripted in-process: no I/O to wait for)."""
    for _ in range(50):
        await asyncio.sleep(0)


def test_a_partition_added_during_a_long_poll_is_fetched_without_waiting_for_it(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        leader = LongPollingLeader()
        replicas = manager(tmp_path, leader, **{"replica.fetch.wait.max.ms": 500})
        first = image({0: led_by(2)})
        replicas.on_metadata(first, changed(first))
        await until(lambda: leader.asked() == [[0]])

        both = image({0: led_by(2), 1: led_by(2)})  # a new partition, led by the same broker
        replicas.on_metadata(both, changed(both))
        await until(lambda: len(leader.fetches) == 2)
        assert leader.asked() == [[0], [0, 1]]
        assert leader.fetches[0].outcome == "cancelled"  # the abandoned long-poll's RPC

        # The same assignment again (no new partition, same epoch) abandons nothing.
        replicas.on_metadata(both, changed(both))
        await _settle()
        assert len(leader.fetches) == 2 and leader.fetches[1].outcome == "parked"

        # A new leader epoch for partition 0 asks again at once too (the old answer would be
        # thrown away as an older epoch's).
        bumped = image({0: led_by(2, epoch=2), 1: led_by(2)})
        replicas.on_metadata(bumped, changed(bumped))
        await until(lambda: len(leader.fetches) == 3)
        assert leader.fetches[1].outcome == "cancelled" and leader.asked()[2] == [0, 1]
        await replicas.stop()
        replicas.logs.close()

    asyncio.run(scenario())


def test_adds_faster_than_fetches_cannot_starve_replication(tmp_path: Path) -> None:
    """After FETCH_RESTARTS_MAX fetches abandoned in a row, the next is waited for: a partition
    added meanwhile is asked for only after it is answered."""
    restarts_max = fetcher_module.FETCH_RESTARTS_MAX

    async def scenario() -> None:
        leader = LongPollingLeader()
        replicas = manager(tmp_path, leader, **{"replica.fetch.wait.max.ms": 500})
        for count in range(1, restarts_max + 2):
            img = image({p: led_by(2) for p in range(count)})
            replicas.on_metadata(img, changed(img))
            await until(lambda count=count: len(leader.fetches) == count)  # type: ignore[misc]
        assert [f.outcome for f in leader.fetches] == ["cancelled"] * restarts_max + ["parked"]

        more = restarts_max + 2
        img = image({p: led_by(2) for p in range(more)})
        replicas.on_metadata(img, changed(img))
        await _settle()
        waited_for = leader.fetches[-1]
        assert waited_for.outcome == "parked" and len(leader.fetches) == restarts_max + 1

        waited_for.release.set()  # answered: the partition added meanwhile is asked for next
        await until(lambda: len(leader.fetches) == restarts_max + 2)
        assert waited_for.outcome == "answered"
        assert leader.asked()[-1] == list(range(more))

        # ...and the count starts again: the next add abandons the fetch in flight.
        img = image({p: led_by(2) for p in range(more + 1)})
        replicas.on_metadata(img, changed(img))
        await until(lambda: len(leader.fetches) == restarts_max + 3)
        assert leader.fetches[-2].outcome == "cancelled"
        await replicas.stop()
        replicas.logs.close()

    asyncio.run(scenario())
