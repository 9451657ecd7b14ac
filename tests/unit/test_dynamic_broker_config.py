"""Dynamic broker configs (node/dynamic_config.py): the controller checks and records them, each
node lays them over its file in Kafka's order (own, default of every broker, file, default), the
replica manager applies a change to every topic's log and to the move throttle, and a broker
describes them with their sources (node/broker/config_describe.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from types import MappingProxyType

import pytest
from replica_fixtures import changed, image, led_by, manager
from test_controller_logic import Cluster

from strom.node.broker.config_describe import describe_broker
from strom.node.config import build_config
from strom.node.controller.errors import ControllerError
from strom.node.dynamic_config import DynamicBrokerConfig
from strom.node.metadata.image import BROKER, MetadataDelta, MetadataImage
from strom.node.replica.throttle import UNLIMITED, ReplicationThrottle
from strom.v1 import admin_pb2, common_pb2, metadata_pb2


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster()
    c.add_broker(1)
    return c


def test_the_controller_records_checked_values_for_one_broker_or_every_broker(
    cluster: Cluster,
) -> None:
    cluster.commit(cluster.logic.alter_broker_configs("", {"log.retention.ms": "1000"}, []))
    cluster.commit(
        cluster.logic.alter_broker_configs(
            "2", {"follower.replication.throttled.rate": "5000", "log.flush.interval.ms": "7"}, []
        )
    )
    assert cluster.committed.configs[(BROKER, "")] == {"log.retention.ms": "1000"}
    assert cluster.committed.configs[(BROKER, "2")] == {
        "follower.replication.throttled.rate": "5000",
        "log.flush.interval.ms": "7",
    }
    # Booleans are kept as Kafka writes them; a delete removes the key.
    cluster.commit(
        cluster.logic.alter_broker_configs(
            "2", {"unclean.leader.election.enable": "TRUE"}, ["log.flush.interval.ms"]
        )
    )
    assert cluster.committed.configs[(BROKER, "2")] == {
        "follower.replication.throttled.rate": "5000",
        "unclean.leader.election.enable": "true",
    }
    assert cluster.logic.alter_broker_configs("", {"log.retention.ms": "5"}, [], True) == []


@pytest.mark.parametrize(
    ("resource", "values", "delete", "says"),
    [
        ("", {"no.such.key": "1"}, [], "unknown broker config"),
        ("", {"broker.rack": "r1"}, [], "cannot be altered at runtime"),
        ("", {}, ["node.id"], "cannot be altered at runtime"),
        ("", {"log.retention.ms": "soon"}, [], "log.retention.ms"),
        ("", {"follower.replication.throttled.rate": "0"}, [], "at least 1"),
        ("", {"log.segment.bytes": str(2**31)}, [], "log.segment.bytes"),
        ("x", {"log.retention.ms": "1"}, [], "must be a broker id"),
        ("0", {"log.retention.ms": "1"}, [], "must be a broker id"),
    ],
)
def test_the_controller_refuses_what_a_broker_could_not_apply(
    cluster: Cluster, resource: str, values: dict[str, str], delete: list[str], says: str
) -> None:
    before = cluster.logic.image
    with pytest.raises(ControllerError) as err:
        cluster.logic.alter_broker_configs(resource, values, delete)
    assert err.value.code == common_pb2.INVALID_CONFIG and says in err.value.message
    assert cluster.logic.image is before  # nothing written


def with_broker_configs(img: MetadataImage, **by_resource: dict[str, str]) -> MetadataImage:
    configs = dict(img.configs)
    for resource, values in by_resource.items():
        name = "" if resource == "default" else resource.removeprefix("b")
        configs[(BROKER, name)] = MappingProxyType(values)
    return dataclasses.replace(img, configs=MappingProxyType(configs))


def broker_change() -> MetadataDelta:
    delta = MetadataDelta()
    delta.changed_configs = {(BROKER, "")}
    return delta


def node_config(node_id: int, **values: object):  # type: ignore[no-untyped-def]
    return build_config(
        {"node.id": node_id, "controller.quorum.voters": "1@localhost:9093", **values}, environ={}
    )


def test_a_node_uses_its_own_value_then_the_default_of_every_broker_then_its_file() -> None:
    config1 = node_config(1, **{"log.retention.ms": 99})
    config2 = node_config(2, **{"process.roles": "broker"})
    dynamic = with_broker_configs(
        MetadataImage(),
        default={"log.retention.ms": "1000", "log.flush.interval.ms": "5"},
        b1={"log.retention.ms": "2000"},
    )
    for config in (config1, config2):
        DynamicBrokerConfig(config).on_metadata(dynamic, broker_change())
    assert config1["log.retention.ms"] == 2000 and config1.dynamic_source("log.retention.ms") == (
        "broker"
    )
    assert config2["log.retention.ms"] == 1000 and config2.dynamic_source("log.retention.ms") == (
        "default"
    )
    assert config1.topic_defaults()["flush.ms"] == 5  # topic defaults follow
    # Deleted everywhere: back to the file, then to strom's default.
    DynamicBrokerConfig(config1).on_metadata(MetadataImage(), broker_change())
    DynamicBrokerConfig(config2).on_metadata(MetadataImage(), broker_change())
    assert config1["log.retention.ms"] == 99 and config1.dynamic_source("log.retention.ms") is None
    assert config2["log.retention.ms"] == 7 * 24 * 3600 * 1000


def test_a_value_this_node_cannot_apply_leaves_its_file_value() -> None:
    config = node_config(1, **{"log.retention.ms": 99})
    bad = with_broker_configs(MetadataImage(), default={"log.retention.ms": "never"})
    DynamicBrokerConfig(config).on_metadata(bad, broker_change())
    assert config["log.retention.ms"] == 99


def test_a_broker_describes_its_configs_with_their_sources() -> None:
    config = node_config(
        1, **{"log.retention.ms": 99, "node.sasl.username": "n", "node.sasl.password": "secret"}
    )
    dynamic = with_broker_configs(
        MetadataImage(),
        default={"log.flush.interval.ms": "5"},
        b1={"follower.replication.throttled.rate": "100"},
    )
    DynamicBrokerConfig(config).on_metadata(dynamic, broker_change())

    def describe(name: str) -> admin_pb2.DescribeConfigsResult:
        result = admin_pb2.DescribeConfigsResult(
            resource=admin_pb2.ConfigResource(
                resource_type=metadata_pb2.CONFIG_RESOURCE_BROKER, resource_name=name
            )
        )
        describe_broker(config, dynamic, result)
        return result

    entries = {c.name: c for c in describe("1").configs}
    assert entries["follower.replication.throttled.rate"].value == "100"
    assert entries["follower.replication.throttled.rate"].source == (
        admin_pb2.CONFIG_SOURCE_DYNAMIC_BROKER
    )
    assert entries["log.flush.interval.ms"].source == (
        admin_pb2.CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER
    )
    assert entries["log.retention.ms"].source == admin_pb2.CONFIG_SOURCE_STATIC_BROKER
    assert entries["log.roll.ms"].source == admin_pb2.CONFIG_SOURCE_DEFAULT
    assert entries["node.id"].read_only and not entries["log.retention.ms"].read_only
    assert entries["node.sasl.password"].sensitive and entries["node.sasl.password"].value == ""
    defaults = describe("")
    assert [(c.name, c.value) for c in defaults.configs] == [("log.flush.interval.ms", "5")]
    other = describe("2")
    assert other.error_code == common_pb2.INVALID_REQUEST and "broker 2" in other.error_message


def test_a_new_throttle_rate_keeps_what_is_owed() -> None:
    throttle = ReplicationThrottle(UNLIMITED, now_ms=0)
    throttle.set_rate(1000, now_ms=0)
    assert throttle.limited and throttle.allows(0)
    throttle.charge(3000, now_ms=0)  # 2000 owed
    throttle.set_rate(2000, now_ms=0)
    assert throttle.wait_ms(0) == 1001  # 2000 owed at 2000 B/s
    throttle.set_rate(UNLIMITED, now_ms=0)
    assert throttle.allows(0)


def test_the_replica_manager_applies_a_broker_config_change_to_logs_and_the_throttle(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        broker1 = manager(tmp_path, broker_id=1)
        dynamic_config = DynamicBrokerConfig(broker1.config)
        plain = image({0: led_by(1)})
        broker1.on_metadata(plain, changed(plain))
        partition = broker1.partition_by_name("t", 0)
        assert partition.log.config.retention_ms == 7 * 24 * 3600 * 1000
        assert not broker1.move_throttle.limited

        dynamic = with_broker_configs(
            plain,
            default={"log.retention.ms": "1234"},
            b1={
                "follower.replication.throttled.rate": "4096",
                "leader.replication.throttled.rate": "8192",
            },
        )
        delta = MetadataDelta()
        delta.changed_configs = {(BROKER, ""), (BROKER, "1")}
        for listener in (dynamic_config.on_metadata, broker1.on_metadata):
            listener(dynamic, delta)
        assert partition.log.config.retention_ms == 1234
        assert broker1.move_throttle.limited and broker1.move_throttle.bytes_per_s == 4096
        assert broker1.leader_throttle.bytes_per_s == 8192
        await broker1.stop()
        broker1.logs.close()

    asyncio.run(scenario())
