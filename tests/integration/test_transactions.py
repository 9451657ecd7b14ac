"""Transactions end to end on a real 3-node cluster (issue #21): the SDK's transactional
producer against the served transaction coordinator, read_committed consumers, offsets
committed inside transactions, zombie fencing, the timeout abort, and the coordinator's node
killed mid-transaction.

One cluster serves the tests of this module (each uses its own topics and transactional ids):
starting one costs seconds. Internal topics get 3 partitions, so they are made and loaded fast.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cluster_harness import FAST, Cluster, free_base_port

from strom.client import Consumer, Producer, TopicPartition
from strom.client.admin import NewTopic
from strom.client.cluster import ClusterClient
from strom.client.consumer import AsyncConsumer
from strom.client.coordinator import find_coordinator
from strom.client.errors import ProducerFencedError, TransactionStateError
from strom.client.producer import AsyncProducer
from strom.client.records import ConsumerGroupMetadata
from strom.node.local_cluster import LocalCluster
from strom.v1 import common_pb2, group_pb2, group_pb2_grpc, txn_pb2, txn_pb2_grpc

pytestmark = pytest.mark.integration

TXN_CONFIG = {
    **FAST,
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.num.partitions": "3",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "200",
    "request.timeout.ms": "5000",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    local = LocalCluster(Path(tmp_path_factory.mktemp("txn")) / "cluster")
    local.create(3, free_base_port(3), TXN_CONFIG)
    local.up()
    try:
        made = Cluster(local)
        made.wait_healthy()
        yield made
    finally:
        try:
            local.down(timeout_s=10)
        finally:
            for node in local.load()[1]:
                local.stop(node.node_id, kill=True)


def make_topics(cluster: Cluster, *names: str, partitions: int = 2) -> None:
    with cluster.admin() as admin:
        admin.create_topics([NewTopic(n, partitions, 3) for n in names])


async def read_all(
    bootstrap: str, topic: str, isolation_level: str, expect: int, partitions: int = 2
) -> list[bytes]:
    """Every record of `topic` from the start, once at least `expect` arrived (or 5 s); with
    `expect` 0, what arrives within a second."""
    async with AsyncConsumer(
        bootstrap, auto_offset_reset="earliest", isolation_level=isolation_level
    ) as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        out: list[bytes] = []
        deadline = time.monotonic() + (5 if expect else 1)
        while time.monotonic() < deadline and len(out) < expect:
            out += [r.value or b"" for r in await consumer.poll(timeout_ms=200)]
        # a little longer: anything beyond `expect` would be a bug the test must see
        out += [r.value or b"" for r in await consumer.poll(timeout_ms=300)]
        return out


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    async with AsyncConsumer(bootstrap, group_id=group) as consumer:
        return (await consumer.committed_offsets([tp]))[tp]


def producer(cluster: Cluster, tid: str, **options: object) -> AsyncProducer:
    return AsyncProducer(
        cluster.bootstrap, transactional_id=tid, linger_ms=0, request_timeout_ms=5_000,
        **options,  # type: ignore[arg-type]
    )  # fmt: skip


def test_committed_records_and_offsets_are_visible_aborted_ones_never(cluster: Cluster) -> None:
    make_topics(cluster, "t-orders", "t-payments")
    orders0 = TopicPartition("t-orders", 0)

    async def scenario() -> None:
        async with producer(cluster, "pay-1") as p:
            with pytest.raises(TransactionStateError):
                await p.send("t-payments", b"before-init")
            await p.init_transactions()
            p.begin_transaction()
            for i in range(3):
                await p.send("t-payments", f"c{i}".encode())
            await p.send_offsets_to_transaction({orders0: 3}, ConsumerGroupMetadata("g-pay"))
            await p.commit_transaction()

            p.begin_transaction()
            for i in range(2):
                await p.send("t-payments", f"a{i}".encode())
            await p.send_offsets_to_transaction({orders0: 9}, "g-pay")
            await p.abort_transaction()

            p.begin_transaction()
            await p.send("t-payments", b"c3")
            await p.commit_transaction()

        committed_values = await read_all(cluster.bootstrap, "t-payments", "read_committed", 4)
        assert sorted(committed_values) == [b"c0", b"c1", b"c2", b"c3"]
        everything = await read_all(cluster.bootstrap, "t-payments", "read_uncommitted", 6)
        assert sorted(everything) == [b"a0", b"a1", b"c0", b"c1", b"c2", b"c3"]  # no markers
        assert await committed(cluster.bootstrap, "g-pay", orders0) == 3  # not the aborted 9

    asyncio.run(scenario())


def test_a_new_instance_fences_the_zombie_and_aborts_its_transaction(cluster: Cluster) -> None:
    make_topics(cluster, "t-fence")

    async def scenario() -> None:
        async with producer(cluster, "fence-1") as zombie, producer(cluster, "fence-1") as new:
            await zombie.init_transactions()
            zombie.begin_transaction()
            await (await zombie.send("t-fence", b"zombie"))  # written, transaction open
            # an open transaction holds read_committed readers at its first offset
            assert await read_all(cluster.bootstrap, "t-fence", "read_committed", 0) == []
            await new.init_transactions()  # fences the zombie, aborts its transaction
            with pytest.raises(ProducerFencedError):
                await zombie.commit_transaction()
            new.begin_transaction()
            await new.send("t-fence", b"new")
            await new.commit_transaction()
            with pytest.raises(ProducerFencedError):  # fenced for good
                zombie.begin_transaction()
        assert await read_all(cluster.bootstrap, "t-fence", "read_committed", 1) == [b"new"]

    asyncio.run(scenario())


def test_a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced(
    cluster: Cluster,
) -> None:
    make_topics(cluster, "t-slow")

    async def scenario() -> None:
        async with producer(cluster, "slow-1", transaction_timeout_ms=1_000) as slow:
            await slow.init_transactions()
            slow.begin_transaction()
            await (await slow.send("t-slow", b"late"))
            await asyncio.sleep(2.0)  # the coordinator's timer aborts it meanwhile
            with pytest.raises(ProducerFencedError):
                await slow.commit_transaction()
        async with producer(cluster, "slow-2") as other:
            await other.init_transactions()
            other.begin_transaction()
            await other.send("t-slow", b"after")
            await other.commit_transaction()
        # the abort marker advanced the LSO: what follows is readable, the late record never
        assert await read_all(cluster.bootstrap, "t-slow", "read_committed", 1) == [b"after"]

    asyncio.run(scenario())


def strom(cluster: Cluster, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "strom.node.cli", *args, "--bootstrap-server", cluster.bootstrap],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_cli_lists_and_describes_transactions_and_consumes_read_committed(
    cluster: Cluster,
) -> None:
    make_topics(cluster, "t-cli", partitions=1)

    async def open_one() -> AsyncProducer:
        p = producer(cluster, "cli-1")
        await p.init_transactions()
        p.begin_transaction()
        await (await p.send("t-cli", b"open", partition=0))
        return p

    async def finish(p: AsyncProducer) -> None:
        await p.commit_transaction()
        await p.close()

    loop = asyncio.new_event_loop()
    try:
        p = loop.run_until_complete(open_one())
        described = strom(cluster, "transactions", "describe", "--transactional-id", "cli-1")
        assert "Ongoing" in described and "t-cli-0" in described, described
        listed = strom(cluster, "transactions", "list", "--state", "Ongoing")
        assert "cli-1" in listed, listed
        consume = ["consume", "t-cli", "--from-beginning", "--timeout-ms", "1000"]
        committed = strom(cluster, *consume, "--isolation-level", "read_committed")
        assert committed == ""  # the open transaction's record is not readable yet
        assert strom(cluster, *consume) == "open\n"  # read_uncommitted (the default)
        loop.run_until_complete(finish(p))
    finally:
        loop.close()
    assert "CompleteCommit" in strom(cluster, "transactions", "list")
    assert strom(cluster, *consume, "--isolation-level", "read_committed") == "open\n"


def test_the_sync_facade_commits_and_aborts(cluster: Cluster) -> None:
    make_topics(cluster, "t-sync", partitions=1)
    with Producer(cluster.bootstrap, transactional_id="sync-1", linger_ms=0) as p:
        p.init_transactions()
        p.begin_transaction()
        p.send("t-sync", b"kept")
        p.commit_transaction()
        p.begin_transaction()
        p.send("t-sync", b"dropped")
        p.abort_transaction()
    with Consumer(
        cluster.bootstrap, auto_offset_reset="earliest", isolation_level="read_committed"
    ) as c:
        c.assign([TopicPartition("t-sync", 0)])
        values: list[bytes] = []
        for _ in range(10):
            values += [r.value or b"" for r in c.poll(timeout_ms=200)]
    assert values == [b"kept"]


def test_bad_transactional_requests_are_refused_with_kafka_codes(cluster: Cluster) -> None:
    async def scenario() -> None:
        client = ClusterClient(cluster.bootstrap)
        try:
            address = await find_coordinator(client, "bad-1", group_pb2.TRANSACTION)
            stub = txn_pb2_grpc.TransactionStub(client.channel(address))
            unknown = await stub.EndTxn(
                txn_pb2.EndTxnRequest(transactional_id="bad-1", producer_id=1, commit=True)
            )
            assert unknown.error_code == common_pb2.INVALID_PRODUCER_ID_MAPPING
            init = await stub.InitProducerId(
                txn_pb2.TxnInitProducerIdRequest(
                    transactional_id="bad-1", transaction_timeout_ms=10_000_000
                )
            )
            assert init.error_code == common_pb2.INVALID_TRANSACTION_TIMEOUT
            init = await stub.InitProducerId(
                txn_pb2.TxnInitProducerIdRequest(
                    transactional_id="bad-1", transaction_timeout_ms=10_000
                )
            )
            assert init.error_code == common_pb2.NONE
            ids = {"transactional_id": "bad-1", "producer_id": init.producer_id,
                   "producer_epoch": init.producer_epoch}  # fmt: skip
            missing = await stub.AddPartitionsToTxn(
                txn_pb2.AddPartitionsToTxnRequest(
                    **ids, partitions=[txn_pb2.TxnTopicPartition(topic="no-such", partition=0)]
                )
            )
            assert missing.error_code == common_pb2.UNKNOWN_TOPIC_OR_PARTITION
            internal = await stub.AddPartitionsToTxn(
                txn_pb2.AddPartitionsToTxnRequest(
                    **ids,
                    partitions=[txn_pb2.TxnTopicPartition(topic="__consumer_offsets", partition=0)],
                )
            )
            assert internal.error_code == common_pb2.INVALID_REQUEST
            # EndTxn(commit) with no transaction begun: out of order
            early = await stub.EndTxn(txn_pb2.EndTxnRequest(**ids, commit=True))
            assert early.error_code == common_pb2.INVALID_TXN_STATE
            with pytest.raises(grpc.aio.AioRpcError) as empty:
                await stub.EndTxn(txn_pb2.EndTxnRequest(producer_id=1, commit=True))
            assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            await client.close()

    asyncio.run(scenario())


async def coordinator_of(cluster: Cluster, tid: str) -> int:
    client = ClusterClient(cluster.bootstrap)
    try:
        for _ in range(50):
            response = await client.call_any(
                lambda a: group_pb2_grpc.GroupStub(client.channel(a)).FindCoordinator,
                group_pb2.FindCoordinatorRequest(key=tid, key_type=group_pb2.TRANSACTION),
            )
            if response.error_code == 0:
                return int(response.node_id)
            await asyncio.sleep(0.2)
        raise AssertionError(f"no coordinator for {tid}: {response.error_message}")
    finally:
        await client.close()


def test_killing_the_coordinator_mid_transaction_commits_it_whole(cluster: Cluster) -> None:
    """Last in this module: a node of the shared cluster restarts."""
    make_topics(cluster, "t-failover", partitions=3)
    tid = "failover-1"

    async def prepare(p: AsyncProducer) -> None:
        await p.init_transactions()
        p.begin_transaction()
        futures = [await p.send("t-failover", f"r{i}".encode()) for i in range(6)]
        for future in futures:
            await future

    async def scenario() -> None:
        async with producer(cluster, tid) as p:
            await prepare(p)
            victim = await coordinator_of(cluster, tid)
            cluster.local.stop(victim, kill=True)
            try:
                # EndTxn finds the new coordinator, which loaded the ONGOING state
                await p.commit_transaction()
            finally:
                cluster.local.start(victim)
        values = await read_all(cluster.bootstrap, "t-failover", "read_committed", 6, 3)
        assert sorted(values) == [f"r{i}".encode() for i in range(6)]

    asyncio.run(scenario())
    cluster.wait_healthy()
