"""Dynamic broker configs on real node processes (node/dynamic_config.py): a change through the
SDK reaches every broker without a restart, shows in each broker's description with its source,
and takes effect: a lowered message.max.bytes (the default of every topic's max.message.bytes)
refuses a larger batch at once, and deleting it accepts the batch again."""

from __future__ import annotations

import asyncio

import pytest
from cluster_harness import Cluster, eventually

from strom.client.admin import NewTopic
from strom.client.errors import StromError
from strom.client.producer import AsyncProducer

pytestmark = pytest.mark.integration


def produce(cluster: Cluster, value: bytes) -> str:
    """Send one record; "OK" or the error's name."""

    async def run() -> str:
        async with AsyncProducer(
            cluster.bootstrap, acks="all", delivery_timeout_ms=5_000
        ) as producer:
            try:
                await (await producer.send("dyn", value, partition=0))
            except StromError as exc:
                return exc.name
            return "OK"

    return asyncio.run(run())


def test_a_dynamic_default_reaches_every_broker_without_a_restart(cluster: Cluster) -> None:
    big = b"x" * 5_000
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("dyn", 1, 3)])
        assert produce(cluster, big) == "OK"
        admin.alter_broker_configs(None, {"message.max.bytes": "2000"})
        admin.alter_broker_configs(2, {"follower.replication.throttled.rate": "1048576"})

        for broker_id in (1, 2, 3):
            entry = eventually(
                lambda b=broker_id: (
                    (e := admin.describe_broker_configs(b)["message.max.bytes"])
                    and e.value == "2000"
                    and e
                ),
                what=f"broker {broker_id} applying message.max.bytes",
            )
            assert entry.source == "DYNAMIC_DEFAULT_BROKER_CONFIG" and not entry.read_only
        throttle = admin.describe_broker_configs(2)["follower.replication.throttled.rate"]
        assert (throttle.value, throttle.source) == ("1048576", "DYNAMIC_BROKER_CONFIG")
        other = admin.describe_broker_configs(3)["follower.replication.throttled.rate"]
        assert other.source == "DEFAULT_CONFIG"
        assert admin.describe_broker_configs(None)["message.max.bytes"].value == "2000"
        assert admin.describe_topic_configs(["dyn"])["dyn"]["max.message.bytes"] == "2000"
        assert produce(cluster, big) == "MESSAGE_TOO_LARGE"

        with pytest.raises(StromError) as err:
            admin.alter_broker_configs(None, {"broker.rack": "r1"})
        assert err.value.name == "INVALID_CONFIG" and "at runtime" in str(err.value)

        admin.alter_broker_configs(None, {}, ["message.max.bytes"])
        eventually(lambda: produce(cluster, big) == "OK", what="the default back")
