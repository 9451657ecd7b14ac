"""`strom partitions reassign`'s pure parts: Kafka's JSON, the proposal, the verify verdicts."""

from __future__ import annotations

import json

import pytest

from strom.node.cli.reassign import (
    ReassignmentFileError,
    assignment_json,
    parse_broker_list,
    parse_reassignment,
    parse_topics_to_move,
    verify,
)
from strom.node.reassign_plan import PlanError, generate


def test_kafka_reassignment_json_round_trips() -> None:
    text = (
        '{"version":1,"partitions":[{"topic":"orders","partition":1,"replicas":[2,3,4],'
        '"log_dirs":["any","any","any"]},{"topic":"orders","partition":0,"replicas":[4,2]}]}'
    )
    plan = parse_reassignment(json.loads(text))
    assert plan == {("orders", 1): (2, 3, 4), ("orders", 0): (4, 2)}
    assert parse_reassignment(json.loads(assignment_json(plan))) == plan


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], '"partitions" list'),
        ({"version": 2, "partitions": []}, "version 2"),
        ({"partitions": []}, "names no partitions"),
        ({"partitions": [{"partition": 0, "replicas": [1]}]}, '"topic"'),
        ({"partitions": [{"topic": "t", "partition": -1, "replicas": [1]}]}, '"partition"'),
        ({"partitions": [{"topic": "t", "partition": 0, "replicas": []}]}, '"replicas"'),
        ({"partitions": [{"topic": "t", "partition": 0, "replicas": ["1"]}]}, '"replicas"'),
        ({"partitions": [{"topic": "t", "partition": 0, "replicas": [1, 1]}]}, "twice"),
        (
            {"partitions": [{"topic": "t", "partition": 0, "replicas": [1], "log_dirs": ["/d"]}]},
            '"log_dirs"',
        ),
        (
            {"partitions": [{"topic": "t", "partition": 0, "replicas": [1]}] * 2},
            "t-0 appears twice",
        ),
    ],
)
def test_bad_reassignment_files_say_what_is_wrong(document: object, message: str) -> None:
    with pytest.raises(ReassignmentFileError, match=message.replace("[", r"\[")):
        parse_reassignment(document)


def test_topics_and_broker_lists() -> None:
    assert parse_topics_to_move({"version": 1, "topics": [{"topic": "a"}, {"topic": "b"}]}) == [
        "a",
        "b",
    ]
    with pytest.raises(ReassignmentFileError):
        parse_topics_to_move({"topics": []})
    assert parse_broker_list("2, 3,4") == [2, 3, 4]
    for bad in ("", "1,x", "1,1"):
        with pytest.raises(ReassignmentFileError):
            parse_broker_list(bad)


def test_generate_places_every_partition_on_the_listed_brokers_across_racks() -> None:
    current = {("t", p): (1, 2, 3) for p in range(6)}
    racks = {2: "a", 3: "a", 4: "b", 5: "b"}
    proposal = generate(current, [2, 3, 4, 5], racks)
    assert set(proposal) == set(current)
    for replicas in proposal.values():
        assert len(replicas) == 3 and set(replicas) <= {2, 3, 4, 5}
        assert {racks[r] for r in replicas} == {"a", "b"}
    with pytest.raises(PlanError, match="replication factor 3 is larger"):
        generate(current, [2, 3], {})


def test_verify_verdicts() -> None:
    plan = {("t", 0): (2, 3, 4), ("t", 1): (2, 3, 4), ("t", 2): (2, 3, 4), ("t", 3): (1,)}
    ongoing = {("t", 1): object()}
    current = {("t", 0): (2, 3, 4), ("t", 1): (2, 3, 4, 1), ("t", 2): (1, 2, 3)}
    lines, done = verify(plan, ongoing, current)
    assert not done
    assert lines == [
        "Reassignment of partition t-0 is completed.",
        "Reassignment of partition t-1 is still in progress.",
        "There is no active reassignment of partition t-2, but replica set is [1, 2, 3] "
        "rather than [2, 3, 4].",
        "Partition t-3 does not exist.",
    ]
    assert verify({("t", 0): (2, 3, 4)}, {}, current) == (
        ["Reassignment of partition t-0 is completed."],
        True,
    )


def test_kafka_delete_records_offset_file() -> None:
    from strom.node.cli.common import CommandError
    from strom.node.cli.topics import parse_delete_records

    document = {"version": 1, "partitions": [{"topic": "t", "partition": 0, "offset": 3},
                                             {"topic": "t", "partition": 1, "offset": -1}]}  # fmt: skip
    assert parse_delete_records(document, "f") == {("t", 0): 3, ("t", 1): -1}
    for bad in ({}, {"partitions": []}, {"partitions": [{"topic": "t", "partition": 0}]},
                {"partitions": [{"topic": "t", "partition": 0, "offset": -2}]},
                {"partitions": [{"topic": "t", "partition": 0, "offset": 1}] * 2}):  # fmt: skip
        with pytest.raises(CommandError):
            parse_delete_records(bad, "f")


def test_topics_describe_shows_moves_and_racks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from types import SimpleNamespace

    from strom.client.admin import BrokerInfo, PartitionDescription, TopicDescription
    from strom.client.reassignment import PartitionReassignment
    from strom.node import cli
    from strom.node.cli import topics as cli_topics

    topic = TopicDescription(
        "t", "id", (PartitionDescription(0, 1, 0, (2, 3, 4, 1), (1, 2, 3)),), {}
    )
    brokers = tuple(BrokerInfo(b, "h", 1, f"r{b % 2}", False, False) for b in (1, 2, 3, 4))

    class FakeAdmin:
        def __enter__(self) -> FakeAdmin:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def describe_topics(self, names: object) -> list[TopicDescription]:
            return [topic]

        def describe_cluster(self) -> object:
            return SimpleNamespace(brokers=brokers)

        def describe_topic_configs(self, names: object) -> dict[str, dict[str, str]]:
            return {"t": {"min.insync.replicas": "2"}}

        def list_partition_reassignments(self) -> dict[object, PartitionReassignment]:
            return {("t", 0): PartitionReassignment((2, 3, 4, 1), (4,), (1,))}

    monkeypatch.setattr(cli_topics, "admin_client", lambda args: FakeAdmin())
    assert cli.main(["topics", "describe", "t"]) == 0
    out = capsys.readouterr().out
    assert "Replicas: 2,3,4,1\tIsr: 1,2,3\tAdding Replicas: 4\tRemoving Replicas: 1" in out
    assert "\tRacks: r0,r1,r0,r1" in out
    # Broker 4 is still being added: the partition is not under-replicated.
    assert cli.main(["topics", "describe", "--under-replicated-partitions"]) == 0
    assert "Partition: 0" not in capsys.readouterr().out
    assert cli.main(["topics", "describe", "--output", "json"]) == 0
    described = json.loads(capsys.readouterr().out)[0]["partitions"][0]
    assert described["adding_replicas"] == [4] and described["racks"] == ["r0", "r1", "r0", "r1"]


def test_a_throttle_covers_the_brokers_a_move_sends_from_and_to() -> None:
    from strom.node.cli.reassign import involved_brokers

    plan = {("t", 0): [2, 3], ("t", 1): [4]}
    current = {("t", 0): (1, 2), ("t", 1): (4,), ("u", 0): (5,)}
    assert involved_brokers(plan, current) == [1, 2, 3, 4]  # not 5: u is not moving
