"""Careless or hostile admin and client input against real node processes (issue #15): what
the probe sent is refused with Kafka's codes, and nothing it sent changes the cluster.

- a topic config a broker cannot apply (segment.bytes above 2^31-1, retention.ms = 10^20) is
  refused with INVALID_CONFIG, on create (validate_only too) and on alter (defect 1);
- a produce to `__consumer_offsets` is refused with INVALID_TOPIC_EXCEPTION, and the group's
  committed offset stays what it committed (defect 2);
- `__consumer_offsets` cannot be created, deleted or grown by a client (defect 3);
- commit metadata and group ids are bounded (weaker spots).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cluster_harness import Cluster

from strom.client.admin import NewTopic
from strom.client.errors import StromError
from strom.client.producer import Producer
from strom.node.group.offsets_log import OFFSETS_TOPIC, OffsetEntry, offset_key, offset_value

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
