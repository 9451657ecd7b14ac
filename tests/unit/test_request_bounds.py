"""One request cannot freeze a node (issue #15, defect 5).

A produce request of 600,000 one-record batches blocked a node's event loop for 12 s: the
controller fenced it, and a write it had acknowledged was truncated by the new leader. A
CreateTopics of 1,000,000 partitions (validate_only) froze the active controller for 39 s. Here:
the real BrokerServicer over a real ReplicaManager and logs (only the controller is scripted),
and the real ControllerService over a single-voter Raft quorum. Responsiveness is measured as a
loop-lag probe: a task beside the request counts loop turns and the longest gap between them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from replica_fixtures import changed, image, manager, until
from test_controller_logic import Cluster
from test_controller_service import Quorum, running_quorum

from strom.node.broker.service import BrokerServicer
from strom.node.controller.errors import ControllerError
from strom.node.controller.logic import PARTITIONS_PER_REQUEST_MAX
from strom.node.loop_turns import ITEMS_PER_TURN_MAX, LoopStallWatchdog
from strom.node.metadata.image import MetadataDelta, PartitionInfo
from strom.node.replica.manager import NEW_LOGS_INLINE_MAX, NEW_LOGS_PER_TURN_MAX
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import admin_pb2, broker_pb2, common_pb2, controller_pb2

ONE_BATCH = encode_batch([Record(None, b"v", (), int(time.time() * 1000))])


class LoopProbe:
    """Counts event-loop turns and the longest gap between two, while it runs."""

    def __init__(self) -> None:
        self.turns = 0
        self.gap_s_max = 0.0
        self._last = time.perf_counter()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        self._last = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            self.turns += 1
            self.gap_s_max = max(self.gap_s_max, now - self._last)
            self._last = now

    async def __aenter__(self) -> LoopProbe:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)  # let it take its first timestamp
        self.turns = 0
        return self

    async def __aexit__(self, *exc: object) -> None:
        # The gap still open counts too: a request that never yielded is one long gap.
        self.gap_s_max = max(self.gap_s_max, time.perf_counter() - self._last)
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def broker(tmp_path: Path) -> BrokerServicer:
    replicas = manager(tmp_path)
    img = image({0: PartitionInfo(replicas=(1,), isr=(1,), leader=1, leader_epoch=1,
                                  partition_epoch=1)})  # fmt: skip
    replicas.on_metadata(img, changed(img))
    return BrokerServicer(replicas, None, "cluster", "PLAINTEXT", None)  # type: ignore[arg-type]


def produce_request(entries: list[bytes]) -> broker_pb2.ProduceRequest:
    request = broker_pb2.ProduceRequest(acks=1, timeout_ms=1000)
    topic = request.topics.add(name="t")
    for records in entries:
        topic.partitions.add(partition=0, records=records)
    return request


def test_one_partition_entry_carries_one_batch(tmp_path: Path) -> None:
    """Kafka's rule for RecordBatch v2; more is refused before any batch is validated (on main
    all 100,000 were validated and appended, seconds of blocked loop)."""

    async def scenario() -> None:
        servicer = broker(tmp_path)
        request = produce_request([ONE_BATCH * 100_000])
        response = await servicer.Produce(request, None)  # type: ignore[arg-type]
        result = response.topics[0].partitions[0]
        assert result.error_code == common_pb2.INVALID_RECORD, result
        assert "one batch per partition" in result.error_message
        assert servicer.manager.partition_by_name("t", 0).log_end_offset == 0
        single = await servicer.Produce(produce_request([ONE_BATCH]), None)  # type: ignore[arg-type]
        assert single.topics[0].partitions[0].error_code == common_pb2.NONE

    asyncio.run(scenario())


def test_a_produce_of_many_partition_entries_lets_the_loop_run(tmp_path: Path) -> None:
    entries = 20_000

    async def scenario() -> None:
        servicer = broker(tmp_path)
        request = produce_request([ONE_BATCH] * entries)
        async with LoopProbe() as probe:
            response = await servicer.Produce(request, None)  # type: ignore[arg-type]
        codes = {p.error_code for p in response.topics[0].partitions}
        assert codes == {common_pb2.NONE}
        assert servicer.manager.partition_by_name("t", 0).log_end_offset == entries
        # Count-based: the loop came round at least once per slice of the request (on main it
        # never did until the whole request was done).
        assert probe.turns >= entries // ITEMS_PER_TURN_MAX - 1, probe.turns
        assert probe.gap_s_max < 1.0, probe.gap_s_max

        fetch = broker_pb2.FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=1 << 20)
        topic = fetch.topics.add(name="t")
        for _ in range(entries):
            topic.partitions.add(partition=0, fetch_offset=0, current_leader_epoch=-1)
        async with LoopProbe() as probe:
            answer = await servicer.Fetch(fetch, None)  # type: ignore[arg-type]
        assert len(answer.topics[0].partitions) == entries
        assert probe.turns >= entries // ITEMS_PER_TURN_MAX - 1, probe.turns

    asyncio.run(scenario())


def test_create_topics_bounds_partitions_per_request_before_any_work() -> None:
    """1,000,000 partitions with validate_only froze the controller for 39 s; now refused as a
    policy violation before a single partition is placed, and the controller stays active."""

    async def scenario() -> None:
        async with running_quorum() as q:
            await unfenced_broker(q)
            big = admin_pb2.CreateTopicsRequest(
                topics=[admin_pb2.CreatableTopic(name="huge", num_partitions=1_000_000,
                                                 replication_factor=1)],
                validate_only=True,
            )  # fmt: skip
            many = admin_pb2.CreateTopicsRequest(
                topics=[
                    admin_pb2.CreatableTopic(name=f"t{i}", num_partitions=1, replication_factor=1)
                    for i in range(PARTITIONS_PER_REQUEST_MAX + 1)
                ]
            )
            for request in (big, many):
                async with LoopProbe() as probe:
                    response = await q.service.CreateTopics(request, _Context())  # type: ignore[arg-type]
                assert {t.error_code for t in response.topics} == {common_pb2.POLICY_VIOLATION}
                assert "partitions per request" in response.topics[0].error_message
                assert probe.gap_s_max < 1.0, probe.gap_s_max
            assert not q.metadata.image.topics
            ok = await q.service.CreateTopics(
                admin_pb2.CreateTopicsRequest(
                    topics=[admin_pb2.CreatableTopic(name="ok", num_partitions=2,
                                                     replication_factor=1)]
                ),
                _Context(),  # type: ignore[arg-type]
            )  # fmt: skip
            assert ok.topics[0].error_code == common_pb2.NONE, ok
            assert q.service.active

    asyncio.run(scenario())


async def unfenced_broker(q: Quorum) -> None:
    registered = await q.register(1)
    heartbeat = controller_pb2.BrokerHeartbeatRequest(
        broker_id=1, broker_epoch=registered.broker_epoch
    )
    async with asyncio.timeout(5):
        while True:
            heartbeat.current_metadata_offset = q.metadata.image.last_index
            answer = await q.service.BrokerHeartbeat(heartbeat, None)  # type: ignore[arg-type]
            if not answer.is_fenced:
                return
            await asyncio.sleep(0.01)


def test_create_partitions_is_bounded_too() -> None:
    c = Cluster()
    for broker_id in (1, 2, 3):
        c.add_broker(broker_id)
    c.create("small", 1, 1)
    with pytest.raises(ControllerError) as refused:
        c.logic.create_partitions("small", PARTITIONS_PER_REQUEST_MAX + 2)
    assert refused.value.code == common_pb2.POLICY_VIOLATION
    c.logic.create_partitions("small", PARTITIONS_PER_REQUEST_MAX + 1)  # exactly the bound


class _Context:
    async def abort(self, code: Any, message: str) -> None:
        pytest.fail(f"aborted: {code} {message}")


def test_the_watchdog_reports_a_blocked_loop_with_where_it_is_stuck(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def stuck_here() -> None:
        time.sleep(0.5)  # a blocking call on the loop: what the watchdog is for

    async def scenario() -> int:
        watchdog = LoopStallWatchdog(stall_ms=100)
        watchdog.start()
        await asyncio.sleep(0.05)
        stuck_here()
        await asyncio.sleep(0.05)
        await watchdog.stop()
        return watchdog.stalls

    with caplog.at_level(logging.WARNING, logger="strom.loop"):
        assert asyncio.run(scenario()) == 1  # once per stall, however long
    assert "stuck_here" in caplog.text


def test_a_change_adding_many_replicas_opens_their_logs_in_slices(tmp_path: Path) -> None:
    """20,000 partitions left a cluster without an active controller for 30 s: every broker
    created every new log (a few fsyncs each) in one go on its event loop."""
    count = 3 * NEW_LOGS_INLINE_MAX

    async def scenario() -> None:
        replicas = manager(tmp_path)
        img = image({i: PartitionInfo(replicas=(1,), isr=(1,), leader=1, leader_epoch=1,
                                      partition_epoch=1) for i in range(count)})  # fmt: skip
        async with LoopProbe() as probe:
            replicas.on_metadata(img, changed(img))
            assert len(replicas.partitions) == NEW_LOGS_INLINE_MAX  # the rest: in the background
            await until(lambda: len(replicas.partitions) == count)
        assert probe.turns >= (count - NEW_LOGS_INLINE_MAX) // NEW_LOGS_PER_TURN_MAX
        assert replicas.partition_by_name("t", count - 1).is_leader
        # A topic deleted before its logs opened leaves nothing behind.
        gone = image({i: PartitionInfo(replicas=(1,), isr=(1,), leader=1, leader_epoch=1,
                                       partition_epoch=1) for i in range(count)}, topic="u",
                     topic_id=bytes(16))  # fmt: skip
        replicas.on_metadata(gone, changed(gone))
        delta = MetadataDelta()
        delta.removed_topics[bytes(16)] = gone.topics[bytes(16)]
        replicas.on_metadata(img, delta)
        await asyncio.sleep(0.1)
        assert not [k for k in replicas.logs.logs() if k[0] == "u"]
        await replicas.stop()

    asyncio.run(scenario())
