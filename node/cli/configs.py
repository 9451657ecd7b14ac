"""`strom configs` (Kafka's kafka-configs) and `strom log-dirs describe` (kafka-log-dirs).

    strom configs describe --entity-type brokers [--entity-name 1 | --entity-default] [--all]
    strom configs alter --entity-type brokers (--entity-name 1 | --entity-default) \\
        [--add-config log.retention.ms=3600000,follower.replication.throttled.rate=1048576] \\
        [--delete-config log.retention.ms]
    strom configs describe|alter --entity-type topics --entity-name T ...
    strom log-dirs describe [--broker-list 1,2] [--topic-list t1,t2] [--output text|json]

Broker configs changed here are dynamic (node/dynamic_config.py): every broker applies them
without a restart. `describe` without --all lists the dynamic values, as Kafka's tool does;
without --entity-name or --entity-default it describes every broker. `--add-config` takes Kafka's
syntax: `k=v,k2=v2`, with a value holding commas in brackets (`cleanup.policy=[compact,delete]`).

log-dirs prints one line per replica with its size, offsets and lag; `--output json` prints
kafka-log-dirs' output (`{"version":1,"brokers":[{"broker":1,"logDirs":[...]}]}` after two
lines of progress), so scripts written for it read it. `configs describe --output json` prints
{entity: {key: {"value", "source", "read_only", "sensitive"}}}.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from strom.node.cli.common import CommandError, admin_client, client_arguments
from strom.node.cli.output import print_table

BROKERS, TOPICS = "brokers", "topics"


def parse_add_config(text: str) -> dict[str, str]:
    """Kafka's `--add-config` syntax: `k=v,k2=[a,b]` (brackets keep commas in a value)."""
    items: list[str] = []
    depth, start = 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise argparse.ArgumentTypeError(f"unbalanced ']' in {text!r}")
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise argparse.ArgumentTypeError(f"unbalanced '[' in {text!r}")
    items.append(text[start:])
    configs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"{item!r} is not key=value (in {text!r})")
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        configs[key.strip()] = value
    return configs


def parse_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return names


