"""`strom partitions reassign`: Kafka's kafka-reassign-partitions, with its JSON format.

    strom partitions reassign --generate --topics-to-move-json-file topics.json --broker-list 2,3,4
    strom partitions reassign --reassignment-json-file plan.json --execute
    strom partitions reassign --reassignment-json-file plan.json --verify
    strom partitions reassign --reassignment-json-file plan.json --cancel
    strom partitions reassign --list

The reassignment file is Kafka's: {"version": 1, "partitions": [{"topic": "t", "partition": 0,
"replicas": [2, 3, 4]}]} (`log_dirs`, when present, must be "any": strom places a replica in
the broker's own log directory). The topics file for --generate is {"version": 1, "topics":
[{"topic": "t"}]}. --execute prints the current assignment first, to save for a rollback;
--verify exits 0 only when every move in the file has completed.

The pure parts (parsing, the proposal, the verify verdicts) are functions of plain values; the
handlers only talk to the cluster through the SDK.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from strom.node.controller.errors import ControllerError
from strom.node.controller.placement import place_replicas

TopicPartition = tuple[str, int]
Assignment = dict[TopicPartition, tuple[int, ...]]


class ReassignmentFileError(Exception):
    """A reassignment or topics file the command cannot use; the message says why."""


def _load(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise ReassignmentFileError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ReassignmentFileError(f"{path} is not JSON: {exc}") from exc


def parse_reassignment(document: Any, source: str = "the reassignment file") -> Assignment:
    """Kafka's reassignment JSON as {(topic, partition): target replicas}."""
    if not isinstance(document, dict) or not isinstance(document.get("partitions"), list):
        raise ReassignmentFileError(
            f'{source} must be an object with a "partitions" list, as '
            '{"version": 1, "partitions": [{"topic": "t", "partition": 0, "replicas": [1, 2]}]}'
        )
    version = document.get("version", 1)
    if version != 1:
        raise ReassignmentFileError(f"{source}: version {version!r} is not supported (only 1)")
    plan: Assignment = {}
    for number, item in enumerate(document["partitions"], start=1):
        where = f"{source}, partition entry {number}"
        if not isinstance(item, dict):
            raise ReassignmentFileError(f"{where} is not an object")
        topic, partition, replicas = item.get("topic"), item.get("partition"), item.get("replicas")
        if not isinstance(topic, str) or not topic:
            raise ReassignmentFileError(f'{where}: "topic" must be a non-empty string')
        if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
            raise ReassignmentFileError(f'{where}: "partition" must be a non-negative integer')
        if (
            not isinstance(replicas, list)
            or not replicas
            or not all(isinstance(r, int) and not isinstance(r, bool) for r in replicas)
        ):
            raise ReassignmentFileError(f'{where}: "replicas" must be a non-empty list of ids')
        if len(set(replicas)) != len(replicas):
            raise ReassignmentFileError(f"{where}: replicas {replicas} name a broker twice")
        log_dirs = item.get("log_dirs")
        if log_dirs is not None and (
            not isinstance(log_dirs, list)
            or len(log_dirs) != len(replicas)
            or any(d != "any" for d in log_dirs)
        ):
            raise ReassignmentFileError(
                f'{where}: "log_dirs" must be "any" for each replica (strom does not move '
                "replicas between a broker's log directories)"
            )
        key = (topic, partition)
        if key in plan:
            raise ReassignmentFileError(f"{where}: {topic}-{partition} appears twice")
        plan[key] = tuple(replicas)
    if not plan:
        raise ReassignmentFileError(f"{source} names no partitions")
    return plan


