"""`strom groups list|describe|reset-offsets|delete`: Kafka's kafka-consumer-groups, with its
tables (offsets and lag, `--members`, `--state`) and its dry-run-first offset reset.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from strom.client.offset_reset import ResetRequest, plan_offsets_reset
from strom.node.cli.common import CommandError, admin_client, client_arguments
from strom.node.cli.output import print_json, print_table


def _groups_list(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        groups = admin.list_groups()
    if args.output == "json":
        print_json([{"group": g, "state": s, "members": n} for g, s, n in groups])
        return 0
    for group_id, _, _ in groups:
        print(group_id)
    return 0


def _groups_describe(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        group = admin.describe_group(args.group)
        offsets = admin.list_group_offsets(args.group)
        owner = {tp: m for m in group.members for tp in m.assignment}
        partitions = sorted(set(offsets) | set(owner))
        ends = admin.list_offsets(partitions, -1) if partitions else {}
    if args.output == "json":
        print_json(
            {
                "group": group.group_id,
                "state": group.state,
                "epoch": group.group_epoch,
                "assignor": group.assignor,
                "coordinator": group.coordinator_id,
                "members": [
                    {"member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                     "epoch": m.member_epoch, "assignment": [list(tp) for tp in m.assignment]}
                    for m in group.members
                ],
                "offsets": [
                    {"topic": t, "partition": p, "current_offset": offsets.get((t, p), -1),
                     "log_end_offset": ends.get((t, p), -1),
                     "lag": _lag(offsets.get((t, p), -1), ends.get((t, p), -1))}
                    for t, p in partitions
                ],
            }
        )  # fmt: skip
        return 0
    if args.state:
        print_table(
            ["GROUP", "COORDINATOR", "ASSIGNOR", "STATE", "#MEMBERS"],
            [[group.group_id, group.coordinator_id, group.assignor, group.state,
              len(group.members)]],
        )  # fmt: skip
        return 0
    if args.members:
        print_table(
            ["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT"],
            [[group.group_id, m.member_id, m.host, m.client_id, len(m.assignment),
              ",".join(f"{t}:{p}" for t, p in m.assignment) or "-"]
             for m in group.members],
        )  # fmt: skip
        return 0
    table = []
    for topic, partition in partitions:
        member = owner.get((topic, partition))
        current = offsets.get((topic, partition), -1)
        end = ends.get((topic, partition), -1)
        table.append(
            [group.group_id, topic, partition, current if current >= 0 else "-", end,
             _lag(current, end), member.member_id if member else "-",
             member.host if member else "-", member.client_id if member else "-"]
        )  # fmt: skip
    print_table(
        ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID",
         "HOST", "CLIENT-ID"],
        table,
    )  # fmt: skip
    if not group.members:
        print(f"\nConsumer group '{group.group_id}' has no active members.")
    return 0


def _lag(current: int, end: int) -> int | str:
    return end - current if current >= 0 and end >= 0 else "-"


def _groups_reset_offsets(args: argparse.Namespace) -> int:
    if args.to_earliest:
        request = ResetRequest("to-earliest")
    elif args.to_latest:
        request = ResetRequest("to-latest")
    elif args.to_offset is not None:
        request = ResetRequest("to-offset", args.to_offset)
    elif args.shift_by is not None:
        request = ResetRequest("shift-by", args.shift_by)
    elif args.to_datetime is not None:
        try:
            moment = datetime.fromisoformat(args.to_datetime)
        except ValueError as exc:
            raise CommandError(
                f"--to-datetime: {exc}; use ISO 8601, e.g. 2026-11-27T10:00:00"
            ) from exc
        request = ResetRequest("to-datetime", int(moment.timestamp() * 1000))
    else:
        raise CommandError(
            "choose one of --to-earliest, --to-latest, --to-offset N, --shift-by N, --to-datetime T"
        )
    with admin_client(args) as admin:
        group = admin.describe_group(args.group) if args.execute else None
        if group is not None and group.members:
            raise CommandError(
                f"group {args.group!r} has {len(group.members)} active member(s): offsets can be "
                "reset only while the group is empty; stop its consumers first"
            )
        committed = admin.list_group_offsets(args.group)
        if args.all_topics:
            topics = sorted({t for t, _ in committed})
        elif args.topic:
            topics = [args.topic]
        else:
            raise CommandError("say which offsets to reset: --topic T or --all-topics")
        partitions = []
        for topic in topics:
            (description,) = admin.describe_topics([topic])
            partitions += [(topic, p.partition) for p in description.partitions]
        earliest = admin.list_offsets(partitions, -2)
        latest = admin.list_offsets(partitions, -1)
        by_time = None
        if request.strategy == "to-datetime":
            assert request.value is not None
            by_time = admin.list_offsets(partitions, request.value)
        new = plan_offsets_reset(request, partitions, committed, earliest, latest, by_time)
        if args.execute:
            admin.alter_group_offsets(args.group, new)
    print_table(
        ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"],
        [
            [args.group, topic, partition, offset]
            for (topic, partition), offset in sorted(new.items())
        ],
    )
    if not args.execute:
        print("\n(dry run: add --execute to apply)")
    return 0


def _groups_delete(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        admin.delete_groups([args.group])
    print(f"Deleted consumer group '{args.group}'.")
    return 0


def add_commands(sub: Any) -> None:
    groups = sub.add_parser("groups", help="consumer groups").add_subparsers(
        dest="action", required=True
    )
    client_arguments(groups.add_parser("list")).set_defaults(handler=_groups_list)
    gdescribe = client_arguments(
        groups.add_parser("describe", help="offsets, lag and members of a group")
    )
    gdescribe.add_argument("group")
    gdescribe.add_argument("--members", action="store_true")
    gdescribe.add_argument("--state", action="store_true")
    gdescribe.set_defaults(handler=_groups_describe)
    reset = client_arguments(
        groups.add_parser("reset-offsets", help="move a group's committed offsets")
    )
    reset.add_argument("group")
    reset.add_argument("--topic")
    reset.add_argument("--all-topics", action="store_true")
    reset.add_argument("--to-earliest", action="store_true")
    reset.add_argument("--to-latest", action="store_true")
    reset.add_argument("--to-offset", type=int)
    reset.add_argument("--shift-by", type=int)
    reset.add_argument("--to-datetime")
    reset.add_argument("--execute", action="store_true", help="apply (default: dry run)")
    reset.set_defaults(handler=_groups_reset_offsets)
    gdelete = client_arguments(groups.add_parser("delete"))
    gdelete.add_argument("group")
    gdelete.set_defaults(handler=_groups_delete)
