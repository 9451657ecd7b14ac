"""`strom produce` and `strom consume`: Kafka's console producer and consumer (lines from
stdin as records; records printed as lines, or as JSON objects with `--output json`).

`--producer-property` takes Kafka's producer property names; `strom perf` accepts the same
ones through `producer_options`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from strom.client.consumer import AsyncConsumer
from strom.client.producer import AsyncProducer
from strom.client.records import TopicPartition
from strom.node.cli.common import CommandError, client_arguments, client_options, key_values
from strom.node.cli.output import print_json

_PRODUCER_PROPERTIES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "acks": ("acks", str),
    "linger.ms": ("linger_ms", int),
    "batch.size": ("batch_size", int),
    "compression.type": ("compression_type", str),
    "request.timeout.ms": ("request_timeout_ms", int),
    "delivery.timeout.ms": ("delivery_timeout_ms", int),
    "max.request.size": ("max_request_size", int),
    "partitioner.class": ("partitioner", str),
    "buffer.memory": ("buffer_memory", int),
    "max.in.flight.requests.per.connection": ("max_in_flight_requests_per_connection", int),
    "enable.idempotence": ("enable_idempotence", lambda v: _boolean("enable.idempotence", v)),
}


def _boolean(key: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise CommandError(f"producer property {key}: expected true or false, got {value!r}")
    return value.lower() == "true"


def producer_options(properties: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in properties.items():
        if key not in _PRODUCER_PROPERTIES:
            raise CommandError(
                f"unknown producer property {key!r}; known: {', '.join(sorted(_PRODUCER_PROPERTIES))}"
            )
        name, kind = _PRODUCER_PROPERTIES[key]
        try:
            options[name] = kind(value)
        except ValueError as exc:
            raise CommandError(f"producer property {key}: {value!r} is not a number") from exc
    return options


def _produce(args: argparse.Namespace) -> int:
    properties = key_values(args.property, "--property")
    parse_key = properties.get("parse.key", "false").lower() == "true"
    separator = properties.get("key.separator", "\t")
    options = {"acks": "all", "linger_ms": 5, **producer_options(
        key_values(args.producer_property, "--producer-property")
    )}  # fmt: skip

    async def run() -> int:
        count = 0
        async with AsyncProducer(
            args.bootstrap_server, **options, **client_options(args)
        ) as producer:
            futures = []
            for line in sys.stdin:
                line = line.rstrip("\n")
                key = None
                if parse_key:
                    if separator not in line:
                        raise CommandError(f"no key separator {separator!r} in line {line!r}")
                    raw_key, line = line.split(separator, 1)
                    key = raw_key.encode()
                futures.append(
                    await producer.send(
                        args.topic, line.encode(), key=key, partition=args.partition
                    )
                )
            await producer.flush()
            for future in futures:
                future.result()  # raises the first delivery error
                count += 1
        return count

    count = asyncio.run(run())
    if args.output == "json":
        print_json({"produced": count})
    return 0


def _consume(args: argparse.Namespace) -> int:
    properties = key_values(args.property, "--property")
    print_key = properties.get("print.key", "false").lower() == "true"
    print_partition = properties.get("print.partition", "false").lower() == "true"
    print_offset = properties.get("print.offset", "false").lower() == "true"
    separator = properties.get("key.separator", "\t")
    if args.offset is not None and args.partition is None:
        raise CommandError("--offset needs --partition")

    async def run() -> int:
        reset = "earliest" if args.from_beginning else "latest"
        shown = 0
        async with AsyncConsumer(
            args.bootstrap_server, auto_offset_reset=reset, group_id=args.group,
            client_id="strom-console-consumer", isolation_level=args.isolation_level,
            **client_options(args),
        ) as consumer:  # fmt: skip
            if args.group is not None:
                if args.partition is not None:
                    raise CommandError("--group and --partition exclude each other")
                consumer.subscribe([args.topic])
                partitions = []
            elif args.partition is not None:
                partitions = [TopicPartition(args.topic, args.partition)]
            else:
                meta = await consumer.cluster.topic(args.topic)
                partitions = [TopicPartition(args.topic, p) for p in sorted(meta.partitions)]
            if args.group is None:
                consumer.assign(partitions)
            if args.offset is not None:
                if args.offset == "earliest":
                    await consumer.seek_to_beginning()
                elif args.offset == "latest":
                    await consumer.seek_to_end()
                else:
                    consumer.seek(partitions[0], int(args.offset))
            idle_ms = 0
            while args.max_messages is None or shown < args.max_messages:
                # Ask only for what will be printed: with --group, whatever poll() returns counts
                # as consumed and is committed.
                wanted = 500 if args.max_messages is None else args.max_messages - shown
                records = await consumer.poll(timeout_ms=500, max_records=wanted)
                if not records:
                    idle_ms += 500
                    if args.timeout_ms is not None and idle_ms >= args.timeout_ms:
                        break
                    continue
                idle_ms = 0
                for r in records:
                    if args.max_messages is not None and shown >= args.max_messages:
                        break
                    parts = []
                    if print_partition:
                        parts.append(f"Partition:{r.partition}")
                    if print_offset:
                        parts.append(f"Offset:{r.offset}")
                    if print_key:
                        parts.append((r.key or b"null").decode(errors="replace"))
                    parts.append((r.value or b"null").decode(errors="replace"))
                    if args.output == "json":
                        _print_record_json(r)
                    else:
                        print(separator.join(parts), flush=True)
                    shown += 1
        return shown

    shown = asyncio.run(run())
    print(f"Processed a total of {shown} messages", file=sys.stderr)
    return 0


def _print_record_json(r: Any) -> None:
    print(
        json.dumps(
            {
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": None if r.key is None else r.key.decode(errors="replace"),
                "value": None if r.value is None else r.value.decode(errors="replace"),
            }
        ),
        flush=True,
    )


def add_commands(sub: Any) -> None:
    produce = client_arguments(sub.add_parser("produce", help="send lines from stdin as records"))
    produce.add_argument("topic")
    produce.add_argument("--partition", type=int)
    produce.add_argument("--property", action="append", help="parse.key=true, key.separator=:")
    produce.add_argument("--producer-property", action="append", help="acks=all, linger.ms=5, ...")
    produce.set_defaults(handler=_produce)
    consume = client_arguments(sub.add_parser("consume", help="print records of a topic"))
    consume.add_argument("topic")
    consume.add_argument("--partition", type=int)
    consume.add_argument("--offset", help="earliest, latest or a number (needs --partition)")
    consume.add_argument("--from-beginning", action="store_true")
    consume.add_argument("--max-messages", type=int)
    consume.add_argument("--timeout-ms", type=int, help="stop after this long without records")
    consume.add_argument("--property", action="append", help="print.key=true, key.separator=:")
    consume.add_argument("--group", help="join this consumer group and commit as it goes")
    consume.add_argument(
        "--isolation-level",
        choices=("read_uncommitted", "read_committed"),
        default="read_uncommitted",
        help="read_committed: only records of committed transactions (and non-transactional)",
    )
    consume.set_defaults(handler=_consume)
