"""Kafka clients, unchanged, against a real three-node strom cluster's KAFKA listeners.

kafka-python (pure Python, Kafka's own JSON message specs and codecs) does the admin work,
produces with idempotence, consumes in a classic consumer group whose leader client assigns,
and commits; strom's SDK reads what kafka-python wrote and the reverse, and sees the group's
offsets. Bad frames close only their own connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from cluster_harness import Cluster, eventually
from confluent_kafka import OFFSET_BEGINNING
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import Producer as ConfluentProducer
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import NewTopic as ConfluentTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from strom.client import Consumer, Producer
from strom.client.admin import NewTopic as StromTopic
from strom.client.records import TopicPartition as StromPartition
from strom.node.kafka.fetch_sessions import FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH
from strom.node.kafka.messages import FETCH

pytestmark = pytest.mark.integration


def kafka_bootstrap(cluster: Cluster) -> str:
    return cluster.local.kafka_bootstrap()


def consume_until(consumer: KafkaConsumer, count: int, timeout_s: float = 30.0) -> list[object]:
    records: list[object] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records += batch
    return records


class GroupConsumer(threading.Thread):
    """One kafka-python group member polling on its own thread (the client is not thread-safe:
    everything, commit and close included, happens on this thread)."""

    def __init__(self, bootstrap: str, group_id: str) -> None:
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(
            "orders", bootstrap_servers=bootstrap, group_id=group_id,
            auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6_000,
            heartbeat_interval_ms=500, max_poll_interval_ms=10_000,
        )  # fmt: skip
        self.values: list[bytes] = []
        self.assignment: set[TopicPartition] = set()
        self.commit_now = threading.Event()
        self.committed = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.commit_now.is_set():
                for batch in self.consumer.poll(timeout_ms=200).values():
                    self.values += [r.value for r in batch]
                self.assignment = set(self.consumer.assignment())
            self.consumer.commit()
            self.committed.set()
            self.stopping.wait(20)
        except BaseException as exc:
            self.error = exc
        finally:
            self.consumer.close()

    def commit(self) -> None:
        """Commit (before any member leaves: a leave starts a rebalance that fails commits)."""
        self.commit_now.set()
        self.committed.wait(20)
        assert self.error is None, self.error

    def stop(self) -> None:
        self.commit_now.set()
        self.stopping.set()
        self.join(timeout=20)
        assert self.error is None, self.error


def test_kafka_python_admin_produce_consume_groups_and_sdk_interop(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(3)
    bootstrap = kafka_bootstrap(cluster)
    ports = {int(a.rsplit(":", 1)[1]) for a in bootstrap.split(",")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        # Admin: create, see, describe configs (metadata answers with the KAFKA listener's
        # addresses: every broker kafka-python learns of is one of them).
        admin.create_topics([NewTopic("orders", 3, 3, topic_configs={"retention.ms": "3600000"})])
        assert "orders" in admin.list_topics()
        brokers = admin.describe_cluster()["brokers"]
        assert {b["port"] for b in brokers} == ports
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "orders")])
        text = repr(configs)
        assert "retention.ms" in text and "3600000" in text

        # Produce with idempotence and gzip, acks=all.
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
            compression_type="gzip", linger_ms=5,
        )  # fmt: skip
        futures = [
            producer.send("orders", key=f"k{i % 7}".encode(), value=f"v{i}".encode())
            for i in range(300)
        ]
        producer.flush()
        metadata = [f.get(timeout=10) for f in futures]
        producer.close()
        assert sum(1 for m in metadata if m.offset >= 0) == 300

        # Two consumers of one group split the three partitions (the leader client assigns),
        # each polling on its own thread as applications do; then each commits what it read.
        group = [GroupConsumer(bootstrap, "billing") for _ in range(2)]
        for member in group:
            member.start()
        try:
            split = eventually(
                lambda: (
                    [set(m.assignment) for m in group]
                    if sorted(len(m.assignment) for m in group) == [1, 2]
                    and len({v for m in group for v in m.values}) == 300
                    else None
                ),
                40,
                "the group split three partitions 1/2 and read every record",
            )
            for member in group:
                member.commit()
            # strom's own admin describes the classic group: its members and who owns what.
            with cluster.admin() as strom_admin:
                described = strom_admin.describe_group("billing")
            assert described.state == "Stable" and len(described.members) == 2
            owned = sorted(tp for m in described.members for tp in m.assignment)
            assert owned == [("orders", 0), ("orders", 1), ("orders", 2)]
        finally:
            for member in group:
                member.stop()
        assert {v for m in group for v in m.values} == {f"v{i}".encode() for i in range(300)}
        assert not split[0] & split[1]
        committed = admin.list_group_offsets("billing")["billing"]
        assert sum(o.offset for o in committed.values()) == 300
        listed = {g["group_id"]: g for g in admin.list_groups()}
        assert listed["billing"]["protocol_type"] == "consumer"
        described = admin.describe_groups(["billing"])
        assert "billing" in repr(described)

        # strom's own admin sees the classic group's offsets and its members.
        with cluster.admin() as strom_admin:
            offsets = strom_admin.list_group_offsets("billing")
            assert sum(offsets.values()) == 300
            assert "billing" in {g[0] for g in strom_admin.list_groups()}
            assert strom_admin.describe_group("billing").group_id == "billing"

        # The SDK reads what kafka-python wrote, and kafka-python reads what the SDK wrote.
        with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as sdk_consumer:
            sdk_consumer.assign([StromPartition("orders", p) for p in range(3)])
            values: list[bytes] = []
            deadline = time.monotonic() + 20
            while len(values) < 300 and time.monotonic() < deadline:
                values += [r.value or b"" for r in sdk_consumer.poll(timeout_ms=300)]
        assert sorted(values) == sorted(f"v{i}".encode() for i in range(300))
        admin.create_topics([NewTopic("from-sdk", 1, 3)])
        with Producer(cluster.bootstrap, acks="all") as sdk_producer:
            for i in range(50):
                sdk_producer.send("from-sdk", f"sdk{i}".encode(), key=b"k", headers=[("h", b"x")])
            sdk_producer.flush()
        reader = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        reader.assign([TopicPartition("from-sdk", 0)])
        records = consume_until(reader, 50)
        reader.close()
        assert [r.value for r in records] == [f"sdk{i}".encode() for i in range(50)]  # type: ignore[attr-defined]
        assert records[0].headers == [("h", b"x")]  # type: ignore[attr-defined]

        admin.delete_topics(["from-sdk"])
        eventually(lambda: "from-sdk" not in admin.list_topics(), 10, "topic deleted")
    finally:
        admin.close()


def test_confluent_kafka_every_compression_idempotent_group_and_commits(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """librdkafka: idempotent acks=all produce in each codec, a consumer group with commits,
    and strom's SDK reading the same records."""
    cluster = cluster_factory(3)
    bootstrap = kafka_bootstrap(cluster)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([ConfluentTopic("codecs", 3, 3)]).values():
        future.result(timeout=15)
    expected = set()
    errors: list[object] = []
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        producer = ConfluentProducer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
             "compression.type": codec, "linger.ms": 5}
        )  # fmt: skip
        for i in range(200):
            value = f"{codec}-{i}".encode()
            expected.add(value)
            producer.produce(
                "codecs", key=f"k{i % 5}".encode(), value=value,
                on_delivery=lambda err, _msg: errors.append(err) if err else None,
            )  # fmt: skip
        assert producer.flush(20) == 0
        assert errors == [], (codec, errors[:3])
    consumer = ConfluentConsumer(
        {"bootstrap.servers": bootstrap, "group.id": "rd", "auto.offset.reset": "earliest",
         "enable.auto.commit": False}
    )  # fmt: skip
    consumer.subscribe(["codecs"])
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(seen) < len(expected) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen.append(message.value())
    assert sorted(seen) == sorted(expected)
    consumer.commit(asynchronous=False)
    committed = consumer.committed([ConfluentPartition("codecs", p) for p in range(3)], timeout=10)
    assert sum(tp.offset for tp in committed) == len(expected)
    consumer.close()
    with cluster.admin() as strom_admin:
        assert sum(strom_admin.list_group_offsets("rd").values()) == len(expected)
    with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as sdk_consumer:
        sdk_consumer.assign([StromPartition("codecs", p) for p in range(3)])
        values: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(values) < len(expected) and time.monotonic() < deadline:
            values += [r.value or b"" for r in sdk_consumer.poll(timeout_ms=300)]
    assert sorted(values) == sorted(expected)


