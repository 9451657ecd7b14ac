"""`strom partitions reassign` (Kafka's kafka-reassign-partitions, with its JSON format),
`strom brokers decommission|unregister` and `strom cluster rebalance`.

    strom partitions reassign --generate --topics-to-move-json-file topics.json --broker-list 2,3,4
    strom partitions reassign --reassignment-json-file plan.json --execute [--throttle B/S]
        [--disallow-replication-factor-change]
    strom partitions reassign --reassignment-json-file plan.json --verify
    strom partitions reassign --reassignment-json-file plan.json --cancel
    strom partitions reassign --list

The reassignment file is Kafka's: {"version": 1, "partitions": [{"topic": "t", "partition": 0,
"replicas": [2, 3, 4]}]} (`log_dirs`, when present, must be "any": strom places a replica in
the broker's own log directory). The topics file for --generate is {"version": 1, "topics":
[{"topic": "t"}]}. --execute prints the current assignment first, to save for a rollback;
--verify exits 0 only when every move in the file has completed. As Kafka's tool does,
`--throttle` sets the leader and follower replication throttle rates (dynamic broker configs,
node/dynamic_config.py) on every broker the moves involve, and the --verify that finds every move
complete removes those rates from every broker.

    strom brokers decommission 4 [--dry-run]   # move every replica off broker 4, wait, and
                                               # unregister it once it is stopped
    strom brokers unregister 4                 # a stopped broker that hosts nothing
    strom cluster rebalance [--dry-run]        # even out replicas, then preferred leaders

Plans are made by node/reassign_plan.py; the controller carries the moves out.

The pure parts (parsing, the proposal, the verify verdicts) are functions of plain values; the
handlers only talk to the cluster through the SDK.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from strom.node import reassign_plan
from strom.node.cli.common import CommandError, admin_client, client_arguments

TopicPartition = tuple[str, int]
Assignment = dict[TopicPartition, tuple[int, ...]]


class ReassignmentFileError(CommandError):
    """A reassignment or topics file the command cannot use, or a plan that cannot be made,
    or moves that did not finish in time; the message says why."""


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


THROTTLE_KEYS = ("leader.replication.throttled.rate", "follower.replication.throttled.rate")


def involved_brokers(
    plan: Mapping[TopicPartition, Sequence[int]], current: Mapping[TopicPartition, Sequence[int]]
) -> list[int]:
    """The brokers a move sends data from or to: the partitions' replicas now and after."""
    return sorted({b for tp, target in plan.items() for b in (*target, *current.get(tp, ()))})


def set_move_throttle(admin: Any, brokers: Sequence[int], bytes_per_s: int) -> None:
    rate = str(bytes_per_s)
    for broker in brokers:
        admin.alter_broker_configs(broker, {key: rate for key in THROTTLE_KEYS})


def clear_move_throttles(admin: Any) -> list[int]:
    """Remove the throttle rates from every registered broker (Kafka's tool clears them all,
    not knowing which an earlier --execute set); the brokers cleared."""
    brokers = sorted(b.node_id for b in admin.describe_cluster().brokers)
    for broker in brokers:
        admin.alter_broker_configs(broker, {}, THROTTLE_KEYS)
    return brokers


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
    if args.throttle is not None and not args.execute:
        raise ReassignmentFileError("--throttle goes with --execute")
    if args.disallow_replication_factor_change and not args.execute:
        raise ReassignmentFileError("--disallow-replication-factor-change goes with --execute")
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
        try:
            proposal = reassign_plan.generate(current, brokers, racks)
        except reassign_plan.PlanError as exc:
            raise ReassignmentFileError(str(exc)) from exc
        print(assignment_json(proposal))
        return 0
    if not args.reassignment_json_file:
        raise ReassignmentFileError(
            "--execute, --verify and --cancel need --reassignment-json-file"
        )
    plan = parse_reassignment(_load(args.reassignment_json_file), args.reassignment_json_file)
    names = ",".join(f"{t}-{p}" for t, p in sorted(plan))
    with admin_factory() as admin:
        if args.execute:
            before = current_assignment(admin, sorted({t for t, _ in plan}))
            print("Current partition replica assignment\n")
            print(assignment_json(before))
            print("\nSave this to use as the --reassignment-json-file option during rollback")
            if args.throttle is not None:
                # Before the moves start, so their first bytes are already throttled.
                set_move_throttle(admin, involved_brokers(plan, before), args.throttle)
                print(
                    "Warning: You must run --verify periodically, until the reassignment "
                    "completes, to ensure the throttle is removed."
                )
                print(f"The inter-broker throttle limit was set to {args.throttle} B/s")
            admin.alter_partition_reassignments(
                dict(plan),
                allow_replication_factor_change=not args.disallow_replication_factor_change,
            )
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
        if done:
            cleared = clear_move_throttles(admin)
            print(f"Clearing broker-level throttles on brokers {','.join(map(str, cleared))}")
    return 0 if done else 1


