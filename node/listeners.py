"""Where a node's services are served: one listener per configured endpoint.

The node decides *what* each listener serves (the servicers, by full service name, and the
interceptors that guard them); a `Listeners` decides *how* they are reached. `GrpcListeners`
binds one `grpc.aio.Server` per endpoint with health checking and reflection (DESIGN.md §9);
the deterministic simulation (tests/sim) hands the same servicer objects to its in-memory
network instead, so the handlers that run there are the shipping ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from strom.client.cluster import channel_options
from strom.node.config import Endpoint, NodeConfig
from strom.node.tls import server_credentials
from strom.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    controller_pb2,
    controller_pb2_grpc,
    group_pb2,
    group_pb2_grpc,
    raft_pb2,
    raft_pb2_grpc,
    replica_pb2,
    replica_pb2_grpc,
    txn_pb2,
    txn_pb2_grpc,
)

log = logging.getLogger("strom.node")


def _full_name(module: Any, service: str) -> str:
    return str(module.DESCRIPTOR.services_by_name[service].full_name)


RAFT = _full_name(raft_pb2, "Raft")
CONTROLLER = _full_name(controller_pb2, "Controller")
BROKER = _full_name(broker_pb2, "Broker")
REPLICA = _full_name(replica_pb2, "Replica")
GROUP = _full_name(group_pb2, "Group")
ADMIN = _full_name(admin_pb2, "Admin")
TRANSACTION = _full_name(txn_pb2, "Transaction")

# How each service is added to a grpc.aio.Server.
_ADDERS: dict[str, Callable[[Any, grpc.aio.Server], None]] = {
    RAFT: raft_pb2_grpc.add_RaftServicer_to_server,
    CONTROLLER: controller_pb2_grpc.add_ControllerServicer_to_server,
    BROKER: broker_pb2_grpc.add_BrokerServicer_to_server,
    REPLICA: replica_pb2_grpc.add_ReplicaServicer_to_server,
    GROUP: group_pb2_grpc.add_GroupServicer_to_server,
    ADMIN: admin_pb2_grpc.add_AdminServicer_to_server,
    TRANSACTION: txn_pb2_grpc.add_TransactionServicer_to_server,
}


@dataclass(frozen=True, slots=True)
class ListenerServices:
    """What one listener serves: servicers by full service name (`strom.v1.Broker`), and the
    server interceptors (timing, authentication, authorization) that run before them."""

    endpoint: Endpoint
    servicers: Mapping[str, Any]
    interceptors: Sequence[Any]


class Listeners(Protocol):
    async def start(self, services: ListenerServices) -> None:
        """Serve `services` on their endpoint; raises OSError when it cannot bind."""
        ...

    async def stop(self, grace_s: float) -> None:
        """Stop every listener, letting calls in progress finish for up to `grace_s`."""
        ...


class GrpcListeners:
    """One grpc.aio server per endpoint, with health checking and server reflection."""

    def __init__(self, config: NodeConfig, health_servicer: health.aio.HealthServicer) -> None:
        self.config = config
        self.health = health_servicer
        self.servers: list[grpc.aio.Server] = []

    async def start(self, services: ListenerServices) -> None:
        endpoint = services.endpoint
        # No SO_REUSEPORT (gRPC's default): a port another process holds must fail the bind,
        # not silently share connections with it (a TLS client could land on a stranger).
        server = grpc.aio.server(
            options=[*channel_options(), ("grpc.so_reuseport", 0)],
            interceptors=list(services.interceptors),
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for name, servicer in services.servicers.items():
            _ADDERS[name](servicer, server)
        reflection.enable_server_reflection(
            [health.SERVICE_NAME, reflection.SERVICE_NAME, *services.servicers], server
        )
        host = endpoint.host or "0.0.0.0"
        address = f"{host}:{endpoint.port}"
        credentials = server_credentials(self.config, endpoint.listener)
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
        if bound == 0:
            raise OSError(f"listeners: cannot bind {endpoint.listener} on {host}:{endpoint.port}")
        await server.start()
        self.servers.append(server)
        log.info(
            "listening: %s on %s:%d (%s)", endpoint.listener, host, endpoint.port,
            self.config.security_protocols[endpoint.listener],
        )  # fmt: skip

    async def stop(self, grace_s: float) -> None:
        servers, self.servers = self.servers, []
        await asyncio.gather(*(s.stop(grace_s) for s in servers))