@pytest.mark.slow
def test_confluent_kafka_idempotent_acks_all_survives_a_leader_kill(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """kill -9 of a partition leader while librdkafka produces with acks=all and idempotence:
    every acknowledged record is consumed exactly once, in order per partition."""
    cluster = cluster_factory(3)
    bootstrap = kafka_bootstrap(cluster)
    with cluster.admin() as admin:
        admin.create_topics([StromTopic("survive", 2, 3, {"min.insync.replicas": "2"})])
        leader = admin.describe_topics(["survive"])[0].partitions[0].leader
    producer = ConfluentProducer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
         "linger.ms": 5, "message.timeout.ms": 60_000, "reconnect.backoff.max.ms": 500}
    )  # fmt: skip
    acked: dict[int, list[int]] = {0: [], 1: []}
    failed: list[object] = []

    def delivered(err: object, message: Any) -> None:
        if err is not None:
            failed.append(err)
        else:
            acked[message.partition()].append(int(message.value()))

    count = 20_000
    for i in range(count):
        while True:
            try:
                producer.produce("survive", value=str(i).encode(), partition=i % 2,
                                 on_delivery=delivered)  # fmt: skip
                break
            except BufferError:
                producer.poll(0.05)
        if i == count // 3:
            threading.Thread(target=cluster.local.stop, args=(leader, True)).start()
        producer.poll(0)
    assert producer.flush(90) == 0
    consumer = ConfluentConsumer(
        {"bootstrap.servers": bootstrap, "group.id": "survive-check", "enable.auto.commit": False}
    )
    consumer.assign([ConfluentPartition("survive", p, OFFSET_BEGINNING) for p in (0, 1)])
    seen: dict[int, list[int]] = {0: [], 1: []}
    deadline = time.monotonic() + 60
    while (
        sum(map(len, seen.values())) < sum(map(len, acked.values())) and time.monotonic() < deadline
    ):
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen[message.partition()].append(int(message.value()))
    consumer.close()
    for partition in (0, 1):
        values = seen[partition]
        assert len(values) == len(set(values)), "a record was stored twice"
        assert values == sorted(values), "records out of order"
        assert set(acked[partition]) <= set(values), "an acknowledged record was lost"
    assert sum(map(len, acked.values())) + len(failed) == count