def parse_topics_to_move(document: Any, source: str = "the topics file") -> list[str]:
    if not isinstance(document, dict) or not isinstance(document.get("topics"), list):
        raise ReassignmentFileError(
            f'{source} must be an object with a "topics" list, as '
            '{"version": 1, "topics": [{"topic": "t"}]}'
        )
    topics = []
    for item in document["topics"]:
        if not isinstance(item, dict) or not isinstance(item.get("topic"), str):
            raise ReassignmentFileError(f'{source}: each entry must be {{"topic": "name"}}')
        topics.append(item["topic"])
    if not topics:
        raise ReassignmentFileError(f"{source} names no topics")
    return topics


def parse_broker_list(text: str) -> list[int]:
    try:
        brokers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ReassignmentFileError(
            f"--broker-list expects broker ids separated by commas, got {text!r}"
        ) from exc
    if not brokers or len(set(brokers)) != len(brokers):
        raise ReassignmentFileError(f"--broker-list {text!r} must name distinct brokers")
    return brokers


def assignment_json(assignment: Mapping[TopicPartition, Sequence[int]]) -> str:
    """Kafka's reassignment JSON for `assignment` (one line, sorted, as Kafka prints it)."""
    return json.dumps(
        {
            "version": 1,
            "partitions": [
                {"topic": t, "partition": p, "replicas": list(r), "log_dirs": ["any"] * len(r)}
                for (t, p), r in sorted(assignment.items())
            ],
        }
    )


def propose(
    current: Mapping[TopicPartition, Sequence[int]],
    brokers: Sequence[int],
    racks: Mapping[int, str],
) -> Assignment:
    """--generate: every partition of the topics in `current` placed afresh on `brokers`, with
    each topic's replication factor, rack-aware as topic creation is, each topic starting where
    the previous one left off so leaders spread."""
    by_topic: dict[str, list[int]] = {}
    factor: dict[str, int] = {}
    for (topic, partition), replicas in current.items():
        by_topic.setdefault(topic, []).append(partition)
        factor[topic] = len(replicas)
    proposal: Assignment = {}
    start = 0
    for topic in sorted(by_topic):
        partitions = sorted(by_topic[topic])
        try:
            placed = place_replicas(brokers, len(partitions), factor[topic], start, racks=racks)
        except ControllerError as exc:
            raise ReassignmentFileError(f"topic {topic!r}: {exc.message}") from exc
        proposal.update({(topic, p): r for p, r in zip(partitions, placed, strict=True)})
        start += len(partitions)
    return proposal


def verify(
    plan: Mapping[TopicPartition, Sequence[int]],
    ongoing: Mapping[TopicPartition, Any],
    current: Mapping[TopicPartition, Sequence[int]],
) -> tuple[list[str], bool]:
    """The verdict on each move of `plan` (Kafka's wording) and whether all are complete."""
    lines = []
    done = True
    for (topic, partition), target in sorted(plan.items()):
        name = f"{topic}-{partition}"
        if (topic, partition) in ongoing:
            lines.append(f"Reassignment of partition {name} is still in progress.")
            done = False
        elif (topic, partition) not in current:
            lines.append(f"Partition {name} does not exist.")
            done = False
        elif tuple(current[(topic, partition)]) == tuple(target):
            lines.append(f"Reassignment of partition {name} is completed.")
        else:
            lines.append(
                f"There is no active reassignment of partition {name}, but replica set is "
                f"{list(current[(topic, partition)])} rather than {list(target)}."
            )
            done = False
    return lines, done


# ---- the command -------------------------------------------------------------------------


def current_assignment(admin: Any, topics: Sequence[str]) -> Assignment:
    """Where each partition of `topics` is going: its target replicas (those it has, when no
    move is under way), as Kafka's tool shows them."""
    ongoing = admin.list_partition_reassignments()
    assignment: Assignment = {}
    for topic in admin.describe_topics(list(topics)):
        for p in topic.partitions:
            moving = ongoing.get((topic.name, p.partition))
            assignment[(topic.name, p.partition)] = (
                moving.target_replicas if moving is not None else tuple(p.replicas)
            )
    return assignment


