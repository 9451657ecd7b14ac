"""Careless or hostile admin and client input against real node processes (issue #15): what
the probe sent is refused with Kafka's codes, and nothing it sent changes the cluster.

- a topic config a broker cannot apply (segment.bytes above 2^31-1, retention.ms = 10^20) is
  refused with INVALID_CONFIG, on create (validate_only too) and on alter (defect 1);
- a produce to `__consumer_offsets` is refused with INVALID_TOPIC_EXCEPTION, and the group's
  committed offset stays what it committed (defect 2);
- `__consumer_offsets` cannot be created, deleted or grown by a client (defect 3);
- commit metadata and group ids are bounded (weaker spots);
- a broker whose metadata log holds a config it cannot apply keeps running (defect 1).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cluster_harness import Cluster, eventually

from strom.client.admin import NewTopic
from strom.client.errors import StromError
from strom.client.producer import Producer
from strom.node.group.offsets_log import OFFSETS_TOPIC, OffsetEntry, offset_key, offset_value
from strom.node.server import METADATA_LOG_DIR
from strom.raft.types import Entry, EntryKind
from strom.storage.raft_store import FileRaftStore
from strom.v1 import metadata_pb2

pytestmark = pytest.mark.integration


def _refused(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    with pytest.raises(StromError) as refused:
        call(*args, **kwargs)
    return refused.value.name


def test_bad_configs_and_internal_topics_are_refused_and_change_nothing(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(1)
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("events", 1, 1)])
        for bad in ({"segment.bytes": "2147483648"}, {"retention.ms": str(10**20)}):
            topic = NewTopic("careless", 1, 1, bad)
            refused = _refused(admin.create_topics, [topic], validate_only=True)
            assert refused == "INVALID_CONFIG"
            assert _refused(admin.create_topics, [topic]) == "INVALID_CONFIG"
            assert _refused(admin.alter_topic_configs, "events", bad) == "INVALID_CONFIG"
        assert "careless" not in admin.list_topics()
        assert admin.describe_topic_configs(["events"])["events"]["segment.bytes"] == str(1 << 30)

        # A client cannot create __consumer_offsets before the cluster does.
        making = NewTopic(OFFSETS_TOPIC, 1, 1)
        assert _refused(lambda: admin.create_topics([making])) == "INVALID_REQUEST"
        admin.alter_group_offsets("billing", {("events", 0): 42})  # the cluster creates it
        assert _refused(lambda: admin.delete_topics([OFFSETS_TOPIC])) == "INVALID_REQUEST"
        assert _refused(lambda: admin.create_partitions(OFFSETS_TOPIC, 60)) == "INVALID_REQUEST"

    # A forged commit resetting billing's offset, as any plaintext client could send it.
    forged_key = offset_key("billing", "events", 0)
    forged_value = offset_value(OffsetEntry(0, "", 0), -1)
    with Producer(cluster.bootstrap, acks="all") as producer:
        future = producer.send(OFFSETS_TOPIC, forged_value, key=forged_key, partition=0)
        assert _refused(lambda: future.result(timeout=10)) == "INVALID_TOPIC_EXCEPTION"

    with cluster.admin() as admin:
        assert admin.list_group_offsets("billing") == {("events", 0): 42}
        assert admin.describe_topics([OFFSETS_TOPIC])[0].partitions  # still there
        assert (
            _refused(lambda: admin.alter_group_offsets("g" * 300, {("events", 0): 1}))
            == "INVALID_GROUP_ID"
        )


def test_a_broker_meeting_a_config_it_cannot_apply_keeps_running(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """The metadata log holds topic configs an older controller accepted (as it did before the
    table): segment.bytes = 2^31 for one topic, min.insync.replicas = 0 for another. Planted
    into the node's Raft log while it is down, they commit when it comes back. The node keeps
    running and serving `steady`; both topics' replicas go offline with a line naming the key
    (main: min.insync.replicas=0 was served); a valid value brings them back."""
    cluster = cluster_factory(1)
    with cluster.admin() as admin:
        admin.create_topics([NewTopic(name, 1, 1) for name in ("steady", "wide", "lax")])
    cluster.local.stop(1)
    store = FileRaftStore(cluster.local.node_dir(1) / "data" / METADATA_LOG_DIR)
    last = store.last_index()
    planted = metadata_pb2.MetadataBatch(
        records=[
            metadata_pb2.MetadataRecord(
                config=metadata_pb2.ConfigRecord(
                    resource_type=metadata_pb2.CONFIG_RESOURCE_TOPIC,
                    resource_name=topic,
                    name=name,
                    value=value,
                )
            )
            for topic, name, value in [
                ("wide", "segment.bytes", "2147483648"),
                ("lax", "min.insync.replicas", "0"),
            ]
        ]
    )
    store.append([Entry(store.term(last), last + 1, EntryKind.NORMAL, planted.SerializeToString())])
    store.close()
    cluster.local.start(1)
    cluster.wait_healthy([1])

    def offline() -> bool:
        with cluster.admin() as admin:
            described = {t.name: t.partitions[0] for t in admin.describe_topics(["wide", "lax"])}
        return all(p.leader == -1 and p.offline_replicas == (1,) for p in described.values())

    eventually(offline, timeout_s=30, what="wide-0 and lax-0 offline")
    log = cluster.log_of(1)
    assert "wide-0: OFFLINE on this broker (cannot apply): InvalidTopicConfig: segment.bytes" in log
    assert "lax-0: OFFLINE on this broker (cannot apply): InvalidTopicConfig: min.insync" in log
    with Producer(cluster.bootstrap, acks="all") as producer:
        assert producer.send("steady", b"still served").result(timeout=10).offset == 0

    with cluster.admin() as admin:  # an operator sets values the table accepts
        admin.alter_topic_configs("wide", {"segment.bytes": "1048576"})
        admin.alter_topic_configs("lax", {"min.insync.replicas": "1"})

    def back() -> bool:
        with cluster.admin() as admin:
            described = admin.describe_topics(["wide", "lax"])
        return all(t.partitions[0].leader == 1 for t in described)

    eventually(back, timeout_s=30, what="wide-0 and lax-0 led again")
    assert cluster.local.pid(1) is not None
