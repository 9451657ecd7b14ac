"""`strom cluster up/status/stop/down`: a local cluster of combined nodes as background processes.

Everything a local cluster writes stays under its data directory:

    DIR/cluster.json          cluster id, node ids, ports
    DIR/node-N/node.yaml      the node's configuration
    DIR/node-N/data/          its log directory (formatted with the cluster id)
    DIR/node-N/node.log       its output
    DIR/node-N/pid            its process id while running
    DIR/tls/                  with `--tls`: a throwaway CA, node-N.crt/.key per node, a client
                              certificate (strom-admin) and client.properties for --command-config

Running `up` again starts only the nodes that are not running, with the same ids, configs and
data, so a killed node comes back as itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from strom.client.properties import read_client_properties
from strom.node.config import NODE_KEYS, env_name
from strom.node.meta_properties import format_directories, random_uuid

DEFAULT_DIR = ".strom/cluster"
BASE_CLIENT_PORT = 9092
PORT_STRIDE = 100
TLS_DIR = "tls"
TLS_CLIENT = "strom-admin"  # CN of the client certificate a --tls cluster hands its user
CLIENT_PROPERTIES = "client.properties"  # written by node/certs.py for the first client


class ClusterError(Exception):
    """The local cluster cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class LocalNode:
    node_id: int
    client_port: int
    controller_port: int
    admin_port: int = 0  # the admin HTTP listener (/metrics); 0: none
    kafka_port: int = 0  # the listener speaking Kafka's protocol (KAFKA); 0: none

    @property
    def admin_address(self) -> str:
        return f"localhost:{self.admin_port}" if self.admin_port else ""

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.client_port}"

    @property
    def kafka_address(self) -> str:
        return f"localhost:{self.kafka_port}" if self.kafka_port else ""


def _kafka_listener_config(tls: bool) -> dict[str, str]:
    """The KAFKA listener every local node has, for Kafka clients and tools."""
    protocol = "SSL" if tls else "PLAINTEXT"
    return {
        "listener.security.protocol.map": f"{protocol}:{protocol},CONTROLLER:{protocol},"
        f"KAFKA:{protocol}",
        "listener.wire.protocol.map": "KAFKA:KAFKA",
    }


def _secure_kafka_like_clients(config: dict[str, Any], client_listener: str) -> None:
    """Overrides that set `listener.security.protocol.map` without KAFKA (written before local
    clusters had a KAFKA listener) give it the client listener's protocol: Kafka clients get the
    same security as strom's."""
    pairs = [p.strip() for p in str(config["listener.security.protocol.map"]).split(",")]
    protocols = {p.split(":", 1)[0].upper(): p.split(":", 1)[1] for p in pairs if ":" in p}
    if "KAFKA" not in protocols:
        pairs.append(f"KAFKA:{protocols.get(client_listener, 'PLAINTEXT')}")
        config["listener.security.protocol.map"] = ",".join(pairs)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_base_port(nodes: int, offsets: Sequence[int] = (0, 1, 3)) -> int:
    """A base port from which `nodes` nodes' ports are all free: each node's `offsets` from its
    own base, one PORT_STRIDE apart (client, controller and Kafka listeners; 2 is the admin
    listener). For clusters made by the demo, the benchmarks and the tests beside others: the
    search starts at a place that depends on this process, so two runs on one machine (other
    worktrees) do not take the same range at the same moment."""
    ranges = list(range(19092, 60000, 1000))
    start = os.getpid() % len(ranges)
    for base in ranges[start:] + ranges[:start]:
        if all(_port_free(base + i * PORT_STRIDE + d) for i in range(nodes) for d in offsets):
            return base
    raise ClusterError("no free ports for a local cluster between 19092 and 60000")


