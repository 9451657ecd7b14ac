"""Dynamic broker configs on real node processes (node/dynamic_config.py): a change through the
SDK reaches every broker without a restart, shows in each broker's description with its source,
and takes effect: a lowered message.max.bytes (the default of every topic's max.message.bytes)
refuses a larger batch at once, and deleting it accepts the batch again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from cluster_harness import Cluster, eventually

from strom.client.admin import NewTopic
from strom.client.errors import StromError
from strom.client.producer import AsyncProducer

pytestmark = pytest.mark.integration


def produce(cluster: Cluster, value: bytes, topic: str = "dyn") -> str:
    """Send one record; "OK" or the error's name."""

    async def run() -> str:
        async with AsyncProducer(
            cluster.bootstrap, acks="all", delivery_timeout_ms=5_000
        ) as producer:
            try:
                await (await producer.send(topic, value, partition=0))
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


def strom(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strom.node.cli", *args, "--bootstrap-server", cluster.bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_configs_and_log_dirs_from_the_command_line(cluster: Cluster) -> None:
    """kafka-configs' and kafka-log-dirs' verbs: alter the default of every broker, see it
    on a broker with its source, delete it; sizes of a topic's replicas per broker."""
    entity = ("--entity-type", "brokers")
    altered = strom(cluster, "configs", "alter", *entity, "--entity-default",
                    "--add-config", "log.retention.ms=3600000,log.flush.interval.ms=60000")  # fmt: skip
    assert altered.returncode == 0, altered.stderr
    assert "Completed updating default config for brokers in the cluster." in altered.stdout
    described = strom(cluster, "configs", "describe", *entity, "--entity-name", "2")
    assert described.returncode == 0, described.stderr
    assert described.stdout.splitlines() == [
        "Dynamic configs for broker 2 are:",
        "  log.flush.interval.ms=60000 sensitive=false source=DYNAMIC_DEFAULT_BROKER_CONFIG",
        "  log.retention.ms=3600000 sensitive=false source=DYNAMIC_DEFAULT_BROKER_CONFIG",
    ]
    refused = strom(cluster, "configs", "alter", *entity, "--entity-name", "1",
                    "--add-config", "node.id=7")  # fmt: skip
    assert refused.returncode == 1 and "cannot be altered at runtime" in refused.stderr
    deleted = strom(cluster, "configs", "alter", *entity, "--entity-default",
                    "--delete-config", "log.retention.ms")  # fmt: skip
    assert deleted.returncode == 0, deleted.stderr
    everything = strom(cluster, "configs", "describe", *entity, "--entity-name", "2", "--all",
                       "--output", "json")  # fmt: skip
    configs = json.loads(everything.stdout)["All configs for broker 2"]
    assert configs["log.retention.ms"]["source"] == "DEFAULT_CONFIG"
    assert configs["log.flush.interval.ms"]["value"] == "60000"
    assert configs["node.id"] == {
        "value": "2", "source": "STATIC_BROKER_CONFIG", "read_only": True, "sensitive": False
    }  # fmt: skip

    with cluster.admin() as admin:
        admin.create_topics([NewTopic("sized", 1, 3)])
        leader = admin.describe_topics(["sized"])[0].partitions[0].leader
    for _ in range(3):
        assert produce(cluster, b"y" * 1000, topic="sized") == "OK"
    shown = strom(cluster, "log-dirs", "describe", "--topic-list", "sized", "--output", "json")
    assert shown.returncode == 0, shown.stderr
    progress, received, document = shown.stdout.splitlines()
    assert progress == "Querying brokers for log directories information"
    assert received == "Received log directory information from brokers 1,2,3"
    brokers = json.loads(document)["brokers"]
    assert [b["broker"] for b in brokers] == [1, 2, 3]
    for broker in brokers:
        (log_dir,) = broker["logDirs"]
        (replica,) = log_dir["partitions"]
        assert replica["partition"] == "sized-0" and replica["size"] > 3000
    table = strom(cluster, "log-dirs", "describe", "--broker-list", str(leader),
                  "--topic-list", "sized")  # fmt: skip
    header, row = table.stdout.splitlines()
    assert header.split() == ["BROKER", "LOG-DIR", "PARTITION", "SIZE", "LOG-START", "LOG-END",
                              "LAG", "ROLE"]  # fmt: skip
    assert row.split()[0] == str(leader) and row.split()[-1] == "leader"