def _reassign(args: argparse.Namespace, admin_factory: Callable[[], Any]) -> int:
    if args.list:
        with admin_factory() as admin:
            ongoing = admin.list_partition_reassignments()
        if not ongoing:
            print("No partition reassignments found.")
        for (topic, partition), move in sorted(ongoing.items()):
            print(
                f"{topic}-{partition}: replicas {list(move.replicas)}, adding "
                f"{list(move.adding_replicas)}, removing {list(move.removing_replicas)}"
            )
        return 0
    if args.generate:
        if not args.topics_to_move_json_file or not args.broker_list:
            raise ReassignmentFileError(
                "--generate needs --topics-to-move-json-file and --broker-list"
            )
        topics = parse_topics_to_move(
            _load(args.topics_to_move_json_file), args.topics_to_move_json_file
        )
        brokers = parse_broker_list(args.broker_list)
        with admin_factory() as admin:
            current = current_assignment(admin, topics)
            racks = {b.node_id: b.rack for b in admin.describe_cluster().brokers if b.rack}
        print("Current partition replica assignment")
        print(assignment_json(current))
        print()
        print("Proposed partition reassignment configuration")
        print(assignment_json(propose(current, brokers, racks)))
        return 0
    if not args.reassignment_json_file:
        raise ReassignmentFileError(
            "--execute, --verify and --cancel need --reassignment-json-file"
        )
    plan = parse_reassignment(_load(args.reassignment_json_file), args.reassignment_json_file)
    names = ",".join(f"{t}-{p}" for t, p in sorted(plan))
    with admin_factory() as admin:
        if args.execute:
            print("Current partition replica assignment\n")
            print(assignment_json(current_assignment(admin, sorted({t for t, _ in plan}))))
            print("\nSave this to use as the --reassignment-json-file option during rollback")
            admin.alter_partition_reassignments(dict(plan))
            print(f"Successfully started partition reassignments for {names}")
            return 0
        if args.cancel:
            ongoing = admin.list_partition_reassignments()
            moving = {tp: None for tp in plan if tp in ongoing}
            if moving:
                admin.alter_partition_reassignments(moving)
                cancelled = ",".join(f"{t}-{p}" for t, p in sorted(moving))
                print(f"Successfully cancelled partition reassignments for: {cancelled}")
            else:
                print("None of the partitions in the file is being reassigned.")
            return 0
        ongoing = admin.list_partition_reassignments()
        current = {
            (topic.name, p.partition): tuple(p.replicas)
            for topic in admin.describe_topics(sorted({t for t, _ in plan}))
            for p in topic.partitions
        }
    lines, done = verify(plan, ongoing, current)
    print("Status of partition reassignment:")
    print("\n".join(lines))
    return 0 if done else 1


def add_commands(sub: Any, client: Callable[[argparse.ArgumentParser], Any]) -> None:
    from strom.node.cli import _admin

    partitions = sub.add_parser("partitions", help="move partitions between brokers")
    partitions_sub = partitions.add_subparsers(dest="action", required=True)
    reassign = client(
        partitions_sub.add_parser(
            "reassign", help="Kafka's kafka-reassign-partitions: generate, execute, verify, cancel"
        )
    )
    mode = reassign.add_mutually_exclusive_group(required=True)
    mode.add_argument("--generate", action="store_true", help="propose a placement on brokers")
    mode.add_argument("--execute", action="store_true", help="start the moves in the file")
    mode.add_argument("--verify", action="store_true", help="exit 0 once every move completed")
    mode.add_argument("--cancel", action="store_true", help="cancel the moves in the file")
    mode.add_argument("--list", action="store_true", help="the moves in progress")
    reassign.add_argument("--reassignment-json-file", metavar="FILE")
    reassign.add_argument("--topics-to-move-json-file", metavar="FILE")
    reassign.add_argument("--broker-list", metavar="IDS", help="e.g. 2,3,4 (with --generate)")
    reassign.set_defaults(handler=lambda args: _reassign(args, lambda: _admin(args)))
