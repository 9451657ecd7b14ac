"""Node configuration: Kafka key names, defaults in one place, env overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from strom.node.config import (
    NODE_KEYS,
    ConfigError,
    build_config,
    env_name,
    load_config,
)

VOTERS = "1@localhost:9093,2@localhost:9193,3@localhost:9293"


def _minimal(**extra: object) -> dict[str, object]:
    return {"node.id": 1, "controller.quorum.voters": VOTERS, **extra}


def test_defaults_are_kafkas() -> None:
    config = build_config(_minimal(), environ={})
    assert config["log.retention.ms"] == 7 * 24 * 3600 * 1000
    assert config["num.partitions"] == 1
    assert config["offsets.topic.num.partitions"] == 50
    assert config["unclean.leader.election.enable"] is False
    assert config.roles == {"broker", "controller"}
    assert [v.node_id for v in config.voters] == [1, 2, 3]


def test_every_key_has_a_doc_and_a_typed_default() -> None:
    for key in NODE_KEYS:
        assert key.doc, key.name
        assert key.name == key.name.lower()


def test_yaml_file_and_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(f"node.id: 2\ncontroller.quorum.voters: {VOTERS}\nnum.partitions: 3\n")
    config = load_config(path, environ={"STROM_NUM_PARTITIONS": "6", "STROM_LOG_DIRS": "/d1,/d2"})
    assert config.node_id == 2
    assert config["num.partitions"] == 6
    assert config["log.dirs"] == ["/d1", "/d2"]
    assert env_name("log.retention.check.interval.ms") == "STROM_LOG_RETENTION_CHECK_INTERVAL_MS"


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(f"node.id: 1\ncontroller.quorum.voters: {VOTERS}\nnum.partition: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'num.partition'.*num.partitions"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num.partitions", "three", "num.partitions: expected an integer"),
        ("num.partitions", 0, "num.partitions: must be at least 1"),
        ("node.id", 0, "node.id: must be at least 1"),
        ("auto.create.topics.enable", "maybe", "auto.create.topics.enable: expected true or false"),
        ("log.cleanup.policy", "shred", "log.cleanup.policy: shred not allowed; choose from"),
        ("listeners", "PLAINTEXT:9092", "listeners: 'PLAINTEXT:9092' is not NAME://host:port"),
        ("process.roles", "broker,janitor", "process.roles: must be broker, controller or both"),
    ],
)
def test_bad_values_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(_minimal(**{key: value}), environ={})


def test_bad_environment_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match="node.id: expected an integer"):
        build_config(_minimal(), environ={"STROM_NODE_ID": "one"})


def test_required_keys() -> None:
    with pytest.raises(ConfigError, match="node.id: required"):
        build_config({"controller.quorum.voters": VOTERS}, environ={})


def test_relationships_are_checked() -> None:
    with pytest.raises(ConfigError, match="node.id 4 has the controller role but is not a voter"):
        build_config(_minimal(**{"node.id": 4}), environ={})
    with pytest.raises(ConfigError, match="at least twice"):
        build_config(_minimal(**{"controller.quorum.election.timeout.ms": 150}), environ={})
    with pytest.raises(ConfigError, match="inter.broker.listener.name"):
        build_config(_minimal(**{"inter.broker.listener.name": "INTERNAL"}), environ={})


def test_broker_only_node_needs_no_controller_listener() -> None:
    config = build_config(
        _minimal(**{"node.id": 4, "process.roles": "broker", "listeners": "PLAINTEXT://:9492"}),
        environ={},
    )
    assert config.is_broker and not config.is_controller


def test_advertised_listeners_default_to_bound_broker_listeners() -> None:
    config = build_config(_minimal(listeners="PLAINTEXT://:9092,CONTROLLER://:9093"), environ={})
    assert [(e.listener, e.host, e.port) for e in config.advertised_listeners] == [
        ("PLAINTEXT", "localhost", 9092)
    ]