class LocalCluster:
    def __init__(self, directory: str | Path = DEFAULT_DIR) -> None:
        self.dir = Path(directory).resolve()
        self.state_file = self.dir / "cluster.json"

    # ---- layout ------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.state_file.exists()

    def load(self) -> tuple[str, list[LocalNode]]:
        if not self.exists():
            raise ClusterError(f"no local cluster in {self.dir}: run `strom cluster up` first")
        state = json.loads(self.state_file.read_text())
        return state["cluster_id"], [LocalNode(**n) for n in state["nodes"]]

    def node_dir(self, node_id: int) -> Path:
        return self.dir / f"node-{node_id}"

    def bootstrap(self) -> str:
        _, nodes = self.load()
        return ",".join(n.bootstrap for n in nodes)

    def kafka_bootstrap(self) -> str:
        """Where Kafka clients connect (`bootstrap.servers`); empty when no node has a KAFKA
        listener."""
        _, nodes = self.load()
        return ",".join(n.kafka_address for n in nodes if n.kafka_port)

    def create(
        self,
        count: int,
        base_port: int = BASE_CLIENT_PORT,
        overrides: dict[str, str] | None = None,
        admin: bool = False,
        tls: bool = False,
    ) -> tuple[str, list[LocalNode]]:
        """`admin`: give each node an admin HTTP listener on its client port + 2. `tls`: every
        listener serves TLS and requires client certificates from the cluster's own CA."""
        if count < 1:
            raise ClusterError("--nodes must be at least 1")
        bases = [base_port + (i - 1) * PORT_STRIDE for i in range(1, count + 1)]
        nodes = [
            LocalNode(i, base, base + 1, base + 2 if admin else 0, base + 3)
            for i, base in enumerate(bases, start=1)
        ]
        busy = [
            p
            for n in nodes
            for p in (n.client_port, n.controller_port, n.admin_port, n.kafka_port)
            if p and not _port_free(p)
        ]
        if busy:
            raise ClusterError(
                f"ports {busy} are in use; pick others with --base-port, or stop what uses them"
            )
        if tls:
            self._write_certs(nodes)
        cluster_id = random_uuid()
        voters = ",".join(f"{n.node_id}@localhost:{n.controller_port}" for n in nodes)
        client_listener = "SSL" if tls else "PLAINTEXT"
        for node in nodes:
            node_dir = self.node_dir(node.node_id)
            data = node_dir / "data"
            config = {
                "node.id": node.node_id,
                "process.roles": "broker,controller",
                "controller.quorum.voters": voters,
                "listeners": f"{client_listener}://localhost:{node.client_port},"
                f"CONTROLLER://localhost:{node.controller_port},"
                f"KAFKA://localhost:{node.kafka_port}",
                **_kafka_listener_config(tls),
                "log.dirs": str(data),
                "num.partitions": 3,
                "default.replication.factor": min(3, count),
                "offsets.topic.replication.factor": min(3, count),
                "transaction.state.log.replication.factor": min(3, count),
                **({"admin.listener": node.admin_address} if node.admin_port else {}),
                **(self._tls_config(node.node_id) if tls else {}),
                **(overrides or {}),
            }
            _secure_kafka_like_clients(config, client_listener)
            node_dir.mkdir(parents=True, exist_ok=True)
            _write_node_config(node_dir / "node.yaml", config)
            format_directories([data], cluster_id, node.node_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(
            json.dumps({"cluster_id": cluster_id, "nodes": [asdict(n) for n in nodes]}, indent=2)
        )
        return cluster_id, nodes

    # ---- TLS ---------------------------------------------------------------------------

    @property
    def tls_dir(self) -> Path:
        return self.dir / TLS_DIR

    def client_properties(self) -> Path | None:
        """The `--command-config` file of a `--tls` cluster; None for a plaintext one."""
        path = self.tls_dir / CLIENT_PROPERTIES
        return path if path.exists() else None

    def client_options(self) -> dict[str, str]:
        """SDK keyword arguments that reach this cluster (empty for plaintext)."""
        path = self.client_properties()
        return {} if path is None else read_client_properties(path)

    def _write_certs(self, nodes: list[LocalNode]) -> None:
        from strom.node.certs import write_cluster_certs  # cryptography: only when needed

        names = {f"node-{n.node_id}": ["localhost", "127.0.0.1"] for n in nodes}
        write_cluster_certs(self.tls_dir, names, clients=[TLS_CLIENT])

    def _tls_config(self, node_id: int) -> dict[str, str]:
        """Every listener TLS with client certificates required: the client listener doubles
        as the inter-broker one, and CONTROLLER carries Raft and broker-to-controller calls,
        for the nodes' certificates only (a client certificate from the same CA is refused)."""
        return {
            "controller.allowed.principals": "User:node-*",  # brokers added later, too
            "listener.security.protocol.map": "SSL:SSL,CONTROLLER:SSL,KAFKA:SSL",
            "inter.broker.listener.name": "SSL",
            "ssl.certificate.location": str(self.tls_dir / f"node-{node_id}.crt"),
            "ssl.key.location": str(self.tls_dir / f"node-{node_id}.key"),
            "ssl.ca.location": str(self.tls_dir / "ca.crt"),
            "ssl.client.auth": "required",
        }

    def create_from_compose(self, compose_file: str | Path, base_port: int) -> list[LocalNode]:
        """The topology of a docker-compose file, as local processes: each service's STROM_*
        environment becomes its node's configuration, with container hostnames and ports
        remapped to free localhost ports (one block of ports per node) and data under DIR."""
        compose = yaml.safe_load(Path(compose_file).read_text())
        services = compose.get("services") or {}
        configs = []
        for name, service in sorted(services.items()):
            if service.get("profiles"):
                continue  # optional services (monitoring) are not strom nodes
            env = {str(k): str(v) for k, v in (service.get("environment") or {}).items()}
            if "STROM_NODE_ID" not in env:
                raise ClusterError(f"{compose_file}: service {name} has no STROM_NODE_ID")
            configs.append((name, env))
        cluster_ids = {env.get("STROM_CLUSTER_ID", "") for _, env in configs}
        if len(cluster_ids) != 1 or "" in cluster_ids:
            raise ClusterError(f"{compose_file}: services must share one STROM_CLUSTER_ID")
        cluster_id = cluster_ids.pop()
        hosts = {name: env["STROM_NODE_ID"] for name, env in configs}
        port_of: dict[tuple[str, str], int] = {}  # (service, listener name) -> local port
        nodes = []
        for name, env in configs:
            node_id = int(env["STROM_NODE_ID"])
            base = base_port + (node_id - 1) * PORT_STRIDE
            for i, listener in enumerate(env.get("STROM_LISTENERS", "").split(",")):
                listener_name = listener.split("://", 1)[0].strip().upper()
                port_of[(name, listener_name)] = base + 10 + i
            admin_port = base + 2 if env.get("STROM_ADMIN_LISTENER") else 0
            nodes.append(
                LocalNode(
                    node_id,
                    port_of.get((name, "EXTERNAL"), base),
                    base + 1,
                    admin_port,
                    port_of.get((name, "KAFKA"), 0),
                )
            )
        for name, env in configs:
            node_id = int(env["STROM_NODE_ID"])
            node_dir = self.node_dir(node_id)
            config = {_config_key(k): v for k, v in env.items() if k != "STROM_CLUSTER_ID"}
            listeners = [
                f"{listener.split('://', 1)[0]}://localhost:{port_of[(name, listener.split('://', 1)[0].upper())]}"
                for listener in env.get("STROM_LISTENERS", "").split(",")
            ]
            config["listeners"] = ",".join(listeners)
            config["advertised.listeners"] = ",".join(
                item for item in listeners if not item.upper().startswith("CONTROLLER")
            )
            voters = []
            for voter in env.get("STROM_CONTROLLER_QUORUM_VOTERS", "").split(","):
                voter_id, _, address = voter.partition("@")
                host = address.rsplit(":", 1)[0]
                service = next((s for s, n in hosts.items() if s == host or n == voter_id), None)
                if service is None or (service, "CONTROLLER") not in port_of:
                    raise ClusterError(f"{compose_file}: voter {voter!r} names no service")
                voters.append(f"{voter_id}@localhost:{port_of[(service, 'CONTROLLER')]}")
            config["controller.quorum.voters"] = ",".join(voters)
            config["log.dirs"] = str(node_dir / "data")
            if "admin.listener" in config:  # the container's port, remapped like the others
                config["admin.listener"] = next(
                    n.admin_address for n in nodes if n.node_id == node_id
                )
            node_dir.mkdir(parents=True, exist_ok=True)
            _write_node_config(node_dir / "node.yaml", config)
            format_directories([node_dir / "data"], cluster_id, node_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(
            json.dumps({"cluster_id": cluster_id, "nodes": [asdict(n) for n in nodes]}, indent=2)
        )
        return nodes

    def add_broker(self, node_id: int, overrides: dict[str, str] | None = None) -> LocalNode:
        """Add a broker-only node (it follows the metadata log as an observer)."""
        cluster_id, nodes = self.load()
        if any(n.node_id == node_id for n in nodes):
            raise ClusterError(f"node {node_id} already exists")
        first = nodes[0]
        base = first.client_port + (node_id - 1) * PORT_STRIDE
        node = LocalNode(
            node_id, base, base + 1, base + 2 if first.admin_port else 0,
            base + 3 if first.kafka_port else 0,
        )  # fmt: skip
        voters_config = yaml.safe_load((self.node_dir(first.node_id) / "node.yaml").read_text())
        data = self.node_dir(node_id) / "data"
        listener = "PLAINTEXT"
        if self.client_properties() is not None:
            listener = "SSL"
            voters_config.update(self._tls_config(node_id))
            from strom.node.certs import load_authority, write_identity

            write_identity(self.tls_dir, load_authority(self.tls_dir), f"node-{node_id}")
        config = {
            **{
                k: v
                for k, v in voters_config.items()
                if k not in ("node.id", "listeners", "log.dirs", "admin.listener")
            },
            "node.id": node_id,
            "process.roles": "broker",
            "listeners": f"{listener}://localhost:{node.client_port}"
            + (f",KAFKA://localhost:{node.kafka_port}" if node.kafka_port else ""),
            "log.dirs": str(data),
            **({"admin.listener": node.admin_address} if node.admin_port else {}),
            **(overrides or {}),
        }
        self.node_dir(node_id).mkdir(parents=True, exist_ok=True)
        _write_node_config(self.node_dir(node_id) / "node.yaml", config)
        format_directories([data], cluster_id, node_id)
        nodes.append(node)
        self.state_file.write_text(
            json.dumps({"cluster_id": cluster_id, "nodes": [asdict(n) for n in nodes]}, indent=2)
        )
        return node

    # ---- processes ---------------------------------------------------------------------

    def pid(self, node_id: int) -> int | None:
        path = self.node_dir(node_id) / "pid"
        try:
            pid = int(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A pid can be reused after a reboot: make sure it is still our node.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return pid
        return pid if str(self.node_dir(node_id)).encode() in cmdline else None

    def start(self, node_id: int) -> int:
        node_dir = self.node_dir(node_id)
        log_file = open(node_dir / "node.log", "ab")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(
            [sys.executable, "-m", "strom.node.cli", "node", "run", "--config",
             str(node_dir / "node.yaml")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=node_dir,
        )  # fmt: skip
        log_file.close()
        (node_dir / "pid").write_text(str(process.pid))
        return process.pid

    def up(self) -> list[int]:
        """Start every node that is not running; returns the ids started."""
        _, nodes = self.load()
        started = []
        for node in nodes:
            if self.pid(node.node_id) is None:
                self.start(node.node_id)
                started.append(node.node_id)
        return started

    def stop(self, node_id: int, kill: bool = False, timeout_s: float = 30.0) -> bool:
        """SIGTERM (or SIGKILL) a node and wait for it to exit; False if it was not running."""
        pid = self.pid(node_id)
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid(node_id) is None:
                break
            _reap(pid)
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        (self.node_dir(node_id) / "pid").unlink(missing_ok=True)
        return True

    def down(self, timeout_s: float = 30.0) -> list[int]:
        _, nodes = self.load()
        running = [n.node_id for n in nodes if self.pid(n.node_id) is not None]
        for node_id in running:
            pid = self.pid(node_id)
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
        for node_id in running:
            self.stop(node_id, timeout_s=timeout_s)
        return running


def _write_node_config(path: Path, config: Mapping[str, Any]) -> None:
    """node.yaml may hold secrets (node.sasl.password): readable by its owner only, 0600 from
    the start like the TLS keys, also when an older file was world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(yaml.safe_dump(dict(config), sort_keys=False))


def _config_key(variable: str) -> str:
    """STROM_LOG_RETENTION_MS -> log.retention.ms (the reverse of config.env_name)."""
    for key in NODE_KEYS:
        if env_name(key.name) == variable:
            return key.name
    raise ClusterError(f"{variable} is not a strom setting")


def _reap(pid: int) -> None:
    """Collect a child's exit status if it was ours (tests start clusters in-process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