def _active_brokers(admin: Any) -> tuple[list[int], dict[int, str], Any]:
    description = admin.describe_cluster()
    active = [
        b.node_id for b in description.brokers if not b.fenced and not b.in_controlled_shutdown
    ]
    racks = {b.node_id: b.rack for b in description.brokers if b.rack}
    return active, racks, description


def _whole_cluster(admin: Any) -> Assignment:
    return current_assignment(admin, admin.list_topics(include_internal=True))


def _print_plan(
    before: Mapping[TopicPartition, Sequence[int]], plan: Assignment, brokers: Sequence[int]
) -> None:
    after = {**before, **plan}
    old, new = reassign_plan.load_table(before, brokers), reassign_plan.load_table(after, brokers)
    print(f"{len(plan)} partition(s) to move")
    print("broker  replicas  preferred leaders")
    for broker in sorted(set(old) | set(new)):
        (r0, l0), (r1, l1) = old.get(broker, (0, 0)), new.get(broker, (0, 0))
        print(f"{broker:>6}  {r0:>3} -> {r1:<3} {l0:>3} -> {l1:<3}")
    if plan:
        print("Proposed partition reassignment configuration")
        print(assignment_json(plan))


def wait_for_moves(admin: Any, plan: Mapping[TopicPartition, Any], timeout_s: float) -> None:
    """Until none of `plan`'s partitions is still moving, printing progress."""
    deadline = time.monotonic() + timeout_s
    remaining = len(plan)
    while True:
        ongoing = admin.list_partition_reassignments()
        moving = sorted(tp for tp in plan if tp in ongoing)
        if not moving:
            return
        if len(moving) != remaining:
            remaining = len(moving)
            print(f"{remaining} move(s) still in progress")
        if time.monotonic() > deadline:
            names = ", ".join(f"{t}-{p}" for t, p in moving[:10])
            raise ReassignmentFileError(
                f"{len(moving)} move(s) not finished after {timeout_s:.0f} s ({names}); they "
                "continue: follow them with `strom partitions reassign --list`"
            )
        time.sleep(0.5)


def _decommission(args: argparse.Namespace, admin_factory: Callable[[], Any]) -> int:
    with admin_factory() as admin:
        active, racks, description = _active_brokers(admin)
        if args.broker not in {b.node_id for b in description.brokers}:
            raise ReassignmentFileError(f"broker {args.broker} is not registered")
        current = _whole_cluster(admin)
        try:
            plan = reassign_plan.decommission(current, args.broker, active, racks)
        except reassign_plan.PlanError as exc:
            raise ReassignmentFileError(str(exc)) from exc
        _print_plan(current, plan, sorted(set(active) | {args.broker}))
        if args.dry_run:
            return 0
        if plan:
            admin.alter_partition_reassignments(dict(plan))
            wait_for_moves(admin, plan, args.timeout_s)
        print(f"Broker {args.broker} holds no replicas.")
        broker = next(b for b in admin.describe_cluster().brokers if b.node_id == args.broker)
        if not broker.fenced:
            print(
                f"It is still running: stop it, then run `strom brokers unregister {args.broker}` "
                "(or this command again)."
            )
            return 0
        admin.unregister_broker(args.broker)
    print(f"Broker {args.broker} unregistered.")
    return 0


