"""Produce and Fetch on bidirectional streams (issue #17): node/broker/streams.py serves them,
client/broker_stream.py sends on them.

Against one real node in this process (node_thread.py): each stream request is answered exactly as
the unary call answers it (per-partition errors, INVALID_ARGUMENT with the same message, and the
stream goes on); a message the stream cannot read, or one above the message cap, ends that stream
with a clear status and the node serves on. A SASL listener serves the streams too, the SDK's
credentials going with each stream when it opens. Against a three-node cluster: the SDK's producer and consumer
use the streams (streaming=True), keep each partition's order, and survive a broker restart mid-stream.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cluster_harness import Cluster, eventually
from node_thread import NodeThread

from strom.client.admin import Admin, NewTopic
from strom.client.cluster import MESSAGE_BYTES_MAX, ClusterClient
from strom.client.consumer import AsyncConsumer
from strom.client.errors import FatalError, StromError
from strom.client.producer import AsyncProducer
from strom.client.records import TopicPartition
from strom.storage.record_batch import Record, encode_batch
from strom.v1 import broker_pb2, broker_pb2_grpc, common_pb2

pytestmark = pytest.mark.integration

TIMEOUT_S = 10.0


def _batch(*values: bytes) -> bytes:
    return encode_batch([Record(None, v, (), 1_700_000_000_000) for v in values])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeThread]:
    with NodeThread(tmp_path_factory.mktemp("stream-node")) as running:
        bootstrap = f"localhost:{running.client_port}"
        with Admin(bootstrap, request_timeout_ms=20_000) as admin:
            admin.create_topics([NewTopic("s", 2, 1)])
        yield running


def _produce_request(topic: str, partitions: dict[int, bytes], acks: int = 1) -> Any:
    request = broker_pb2.ProduceRequest(acks=acks, timeout_ms=5_000)
    data = request.topics.add(name=topic)
    for partition, records in partitions.items():
        data.partitions.add(partition=partition, records=records)
    return request


async def _exchange(port: int, envelopes: list[Any], method: str = "ProduceStream") -> list[Any]:
    """Send `envelopes` on one stream and collect every answer until the broker ends it."""
    async with grpc.aio.insecure_channel(f"localhost:{port}") as channel:
        call = getattr(broker_pb2_grpc.BrokerStub(channel), method)(iter(envelopes))
        return [answer async for answer in call]


def _node_still_serves(node: NodeThread) -> None:
    """A produce and a fetch round trip, unary, after whatever the test did to a stream."""

    async def run() -> None:
        async with grpc.aio.insecure_channel(f"localhost:{node.client_port}") as channel:
            stub = broker_pb2_grpc.BrokerStub(channel)
            produced = await stub.Produce(_produce_request("s", {1: _batch(b"ok")}), timeout=5)
            offset = produced.topics[0].partitions[0].base_offset
            assert produced.topics[0].partitions[0].error_code == common_pb2.NONE
            fetch = broker_pb2.FetchRequest(max_bytes=1 << 20)
            # -1: no epoch check. A loaded machine can stall the node's loop past its broker
            # session while the test thread builds a 128 MiB message, and the re-election that
            # follows moves the epoch on; the node serving is what is checked here.
            fetch.topics.add(name="s").partitions.add(
                partition=1, fetch_offset=offset, current_leader_epoch=-1
            )
            fetched = await stub.Fetch(fetch, timeout=5)
            assert fetched.topics[0].partitions[0].records

    asyncio.run(run())


def test_each_stream_request_is_answered_as_the_unary_call_answers_it(node: NodeThread) -> None:
    bad_acks = _produce_request("s", {0: _batch(b"x")}, acks=7)
    mixed = _produce_request("s", {0: _batch(b"a", b"b"), 99: _batch(b"c")})
    envelopes = [
        broker_pb2.ProduceStreamRequest(id=1, request=bad_acks),
        broker_pb2.ProduceStreamRequest(id=2, request=mixed),
        broker_pb2.ProduceStreamRequest(id=3),  # no request at all
        broker_pb2.ProduceStreamRequest(id=4, request=_produce_request("s", {0: _batch(b"d")})),
    ]
    answers = {a.id: a for a in asyncio.run(_exchange(node.client_port, envelopes))}
    assert sorted(answers) == [1, 2, 3, 4]

    async def unary_details() -> str:
        async with grpc.aio.insecure_channel(f"localhost:{node.client_port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await broker_pb2_grpc.BrokerStub(channel).Produce(bad_acks, timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            return str(refused.value.details())

    assert answers[1].WhichOneof("answer") == "error"
    assert answers[1].error.status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[1].error.message == asyncio.run(unary_details())
    by_partition = {p.partition: p for p in answers[2].response.topics[0].partitions}
    assert by_partition[0].error_code == common_pb2.NONE
    assert by_partition[99].error_code == common_pb2.UNKNOWN_TOPIC_OR_PARTITION
    assert answers[3].error.status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "no request" in answers[3].error.message
    # The stream went on after the refusals: the last request was appended after the second.
    assert answers[4].response.topics[0].partitions[0].base_offset == (
        by_partition[0].base_offset + 2
    )

    fetch = broker_pb2.FetchRequest(max_bytes=1 << 20)
    fetch.topics.add(name="s").partitions.add(partition=0, fetch_offset=by_partition[0].base_offset)
    (fetched,) = asyncio.run(
        _exchange(
            node.client_port,
            [broker_pb2.FetchStreamRequest(id=7, request=fetch)],
            "FetchStream",
        )
    )
    assert fetched.id == 7 and fetched.response.topics[0].partitions[0].records


def test_an_unreadable_stream_message_ends_only_that_stream(node: NodeThread) -> None:
    async def send_garbage() -> grpc.aio.AioRpcError:
        async with grpc.aio.insecure_channel(f"localhost:{node.client_port}") as channel:
            call = channel.stream_stream(
                "/strom.v1.Broker/ProduceStream",
                request_serializer=lambda b: b,
                response_deserializer=broker_pb2.ProduceStreamResponse.FromString,
            )(iter([b"\xff\xff\xff\xff\x0f not a protobuf message"]))
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                async for _ in call:
                    pass
            return ended.value

    ended = asyncio.run(send_garbage())
    assert ended.code() not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)
    assert ended.details()
    _node_still_serves(node)


def test_an_oversized_stream_message_is_refused_with_a_clear_status(node: NodeThread) -> None:
    """Above the listener's cap (128 MiB, the same as a unary call's): RESOURCE_EXHAUSTED."""
    too_big = _produce_request("s", {0: b"\0" * (MESSAGE_BYTES_MAX + 1)})

    async def send() -> grpc.aio.AioRpcError:
        options = [("grpc.max_send_message_length", MESSAGE_BYTES_MAX * 2)]
        async with grpc.aio.insecure_channel(
            f"localhost:{node.client_port}", options=options
        ) as channel:
            call = broker_pb2_grpc.BrokerStub(channel).ProduceStream(
                iter([broker_pb2.ProduceStreamRequest(id=1, request=too_big)])
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in call:
                    pass
            return refused.value

    refused = asyncio.run(send())
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (refused.details() or "")
    _node_still_serves(node)


def test_the_sdk_client_maps_a_stream_refusal_like_a_unary_one(node: NodeThread) -> None:
    """ClusterClient.call over the stream raises what it raises for the unary call."""
    bad_acks = _produce_request("s", {0: _batch(b"x")}, acks=7)
    address = f"localhost:{node.client_port}"

    async def refusal(streaming: bool) -> tuple[str, int]:
        cluster = ClusterClient(address, streaming=streaming)
        try:
            with pytest.raises(FatalError) as refused:
                await cluster.call(address, cluster.produce_call(address), bad_acks, TIMEOUT_S)
            if streaming:
                assert cluster._produce_streams[address].opened == 1
            return refused.value.message, refused.value.code
        finally:
            await cluster.close()

    assert asyncio.run(refusal(True)) == asyncio.run(refusal(False))


def test_a_sasl_listener_serves_the_streams(tmp_path: Path) -> None:
    """A SASL listener serves the produce and fetch streams: the SDK's credentials go with the
    stream when it opens, and the records go over it (the ACL side:
    test_security_cluster.py). A listener that refuses a stream (UNIMPLEMENTED) gets unary calls
    instead: tests/unit/test_broker_stream.py drives that, and the refusal's race with a write."""
    overrides = {
        "listener.security.protocol.map": "PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "node.sasl.username": "node",
        "node.sasl.password": "node-secret",
    }
    login = {"sasl_username": "node", "sasl_password": "node-secret"}
    with NodeThread(tmp_path, "PLAINTEXT", overrides) as node:
        bootstrap = f"localhost:{node.client_port}"
        with Admin(bootstrap, request_timeout_ms=20_000, **login) as admin:
            admin.create_topics([NewTopic("fallback", 1, 1)])

        async def round_trip() -> tuple[list[bytes], Any, Any]:
            async with AsyncProducer(bootstrap, acks="all", streaming=True, **login) as producer:
                futures = [await producer.send("fallback", b"v%d" % i) for i in range(50)]
                await asyncio.gather(*futures)
                produce_stream = producer.cluster._produce_streams[bootstrap]
            async with AsyncConsumer(
                bootstrap, auto_offset_reset="earliest", streaming=True, **login
            ) as consumer:
                consumer.assign([TopicPartition("fallback", 0)])
                values: list[bytes] = []
                deadline = time.monotonic() + TIMEOUT_S
                while len(values) < 50 and time.monotonic() < deadline:
                    values += [r.value or b"" for r in await consumer.poll(timeout_ms=200)]
                fetch_stream = consumer.cluster._fetch_streams[bootstrap]
            return values, produce_stream, fetch_stream

        values, produce_stream, fetch_stream = asyncio.run(round_trip())
    assert values == [b"v%d" % i for i in range(50)]
    for stream in (produce_stream, fetch_stream):
        assert stream.opened >= 1 and not stream.unsupported


