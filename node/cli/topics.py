"""`strom topics create|list|describe|alter|delete|delete-records|elect-leaders`, with Kafka's
kafka-topics flags and output (and kafka-delete-records' offset file).

Partition and replication counts are checked by the parser and topic configs against the topic
config table, before any connection: a bad value is refused at once, not after the bootstrap's
timeout.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from strom.client.admin import NewTopic
from strom.client.errors import StromError
from strom.node.cli.common import (
    CommandError,
    admin_client,
    client_arguments,
    count,
    count_or_default,
    key_values,
)
from strom.node.cli.output import print_json
from strom.node.topic_config import InvalidTopicConfig, parse_topic_config


def _topic_configs(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    """`key=value` topic configs, each checked against the topic config table before any
    connection is made (the broker checks them again)."""
    configs = key_values(items, flag)
    for key, value in configs.items():
        try:
            parse_topic_config(key, value)
        except InvalidTopicConfig as exc:
            raise CommandError(f"{flag}: {exc}") from None
    return configs


def _topics_create(args: argparse.Namespace) -> int:
    configs = _topic_configs(args.config, "--config")
    with admin_client(args) as admin:
        try:
            admin.create_topics(
                [NewTopic(args.topic, args.partitions, args.replication_factor, configs)]
            )
        except StromError as exc:
            if args.if_not_exists and exc.name == "TOPIC_ALREADY_EXISTS":
                return 0
            raise
    print(f"Created topic {args.topic}.")
    return 0


def _topics_list(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        names = admin.list_topics(include_internal=True)
    if args.output == "json":
        print_json(names)
    else:
        for name in names:
            print(name)
    return 0


def _topics_describe(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        topics = admin.describe_topics([args.topic] if args.topic else None)
        brokers = admin.describe_cluster().brokers
        alive = {b.node_id for b in brokers if not b.fenced}
        racks = {b.node_id: b.rack for b in brokers if b.rack}
        moves = admin.list_partition_reassignments()
        mins = {
            t.name: int(c.get("min.insync.replicas", "1"))
            for t, c in zip(
                topics,
                [admin.describe_topic_configs([t.name]).get(t.name, {}) for t in topics],
                strict=True,
            )
        }
    rows = []
    for topic in topics:
        parts = []
        for p in topic.partitions:
            # Kafka's rule: replicas still being added do not make a partition under-replicated.
            move = moves.get((topic.name, p.partition))
            adding = move.adding_replicas if move is not None else ()
            under_replicated = len(p.isr) < len(p.replicas) - len(adding)
            unavailable = p.leader < 0 or p.leader not in alive
            under_min = len(p.isr) < mins[topic.name]
            if args.under_replicated_partitions and not under_replicated:
                continue
            if args.unavailable_partitions and not unavailable:
                continue
            if args.under_min_isr_partitions and not under_min:
                continue
            parts.append(p)
        rows.append((topic, parts))
    if args.output == "json":
        print_json(
            [
                {
                    "topic": t.name,
                    "topic_id": t.topic_id,
                    "partition_count": len(t.partitions),
                    "replication_factor": t.replication_factor,
                    "configs": dict(t.configs),
                    "partitions": [
                        {
                            "partition": p.partition,
                            "leader": p.leader,
                            "replicas": list(p.replicas),
                            "isr": list(p.isr),
                            "offline_replicas": list(p.offline_replicas),
                            **_move_fields(moves.get((t.name, p.partition))),
                            "racks": [racks.get(r, "") for r in p.replicas],
                        }
                        for p in parts
                    ],
                }
                for t, parts in rows
            ]
        )
        return 0
    filtering = (
        args.under_replicated_partitions
        or args.unavailable_partitions
        or args.under_min_isr_partitions
    )
    for topic, parts in rows:
        if not filtering:
            configs = ",".join(f"{k}={v}" for k, v in sorted(topic.configs.items()))
            print(
                f"Topic: {topic.name}\tTopicId: {topic.topic_id}\tPartitionCount: "
                f"{len(topic.partitions)}\tReplicationFactor: {topic.replication_factor}\t"
                f"Configs: {configs}"
            )
        for p in parts:
            leader = p.leader if p.leader >= 0 else "none"
            offline = f"\tOffline: {','.join(map(str, p.offline_replicas))}"
            move = moves.get((topic.name, p.partition))
            moving = (
                f"\tAdding Replicas: {','.join(map(str, move.adding_replicas))}"
                f"\tRemoving Replicas: {','.join(map(str, move.removing_replicas))}"
                if move is not None
                else ""
            )
            rack_list = f"\tRacks: {','.join(racks.get(r, '-') for r in p.replicas)}"
            print(
                f"\tTopic: {topic.name}\tPartition: {p.partition}\tLeader: {leader}\t"
                f"Replicas: {','.join(map(str, p.replicas))}\tIsr: {','.join(map(str, p.isr))}"
                f"{offline if p.offline_replicas else ''}{moving}{rack_list if racks else ''}"
            )
    return 0


def _move_fields(move: Any) -> dict[str, list[int]]:
    if move is None:
        return {"adding_replicas": [], "removing_replicas": []}
    return {
        "adding_replicas": list(move.adding_replicas),
        "removing_replicas": list(move.removing_replicas),
    }


def _topics_delete(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        admin.delete_topics([args.topic])
    print(f"Deleted topic {args.topic}.")
    return 0


def _topics_alter(args: argparse.Namespace) -> int:
    configs = _topic_configs(args.config, "--config")
    with admin_client(args) as admin:
        if configs or args.delete_config:
            admin.alter_topic_configs(args.topic, configs, args.delete_config or [])
        if args.partitions is not None:
            admin.create_partitions(args.topic, args.partitions)
    print(f"Altered topic {args.topic}.")
    return 0


def parse_delete_records(document: Any, source: str) -> dict[tuple[str, int], int]:
    """kafka-delete-records's offset file: {"partitions": [{"topic": "t", "partition": 0,
    "offset": 3}], "version": 1}; offset -1 deletes every committed record."""
    items = document.get("partitions") if isinstance(document, dict) else None
    if not isinstance(items, list) or not items:
        raise CommandError(
            f'{source} must hold a non-empty "partitions" list, as {{"partitions": '
            '[{"topic": "t", "partition": 0, "offset": 3}], "version": 1}'
        )
    offsets: dict[tuple[str, int], int] = {}
    for number, item in enumerate(items, start=1):
        ok = (
            isinstance(item, dict)
            and isinstance(item.get("topic"), str)
            and isinstance(item.get("partition"), int)
            and isinstance(item.get("offset"), int)
            and item["partition"] >= 0
            and item["offset"] >= -1
        )
        if not ok:
            raise CommandError(
                f"{source}, entry {number}: needs a topic, a partition >= 0 and an offset >= -1"
            )
        key = (item["topic"], item["partition"])
        if key in offsets:
            raise CommandError(f"{source}: {key[0]}-{key[1]} appears twice")
        offsets[key] = item["offset"]
    return offsets


def _topics_delete_records(args: argparse.Namespace) -> int:
    try:
        document = json.loads(Path(args.offset_json_file).read_text())
    except OSError as exc:
        raise CommandError(f"cannot read {args.offset_json_file}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise CommandError(f"{args.offset_json_file} is not JSON: {exc}") from exc
    offsets = parse_delete_records(document, args.offset_json_file)
    print("Executing records delete operation")
    with admin_client(args) as admin:
        low = admin.delete_records(offsets)
    print("Records delete operation completed:")
    for (topic, partition), offset in sorted(low.items()):
        print(f"partition: {topic}-{partition}\tlow_watermark: {offset}")
    return 0


def _topics_elect_leaders(args: argparse.Namespace) -> int:
    partitions = None
    if args.topic:
        with admin_client(args) as admin:
            topic = admin.describe_topics([args.topic])[0]
        wanted = (
            [args.partition]
            if args.partition is not None
            else [p.partition for p in topic.partitions]
        )
        partitions = [(args.topic, p) for p in wanted]
    with admin_client(args) as admin:
        results = admin.elect_leaders(args.election_type, partitions)
    for (topic_name, partition), error in sorted(results.items()):
        outcome = "elected" if error == "NONE" else error
        print(f"{topic_name}-{partition}: {outcome}")
    return 0


def add_commands(sub: Any) -> None:
    topics = sub.add_parser("topics", help="create, list, describe, alter, delete topics")
    topics_sub = topics.add_subparsers(dest="action", required=True)
    create = client_arguments(topics_sub.add_parser("create"))
    create.add_argument("topic")
    # Checked before any connection: a bad count or config is reported at once.
    create.add_argument("--partitions", type=count_or_default, default=-1)
    create.add_argument("--replication-factor", type=count_or_default, default=-1)
    create.add_argument("--config", action="append", help="topic config key=value")
    create.add_argument("--if-not-exists", action="store_true")
    create.set_defaults(handler=_topics_create)
    client_arguments(topics_sub.add_parser("list")).set_defaults(handler=_topics_list)
    describe = client_arguments(topics_sub.add_parser("describe"))
    describe.add_argument("topic", nargs="?")
    describe.add_argument("--under-replicated-partitions", action="store_true")
    describe.add_argument("--unavailable-partitions", action="store_true")
    describe.add_argument("--under-min-isr-partitions", action="store_true")
    describe.set_defaults(handler=_topics_describe)
    delete = client_arguments(topics_sub.add_parser("delete"))
    delete.add_argument("topic")
    delete.set_defaults(handler=_topics_delete)
    alter = client_arguments(topics_sub.add_parser("alter"))
    alter.add_argument("topic")
    alter.add_argument("--config", action="append", help="set topic config key=value")
    alter.add_argument("--delete-config", action="append", help="remove a topic config override")
    alter.add_argument("--partitions", type=count, help="new partition count (only grows)")
    alter.set_defaults(handler=_topics_alter)
    delete_records = client_arguments(
        topics_sub.add_parser(
            "delete-records", help="delete records before offsets (kafka-delete-records)"
        )
    )
    delete_records.add_argument("--offset-json-file", required=True, metavar="FILE")
    delete_records.set_defaults(handler=_topics_delete_records)
    elect = client_arguments(
        topics_sub.add_parser("elect-leaders", help="preferred (or unclean) leader election")
    )
    elect.add_argument("--topic")
    elect.add_argument("--partition", type=int)
    elect.add_argument("--election-type", choices=("preferred", "unclean"), default="preferred",
                       help="unclean: a partition with no live leader takes any live replica, "
                       "losing what only its dead ISR held")  # fmt: skip
    elect.set_defaults(handler=_topics_elect_leaders)
