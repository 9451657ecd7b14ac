"""The controller listener serves only the nodes, authorizer or not (issue #15).

With mTLS everywhere and no authorizer, any certificate the cluster's CA signed could read the
Raft metadata log from the controller listener: users' scrypt keys, ACLs, every topic. Now a
controller listener that authenticates its callers admits only the principals named by
`controller.allowed.principals` (by default the super users and the nodes' SASL user). A real
node runs in this process with mutual TLS on both listeners; a client certificate from the same
CA asks for the metadata log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from node_thread import CLUSTER_ID, NodeThread

from strom.client import Admin
from strom.client.errors import StromError
from strom.client.sasl import sasl_metadata
from strom.node.certs import write_cluster_certs
from strom.v1 import broker_pb2, broker_pb2_grpc, raft_pb2, raft_pb2_grpc


@pytest.fixture
def tls_node(tmp_path: Path) -> Iterator[tuple[NodeThread, dict[str, grpc.ChannelCredentials]]]:
    files = write_cluster_certs(
        tmp_path / "tls", {"node-1": ["localhost", "127.0.0.1"]}, clients=["strom-admin"]
    )
    credentials = {
        name: grpc.ssl_channel_credentials(
            f.ca.read_bytes(), f.key.read_bytes(), f.certificate.read_bytes()
        )
        for name, f in files.items()
    }
    node_files = files["node-1"]
    overrides = {
        "listener.security.protocol.map": "SSL:SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "SSL",
        "ssl.certificate.location": str(node_files.certificate),
        "ssl.key.location": str(node_files.key),
        "ssl.ca.location": str(node_files.ca),
        "ssl.client.auth": "required",
        "controller.allowed.principals": "User:node-*",
    }
    with NodeThread(tmp_path, "SSL", overrides) as node:
        yield node, credentials


def _fetch_log(node: NodeThread, credentials: grpc.ChannelCredentials) -> raft_pb2.FetchLogResponse:
    with grpc.secure_channel(f"localhost:{node.controller_port}", credentials) as channel:
        stub = raft_pb2_grpc.RaftStub(channel)
        request = raft_pb2.FetchLogRequest(
            cluster_id=CLUSTER_ID, observer_id=99, fetch_index=1, max_bytes=1 << 20
        )
        return stub.FetchLog(request, timeout=5)  # type: ignore[no-any-return]


def test_a_client_certificate_cannot_read_the_metadata_log(
    tls_node: tuple[NodeThread, dict[str, grpc.ChannelCredentials]],
) -> None:
    node, credentials = tls_node
    with pytest.raises(grpc.RpcError) as refused:
        _fetch_log(node, credentials["strom-admin"])
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "not a node" in refused.value.details()  # type: ignore[attr-defined]
    # The node itself (its own certificate) is served, once its quorum has committed.
    deadline = time.monotonic() + 20
    while _fetch_log(node, credentials["node-1"]).commit_index < 1:
        assert time.monotonic() < deadline, "the node's metadata log never committed"
        time.sleep(0.05)
    # And the client is served where clients belong: on the client listener.
    with grpc.secure_channel(f"localhost:{node.client_port}", credentials["strom-admin"]) as ch:
        answer = broker_pb2_grpc.BrokerStub(ch).Metadata(broker_pb2.MetadataRequest(), timeout=5)
    assert answer.cluster_id == CLUSTER_ID


def test_a_sasl_user_cannot_read_the_metadata_log_without_an_authorizer(tmp_path: Path) -> None:
    """SASL on both listeners, no authorizer: a user who logs in correctly is still not a node."""
    overrides = {
        "listener.security.protocol.map": "PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "node.sasl.username": "node",
        "node.sasl.password": "node-secret",
    }
    with NodeThread(tmp_path, "PLAINTEXT", overrides) as node:
        bootstrap = f"localhost:{node.client_port}"
        with Admin(bootstrap, sasl_username="node", sasl_password="node-secret",
                   request_timeout_ms=10_000) as admin:  # fmt: skip
            deadline = time.monotonic() + 20
            while True:
                try:
                    admin.create_user("alice", "alice-secret")
                    break
                except StromError:
                    assert time.monotonic() < deadline, "the node never took a user"
                    time.sleep(0.1)
        request = raft_pb2.FetchLogRequest(cluster_id=CLUSTER_ID, observer_id=99, fetch_index=1)
        with grpc.insecure_channel(f"localhost:{node.controller_port}") as channel:
            stub = raft_pb2_grpc.RaftStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.FetchLog(request, metadata=sasl_metadata("alice", "alice-secret"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
            served = stub.FetchLog(
                request, metadata=sasl_metadata("node", "node-secret"), timeout=5
            )
            assert served.commit_index >= 1