# ---- a real cluster ---------------------------------------------------------------------------


def _read_all(bootstrap: str, topic: str, partitions: int, count: int) -> dict[int, list[bytes]]:
    async def run() -> tuple[dict[int, list[bytes]], int]:
        async with AsyncConsumer(
            bootstrap, auto_offset_reset="earliest", streaming=True
        ) as consumer:
            consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
            out: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
            deadline = time.monotonic() + 30
            while sum(map(len, out.values())) < count and time.monotonic() < deadline:
                for record in await consumer.poll(timeout_ms=300, max_records=50_000):
                    out[record.partition].append(record.value or b"")
            opened = sum(s.opened for s in consumer.cluster._fetch_streams.values())
            assert not any(s.unsupported for s in consumer.cluster._fetch_streams.values())
            return out, opened

    out, opened = asyncio.run(run())
    assert opened >= 1, "the consumer fetched without a stream"
    return out


def test_streamed_produce_and_fetch_keep_each_partitions_order(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """The essential proof: with streaming=True the SDK sends on a stream to every leader, and
    every record arrives once, in its partition's send order."""
    cluster = cluster_factory(3)
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("ordered", 3, 3, {"min.insync.replicas": "2"})])
    count = 30_000

    async def produce() -> int:
        async with AsyncProducer(
            cluster.bootstrap, acks="all", linger_ms=2, streaming=True
        ) as producer:
            futures = [
                await producer.send("ordered", b"%d" % i, partition=i % 3) for i in range(count)
            ]
            await asyncio.gather(*futures)
            streams = producer.cluster._produce_streams
            assert streams and not any(s.unsupported for s in streams.values())
            return sum(s.opened for s in streams.values())

    assert asyncio.run(produce()) >= 1
    read = _read_all(cluster.bootstrap, "ordered", 3, count)
    for partition, values in read.items():
        assert [int(v) for v in values] == list(range(partition, count, 3))


