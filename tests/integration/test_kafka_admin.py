"""Kafka's admin APIs on a KAFKA listener, driven by kafka-python's KafkaAdminClient and
confluent-kafka's AdminClient, checked against what strom's own admin and SDK see.

DeleteRecords, CreatePartitions, DescribeConfigs (topic and broker), AlterConfigs and
IncrementalAlterConfigs (SET, DELETE, APPEND, SUBTRACT, validate-only), DescribeCluster,
ElectLeaders, AlterPartitionReassignments and ListPartitionReassignments, CreateAcls,
DescribeAcls and DeleteAcls, DescribeLogDirs and DeleteGroups.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from cluster_harness import Cluster, eventually
from confluent_kafka import ElectionType
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import ConfigResource as ConfluentResource
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    AlterConfigOp,
    ConfigResource,
    ConfigResourceType,
    NewPartitions,
    NewTopic,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import (
    ElectionNotNeededError,
    InvalidReplicationFactorError,
    InvalidRequestError,
    NoReassignmentInProgressError,
)
from kafka.protocol.admin import AlterPartitionReassignmentsRequest

pytestmark = pytest.mark.integration


def topic_configs(admin: KafkaAdminClient, topic: str) -> dict[str, str]:
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
    )
    return {k: v["value"] for k, v in described["topic"][topic].items()}


def test_kafka_admin_clients_manage_records_configs_leaders_moves_acls_and_groups(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(3)
    bootstrap = cluster.local.kafka_bootstrap()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    confluent = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.create_topics([NewTopic("adm", 2, 3), NewTopic("moving", 1, 1)])

        # DeleteRecords, sent by kafka-python to each partition's leader.
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        for i in range(10):
            producer.send("adm", f"r{i}".encode(), partition=0)
        producer.flush()
        producer.close()
        deleted = admin.delete_records({TopicPartition("adm", 0): 4})
        assert deleted[TopicPartition("adm", 0)]["low_watermark"] == 4
        with cluster.admin() as strom_admin:
            assert strom_admin.list_offsets([("adm", 0)], -2) == {("adm", 0): 4}
        reader = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        reader.assign([TopicPartition("adm", 0)])
        reader.seek_to_beginning()
        assert reader.position(TopicPartition("adm", 0)) == 4
        reader.close()

        # CreatePartitions.
        admin.create_partitions({"adm": NewPartitions(3)})
        eventually(
            lambda: len(admin.describe_topics(["adm"])[0]["partitions"]) == 3, 10, "3 partitions"
        )

        # IncrementalAlterConfigs: SET, APPEND to the broker default list, validate-only.
        resource = ConfigResource(
            ConfigResourceType.TOPIC, "adm",
            {"retention.ms": (AlterConfigOp.SET, "7200000"),
             "cleanup.policy": (AlterConfigOp.APPEND, "compact")},
        )  # fmt: skip
        assert admin.alter_configs([resource]) == {"topic": {"adm": "OK"}}
        configs = topic_configs(admin, "adm")
        assert configs["retention.ms"] == "7200000"
        assert set(configs["cleanup.policy"].split(",")) == {"delete", "compact"}
        dry = ConfigResource(
            ConfigResourceType.TOPIC, "adm", {"retention.ms": (AlterConfigOp.SET, "1000")}
        )
        assert admin.alter_configs([dry], validate_only=True) == {"topic": {"adm": "OK"}}
        bad = ConfigResource(
            ConfigResourceType.TOPIC, "adm", {"retention.ms": (AlterConfigOp.APPEND, "5")}
        )
        assert "InvalidConfigurationError" in admin.alter_configs([bad])["topic"]["adm"]
        subtract = ConfigResource(
            ConfigResourceType.TOPIC, "adm", {"cleanup.policy": (AlterConfigOp.SUBTRACT, "delete")}
        )
        admin.alter_configs([subtract])
        configs = topic_configs(admin, "adm")
        assert (configs["retention.ms"], configs["cleanup.policy"]) == ("7200000", "compact")

        # AlterConfigs (not incremental; librdkafka's alter_configs, which kafka-python would
        # pad with the current overrides): the overrides become exactly the ones given.
        whole = ConfluentResource("topic", "adm", set_config={"segment.ms": "600000"})
        with pytest.warns(DeprecationWarning):
            replaced = confluent.alter_configs([whole])
        for future in replaced.values():
            future.result(timeout=15)
        with cluster.admin() as strom_admin:
            overrides = strom_admin.describe_topic_configs(["adm"], overrides_only=True)
        assert overrides == {"adm": {"segment.ms": "600000"}}

        # Broker configs: the broker's own, read-only, secrets without a value.
        broker = admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, "2")], config_filter="all"
        )["broker"]["2"]
        assert broker["node.id"]["value"] == "2" and broker["node.id"]["read_only"] is True

        # DescribeCluster (kafka-python asks for it first, with authorized operations).
        described = admin.describe_cluster()
        assert sorted(b["broker_id"] for b in described["brokers"]) == [1, 2, 3]
        assert described["cluster_id"] and described["controller_id"] in (1, 2, 3)
        assert "DESCRIBE" in described["authorized_operations"]

        # ElectLeaders: the preferred replica leads already; an unknown partition is named.
        elected = confluent.elect_leaders(
            ElectionType.PREFERRED, [ConfluentPartition("adm", 0), ConfluentPartition("nope", 0)]
        ).result(timeout=15)
        assert elected[ConfluentPartition("adm", 0)].code() == ElectionNotNeededError.errno
        assert elected[ConfluentPartition("nope", 0)].code() == 3  # UNKNOWN_TOPIC_OR_PARTITION

        # Reassignment (KIP-455): move the single replica to another broker, list, cancel.
        tp = TopicPartition("moving", 0)
        source = admin.describe_topics(["moving"])[0]["partitions"][0]["replica_nodes"][0]
        target = next(b for b in (1, 2, 3) if b != source)
        assert admin.alter_partition_reassignments({tp: [target]}) == {tp: None}
        listed = admin.list_partition_reassignments()
        assert tp not in listed or listed[tp]["adding_replicas"] == [target]
        eventually(
            lambda: (
                admin.describe_topics(["moving"])[0]["partitions"][0]["replica_nodes"] == [target]
            ),
            20,
            "the replica moved",
        )
        assert admin.list_partition_reassignments() == {}
        cancelled = admin.alter_partition_reassignments({tp: None})
        assert cancelled == {tp: NoReassignmentInProgressError}
        # v1 (KIP-860): AllowReplicationFactorChange=false refuses a move from 1 replica to 2.
        # kafka-python's admin sends v1 but has no argument for the flag: its request directly.
        kept = AlterPartitionReassignmentsRequest(
            timeout_ms=10_000,
            allow_replication_factor_change=False,
            topics=admin._process_alter_partition_reassignments_input({tp: [target, source]}),
        )
        answer = admin._manager.run(admin._send_request_to_controller, kept, lambda r: ())
        assert answer.API_VERSION == 1 and answer.allow_replication_factor_change is False
        refused = answer.responses[0].partitions[0]
        assert refused.error_code == InvalidReplicationFactorError.errno
        assert "from 1 to 2" in refused.error_message

        # ACLs: create, describe, delete; strom's admin sees the same bindings.
        acl = ACL(
            "User:carol", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
            ResourcePattern(ResourceType.TOPIC, "adm-", ACLResourcePatternType.PREFIXED),
        )  # fmt: skip
        created = admin.create_acls([acl])
        assert created["succeeded"] == [acl] and not created["failed"]
        with cluster.admin() as strom_admin:
            assert [b.principal for b in strom_admin.describe_acls()] == ["User:carol"]
        any_topic = ResourcePatternFilter(ResourceType.TOPIC, None, ACLResourcePatternType.ANY)
        carol = ACLFilter("User:carol", None, ACLOperation.ANY, ACLPermissionType.ANY, any_topic)
        found, error = admin.describe_acls(carol)
        assert error.errno == 0 and [(a.principal, a.resource_pattern.resource_name)
                                     for a in found] == [("User:carol", "adm-")]  # fmt: skip
        refused = admin.create_acls([
            ACL("User:carol", "10.0.0.1", ACLOperation.READ, ACLPermissionType.ALLOW,
                ResourcePattern(ResourceType.TOPIC, "adm"))
        ])  # fmt: skip
        assert refused == {"succeeded": [], "failed": [InvalidRequestError]}  # per-host ACL
        [(_, matched, error)] = admin.delete_acls([carol])
        assert error.errno == 0 and [a.principal for a in matched] == ["User:carol"]
        assert admin.describe_acls(carol)[0] == []

        # DescribeLogDirs: each broker its own replicas, with their sizes.
        dirs = admin.describe_log_dirs({"adm": [0]})
        sizes = [
            p["partition_size"]
            for d in dirs
            for log_dir in d["log_dirs"]
            for t in log_dir["topics"]
            for p in t["partitions"]
        ]
        assert len(sizes) == 3 and all(s > 0 for s in sizes)

        # DeleteGroups: a group with committed offsets, deleted.
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id="doomed", enable_auto_commit=False
        )
        consumer.assign([TopicPartition("adm", 0)])
        consumer.seek(TopicPartition("adm", 0), 6)
        consumer.commit()
        consumer.close()
        assert "doomed" in {g["group_id"] for g in admin.list_groups()}
        assert admin.delete_groups(["doomed"]) == {"doomed": "OK"}
        deadline = time.monotonic() + 10
        while "doomed" in {g["group_id"] for g in admin.list_groups()}:
            assert time.monotonic() < deadline, "the group is still listed"
            time.sleep(0.1)
    finally:
        admin.close()
        del confluent  # librdkafka's threads stop now, not after the cluster is gone
