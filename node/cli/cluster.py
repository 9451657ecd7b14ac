"""`strom cluster ...` and `strom quorum status`: a local cluster of background processes
(`up`, `status`, `stop`, `down`), any cluster's brokers (`describe`; `rebalance` is in
reassign.py) and its metadata quorum.

`cluster describe` joins the cluster description (brokers, active controller) with the topics'
partition assignments to show, per broker, how many replicas it hosts, how many it leads, and how
many of them are offline (on a broker that is down, or whose log failed there: the broker keeps
running and reports them).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from strom.client.admin import Admin
from strom.client.errors import StromError
from strom.node.cli import reassign
from strom.node.cli.common import (
    CommandError,
    admin_client,
    client_arguments,
    client_credentials,
    key_values,
)
from strom.node.cli.output import print_json, print_table
from strom.node.local_cluster import LocalCluster


@dataclass(frozen=True, slots=True)
class BrokerRow:
    id: int
    address: str
    rack: str
    state: str
    partitions: int
    leaders: int
    active_controller: bool
    offline: int = 0  # replicas of this broker that are offline


def describe_cluster_rows(description: Any, topics: list[Any]) -> list[BrokerRow]:
    """Rows of `strom cluster describe` from Admin.describe_cluster() and describe_topics()."""
    replicas: dict[int, int] = {}
    leaders: dict[int, int] = {}
    offline: dict[int, int] = {}
    for topic in topics:
        for partition in topic.partitions:
            for replica in partition.replicas:
                replicas[replica] = replicas.get(replica, 0) + 1
            for replica in partition.offline_replicas:
                offline[replica] = offline.get(replica, 0) + 1
            if partition.leader >= 0:
                leaders[partition.leader] = leaders.get(partition.leader, 0) + 1
    rows = []
    for broker in sorted(description.brokers, key=lambda b: b.node_id):
        if broker.in_controlled_shutdown:
            state = "shutting down"
        else:
            state = "fenced" if broker.fenced else "unfenced"
        rows.append(
            BrokerRow(
                broker.node_id,
                f"{broker.host}:{broker.port}",
                broker.rack,
                state,
                replicas.get(broker.node_id, 0),
                leaders.get(broker.node_id, 0),
                broker.node_id == description.controller_id,
                offline.get(broker.node_id, 0),
            )
        )
    return rows


def _cluster_describe(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        description = admin.describe_cluster()
        topics = admin.describe_topics(None)
    rows = describe_cluster_rows(description, topics)
    if args.output == "json":
        print_json(
            {
                "cluster_id": description.cluster_id,
                "controller_id": description.controller_id,
                "brokers": [asdict(r) for r in rows],
            }
        )
        return 0
    print(f"ClusterId: {description.cluster_id}")
    print(f"ActiveController: {description.controller_id}")
    print_table(
        ["ID", "ADDRESS", "RACK", "STATE", "PARTITIONS", "LEADERS", "OFFLINE", ""],
        [[r.id, r.address, r.rack or "-", r.state, r.partitions, r.leaders, r.offline,
          "(active controller)" if r.active_controller else ""] for r in rows],
    )  # fmt: skip
    return 0


# ---- local cluster ----------------------------------------------------------------------


def _local_cluster(args: argparse.Namespace) -> LocalCluster:
    return LocalCluster(args.data_dir)


def wait_until_healthy(
    bootstrap: str,
    node_ids: Sequence[int],
    timeout_s: float,
    options: dict[str, str] | None = None,
) -> None:
    """Until every node is registered, unfenced and a controller is active."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with Admin(
        bootstrap, request_timeout_ms=2_000, **{**client_credentials(), **(options or {})}
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
    cluster = _local_cluster(args)
    if not cluster.exists():
        if args.from_compose:
            cluster.create_from_compose(args.from_compose, args.base_port)
        else:
            cluster.create(
                args.nodes,
                args.base_port,
                key_values(args.override, "--override"),
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
        print_json(
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
    cluster = _local_cluster(args)
    cluster_id, nodes = cluster.load()
    brokers: dict[int, Any] = {}
    controller = -1
    try:
        options = {**client_credentials(), **cluster.client_options()}
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
        print_json({"cluster_id": cluster_id, "nodes": rows})
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
    cluster = _local_cluster(args)
    if not cluster.stop(args.node_id, kill=args.kill):
        raise CommandError(f"node {args.node_id} is not running")
    print(f"{'Killed' if args.kill else 'Stopped'} node {args.node_id}")
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    stopped = _local_cluster(args).down()
    print(f"Stopped nodes {', '.join(map(str, stopped))}" if stopped else "No node was running")
    return 0


# ---- the metadata quorum ----------------------------------------------------------------


def _quorum_status(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        quorum = admin.describe_quorum()
    now_ms = int(time.time() * 1000)
    leader = next((v for v in quorum.voters if v.replica_id == quorum.leader_id), None)
    lag = (
        max((leader.log_end_offset - v.log_end_offset for v in quorum.voters), default=0)
        if leader
        else 0
    )
    if args.output == "json":
        print_json(
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


def add_commands(sub: Any) -> None:
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
    client_arguments(
        cluster_sub.add_parser("describe", help="brokers, their state and load, the controller")
    ).set_defaults(handler=_cluster_describe)
    reassign.add_rebalance_command(cluster_sub)


def add_quorum_commands(sub: Any) -> None:
    quorum = sub.add_parser("quorum", help="the metadata quorum").add_subparsers(
        dest="action", required=True
    )
    client_arguments(quorum.add_parser("status")).set_defaults(handler=_quorum_status)
