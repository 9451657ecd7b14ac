"""One partition's failure stays its own (issue #14, defects 4 and 5).

Defect 4: an exception while applying one partition of a metadata change (a log that cannot be
opened, a config it cannot take) skipped every later partition of the change, and at start-up a
log that could not be opened stopped the node. Now each partition is applied on its own; a
replica whose log fails goes offline on this broker (served no more, reported to the controller
with every heartbeat, counted in a metric), and the controller moves it out of the ISR and
leadership (node/controller/offline.py).

Defect 5: the replica fetcher caught only gRPC errors; a storage error while truncating ended
its task, and the manager kept handing partitions to the dead fetcher. Now an error stays with
its partition (retried with backoff, then the partition is taken offline), the loop goes on, and
errors are counted.

Real logs in a temporary folder, the real ReplicaManager, Partition and ReplicaFetcher, and the
real ControllerLogic; other brokers are scripted through the `peers` seam.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from replica_fixtures import (
    BROKERS,
    TOPIC_ID,
    ScriptedController,
    ScriptedLeaderPeers,
    changed,
    image,
    leader_batches,
    led_by,
    manager,
    until,
)
from test_controller_logic import Cluster

from strom.node.broker.lifecycle import BrokerLifecycle
from strom.node.config import build_config
from strom.node.controller.errors import ControllerError
from strom.node.replica import fetcher as fetcher_module
from strom.node.replica.partition import PartitionError
from strom.storage.partition_log import PartitionLog
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import common_pb2, replica_pb2


def records(count: int) -> bytes:
    return encode_batch([Record(None, b"x", (), 1000) for _ in range(count)])


# ---- defect 4: the broker --------------------------------------------------------------------


def test_a_log_that_cannot_be_opened_at_start_does_not_stop_the_broker(tmp_path: Path) -> None:
    """t-1's recovery checkpoint is damaged: t-0 and t-2 open and lead, t-1 is offline (main:
    LogManager raised, and the node did not start)."""
    data = tmp_path / "data"
    for index in range(3):
        log = PartitionLog.open(str(data / f"t-{index}"), now_ms=0, topic_id=TOPIC_ID.hex())
        log.append(records(2), 0, now_ms=1000)
        log.close()
    with open(data / "t-1" / "recovery-point-offset-checkpoint", "w") as f:
        f.write("0\n1\ngarbage\n")

    async def scenario() -> None:
        replicas = manager(tmp_path)
        assert set(replicas.logs.failed) == {("t", 1)}
        img = image({i: led_by(1) for i in range(3)})
        replicas.on_metadata(img, changed(img))
        assert {key[1] for key in replicas.partitions} == {0, 2}
        assert replicas.offline_replicas() == [(TOPIC_ID, 1)]
        for index in (0, 2):
            assert (
                replicas.partition_by_name("t", index)
                .append_as_leader(records(1), 1, 1, now_ms=2000)
                .first_offset
                == 2
            )
        with pytest.raises(PartitionError) as refused:
            replicas.partition_by_name("t", 1)
        assert refused.value.code == common_pb2.KAFKA_STORAGE_ERROR
        assert "checkpoint" in refused.value.message
        await replicas.stop()
        replicas.logs.close()

    asyncio.run(scenario())


def test_one_failing_partition_does_not_abort_the_rest_of_a_change(tmp_path: Path) -> None:
    """The log of t-1 cannot be created (its folder's name is taken by a file): t-2, applied
    after it in the same change, still becomes leader (main: the exception skipped it)."""

    async def scenario() -> None:
        replicas = manager(tmp_path)
        (tmp_path / "data" / "t-1").write_text("not a folder")
        img = image({i: led_by(1) for i in range(3)})
        replicas.on_metadata(img, changed(img))
        assert {key[1] for key in replicas.partitions} == {0, 2}
        assert replicas.partition_by_name("t", 2).is_leader
        assert replicas.offline_replicas() == [(TOPIC_ID, 1)]
        assert replicas.offline[(TOPIC_ID, 1)].storage
        # A later change leaves it offline (reported) instead of failing again.
        again = image({i: replace(led_by(1, epoch=2)) for i in range(3)})
        replicas.on_metadata(again, changed(again))
        assert replicas.partition_by_name("t", 0).leader_epoch == 2
        await replicas.stop()
        replicas.logs.close()

    asyncio.run(scenario())


def test_a_config_the_broker_cannot_apply_takes_only_that_topic_offline(tmp_path: Path) -> None:
    async def scenario() -> None:
        replicas = manager(tmp_path)
        img = image({0: led_by(1)})
        replicas.on_metadata(img, changed(img))
        bad = image({0: led_by(1)}, configs={"segment.bytes": "lots"})
        replicas.on_metadata(bad, changed(bad))
        assert replicas.offline_replicas() == [(TOPIC_ID, 0)]
        assert not replicas.offline[(TOPIC_ID, 0)].storage  # its log stays open
        assert replicas.logs.get_log("t", 0) is not None
        fixed = image({0: led_by(1)}, configs={"segment.bytes": "1048576"})
        replicas.on_metadata(fixed, changed(fixed))  # a config it can apply: back online
        assert replicas.offline_replicas() == []
        assert replicas.partition_by_name("t", 0).is_leader
        await replicas.stop()
        replicas.logs.close()

    asyncio.run(scenario())


def test_an_io_error_on_a_leader_append_takes_the_replica_offline(tmp_path: Path) -> None:
    async def scenario() -> None:
        replicas = manager(tmp_path)
        img = image({0: led_by(1), 1: led_by(1)})
        replicas.on_metadata(img, changed(img))
        broken = replicas.partition_by_name("t", 0)
        segment = broken._log._local.active  # the test breaks the file under the log
        os.close(segment._fd)
        segment._fd = os.open(os.devnull, os.O_RDONLY)  # every write now fails with EBADF
        with pytest.raises(PartitionError) as refused:
            broken.append_as_leader(records(1), 1, 1, now_ms=2000)
        assert refused.value.code == common_pb2.KAFKA_STORAGE_ERROR
        assert replicas.offline_replicas() == [(TOPIC_ID, 0)]
        assert ("t", 0) in replicas.logs.failed
        assert (
            replicas.partition_by_name("t", 1)
            .append_as_leader(records(1), 1, 1, now_ms=2000)
            .first_offset
            == 0
        )
        await replicas.stop()
        replicas.logs.close()

    asyncio.run(scenario())


def test_offline_replicas_go_out_with_every_heartbeat() -> None:
    async def scenario() -> list[tuple[bytes, int]]:
        controller = ScriptedController()
        config = build_config(
            {"node.id": 1, "controller.quorum.voters": "1@localhost:9093"}, environ={}
        )
        lifecycle = BrokerLifecycle(config, "c", controller, lambda: 0, [])  # type: ignore[arg-type]
        lifecycle.broker_epoch = 7
        lifecycle.offline_replicas = lambda: [(TOPIC_ID, 1), (TOPIC_ID, 4)]
        await lifecycle._heartbeat(want_shut_down=False)
        sent = controller.requests[-1].offline_replicas
        return [(r.topic_id, r.partition) for r in sent]

    assert asyncio.run(scenario()) == [(TOPIC_ID, 1), (TOPIC_ID, 4)]


# ---- defect 4: the controller ------------------------------------------------------------


def test_the_controller_moves_a_reported_replica_out_of_isr_and_leadership() -> None:
    cluster = Cluster()
    for broker in BROKERS:
        cluster.add_broker(broker)
    created, topic_id, _, _ = cluster.logic.create_topic("t", 1, 3, {})
    cluster.commit(created)
    part = cluster.logic.image.partition(topic_id, 0)
    assert part is not None and part.isr == BROKERS
    failed = part.leader

    def heartbeat(broker: int, offline: list[tuple[bytes, int]]) -> None:
        records, _ = cluster.logic.broker_heartbeat(
            broker, cluster.epochs[broker], cluster.committed.last_index, False, False, 0, offline
        )
        cluster.commit(records)

    heartbeat(failed, [(topic_id, 0)])
    after = cluster.committed.partition(topic_id, 0)
    assert after is not None
    assert after.offline_replicas == (failed,)
    assert after.leader not in (failed, -1) and failed not in after.isr
    heartbeat(failed, [(topic_id, 0)])  # reported again: nothing more to change
    assert cluster.committed.partition(topic_id, 0) == after
    # Neither the leader's AlterPartition nor a preferred-leader election brings it back.
    with pytest.raises(ControllerError) as refused:
        cluster.logic.alter_partition(
            after.leader, cluster.epochs[after.leader], topic_id, 0, after.leader_epoch,
            after.partition_epoch, [*after.isr, failed],
        )  # fmt: skip
    assert refused.value.code == common_pb2.INELIGIBLE_REPLICA
    records, results = cluster.logic.elect_preferred_leaders()
    assert records == [] and results[(topic_id, 0)][0] != common_pb2.NONE
    # No longer reported (the broker restarted and opened the log): unmarked, free to rejoin.
    heartbeat(failed, [])
    back = cluster.committed.partition(topic_id, 0)
    assert back is not None and back.offline_replicas == () and back.leader == after.leader


def test_the_last_isr_member_going_offline_leaves_the_partition_offline_not_unclean() -> None:
    cluster = Cluster()
    cluster.add_broker(1)
    created, topic_id, _, _ = cluster.logic.create_topic("t", 1, 1, {})
    cluster.commit(created)

    def heartbeat(offline: list[tuple[bytes, int]]) -> None:
        records, _ = cluster.logic.broker_heartbeat(
            1, cluster.epochs[1], cluster.committed.last_index, False, False, 0, offline
        )
        cluster.commit(records)

    heartbeat([(topic_id, 0)])
    offline = cluster.committed.partition(topic_id, 0)
    assert offline is not None and (offline.leader, offline.isr) == (-1, (1,))
    heartbeat([])
    back = cluster.committed.partition(topic_id, 0)
    assert back is not None and (back.leader, back.isr, back.offline_replicas) == (1, (1,), ())


# ---- defect 5: the fetcher -------------------------------------------------------------------


def fetcher_errors(kind: str) -> float:
    value = REGISTRY.get_sample_value("strom_server_replicafetcher_errors_total", {"kind": kind})
    return value or 0.0


def test_a_storage_error_while_truncating_does_not_kill_the_fetcher(tmp_path: Path) -> None:
    """Broker 1 follows t-0 and t-1 from leader 2. t-0's log is damaged where its truncation
    must read; the leader says t-0 diverged. The fetcher reports t-0 failed (offline here) and
    goes on replicating t-1 (main: the exception ended the fetcher's task, silently, and t-1
    was never fetched again)."""

    def leader(request: replica_pb2.ReplicaFetchRequest) -> replica_pb2.ReplicaFetchResponse:
        response = replica_pb2.ReplicaFetchResponse()
        for wanted in request.partitions:
            out = response.partitions.add(topic_id=wanted.topic_id, partition=wanted.partition)
            if wanted.partition == 0 and wanted.fetch_offset > 3:
                out.diverging_epoch.epoch, out.diverging_epoch.end_offset = 1, 3
            elif wanted.partition == 1 and wanted.fetch_offset < 50:
                out.records = leader_batches(wanted.fetch_offset, 5)
        return response

    # t-0 holds 10 batches of ~600 bytes; bytes of its second batch's header are damaged. A
    # clean open reads neither them (its index starts later) nor its producer state (snapshot).
    t0 = PartitionLog.open(str(tmp_path / "data" / "t-0"), now_ms=0, topic_id=TOPIC_ID.hex())
    data = leader_batches(0, 10, value_bytes=600)
    t0.append_as_follower(data, now_ms=0)
    t0.close()
    second = len(data) // 10
    with open(tmp_path / "data" / "t-0" / "00000000000000000000.log", "r+b") as f:
        f.seek(second + 8)
        f.write(b"\xff" * 4)  # its batchLength: the batch no longer fits the file

    async def scenario() -> None:
        replicas = manager(tmp_path, ScriptedLeaderPeers(leader))
        assert replicas.logs.get_log("t", 0) is not None  # its damage is not where open reads
        errors_before = fetcher_errors("partition")
        follower = image({0: led_by(2), 1: led_by(2)})
        replicas.on_metadata(follower, changed(follower))
        (fetcher,) = replicas.fetchers.values()
        t1 = replicas.partition_by_name("t", 1)
        await until(lambda: fetcher._task.done() or t1.log_end_offset >= 50)  # type: ignore[union-attr]
        assert not fetcher._task.done(), fetcher._task  # type: ignore[union-attr]
        assert replicas.offline_replicas() == [(TOPIC_ID, 0)]
        assert "LogCorruptionError" in replicas.offline[(TOPIC_ID, 0)].reason
        assert fetcher_errors("partition") == errors_before + 1
        await replicas.stop()
        replicas.logs.close()

    asyncio.run(scenario())


def test_a_persistent_append_error_is_retried_then_taken_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader keeps sending t-0 data the follower cannot append (batches going back to
    offset 0): retried with backoff, then reported failed; the fetcher lives on."""
    monkeypatch.setattr(fetcher_module, "RETRY_DELAY_MS", 5)  # keep the test short

    def leader(request: replica_pb2.ReplicaFetchRequest) -> replica_pb2.ReplicaFetchResponse:
        response = replica_pb2.ReplicaFetchResponse()
        for wanted in request.partitions:
            out = response.partitions.add(topic_id=wanted.topic_id, partition=wanted.partition)
            out.records = leader_batches(0, 2)
        return response

    async def scenario() -> None:
        replicas = manager(tmp_path, ScriptedLeaderPeers(leader))
        errors_before = fetcher_errors("partition")
        follower = image({0: led_by(2)})
        replicas.on_metadata(follower, changed(follower))
        (fetcher,) = replicas.fetchers.values()
        await until(lambda: bool(replicas.offline))
        assert fetcher.alive
        assert fetcher_errors("partition") == errors_before + fetcher_module.PARTITION_FAILURES_MAX
        assert "UnexpectedAppendOffsetError" in replicas.offline[(TOPIC_ID, 0)].reason
        assert replicas.logs.get_log("t", 0) is None and ("t", 0) in replicas.logs.failed
        await replicas.stop()
        replicas.logs.close()

    asyncio.run(scenario())


def test_a_dead_fetcher_is_replaced_with_its_partitions(tmp_path: Path) -> None:
    """Belt and braces: should a fetcher's task end anyway, the next assignment to its leader
    starts a new fetcher that takes over every partition of the old one."""

    def leader(request: replica_pb2.ReplicaFetchRequest) -> replica_pb2.ReplicaFetchResponse:
        return replica_pb2.ReplicaFetchResponse()

    async def scenario() -> None:
        replicas = manager(tmp_path, ScriptedLeaderPeers(leader))
        follower = image({0: led_by(2), 1: led_by(2)})
        replicas.on_metadata(follower, changed(follower))
        old = replicas.fetchers[2]
        assert old._task is not None
        old._task.cancel()
        await asyncio.gather(old._task, return_exceptions=True)
        moved = image({0: led_by(2, epoch=2), 1: led_by(2)})
        delta = changed(moved)
        delta.changed_partitions = {(TOPIC_ID, 0)}
        replicas.on_metadata(moved, delta)
        new = replicas.fetchers[2]
        assert (
            new is not old and new.alive and set(new.partitions) == {(TOPIC_ID, 0), (TOPIC_ID, 1)}
        )
        await replicas.stop()
        replicas.logs.close()

    asyncio.run(scenario())