def _unregister(args: argparse.Namespace, admin_factory: Callable[[], Any]) -> int:
    with admin_factory() as admin:
        admin.unregister_broker(args.broker)
    print(f"Broker {args.broker} unregistered.")
    return 0


def _rebalance(args: argparse.Namespace, admin_factory: Callable[[], Any]) -> int:
    with admin_factory() as admin:
        active, racks, _ = _active_brokers(admin)
        current = _whole_cluster(admin)
        if admin.list_partition_reassignments():
            raise ReassignmentFileError(
                "partitions are being moved already (`strom partitions reassign --list`): "
                "rebalance once they finish"
            )
        try:
            plan = reassign_plan.rebalance(current, active, racks)
        except reassign_plan.PlanError as exc:
            raise ReassignmentFileError(str(exc)) from exc
        _print_plan(current, plan, active)
        if args.dry_run or not plan:
            return 0
        admin.alter_partition_reassignments(dict(plan))
        wait_for_moves(admin, plan, args.timeout_s)
        results = admin.elect_preferred_leaders(sorted(plan))
    moved = sum(1 for error in results.values() if error == "NONE")
    print(f"Rebalanced: {len(plan)} partition(s) moved, {moved} leadership(s) moved.")
    return 0


def _positive_rate(text: str) -> int:
    try:
        rate = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes/s") from None
    if rate < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte/s, got {rate}")
    return rate


def add_commands(sub: Any) -> None:
    partitions = sub.add_parser("partitions", help="move partitions between brokers")
    partitions_sub = partitions.add_subparsers(dest="action", required=True)
    reassign = client_arguments(
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
    reassign.add_argument(
        "--throttle",
        type=_positive_rate,
        metavar="B/S",
        help="with --execute: cap the moves' replication at this many bytes per second per "
        "broker (removed by the --verify that finds them complete)",
    )
    reassign.add_argument(
        "--disallow-replication-factor-change",
        action="store_true",
        help="with --execute: refuse any move that would change a partition's replica count "
        "(KIP-860)",
    )
    reassign.set_defaults(handler=lambda args: _reassign(args, lambda: admin_client(args)))

    brokers = sub.add_parser("brokers", help="retire brokers").add_subparsers(
        dest="action", required=True
    )
    decommission = client_arguments(
        brokers.add_parser(
            "decommission",
            help="move every replica off a broker, then unregister it once it is stopped",
        )
    )
    decommission.add_argument("broker", type=int)
    decommission.add_argument("--dry-run", action="store_true", help="print the plan only")
    decommission.add_argument("--timeout-s", type=float, default=600.0,
                              help="how long to wait for the moves (they go on after it)")  # fmt: skip
    decommission.set_defaults(handler=lambda args: _decommission(args, lambda: admin_client(args)))
    unregister = client_arguments(
        brokers.add_parser("unregister", help="remove a stopped broker that hosts nothing")
    )
    unregister.add_argument("broker", type=int)
    unregister.set_defaults(handler=lambda args: _unregister(args, lambda: admin_client(args)))


def add_rebalance_command(cluster_sub: Any) -> None:
    """`strom cluster rebalance`, beside the local-cluster commands."""
    rebalance = client_arguments(
        cluster_sub.add_parser(
            "rebalance", help="even out replicas and preferred leaders across the active brokers"
        )
    )
    rebalance.add_argument("--dry-run", action="store_true", help="print the plan only")
    rebalance.add_argument("--timeout-s", type=float, default=600.0,
                           help="how long to wait for the moves (they go on after it)")  # fmt: skip
    rebalance.set_defaults(handler=lambda args: _rebalance(args, lambda: admin_client(args)))
