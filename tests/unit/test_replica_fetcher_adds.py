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

from replica_fixtures import TOPIC_ID, changed, image, led_by, manager, until

from strom.node.replica import fetcher as fetcher_module
from strom.node.replica.service import ReplicaServicer
from strom.storage.record_batch import Record, encode_batch
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


def test_a_fetch_overtaken_by_a_newer_one_takes_no_position_at_the_leader(tmp_path: Path) -> None:
    """The leader's half (node/replica/service.py): a fetch the follower abandoned may still
    arrive, or wake from its long-poll, after a newer one. By its fetch_sequence the leader
    answers it empty and records nothing from it; otherwise the follower's log end as the leader
    knows it would move back under the HW (the node simulation caught that, seed 70)."""

    async def scenario() -> None:
        broker1 = manager(tmp_path, broker_id=1)
        img = image({0: led_by(1)})
        broker1.on_metadata(img, changed(img))
        leader = broker1.partition_by_name("t", 0)
        for i in range(3):
            leader.append_as_leader(encode_batch([Record(None, b"x%d" % i, (), 1)]), 1, 1, 0)
        servicer = ReplicaServicer(broker1)
        assert leader.leader_state is not None
        follower = leader.leader_state.followers[2]

        async def fetch(sequence: int, offset: int, wait_ms: int = 0) -> bytes:
            request = replica_pb2.ReplicaFetchRequest(
                replica_id=2, broker_epoch=12, max_wait_ms=wait_ms, fetch_sequence=sequence
            )
            request.partitions.add(
                topic_id=TOPIC_ID, partition=0, fetch_offset=offset, current_leader_epoch=1,
                last_fetched_epoch=1 if offset else -1, partition_max_bytes=1 << 20,
            )  # fmt: skip
            response = await servicer.Fetch(request, None)  # type: ignore[arg-type]
            return b"".join(p.records for p in response.partitions)

        assert await fetch(2, 3) == b"" and follower.log_end_offset == 3
        assert await fetch(1, 0) == b""  # arrives late: answered empty...
        assert follower.log_end_offset == 3  # ...and its position is not taken

        parked = asyncio.create_task(fetch(3, 3, wait_ms=60_000))
        await _settle()
        assert not parked.done()
        await fetch(4, 3)  # the follower abandoned 3 and asked again
        leader.append_as_leader(encode_batch([Record(None, b"x3", (), 1)]), 1, 1, 0)
        assert await asyncio.wait_for(parked, 5) == b""  # woke, overtaken: nothing sent
        assert await fetch(5, 3) and await fetch(6, 4) == b""
        assert follower.log_end_offset == 4
        assert await fetch(3, 3) == b"" and follower.log_end_offset == 4
        assert await fetch(0, 3) and follower.log_end_offset == 3  # 0: unordered, as before
        await broker1.stop()
        broker1.logs.close()

    asyncio.run(scenario())
