"""`strom node run|health|ready|metrics` and `strom storage format|random-uuid`: what runs on
a node's own host.

`node health` is the gRPC health check of one listener; `node ready` asks the admin listener's
`/readyz` (what the container's HEALTHCHECK runs: the image has no curl) and exits 0 only when
ready; `node metrics` reads the admin listener's `/metrics` (plain urllib) and prints the
numbers an operator looks at first, summed over labels.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from strom.client.tls import SecurityOptions, connection_hint, open_sync_channel
from strom.node.cli.common import CommandError, command_config_argument, connection_options
from strom.node.cli.output import print_json
from strom.node.config import load_config
from strom.node.logging_setup import configure_logging
from strom.node.meta_properties import format_directories, random_uuid

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


def _node_run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the whole server is half a second of imports that every
    # other command would pay for.
    from strom.node.server import run_node

    config = load_config(args.config)
    configure_logging(config)
    return asyncio.run(run_node(config))


def _node_health(args: argparse.Namespace) -> int:
    """gRPC health check of one node (what Docker's HEALTHCHECK runs): exit 0 when SERVING."""
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


def scrape(address: str, timeout_s: float) -> str:
    url = address if "://" in address else f"http://{address}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=timeout_s) as response:
            text: str = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise CommandError(
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


def _node_metrics(args: argparse.Namespace) -> int:
    numbers = key_numbers(scrape(args.address, args.timeout))
    if args.output == "json":
        print_json(numbers)
        return 0
    width = max((len(k) for k in numbers), default=0) + 2
    for label, value in numbers.items():
        shown = int(value) if value == int(value) else round(value, 3)
        print(f"{label + ':':<{width}}{shown}")
    return 0


def _node_ready(args: argparse.Namespace) -> int:
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


def _storage_format(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    directories = [Path(d) for d in config["log.dirs"]] + [config.metadata_log_dir]
    done = format_directories(directories, args.cluster_id, config.node_id, args.ignore_formatted)
    for directory in done:
        print(f"Formatted {directory} (cluster.id={args.cluster_id}, node.id={config.node_id})")
    return 0


def _storage_random_uuid(args: argparse.Namespace) -> int:
    print(random_uuid())
    return 0


def add_commands(sub: Any) -> None:
    node = sub.add_parser("node", help="run a node").add_subparsers(dest="action", required=True)
    run = node.add_parser("run", help="run a node in the foreground")
    run.add_argument("--config", required=True, help="the node's YAML configuration")
    run.set_defaults(handler=_node_run)
    health_ = node.add_parser("health", help="gRPC health check of a node (exit 0 if serving)")
    health_.add_argument("--address", default="localhost:9093", help="any listener host:port")
    health_.add_argument("--timeout", type=float, default=3.0)
    command_config_argument(health_)
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
