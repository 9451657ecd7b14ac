"""The CLI checks what it can before connecting (issue #19): a bad partition count or topic
config is refused at once with a clear message, not after the bootstrap's 30 s timeout; and a
bootstrap address that refuses connections is named after the CLI's short bootstrap timeout by
every client command, the console producer and consumer and perf included."""

from __future__ import annotations

import io
import socket
import sys
import time
from typing import Any

import pytest

from strom.node import cli
from strom.node.cli import common as cli_common
from strom.node.cli import topics as cli_topics

UNREACHABLE = ["--bootstrap-server", "localhost:1"]


@pytest.fixture(autouse=True)
def no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the CLI connected before checking its arguments")

    monkeypatch.setattr(cli_topics, "admin_client", refuse)


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "create", "t", "--partitions", "0"],
        ["topics", "create", "t", "--partitions", "-3"],
        ["topics", "create", "t", "--replication-factor", "0"],
        ["topics", "create", "t", "--partitions", "many"],
        ["topics", "alter", "t", "--partitions", "0"],
    ],
)
def test_bad_counts_are_refused_by_the_parser(argv: list[str], capsys: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, *UNREACHABLE])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err or "expected an integer" in err


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ("segment.bytes=2147483648", "segment.bytes"),
        ("retention.ms=lots", "retention.ms"),
        ("no.such.key=1", "no.such.key"),
        ("cleanup.policy=sometimes", "cleanup.policy"),
    ],
)
def test_bad_topic_configs_are_refused_before_connecting(
    config: str, named: str, capsys: Any
) -> None:
    for action in (["create", "t"], ["alter", "t"]):
        assert cli.main(["topics", *action, "--config", config, *UNREACHABLE]) == 1
        assert named in capsys.readouterr().err


def refused_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: connections are refused


@pytest.mark.parametrize(
    "argv",
    [
        ["produce", "t"],
        ["consume", "t", "--max-messages", "1"],
        ["perf", "consume", "--topic", "t", "--messages", "1"],
        ["perf", "produce", "--topic", "t", "--num-records", "1"],
    ],
)
def test_a_refused_bootstrap_is_named_after_the_bootstrap_timeout(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setattr(cli_common, "CLI_BOOTSTRAP_TIMEOUT_MS", 300)
    monkeypatch.setattr(sys, "stdin", io.StringIO("a record\n"))
    address = refused_address()
    started = time.monotonic()
    assert cli.main([*argv, "--bootstrap-server", address]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the cluster" in err and address in err, err
    assert time.monotonic() - started < 10  # the request timeout (30 s) did not apply
