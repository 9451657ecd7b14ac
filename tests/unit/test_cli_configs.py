"""`strom configs` and `strom log-dirs` (node/cli/configs.py): Kafka's --add-config syntax, the
checks made before connecting, and kafka-log-dirs' JSON."""

from __future__ import annotations

import argparse
import json

import pytest

from strom.client.log_dirs import LogDir, ReplicaLog
from strom.node import cli
from strom.node.cli import configs as cli_configs
from strom.node.cli.configs import log_dirs_json, parse_add_config


def test_add_config_takes_kafkas_syntax() -> None:
    assert parse_add_config("a=1,b.c=x y") == {"a": "1", "b.c": "x y"}
    assert parse_add_config("cleanup.policy=[compact,delete],r=5") == {
        "cleanup.policy": "compact,delete",
        "r": "5",
    }
    assert parse_add_config("empty=") == {"empty": ""}


@pytest.mark.parametrize("text", ["novalue", "=1", "a=[1,2", "a=1]", "a=1,,b=2"])
def test_add_config_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_add_config(text)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["configs", "alter", "--entity-type", "brokers", "--add-config", "a=1"], "--entity-name ID or --entity-default"),
        (["configs", "alter", "--entity-type", "brokers", "--entity-name", "x", "--add-config", "a=1"], "broker id"),
        (["configs", "alter", "--entity-type", "brokers", "--entity-default"], "nothing to change"),
        (["configs", "alter", "--entity-type", "brokers", "--entity-default", "--add-config", "a=1", "--delete-config", "a"], "both added and deleted: a"),
        (["configs", "describe", "--entity-type", "brokers", "--entity-name", "0"], "1 or more"),
        (["configs", "describe", "--entity-type", "topics"], "topics need --entity-name"),
        (["configs", "describe", "--entity-type", "topics", "--entity-default"], "--entity-default is for brokers"),
    ],
)  # fmt: skip
def test_arguments_that_do_not_go_together_fail_before_connecting(
    argv: list[str], says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_cluster(args: argparse.Namespace) -> None:
        raise AssertionError("connected")

    monkeypatch.setattr(cli_configs, "admin_client", no_cluster)
    assert cli.main([*argv, "--bootstrap-server", "localhost:1"]) == 1
    assert says in capsys.readouterr().err


def test_log_dirs_prints_kafkas_json() -> None:
    replica = ReplicaLog("t", 0, 120, 0, 0, 3, 3, True)
    dirs = [
        LogDir(1, "/data/1", 100, 50, "NONE", (replica,)),
        LogDir(2, "/data/2", -1, -1, "KAFKA_STORAGE_ERROR", ()),
    ]
    document = json.loads(log_dirs_json(dirs, [1, 2, 3]))
    assert document == {
        "version": 1,
        "brokers": [
            {"broker": 1, "logDirs": [{"logDir": "/data/1", "error": None, "partitions": [
                {"partition": "t-0", "size": 120, "offsetLag": 0, "isFuture": False}]}]},
            {"broker": 2, "logDirs": [{"logDir": "/data/2", "error": "KAFKA_STORAGE_ERROR", "partitions": []}]},
            {"broker": 3, "logDirs": []},
        ],
    }  # fmt: skip