def parse_broker_ids(text: str) -> list[int]:
    try:
        ids = [int(n) for n in parse_names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of broker ids") from None
    if any(i < 1 for i in ids):
        raise argparse.ArgumentTypeError(f"broker ids are 1 or more, got {text!r}")
    return ids


class ConfigsCommandError(CommandError):
    """Arguments that do not go together; the message says which."""


def _broker_id(args: argparse.Namespace) -> int | None:
    """The broker named by --entity-name (None: --entity-default)."""
    if args.entity_default:
        return None
    try:
        broker = int(args.entity_name)
    except ValueError:
        raise ConfigsCommandError(
            f"--entity-name of brokers is a broker id, got {args.entity_name!r}"
        ) from None
    if broker < 1:
        raise ConfigsCommandError(f"broker ids are 1 or more, got {broker}")
    return broker


def _check_entity(args: argparse.Namespace, required: bool) -> None:
    if args.entity_type == TOPICS:
        if args.entity_default:
            raise ConfigsCommandError(
                "--entity-default is for brokers; topics take defaults from them"
            )
        if not args.entity_name:
            raise ConfigsCommandError("topics need --entity-name")
    elif required and not args.entity_name and not args.entity_default:
        raise ConfigsCommandError("brokers need --entity-name ID or --entity-default")


def _configs(args: argparse.Namespace, admin_factory: Callable[[], Any]) -> int:
    if args.action == "alter":
        return _alter(args, admin_factory)
    _check_entity(args, required=False)
    kind = "All" if args.all else "Dynamic"
    named_broker = _broker_id(args) if args.entity_type == BROKERS and args.entity_name else None
    described: dict[str, dict[str, Any]] = {}  # heading -> {key: entry or value}
    with admin_factory() as admin:
        if args.entity_type == TOPICS:
            values = admin.describe_topic_configs([args.entity_name], overrides_only=not args.all)
            heading = f"{kind} configs for topic {args.entity_name} are:"
            described[heading] = dict(values.get(args.entity_name, {}))
        elif args.entity_default:
            described["Default configs for brokers in the cluster are:"] = (
                admin.describe_broker_configs(None)
            )
        else:
            if named_broker is not None:
                brokers = [named_broker]
            else:
                brokers = sorted(
                    b.node_id for b in admin.describe_cluster().brokers if not b.fenced
                )
            for broker in brokers:
                entries = admin.describe_broker_configs(broker)
                described[f"{kind} configs for broker {broker} are:"] = {
                    name: entry
                    for name, entry in entries.items()
                    if args.all or entry.source.startswith("DYNAMIC_")
                }
    if args.output == "json":
        print(
            json.dumps({h.split(" are:")[0]: _as_json(e) for h, e in described.items()}, indent=2)
        )
        return 0
    for heading, entries in described.items():
        print(heading)
        for name, entry in sorted(entries.items()):
            print(f"  {name}={entry}" if isinstance(entry, str) else f"  {_entry_line(entry)}")
    return 0


def _entry_line(entry: Any) -> str:
    value = "null" if entry.sensitive else entry.value
    line = f"{entry.name}={value} sensitive={str(entry.sensitive).lower()} source={entry.source}"
    return line + (" read-only" if entry.read_only else "")


def _as_json(entries: dict[str, Any]) -> dict[str, Any]:
    return {
        name: entry
        if isinstance(entry, str)
        else {
            "value": None if entry.sensitive else entry.value,
            "source": entry.source,
            "read_only": entry.read_only,
            "sensitive": entry.sensitive,
        }
        for name, entry in sorted(entries.items())
    }


def _alter(args: argparse.Namespace, admin_factory: Callable[[], Any]) -> int:
    _check_entity(args, required=True)
    to_set: dict[str, str] = {}
    for batch in args.add_config or []:
        to_set.update(batch)
    to_delete = [name for batch in args.delete_config or [] for name in batch]
    if not to_set and not to_delete:
        raise ConfigsCommandError("nothing to change: give --add-config and/or --delete-config")
    both = sorted(set(to_set) & set(to_delete))
    if both:
        raise ConfigsCommandError(f"both added and deleted: {', '.join(both)}")
    if args.entity_type == TOPICS:
        with admin_factory() as admin:
            admin.alter_topic_configs(args.entity_name, to_set, to_delete)
        print(f"Completed updating config for topic {args.entity_name}.")
        return 0
    broker = _broker_id(args)
    with admin_factory() as admin:
        admin.alter_broker_configs(broker, to_set, to_delete)
    if broker is None:
        print("Completed updating default config for brokers in the cluster.")
    else:
        print(f"Completed updating config for broker {broker}.")
    return 0


# ---- log-dirs ------------------------------------------------------------------------------


def log_dirs_json(log_dirs: Sequence[Any], brokers: Sequence[int]) -> str:
    """Kafka's kafka-log-dirs output for `log_dirs` (the SDK's LogDir values)."""
    by_broker: dict[int, list[Any]] = {b: [] for b in brokers}
    for d in log_dirs:
        if d.broker_id in by_broker:
            by_broker[d.broker_id].append(
                {
                    "logDir": d.path,
                    "error": None if d.error == "NONE" else d.error,
                    "partitions": [
                        {
                            "partition": f"{p.topic}-{p.partition}",
                            "size": p.size_bytes,
                            "offsetLag": p.offset_lag,
                            "isFuture": False,
                        }
                        for p in sorted(d.partitions, key=lambda p: (p.topic, p.partition))
                    ],
                }
            )
    document = {
        "version": 1,
        "brokers": [{"broker": b, "logDirs": dirs} for b, dirs in sorted(by_broker.items())],
    }
    return json.dumps(document, separators=(",", ":"))


def _log_dirs(args: argparse.Namespace, admin_factory: Callable[[], Any]) -> int:
    with admin_factory() as admin:
        registered = sorted(b.node_id for b in admin.describe_cluster().brokers)
        log_dirs = admin.describe_log_dirs(args.topic_list)
    brokers = args.broker_list or registered
    unknown = sorted(set(brokers) - set(registered))
    if unknown:
        raise ConfigsCommandError(f"no such broker(s): {', '.join(map(str, unknown))}")
    if args.output == "json":  # kafka-log-dirs' output, line for line
        print("Querying brokers for log directories information")
        answered = sorted({d.broker_id for d in log_dirs} & set(brokers))
        print(f"Received log directory information from brokers {','.join(map(str, answered))}")
        print(log_dirs_json(log_dirs, brokers))
        return 0
    rows = [
        (d.broker_id, d.path, f"{p.topic}-{p.partition}", p.size_bytes, p.log_start_offset,
         p.log_end_offset, p.offset_lag, "leader" if p.leader else "follower")
        for d in sorted(log_dirs, key=lambda d: (d.broker_id, d.path))
        if d.broker_id in brokers
        for p in sorted(d.partitions, key=lambda p: (p.topic, p.partition))
    ]  # fmt: skip
    print_table(
        ["BROKER", "LOG-DIR", "PARTITION", "SIZE", "LOG-START", "LOG-END", "LAG", "ROLE"], rows
    )
    return 0


def add_commands(sub: Any) -> None:
    configs = sub.add_parser("configs", help="Kafka's kafka-configs: broker and topic configs")
    actions = configs.add_subparsers(dest="action", required=True)
    for action, help_text in (
        ("describe", "the dynamic configs (--all: every config with its source)"),
        ("alter", "set or delete configs; brokers apply them without a restart"),
    ):
        parser = client_arguments(actions.add_parser(action, help=help_text))
        parser.add_argument("--entity-type", choices=(BROKERS, TOPICS), required=True)
        entity = parser.add_mutually_exclusive_group()
        entity.add_argument("--entity-name", help="a broker id or a topic name")
        entity.add_argument(
            "--entity-default", action="store_true", help="the default of every broker"
        )
        if action == "describe":
            parser.add_argument("--all", action="store_true", help="every config, not only dynamic")
        else:
            parser.add_argument("--add-config", type=parse_add_config, action="append",
                                metavar="K=V,...", help="e.g. log.retention.ms=3600000")  # fmt: skip
            parser.add_argument("--delete-config", type=parse_names, action="append",
                                metavar="K,...", help="back to the next source")  # fmt: skip
        parser.set_defaults(handler=lambda args: _configs(args, lambda: admin_client(args)))

    log_dirs = sub.add_parser("log-dirs", help="Kafka's kafka-log-dirs: replica sizes on disk")
    log_dirs_actions = log_dirs.add_subparsers(dest="action", required=True)
    describe = client_arguments(
        log_dirs_actions.add_parser("describe", help="each broker's log directories and replicas")
    )
    describe.add_argument("--broker-list", type=parse_broker_ids, metavar="IDS",
                          help="e.g. 1,2 (default: every broker)")  # fmt: skip
    describe.add_argument("--topic-list", type=parse_names, metavar="TOPICS",
                          help="e.g. t1,t2 (default: every topic)")  # fmt: skip
    describe.set_defaults(handler=lambda args: _log_dirs(args, lambda: admin_client(args)))
