"""Operator commands of the `strom` command line: `strom cluster describe`, `strom node metrics`
and `strom node ready`.

`cluster describe` joins the cluster description (brokers, active controller) with the topics'
partition assignments to show, per broker, how many replicas it hosts, how many it leads, and how
many of them are offline (on a broker that is down, or whose log failed there: the broker keeps
running and reports them).
`node metrics` reads one node's admin listener (`/metrics`, plain urllib) and prints the numbers
an operator looks at first, summed over labels. `node ready` asks the admin listener's `/readyz`
(what the container's HEALTHCHECK runs: the image has no curl) and exits 0 only when ready.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from strom.node.cli_output import print_table

# (label shown, metric family name as the parser names it: counters without `_total`)
KEY_METRICS: tuple[tuple[str, str], ...] = (
    ("messages in", "strom_server_brokertopicmetrics_messagesin"),
    ("bytes in", "strom_server_brokertopicmetrics_bytesin"),
    ("bytes out", "strom_server_brokertopicmetrics_bytesout"),
    ("partitions", "strom_server_replicamanager_partitioncount"),
    ("leaders", "strom_server_replicamanager_leadercount"),
    ("under-replicated partitions", "strom_server_replicamanager_underreplicatedpartitions"),
    ("under-min-ISR partitions", "strom_server_replicamanager_underminisrpartitioncount"),
    ("offline replicas", "strom_server_replicamanager_offlinereplicacount"),
    ("replica fetcher errors", "strom_server_replicafetcher_errors"),
    ("ISR shrinks", "strom_server_replicamanager_isrshrinks"),
    ("ISR expands", "strom_server_replicamanager_isrexpands"),
    ("fenced", "strom_server_brokerstate_fenced"),
    ("active controller", "strom_controller_activecontrollercount"),
    ("offline partitions", "strom_controller_offlinepartitionscount"),
    ("raft leader", "strom_raft_current_leader"),
    ("raft epoch", "strom_raft_current_epoch"),
    ("raft high watermark", "strom_raft_high_watermark"),
    ("metadata offset", "strom_metadata_last_applied_offset"),
    ("log bytes", "strom_log_size_bytes"),
    ("log segments", "strom_log_segments"),
)


class OperatorError(Exception):
    """Printed by the command line as `error: ...`."""


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


def cluster_describe(args: argparse.Namespace) -> int:
    from strom.client.admin import Admin
    from strom.node.cli import CLI_BOOTSTRAP_TIMEOUT_MS, connection_options

    with Admin(
        args.bootstrap_server,
        bootstrap_timeout_ms=CLI_BOOTSTRAP_TIMEOUT_MS,
        **connection_options(args),
    ) as admin:
        description = admin.describe_cluster()
        topics = admin.describe_topics(None)
    rows = describe_cluster_rows(description, topics)
    if args.output == "json":
        print(
            json.dumps(
                {
                    "cluster_id": description.cluster_id,
                    "controller_id": description.controller_id,
                    "brokers": [asdict(r) for r in rows],
                },
                indent=2,
                sort_keys=True,
            )
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


def scrape(address: str, timeout_s: float) -> str:
    url = address if "://" in address else f"http://{address}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=timeout_s) as response:
            text: str = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise OperatorError(
            f"cannot read metrics from {address}: {exc} (is admin.listener set on that node?)"
        ) from exc
    return text


def key_numbers(text: str) -> dict[str, float]:
    """Each of KEY_METRICS present in `text`, summed over its labels (counters: their total)."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    numbers = {}
    for label, name in KEY_METRICS:
        family = families.get(name)
        if family is None:
            continue
        numbers[label] = sum(
            s.value for s in family.samples if not s.name.endswith(("_created", "_bucket"))
        )
    return numbers


def node_metrics(args: argparse.Namespace) -> int:
    numbers = key_numbers(scrape(args.address, args.timeout))
    if args.output == "json":
        print(json.dumps(numbers, indent=2, sort_keys=True))
        return 0
    width = max((len(k) for k in numbers), default=0) + 2
    for label, value in numbers.items():
        shown = int(value) if value == int(value) else round(value, 3)
        print(f"{label + ':':<{width}}{shown}")
    return 0


def node_ready(args: argparse.Namespace) -> int:
    """GET /readyz on one node's admin listener: exit 0 and print the reason when ready, else 1."""
    url = args.address if "://" in args.address else f"http://{args.address}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/readyz", timeout=args.timeout) as response:
            print(f"{args.address}: {response.read().decode().strip()}")
            return 0
    except urllib.error.HTTPError as exc:  # 503 carries the reason the node is not ready
        print(f"{args.address}: not ready: {exc.read().decode().strip()}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(
            f"{args.address}: cannot reach the admin listener: {exc} "
            "(is admin.listener set on that node?)",
            file=sys.stderr,
        )
    return 1
