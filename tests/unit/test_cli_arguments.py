"""The CLI checks what it can before connecting (issue #19): a bad partition count or topic
config is refused at once with a clear message, not after the bootstrap's 30 s timeout."""

from __future__ import annotations

from typing import Any

import pytest

from strom.node import cli
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