def test_bad_frames_close_only_their_connection(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(1)
    host, port = kafka_bootstrap(cluster).split(",")[0].rsplit(":", 1)

    def send(data: bytes) -> bytes:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    # Garbage, an oversized length, an unknown API key, a truncated body: closed, no answer.
    assert send(b"\x00\x00\x00\x05garbage!") == b""
    assert send(struct.pack(">i", 2**30)) == b""
    assert send(struct.pack(">ihhi", 10, 999, 0, 1) + b"\x00\x00") == b""
    assert send(struct.pack(">ihhih", 20, 3, 1, 7, 0) + b"\x00\x00\x00\x01") == b""
    # An ApiVersions version above ours answers v0 with UNSUPPORTED_VERSION and our range.
    answer = send(struct.pack(">ihhih", 10, 18, 99, 42, 0))
    size, correlation, error = struct.unpack_from(">iih", answer)
    assert (size, correlation, error) == (len(answer) - 4, 42, 35)

    # Incremental fetch sessions (KIP-227) on a live node: a fetch naming a session the node
    # never made, and one at the wrong epoch of a session it did make, are refused whole.
    def fetch(session_id: int, epoch: int) -> dict[str, Any]:
        body = FETCH.request.encode(
            {"max_wait_ms": 0, "min_bytes": 0, "session_id": session_id,
             "session_epoch": epoch, "topics": [], "forgotten_topics_data": []}, 7,
        )  # fmt: skip
        header = struct.pack(">hhih", FETCH.key, 7, 9, 1) + b"t"
        answer = send(struct.pack(">i", len(header) + len(body)) + header + body)
        assert struct.unpack_from(">ii", answer) == (len(answer) - 4, 9)
        return FETCH.response.decode_bytes(answer[8:], 7)

    assert fetch(123_456, 3)["error_code"] == FETCH_SESSION_ID_NOT_FOUND
    opened = fetch(0, 0)
    assert opened["error_code"] == 0 and opened["session_id"] != 0
    assert fetch(opened["session_id"], 2)["error_code"] == INVALID_FETCH_SESSION_EPOCH
    assert fetch(opened["session_id"], 1)["error_code"] == 0
    # The node still serves Kafka clients.
    admin = KafkaAdminClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=5_000)
    try:
        assert isinstance(admin.list_topics(), list)
    finally:
        admin.close()
    assert "closing connection" in cluster.log_of(1)


