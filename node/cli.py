"""The `strom` command line.

Server commands (`strom node run`, `strom storage format`, `strom cluster ...`) run or manage
nodes; client commands (`topics`, `produce`, `consume`, `quorum`, `users`, `acls`) call
`strom.client` (with SASL credentials from $STROM_SASL_USERNAME / $STROM_SASL_PASSWORD), with
Kafka's flag names where they exist and `--output json` for scripting. Every command reaches the
cluster through `--bootstrap-server` (default: $STROM_BOOTSTRAP_SERVER or localhost:9092) and
`--command-config FILE`, a Kafka-style properties file of connection settings (TLS:
`security.protocol`, `ssl.ca.location`, ...; strom.client.properties).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from strom import __version__
from strom.node.cli_output import print_table
from strom.storage import compiled_codec

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A user-facing failure: printed as `error: ...`, exit status 1."""


def _default_bootstrap() -> str:
    return os.environ.get("STROM_BOOTSTRAP_SERVER", "localhost:9092")


def _key_values(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"{flag} expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


# Until some node answers, a command gives up after this long when no bootstrap address can be
# connected to (a wrong or dead address is reported in seconds, naming it, instead of after the
# request timeout); a cluster that answers slowly still gets the whole request timeout.
CLI_BOOTSTRAP_TIMEOUT_MS = 5_000


def _topic_configs(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    """`key=value` topic configs, each checked against the topic config table before any
    connection is made (the broker checks them again)."""
    from strom.node.topic_config import InvalidTopicConfig, parse_topic_config

    configs = _key_values(items, flag)
    for key, value in configs.items():
        try:
            parse_topic_config(key, value)
        except InvalidTopicConfig as exc:
            raise CommandError(f"{flag}: {exc}") from None
    return configs


def _count(text: str) -> int:
    """An argparse type: a count of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _count_or_default(text: str) -> int:
    """An argparse type: a count of at least 1, or -1 for the broker's default."""
    if text.strip() == "-1":
        return -1
    try:
        return _count(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or -1: the broker's default)") from None


def _credentials() -> dict[str, Any]:
    """The CLI's own SASL login (STROM_SASL_USERNAME / STROM_SASL_PASSWORD), if set."""
    from strom.node.cli_security import client_credentials

    return client_credentials()


def connection_options(args: argparse.Namespace) -> dict[str, Any]:
    """SDK keyword arguments from `--command-config` (security.protocol, ssl.*, sasl.*); a SASL
    login from the environment applies where the file gives none."""
    from strom.client.properties import read_client_properties

    path = getattr(args, "command_config", None)
    options = read_client_properties(path) if path else {}
    if "sasl_username" not in options:
        options = {**_credentials(), **options}
    return options


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# ---- node and storage -------------------------------------------------------------------


def _node_run(args: argparse.Namespace) -> int:
    from strom.node.config import load_config
    from strom.node.logging_setup import configure_logging
    from strom.node.server import run_node

    config = load_config(args.config)
    configure_logging(config)
    return asyncio.run(run_node(config))


def _node_health(args: argparse.Namespace) -> int:
    """gRPC health check of one node (what Docker's HEALTHCHECK runs): exit 0 when SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from strom.client.tls import SecurityOptions, connection_hint, open_sync_channel

    security = SecurityOptions.from_options(connection_options(args))
    with open_sync_channel(args.address, security) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            hint = connection_hint(security, exc.details() or "")
            print(f"{args.address}: {exc.code().name}{hint}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.address}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _node_metrics(args: argparse.Namespace) -> int:
    from strom.node.operator_cli import node_metrics

    return node_metrics(args)


def _node_ready(args: argparse.Namespace) -> int:
    from strom.node.operator_cli import node_ready

    return node_ready(args)


def _cluster_describe(args: argparse.Namespace) -> int:
    from strom.node.operator_cli import cluster_describe

    return cluster_describe(args)


def _storage_format(args: argparse.Namespace) -> int:
    from strom.node.config import load_config
    from strom.node.meta_properties import format_directories

    config = load_config(args.config)
    directories = [Path(d) for d in config["log.dirs"]] + [config.metadata_log_dir]
    done = format_directories(directories, args.cluster_id, config.node_id, args.ignore_formatted)
    for directory in done:
        print(f"Formatted {directory} (cluster.id={args.cluster_id}, node.id={config.node_id})")
    return 0


def _storage_random_uuid(args: argparse.Namespace) -> int:
    from strom.node.meta_properties import random_uuid

    print(random_uuid())
    return 0


def _certs_create(args: argparse.Namespace) -> int:
    """A throwaway CA and certificates for a cluster (what `cluster up --tls` does for a local
    one), e.g. for the docker-compose TLS variant."""
    from strom.node.certs import CLIENT_PROPERTIES, write_cluster_certs

    out = Path(args.out)
    if (out / "ca.key").exists():
        raise CommandError(f"{out} already holds a CA (ca.key): remove it or pick another --out")
    nodes: dict[str, list[str]] = {}
    for item in args.node or []:
        name, _, hosts = item.partition("=")
        if not name:
            raise CommandError(f"--node expects NAME[=HOST,HOST...], got {item!r}")
        nodes[name] = [name, *(h.strip() for h in hosts.split(",") if h.strip())]
    if not nodes:
        raise CommandError("name at least one node: --node NAME[=HOST,...]")
    clients = args.client or ["strom-admin"]
    files = write_cluster_certs(out, nodes, clients)
    if args.output == "json":
        _print_json(
            {
                "ca": str(out / "ca.crt"),
                "identities": {name: str(f.certificate) for name, f in files.items()},
                "command_config": str(out / CLIENT_PROPERTIES),
            }
        )
        return 0
    print(f"CA: {out / 'ca.crt'} (its key ca.key stays in {out}: keep the folder private)")
    for name, identity in files.items():
        role = "node" if name in nodes else "client"
        print(f"{role} {name}: {identity.certificate}, {identity.key}")
    print(f"Clients: --command-config {out / CLIENT_PROPERTIES}")
    return 0


# ---- local cluster ----------------------------------------------------------------------


def _cluster(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from strom.node.local_cluster import LocalCluster

    return LocalCluster(args.data_dir)


def wait_until_healthy(
    bootstrap: str,
    node_ids: Sequence[int],
    timeout_s: float,
    options: dict[str, str] | None = None,
) -> None:
    """Until every node is registered, unfenced and a controller is active."""
    from strom.client.admin import Admin
    from strom.client.errors import StromError

    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with Admin(
        bootstrap, request_timeout_ms=2_000, **{**_credentials(), **(options or {})}
    ) as admin:
        while time.monotonic() < deadline:
            try:
                cluster = admin.describe_cluster()
                ready = {b.node_id for b in cluster.brokers if not b.fenced}
                if set(node_ids) <= ready and cluster.controller_id >= 0:
                    return
                last = f"brokers ready: {sorted(ready)}, controller: {cluster.controller_id}"
            except StromError as exc:
                last = str(exc)
            time.sleep(0.2)
    raise CommandError(f"cluster not healthy within {timeout_s:.0f} s ({last})")


def _cluster_up(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    if not cluster.exists():
        if args.from_compose:
            cluster.create_from_compose(args.from_compose, args.base_port)
        else:
            cluster.create(
                args.nodes,
                args.base_port,
                _key_values(args.override, "--override"),
                tls=args.tls,
            )
    elif args.tls and cluster.client_properties() is None:
        raise CommandError(
            f"the cluster in {cluster.dir} exists without TLS: `strom cluster down`, remove "
            "the directory, then `strom cluster up --tls`"
        )
    _, nodes = cluster.load()
    started = cluster.up()
    options = cluster.client_options()
    if args.wait:
        wait_until_healthy(cluster.bootstrap(), [n.node_id for n in nodes], args.timeout, options)
    properties = cluster.client_properties()
    if args.output == "json":
        _print_json(
            {
                "bootstrap": cluster.bootstrap(),
                "kafka_bootstrap": cluster.kafka_bootstrap() or None,
                "started": started,
                "command_config": str(properties) if properties else None,
            }
        )
    else:
        if started:
            print(f"Started nodes {', '.join(map(str, started))}")
        print(f"Bootstrap servers: {cluster.bootstrap()}")
        if cluster.kafka_bootstrap():
            print(f"Kafka clients (bootstrap.servers): {cluster.kafka_bootstrap()}")
        if properties is not None:
            print(f"TLS (mutual): pass --command-config {properties} to strom client commands")
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    from strom.client.admin import Admin
    from strom.client.errors import StromError

    cluster = _cluster(args)
    cluster_id, nodes = cluster.load()
    brokers: dict[int, Any] = {}
    controller = -1
    try:
        options = {**_credentials(), **cluster.client_options()}
        with Admin(cluster.bootstrap(), request_timeout_ms=3_000, **options) as admin:
            description = admin.describe_cluster()
            brokers = {b.node_id: b for b in description.brokers}
            controller = description.controller_id
    except StromError as exc:
        print(f"warning: cluster not reachable: {exc}", file=sys.stderr)
    rows = []
    for node in nodes:
        pid = cluster.pid(node.node_id)
        broker = brokers.get(node.node_id)
        if pid is None:
            state = "stopped"
        elif broker is None:
            state = "starting"
        elif broker.fenced:
            state = "fenced"
        else:
            state = "running"
        rows.append(
            {
                "node_id": node.node_id,
                "pid": pid,
                "address": node.bootstrap,
                "kafka_address": node.kafka_address or None,
                "roles": "broker,controller",
                "state": state,
                "active_controller": node.node_id == controller,
            }
        )
    if args.output == "json":
        _print_json({"cluster_id": cluster_id, "nodes": rows})
        return 0
    print(f"ClusterId: {cluster_id}")
    print_table(
        ["NODE", "PID", "ADDRESS", "KAFKA", "ROLES", "STATE", "CONTROLLER"],
        [
            [row["node_id"], row["pid"] or "-", row["address"], row["kafka_address"] or "-",
             row["roles"], row["state"], "active" if row["active_controller"] else ""]
            for row in rows
        ],
    )  # fmt: skip
    return 0


def _cluster_stop(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    if not cluster.stop(args.node_id, kill=args.kill):
        raise CommandError(f"node {args.node_id} is not running")
    print(f"{'Killed' if args.kill else 'Stopped'} node {args.node_id}")
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    stopped = _cluster(args).down()
    print(f"Stopped nodes {', '.join(map(str, stopped))}" if stopped else "No node was running")
    return 0


# ---- topics -----------------------------------------------------------------------------


def _admin(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from strom.client.admin import Admin

    return Admin(
        args.bootstrap_server,
        bootstrap_timeout_ms=CLI_BOOTSTRAP_TIMEOUT_MS,
        **connection_options(args),
    )


def _topics_create(args: argparse.Namespace) -> int:
    from strom.client.admin import NewTopic
    from strom.client.errors import StromError

    configs = _topic_configs(args.config, "--config")
    with _admin(args) as admin:
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
    with _admin(args) as admin:
        names = admin.list_topics(include_internal=True)
    if args.output == "json":
        _print_json(names)
    else:
        for name in names:
            print(name)
    return 0


def _topics_describe(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
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
        _print_json(
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
    with _admin(args) as admin:
        admin.delete_topics([args.topic])
    print(f"Deleted topic {args.topic}.")
    return 0


def _topics_alter(args: argparse.Namespace) -> int:
    configs = _topic_configs(args.config, "--config")
    with _admin(args) as admin:
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
    with _admin(args) as admin:
        low = admin.delete_records(offsets)
    print("Records delete operation completed:")
    for (topic, partition), offset in sorted(low.items()):
        print(f"partition: {topic}-{partition}\tlow_watermark: {offset}")
    return 0


def _topics_elect_leaders(args: argparse.Namespace) -> int:
    partitions = None
    if args.topic:
        with _admin(args) as admin:
            topic = admin.describe_topics([args.topic])[0]
        wanted = (
            [args.partition]
            if args.partition is not None
            else [p.partition for p in topic.partitions]
        )
        partitions = [(args.topic, p) for p in wanted]
    with _admin(args) as admin:
        results = admin.elect_leaders(args.election_type, partitions)
    for (topic_name, partition), error in sorted(results.items()):
        outcome = "elected" if error == "NONE" else error
        print(f"{topic_name}-{partition}: {outcome}")
    return 0


def _quorum_status(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        quorum = admin.describe_quorum()
    now_ms = int(time.time() * 1000)
    leader = next((v for v in quorum.voters if v.replica_id == quorum.leader_id), None)
    lag = (
        max((leader.log_end_offset - v.log_end_offset for v in quorum.voters), default=0)
        if leader
        else 0
    )
    if args.output == "json":
        _print_json(
            {
                "cluster_id": quorum.cluster_id,
                "leader_id": quorum.leader_id,
                "leader_epoch": quorum.leader_epoch,
                "high_watermark": quorum.high_watermark,
                "max_follower_lag": lag,
                "current_voters": [v.replica_id for v in quorum.voters],
                "current_observers": [o.replica_id for o in quorum.observers],
            }
        )
        return 0
    print(f"ClusterId:              {quorum.cluster_id}")
    print(f"LeaderId:               {quorum.leader_id}")
    print(f"LeaderEpoch:            {quorum.leader_epoch}")
    print(f"HighWatermark:          {quorum.high_watermark}")
    print(f"MaxFollowerLag:         {lag}")
    fetches = [
        now_ms - v.last_fetch_timestamp_ms for v in quorum.voters if v.last_fetch_timestamp_ms > 0
    ]
    print(f"MaxFollowerLagTimeMs:   {max(fetches, default=0)}")
    print(f"CurrentVoters:          [{','.join(str(v.replica_id) for v in quorum.voters)}]")
    print(f"CurrentObservers:       [{','.join(str(o.replica_id) for o in quorum.observers)}]")
    return 0


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


def _producer_options(properties: dict[str, str]) -> dict[str, Any]:
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
    from strom.client.producer import AsyncProducer

    properties = _key_values(args.property, "--property")
    parse_key = properties.get("parse.key", "false").lower() == "true"
    separator = properties.get("key.separator", "\t")
    options = {"acks": "all", "linger_ms": 5, **_producer_options(
        _key_values(args.producer_property, "--producer-property")
    )}  # fmt: skip

    async def run() -> int:
        count = 0
        async with AsyncProducer(
            args.bootstrap_server, **options, **connection_options(args)
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
        _print_json({"produced": count})
    return 0


def _consume(args: argparse.Namespace) -> int:
    from strom.client.consumer import AsyncConsumer
    from strom.client.records import TopicPartition

    properties = _key_values(args.property, "--property")
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
            client_id="strom-console-consumer", **connection_options(args),
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


def _groups_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        groups = admin.list_groups()
    if args.output == "json":
        _print_json([{"group": g, "state": s, "members": n} for g, s, n in groups])
        return 0
    for group_id, _, _ in groups:
        print(group_id)
    return 0


def _groups_describe(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        group = admin.describe_group(args.group)
        offsets = admin.list_group_offsets(args.group)
        owner = {tp: m for m in group.members for tp in m.assignment}
        partitions = sorted(set(offsets) | set(owner))
        ends = admin.list_offsets(partitions, -1) if partitions else {}
    if args.output == "json":
        _print_json(
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
    from datetime import datetime

    from strom.client.offset_reset import ResetRequest, plan_offsets_reset

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
    with _admin(args) as admin:
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
    with _admin(args) as admin:
        admin.delete_groups([args.group])
    print(f"Deleted consumer group '{args.group}'.")
    return 0


def _console(args: argparse.Namespace) -> int:
    try:
        import aiohttp  # noqa: F401
        import jinja2  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            f"strom console needs the console extra ({exc.name} is not installed): "
            "pip install 'strom[console]'"
        ) from None
    from strom.node.console import ConsoleError, run

    try:
        return run(args)
    except ConsoleError as exc:
        raise CommandError(str(exc)) from None


def _run_demo(args: argparse.Namespace) -> int:
    from strom.node import demo

    return demo.main(args)


# ---- the parser -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strom", description="strom: an event streaming platform in the spirit of Kafka."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"strom {__version__} (record codec: {compiled_codec.describe()})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def client(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--bootstrap-server",
            default=_default_bootstrap(),
            help="host:port[,host:port] (default: $STROM_BOOTSTRAP_SERVER or localhost:9092)",
        )
        p.add_argument("--output", choices=("text", "json"), default="text")
        command_config(p)
        return p

    def command_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--command-config",
            metavar="FILE",
            help="client properties file: security.protocol, ssl.ca.location, "
            "ssl.certificate.location, ssl.key.location",
        )

    node = sub.add_parser("node", help="run a node").add_subparsers(dest="action", required=True)
    run = node.add_parser("run", help="run a node in the foreground")
    run.add_argument("--config", required=True, help="the node's YAML configuration")
    run.set_defaults(handler=_node_run)
    health_ = node.add_parser("health", help="gRPC health check of a node (exit 0 if serving)")
    health_.add_argument("--address", default="localhost:9093", help="any listener host:port")
    health_.add_argument("--timeout", type=float, default=3.0)
    command_config(health_)
    health_.set_defaults(handler=_node_health)
    ready_ = node.add_parser("ready", help="readiness of a node from its admin listener's /readyz")
    ready_.add_argument("--address", default="localhost:9644", help="admin.listener host:port")
    ready_.add_argument("--timeout", type=float, default=3.0)
    ready_.set_defaults(handler=_node_ready)
    metrics_ = node.add_parser("metrics", help="a node's key numbers from its admin listener")
    metrics_.add_argument("--address", required=True, help="the node's admin.listener host:port")
    metrics_.add_argument("--timeout", type=float, default=3.0)
    metrics_.add_argument("--output", choices=("text", "json"), default="text")
    metrics_.set_defaults(handler=_node_metrics)

    storage = sub.add_parser("storage", help="format data directories").add_subparsers(
        dest="action", required=True
    )
    fmt = storage.add_parser("format", help="write meta.properties into every data directory")
    fmt.add_argument("--cluster-id", required=True)
    fmt.add_argument("--config", required=True)
    fmt.add_argument("--ignore-formatted", action="store_true")
    fmt.set_defaults(handler=_storage_format)
    uuid_ = storage.add_parser("random-uuid", help="print a new cluster id")
    uuid_.set_defaults(handler=_storage_random_uuid)

    cluster = sub.add_parser("cluster", help="a local cluster of background processes")
    cluster_sub = cluster.add_subparsers(dest="action", required=True)

    def local(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", default=".strom/cluster", help="where everything lives")
        p.add_argument("--output", choices=("text", "json"), default="text")
        return p

    up = local(cluster_sub.add_parser("up", help="start (or restart) the local cluster"))
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--base-port", type=int, default=9092)
    up.add_argument("--override", action="append", help="node config key=value (new clusters)")
    up.add_argument("--timeout", type=float, default=60.0)
    up.add_argument(
        "--from-compose", metavar="FILE", help="run a docker-compose file's topology locally"
    )
    up.add_argument("--no-wait", dest="wait", action="store_false")
    up.add_argument(
        "--tls",
        action="store_true",
        help="new cluster with a throwaway CA: TLS and client certificates on every listener",
    )
    up.set_defaults(handler=_cluster_up)
    local(cluster_sub.add_parser("status", help="show the nodes")).set_defaults(
        handler=_cluster_status
    )
    stop = local(cluster_sub.add_parser("stop", help="stop one node"))
    stop.add_argument("node_id", type=int)
    stop.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    stop.set_defaults(handler=_cluster_stop)
    local(cluster_sub.add_parser("down", help="stop every node")).set_defaults(
        handler=_cluster_down
    )
    client(
        cluster_sub.add_parser("describe", help="brokers, their state and load, the controller")
    ).set_defaults(handler=_cluster_describe)

    from strom.node.cli_reassign import add_rebalance_command

    add_rebalance_command(cluster_sub, client)

    certs = sub.add_parser("certs", help="throwaway TLS certificates").add_subparsers(
        dest="action", required=True
    )
    certs_create = certs.add_parser(
        "create", help="a new CA, a certificate per node and per client, properties files"
    )
    certs_create.add_argument("--out", required=True, help="folder to write (must hold no CA)")
    certs_create.add_argument(
        "--node",
        action="append",
        metavar="NAME[=HOST,...]",
        help="a node certificate (server and client use) for NAME and the hosts it is dialled "
        "by; localhost and 127.0.0.1 are always included. Repeat per node",
    )
    certs_create.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="a client certificate with CN=NAME (default: strom-admin). Repeatable",
    )
    certs_create.add_argument("--output", choices=("text", "json"), default="text")
    certs_create.set_defaults(handler=_certs_create)

    topics = sub.add_parser("topics", help="create, list, describe, alter, delete topics")
    topics_sub = topics.add_subparsers(dest="action", required=True)
    create = client(topics_sub.add_parser("create"))
    create.add_argument("topic")
    # Checked before any connection: a bad count or config is reported at once.
    create.add_argument("--partitions", type=_count_or_default, default=-1)
    create.add_argument("--replication-factor", type=_count_or_default, default=-1)
    create.add_argument("--config", action="append", help="topic config key=value")
    create.add_argument("--if-not-exists", action="store_true")
    create.set_defaults(handler=_topics_create)
    client(topics_sub.add_parser("list")).set_defaults(handler=_topics_list)
    describe = client(topics_sub.add_parser("describe"))
    describe.add_argument("topic", nargs="?")
    describe.add_argument("--under-replicated-partitions", action="store_true")
    describe.add_argument("--unavailable-partitions", action="store_true")
    describe.add_argument("--under-min-isr-partitions", action="store_true")
    describe.set_defaults(handler=_topics_describe)
    delete = client(topics_sub.add_parser("delete"))
    delete.add_argument("topic")
    delete.set_defaults(handler=_topics_delete)
    alter = client(topics_sub.add_parser("alter"))
    alter.add_argument("topic")
    alter.add_argument("--config", action="append", help="set topic config key=value")
    alter.add_argument("--delete-config", action="append", help="remove a topic config override")
    alter.add_argument("--partitions", type=_count, help="new partition count (only grows)")
    alter.set_defaults(handler=_topics_alter)
    delete_records = client(
        topics_sub.add_parser(
            "delete-records", help="delete records before offsets (kafka-delete-records)"
        )
    )
    delete_records.add_argument("--offset-json-file", required=True, metavar="FILE")
    delete_records.set_defaults(handler=_topics_delete_records)
    elect = client(
        topics_sub.add_parser("elect-leaders", help="preferred (or unclean) leader election")
    )
    elect.add_argument("--topic")
    elect.add_argument("--partition", type=int)
    elect.add_argument("--election-type", choices=("preferred", "unclean"), default="preferred",
                       help="unclean: a partition with no live leader takes any live replica, "
                       "losing what only its dead ISR held")  # fmt: skip
    elect.set_defaults(handler=_topics_elect_leaders)

    produce = client(sub.add_parser("produce", help="send lines from stdin as records"))
    produce.add_argument("topic")
    produce.add_argument("--partition", type=int)
    produce.add_argument("--property", action="append", help="parse.key=true, key.separator=:")
    produce.add_argument("--producer-property", action="append", help="acks=all, linger.ms=5, ...")
    produce.set_defaults(handler=_produce)
    consume = client(sub.add_parser("consume", help="print records of a topic"))
    consume.add_argument("topic")
    consume.add_argument("--partition", type=int)
    consume.add_argument("--offset", help="earliest, latest or a number (needs --partition)")
    consume.add_argument("--from-beginning", action="store_true")
    consume.add_argument("--max-messages", type=int)
    consume.add_argument("--timeout-ms", type=int, help="stop after this long without records")
    consume.add_argument("--property", action="append", help="print.key=true, key.separator=:")
    consume.add_argument("--group", help="join this consumer group and commit as it goes")
    consume.set_defaults(handler=_consume)

    groups = sub.add_parser("groups", help="consumer groups").add_subparsers(
        dest="action", required=True
    )
    client(groups.add_parser("list")).set_defaults(handler=_groups_list)
    gdescribe = client(groups.add_parser("describe", help="offsets, lag and members of a group"))
    gdescribe.add_argument("group")
    gdescribe.add_argument("--members", action="store_true")
    gdescribe.add_argument("--state", action="store_true")
    gdescribe.set_defaults(handler=_groups_describe)
    reset = client(groups.add_parser("reset-offsets", help="move a group's committed offsets"))
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
    gdelete = client(groups.add_parser("delete"))
    gdelete.add_argument("group")
    gdelete.set_defaults(handler=_groups_delete)

    quorum = sub.add_parser("quorum", help="the metadata quorum").add_subparsers(
        dest="action", required=True
    )
    client(quorum.add_parser("status")).set_defaults(handler=_quorum_status)

    from strom.node.cli_security import add_commands as add_security_commands

    from .perf import add_commands as add_perf_commands

    add_perf_commands(
        sub,
        client,
        lambda items: _producer_options(_key_values(items, "--producer-props")),
        connection_options,
    )
    add_security_commands(sub, client)
    from strom.node.cli_reassign import add_commands as add_reassign_commands

    add_reassign_commands(sub, client)
    from strom.node.cli_configs import add_commands as add_configs_commands

    add_configs_commands(sub, client, _admin)

    from strom.node.console import add_arguments as add_console_arguments

    console = sub.add_parser("console", help="a web UI: cluster, topics, messages, groups")
    add_console_arguments(console)
    console.set_defaults(handler=_console)

    demo = sub.add_parser("demo", help="run the seed document's walkthrough as tables")
    demo.add_argument("--data-dir", default=".strom/demo")
    demo.add_argument(
        "--bootstrap-server",
        help="run the walkthrough against this running cluster instead of starting one",
    )
    demo.set_defaults(handler=_run_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    from strom.client.errors import StromError
    from strom.node.cli_configs import ConfigsCommandError
    from strom.node.cli_reassign import ReassignmentFileError
    from strom.node.config import ConfigError
    from strom.node.local_cluster import ClusterError
    from strom.node.meta_properties import StorageFormatError
    from strom.node.operator_cli import OperatorError

    errors = (
        CommandError,
        ConfigsCommandError,
        ReassignmentFileError,
        StromError,
        ConfigError,
        ClusterError,
        StorageFormatError,
        OperatorError,
    )
    try:
        return handler(args)
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
