"""confluent-kafka's transactional producer, unchanged, against strom's Kafka listener (issue
#21): InitProducerId with a transactional id, AddPartitionsToTxn, AddOffsetsToTxn,
TxnOffsetCommit, EndTxn, transactional Produce; read_committed consumers (librdkafka's and
strom's SDK) see the committed transaction and never the aborted one."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from cluster_harness import Cluster
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as ConfluentProducer
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import NewTopic as ConfluentTopic

from strom.client import Consumer, KafkaTimeoutError
from strom.client.records import TopicPartition

pytestmark = pytest.mark.integration

OVERRIDES = {"offsets.topic.num.partitions": "3", "transaction.state.log.num.partitions": "3"}


def read(bootstrap: str, isolation: str, expect: int) -> list[bytes]:
    consumer = ConfluentConsumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{isolation}",
         "auto.offset.reset": "earliest", "isolation.level": isolation,
         "enable.auto.commit": False}
    )  # fmt: skip
    consumer.assign([ConfluentPartition("k-payments", p) for p in range(2)])
    seen: list[bytes] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(seen) < expect:
        message = consumer.poll(0.3)
        if message is not None and message.error() is None:
            seen.append(message.value())
    for _ in range(3):  # anything more would be wrong
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            seen.append(message.value())
    consumer.close()
    return sorted(seen)


def test_confluent_kafka_transactions_commit_and_abort(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(3, **OVERRIDES)
    bootstrap = cluster.local.kafka_bootstrap()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [ConfluentTopic("k-payments", 2, 3), ConfluentTopic("k-orders", 1, 3)]
    ).values():
        future.result(timeout=15)
    producer = ConfluentProducer(
        {"bootstrap.servers": bootstrap, "transactional.id": "rd-txn-1",
         "transaction.timeout.ms": 30_000}
    )  # fmt: skip
    producer.init_transactions(15)
    group = ConfluentConsumer({"bootstrap.servers": bootstrap, "group.id": "rd-service"})
    producer.begin_transaction()
    for i in range(3):
        producer.produce("k-payments", value=f"committed-{i}".encode(), key=str(i).encode())
    producer.send_offsets_to_transaction(
        [ConfluentPartition("k-orders", 0, 3)], group.consumer_group_metadata(), 15
    )
    producer.commit_transaction(15)
    producer.begin_transaction()
    for i in range(2):
        producer.produce("k-payments", value=f"aborted-{i}".encode(), key=str(i).encode())
    producer.send_offsets_to_transaction(
        [ConfluentPartition("k-orders", 0, 7)], group.consumer_group_metadata(), 15
    )
    producer.flush(15)
    # KIP-447: the offset 7 is pending in this transaction, so a read_committed member gets no
    # offset for k-orders-0 (librdkafka asks OffsetFetch v7+ with require_stable and retries
    # UNSTABLE_OFFSET_COMMIT until its timeout), nor does strom's SDK
    taking_over = ConfluentConsumer(
        {"bootstrap.servers": bootstrap, "group.id": "rd-service",
         "isolation.level": "read_committed"}
    )  # fmt: skip
    with pytest.raises(KafkaException) as unstable:
        taking_over.committed([ConfluentPartition("k-orders", 0)], timeout=2)
    assert unstable.value.args[0].code() == KafkaError._TIMED_OUT, unstable.value
    sdk_member = Consumer(cluster.bootstrap, group_id="rd-service",
                          isolation_level="read_committed", request_timeout_ms=1_000)  # fmt: skip
    with sdk_member, pytest.raises(KafkaTimeoutError, match="k-orders-0"):
        sdk_member.committed(TopicPartition("k-orders", 0))
    producer.abort_transaction(15)
    # stable again once the abort marker is written: the last committed transaction's offset
    stable = taking_over.committed([ConfluentPartition("k-orders", 0)], timeout=10)
    assert stable[0].offset == 3
    taking_over.close()
    group.close()

    committed = [f"committed-{i}".encode() for i in range(3)]
    assert read(bootstrap, "read_committed", 3) == committed
    assert read(bootstrap, "read_uncommitted", 5) == sorted(
        committed + [f"aborted-{i}".encode() for i in range(2)]
    )
    with Consumer(cluster.bootstrap, auto_offset_reset="earliest",
                  isolation_level="read_committed") as sdk:  # fmt: skip
        sdk.assign([TopicPartition("k-payments", p) for p in range(2)])
        values: list[bytes] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(values) < 3:
            values += [r.value or b"" for r in sdk.poll(timeout_ms=300)]
    assert sorted(values) == committed
    with cluster.admin() as strom_admin:
        assert strom_admin.list_group_offsets("rd-service") == {("k-orders", 0): 3}