def test_kcat_lists_produces_and_consumes(cluster_factory: Callable[..., Cluster]) -> None:
    """kcat (librdkafka's command line tool) against a KAFKA listener, as the README shows it:
    metadata, a keyed produce read back by the SDK, and the SDK's records read by kcat."""
    kcat = shutil.which("kcat")
    if kcat is None:
        problem = "kcat is missing (tests/system/packages.txt)"
        if os.environ.get("CI"):
            pytest.fail(f"{problem}: CI installs it")
        pytest.skip(problem)
    cluster = cluster_factory(1)
    bootstrap = kafka_bootstrap(cluster)
    with cluster.admin() as admin:
        admin.create_topics([StromTopic("kcat-events", 1, 1)])

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [kcat, "-b", bootstrap, *args], input=stdin, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    metadata = json.loads(run("-L", "-J"))
    assert {t["topic"] for t in metadata["topics"]} >= {"kcat-events"}
    assert [b["id"] for b in metadata["brokers"]] == [1]
    run("-P", "-t", "kcat-events", "-K", ":", stdin="k1:from-kcat-1\nk2:from-kcat-2\n")
    with Producer(cluster.bootstrap) as producer:
        producer.send("kcat-events", b"from-sdk", key=b"k3")
        producer.flush()
    with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([StromPartition("kcat-events", 0)])
        seen: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:
            seen += [(r.key, r.value) for r in consumer.poll(timeout_ms=300)]
    assert seen == [(b"k1", b"from-kcat-1"), (b"k2", b"from-kcat-2"), (b"k3", b"from-sdk")]
    lines = run("-C", "-t", "kcat-events", "-o", "beginning", "-e", "-f", "%k=%s@%o\n")
    assert lines.splitlines() == ["k1=from-kcat-1@0", "k2=from-kcat-2@1", "k3=from-sdk@2"]


def test_aiokafka_idempotent_produce_group_consume_and_commit(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """aiokafka (asyncio, its own protocol code): an idempotent producer, then a consumer in a
    classic group that commits; the group's offsets are what strom's admin reports."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    cluster = cluster_factory(3)
    bootstrap = kafka_bootstrap(cluster)
    with cluster.admin() as admin:
        admin.create_topics([StromTopic("aio-events", 3, 3)])

    async def scenario() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for i in range(30):
                await producer.send_and_wait("aio-events", f"aio-{i}".encode(), key=b"k%d" % i)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            "aio-events", bootstrap_servers=bootstrap, group_id="aio-group",
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        await consumer.start()
        values: list[bytes] = []
        try:
            async with asyncio.timeout(30):
                while len(values) < 30:
                    batches = await consumer.getmany(timeout_ms=500)
                    values += [r.value for records in batches.values() for r in records]
            await consumer.commit()
        finally:
            await consumer.stop()
        return values

    values = asyncio.run(scenario())
    assert sorted(values) == sorted(f"aio-{i}".encode() for i in range(30))
    with cluster.admin() as admin:
        committed = admin.list_group_offsets("aio-group")
    assert sum(committed.values()) == 30 and len(committed) == 3