@pytest.mark.slow
def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """The partition leader is killed and started again while the producer streams to it: its
    outstanding requests fail over to the new leader, the stream to the restarted broker is
    opened again, and each record is stored exactly once, in order."""
    cluster = cluster_factory(3)
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("restart", 1, 3, {"min.insync.replicas": "2"})])
        leader = admin.describe_topics(["restart"])[0].partitions[0].leader
    count = 20_000
    errors: list[str] = []

    def restart() -> None:
        cluster.local.stop(leader, kill=True)
        cluster.local.start(leader)

    async def produce() -> tuple[int, int]:
        async with AsyncProducer(
            cluster.bootstrap, acks="all", linger_ms=5, batch_size=16_384,
            delivery_timeout_ms=60_000, streaming=True,
        ) as producer:  # fmt: skip
            futures = []
            for i in range(count):
                futures.append(await producer.send("restart", b"%d" % i))
                if i == count // 3:
                    threading.Thread(target=restart).start()
                if i % 1000 == 0:
                    await asyncio.sleep(0.01)
            for future in futures:
                try:
                    await future
                except StromError as exc:
                    errors.append(exc.name)
            # Back in the ISR, then leader again: the producer must reach it on a new stream.
            with Admin(cluster.bootstrap) as admin:
                eventually(
                    lambda: leader in admin.describe_topics(["restart"])[0].partitions[0].isr,
                    what="the restarted broker back in the ISR",
                )

                def led_again() -> bool:
                    # Retried until it takes: a restart shorter than replica.lag.time.max.ms
                    # may never have left the ISR, so the check above can pass while the broker
                    # is not yet back, and a preferred election then keeps the other leader.
                    if admin.describe_topics(["restart"])[0].partitions[0].leader == leader:
                        return True
                    admin.elect_leaders("preferred", [TopicPartition("restart", 0)])
                    return False

                eventually(led_again, what="the restarted broker leader again")
            # Read only now, and until the broker answering the producer's metadata request
            # names it (as the leader): the records may all be acknowledged (by the new leader)
            # before the restarted broker is unfenced again, metadata names only unfenced
            # brokers, and each broker's metadata image catches up on its own.
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                meta = await producer.cluster.refresh_metadata(["restart"])
                address = producer.cluster.address_of(leader)
                if address is not None and meta.topics["restart"].partitions[0].leader == leader:
                    break
                assert time.monotonic() < deadline, "the restarted broker is not in metadata"
                await asyncio.sleep(0.1)
            after = [await producer.send("restart", b"%d" % (count + i)) for i in range(100)]
            await asyncio.gather(*after)
            stream = producer.cluster._produce_streams[address]
            return stream.opened, producer.cluster.meta.topics["restart"].partitions[0].leader

    opened, leader_now = asyncio.run(produce())
    assert errors == []
    assert leader_now == leader
    assert opened >= 2, "the stream to the restarted broker was not opened again"
    values = _read_all(cluster.bootstrap, "restart", 1, count + 100)[0]
    assert [int(v) for v in values] == list(range(count + 100))
