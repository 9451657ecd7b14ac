"""Authentication and ACLs on a real three-node cluster (one cluster for the whole module).

Every listener is SASL_PLAINTEXT (clients, inter-broker and the controller quorum), the
authorizer is on with `super.users=User:admin;User:node`, and `allow.everyone.if.no.acl.found`
is off (Kafka's default). The nodes authenticate to each other as User:node
(`node.sasl.username`); the first admin user is created with those node credentials, then
everything else uses User:admin. The last test greps every node log, the /metrics pages and
every error message a client saw for the passwords used here.
"""

from __future__ import annotations

import gc
import io
import json
import re
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cluster_harness import FAST, eventually, free_base_port
from confluent_kafka import KafkaError as ConfluentError
from confluent_kafka import Producer as ConfluentProducer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError

from strom.client import Consumer, Producer
from strom.client.acl import (
    CLUSTER_NAME,
    AclBinding,
    AclBindingFilter,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)
from strom.client.admin import Admin, NewTopic
from strom.client.errors import (
    AuthenticationFailedError,
    AuthorizationFailedError,
    StromError,
    TransactionalIdAuthorizationError,
)
from strom.client.sasl import sasl_metadata
from strom.node import cli
from strom.node.kafka.codec import Reader
from strom.node.kafka.messages import SASL_AUTHENTICATE, SASL_HANDSHAKE
from strom.node.local_cluster import LocalCluster
from strom.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    raft_pb2,
    raft_pb2_grpc,
    replica_pb2,
    replica_pb2_grpc,
)

pytestmark = pytest.mark.integration

NODE_PW = "n0de-Pw-7f3a91c2"
ADMIN_PW = "adm1n-Pw-c4e2b8d6"
ALICE_PW = "al1ce-Pw-9d0e17aa"
BOB_PW = "b0b-Pw-51aa6c3f"
WRONG_PW = "wr0ng-Pw-e83b02f9"
CAROL_PW = "car0l-Pw-0b7d44e1"
KIM_PW = "k1m-Pw-3e5f0a9d"
DANA_PW = "d4na-Pw-6c1e93b7"
PASSWORDS = (NODE_PW, ADMIN_PW, ALICE_PW, BOB_PW, WRONG_PW, CAROL_PW, KIM_PW, DANA_PW)
TIMEOUT = {"request_timeout_ms": 5_000}

# Every error message a client saw in this module: the secrets test checks them too.
SEEN_ERRORS: list[str] = []


class Secured:
    def __init__(self, local: LocalCluster) -> None:
        self.local = local
        self.bootstrap = local.bootstrap()

    def admin(self, user: str = "admin", password: str = ADMIN_PW) -> Admin:
        return Admin(self.bootstrap, sasl_username=user, sasl_password=password, **TIMEOUT)

    def grant(self, bindings: list[AclBinding]) -> None:
        """Create ACLs, then wait until every node's image has them: each broker applies the
        metadata log on its own, so a change reaches the nodes a few milliseconds apart."""
        with self.admin() as admin:
            admin.create_acls(bindings)
        self.settle(lambda have: set(bindings) <= have)

    def revoke(self, filters: list[AclBindingFilter]) -> list[AclBinding]:
        with self.admin() as admin:
            gone = admin.delete_acls(filters)
        self.settle(lambda have: not have & set(gone))
        return gone

    def settle(self, done: Any, users: bool = False) -> None:
        """Wait until `done(what the node holds)` at every node: its ACLs, or its user names."""
        for address in self.bootstrap.split(","):
            with Admin(address, sasl_username="admin", sasl_password=ADMIN_PW, **TIMEOUT) as one:

                def holds(one: Admin = one) -> set[Any]:
                    if users:
                        return {u.name for u in one.describe_users()}
                    return set(one.describe_acls())

                eventually(lambda: done(holds()), 10, f"metadata at {address}")

    def producer(self, user: str, password: str) -> Producer:
        return Producer(
            self.bootstrap, sasl_username=user, sasl_password=password, linger_ms=0,
            delivery_timeout_ms=10_000, **TIMEOUT,
        )  # fmt: skip

    def consumer(self, user: str, password: str, **options: Any) -> Consumer:
        return Consumer(
            self.bootstrap, sasl_username=user, sasl_password=password,
            auto_offset_reset="earliest", **options, **TIMEOUT,
        )  # fmt: skip


def refused(expected: type[StromError], fn: Any, *args: Any) -> StromError:
    with pytest.raises(expected) as caught:
        fn(*args)
    SEEN_ERRORS.append(str(caught.value))
    return caught.value


def allow(principal: str, op: Operation, rtype: ResourceType, name: str,
          pattern: PatternType = PatternType.LITERAL,
          permission: Permission = Permission.ALLOW) -> AclBinding:  # fmt: skip
    return AclBinding(rtype, name, pattern, principal, "*", op, permission)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    local = LocalCluster(tmp_path_factory.mktemp("secured"))
    overrides = {
        **FAST,
        "listener.security.protocol.map": "PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "authorizer.enabled": "true",
        "super.users": "User:admin;User:node",
        "node.sasl.username": "node",
        "node.sasl.password": NODE_PW,
    }
    local.create(3, free_base_port(3), overrides, admin=True)
    local.up()
    try:
        secured = Secured(local)

        def healthy() -> bool:
            with secured.admin("node", NODE_PW) as admin:
                described = admin.describe_cluster()
                return (
                    described.controller_id > 0
                    and sum(not b.fenced for b in described.brokers) == 3
                )

        eventually(healthy, 40, "three unfenced brokers over SASL")
        with secured.admin("node", NODE_PW) as admin:  # bootstrap: the nodes' own login
            admin.create_user("admin", ADMIN_PW)
        with secured.admin() as admin:
            admin.create_user("alice", ALICE_PW)
            admin.create_user("bob", BOB_PW)
        secured.settle(lambda names: {"alice", "bob"} <= names, users=True)
        yield secured
    finally:
        try:
            local.down(timeout_s=10)
        finally:
            for node in local.load()[1]:
                local.stop(node.node_id, kill=True)


def test_wrong_or_missing_credentials_are_refused(cluster: Secured) -> None:
    error = refused(
        AuthenticationFailedError, lambda: cluster.admin("alice", WRONG_PW).list_topics()
    )
    assert error.name == "SASL_AUTHENTICATION_FAILED" and not error.retriable
    refused(AuthenticationFailedError, lambda: cluster.admin("mallory", ALICE_PW).list_topics())
    with Admin(cluster.bootstrap, **TIMEOUT) as anonymous:
        refused(AuthenticationFailedError, anonymous.list_topics)
    # The controller listener is SASL too: a raw call without credentials is refused there.
    _, nodes = cluster.local.load()
    address = f"localhost:{nodes[0].controller_port}"
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as raw:
        raft_pb2_grpc.RaftStub(channel).FetchLog(raft_pb2.FetchLogRequest(fetch_index=1), timeout=5)
    assert raw.value.code() == grpc.StatusCode.UNAUTHENTICATED
    SEEN_ERRORS.append(str(raw.value.details()))


def test_users_list_shows_names_and_mechanisms_only(cluster: Secured) -> None:
    with cluster.admin() as admin:
        users = {u.name: u for u in admin.describe_users()}
    assert {"admin", "alice", "bob"} <= set(users)
    assert users["alice"].mechanism == "SCRYPT" and users["alice"].n > 0
    # The wire answer itself carries no bytes at all: no salt, no hash.
    with grpc.insecure_channel(cluster.bootstrap.split(",")[0]) as channel:
        raw = admin_pb2_grpc.AdminStub(channel).DescribeUsers(
            admin_pb2.DescribeUsersRequest(), metadata=sasl_metadata("admin", ADMIN_PW), timeout=5
        )
    for user in raw.users:
        assert {f.name for f, _ in user.ListFields()} <= {"name", "mechanism", "n", "scram"}
        for info in user.scram:  # SCRAM: the mechanism and iteration count, no salt or key
            assert {f.name for f, _ in info.ListFields()} == {"mechanism", "iterations"}
    # Alice (no ACL on the cluster) may not list users.
    refused(AuthorizationFailedError, lambda: cluster.admin("alice", ALICE_PW).describe_users())


def test_produce_fetch_commit_need_their_acls(cluster: Secured) -> None:
    topic, group = "orders", "billing"
    with cluster.admin() as admin:
        admin.create_topics([NewTopic(topic, 1, 3)])
    with cluster.admin("alice", ALICE_PW) as alice:
        assert topic not in alice.list_topics()  # cannot even see it
        error = refused(AuthorizationFailedError, alice.describe_topics, [topic])
        # Unauthorized and nonexistent look the same.
        missing = refused(AuthorizationFailedError, alice.describe_topics, ["no-such-topic"])
        assert error.name == missing.name == "TOPIC_AUTHORIZATION_FAILED"
    producer = cluster.producer("alice", ALICE_PW)
    try:
        refused(AuthorizationFailedError, lambda: producer.send(topic, b"x").result(15))
    finally:
        producer.close()

    cluster.grant([allow("User:alice", Operation.WRITE, ResourceType.TOPIC, topic)])
    with cluster.admin("alice", ALICE_PW) as alice:
        assert topic in alice.list_topics()  # WRITE implies DESCRIBE
    with cluster.producer("alice", ALICE_PW) as producer:
        for i in range(5):
            producer.send(topic, f"m{i}".encode()).result(15)

    consumer = cluster.consumer("alice", ALICE_PW)
    try:
        consumer.assign([(topic, 0)])
        refused(AuthorizationFailedError, consumer.poll, 2_000)
    finally:
        consumer.close()
    with cluster.admin("alice", ALICE_PW) as alice:
        refused(AuthorizationFailedError, alice.alter_group_offsets, group, {(topic, 0): 1})

    cluster.grant(
        [
            allow("User:alice", Operation.READ, ResourceType.TOPIC, topic),
            allow("User:alice", Operation.READ, ResourceType.GROUP, group),
        ]
    )
    with cluster.consumer("alice", ALICE_PW, group_id=group, enable_auto_commit=False) as consumer:
        consumer.subscribe([topic])
        seen: list[bytes] = []
        eventually(lambda: seen.extend(r.value for r in consumer.poll(500)) or len(seen) >= 5,
                   30, "alice reads her records")  # fmt: skip
        assert seen[:5] == [f"m{i}".encode() for i in range(5)]
        consumer.commit()
        assert consumer.committed((topic, 0)) == 5


def test_commit_needs_read_on_the_topic_too(cluster: Secured) -> None:
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("ledger", 1, 3)])
    cluster.grant([allow("User:bob", Operation.READ, ResourceType.GROUP, "audit")])
    with cluster.admin("bob", BOB_PW) as bob:
        error = refused(AuthorizationFailedError, bob.alter_group_offsets, "audit",
                        {("ledger", 0): 0})  # fmt: skip
        assert error.name == "TOPIC_AUTHORIZATION_FAILED"
        refused(
            AuthorizationFailedError, bob.alter_group_offsets, "other-group", {("ledger", 0): 0}
        )


def test_deny_overrides_allow(cluster: Secured) -> None:
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("pay-in", 1, 3), NewTopic("payments", 1, 3)])
    cluster.grant(
        [
            allow("User:bob", Operation.ALL, ResourceType.TOPIC, "pay", PatternType.PREFIXED),
            allow("User:bob", Operation.WRITE, ResourceType.TOPIC, "payments",
                  permission=Permission.DENY),
        ]
    )  # fmt: skip
    with cluster.producer("bob", BOB_PW) as producer:
        producer.send("pay-in", b"ok").result(15)
        refused(AuthorizationFailedError, lambda: producer.send("payments", b"no").result(15))
    with cluster.admin("bob", BOB_PW) as bob:
        assert {"pay-in", "payments"} <= set(bob.list_topics())  # DESCRIBE is not denied


def test_transactions_need_write_on_the_transactional_id(cluster: Secured) -> None:
    """Kafka's TRANSACTIONAL_ID resource: WRITE on the topic is not enough for a transactional
    producer; with WRITE on its id (a prefix here) it commits, and only its ids."""
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("txn-out", 1, 3)])
    cluster.grant([allow("User:bob", Operation.WRITE, ResourceType.TOPIC, "txn-out")])

    def transactional(tid: str) -> Producer:
        return Producer(
            cluster.bootstrap, sasl_username="bob", sasl_password=BOB_PW, transactional_id=tid,
            linger_ms=0, **TIMEOUT,
        )  # fmt: skip

    with transactional("bob-1") as producer:
        error = refused(TransactionalIdAuthorizationError, producer.init_transactions)
        assert error.name == "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
    cluster.grant(
        [allow("User:bob", Operation.WRITE, ResourceType.TRANSACTIONAL_ID, "bob-",
               PatternType.PREFIXED)]
    )  # fmt: skip
    with transactional("bob-1") as producer:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send("txn-out", b"committed").result(15)
        producer.commit_transaction()
    with transactional("alice-1") as producer:  # not one of bob's ids
        refused(TransactionalIdAuthorizationError, producer.init_transactions)
    with cluster.consumer("admin", ADMIN_PW, isolation_level="read_committed") as consumer:
        consumer.assign([("txn-out", 0)])
        seen: list[bytes] = []
        eventually(lambda: seen.extend(r.value for r in consumer.poll(500)) or bool(seen),
                   20, "the committed record")  # fmt: skip
        assert seen == [b"committed"]


def test_no_acl_found_means_closed_and_cluster_action_is_for_nodes(cluster: Secured) -> None:
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("unguarded", 1, 3)])
    with cluster.admin("alice", ALICE_PW) as alice:
        assert "unguarded" not in alice.list_topics()  # allow.everyone.if.no.acl.found=false
        # Admin rights are cluster ACLs: alice may not create topics or ACLs.
        refused(AuthorizationFailedError, alice.create_topics, [NewTopic("mine", 1, 1)])
        refused(AuthorizationFailedError, alice.create_acls,
                [allow("User:alice", Operation.ALL, ResourceType.TOPIC, "*")])  # fmt: skip
    # Inter-node RPCs need CLUSTER_ACTION: alice may not pose as a follower.
    address = cluster.bootstrap.split(",")[0]
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as raw:
        replica_pb2_grpc.ReplicaStub(channel).Fetch(
            replica_pb2.ReplicaFetchRequest(replica_id=2, broker_epoch=1),
            metadata=sasl_metadata("alice", ALICE_PW), timeout=5,
        )  # fmt: skip
    assert raw.value.code() == grpc.StatusCode.PERMISSION_DENIED
    SEEN_ERRORS.append(str(raw.value.details()))


def test_cli_users_and_acls(
    cluster: Secured, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STROM_SASL_USERNAME", "admin")
    monkeypatch.setenv("STROM_SASL_PASSWORD", ADMIN_PW)
    server = ["--bootstrap-server", cluster.bootstrap]
    monkeypatch.setattr("sys.stdin", io.StringIO(CAROL_PW + "\n"))
    assert cli.main(["users", "create", "carol", "--password-stdin", *server]) == 0
    assert cli.main(["topics", "create", "events", "--partitions", "1", *server]) == 0
    assert cli.main(["acls", "add", "--allow-principal", "User:carol", "--operation", "Read",
                     "--operation", "Describe", "--topic", "events", *server]) == 0  # fmt: skip
    assert cli.main(["acls", "add", "--deny-principal", "User:carol", "--operation", "Write",
                     "--topic", "ev", "--resource-pattern-type", "prefixed", *server]) == 0  # fmt: skip
    cluster.settle(lambda have: sum(b.principal == "User:carol" for b in have) == 3)
    capsys.readouterr()
    assert cli.main(["acls", "list", "--principal", "User:carol", "--output", "json", *server]) == 0
    listed = capsys.readouterr().out
    assert listed.count('"principal": "User:carol"') == 3 and '"permission": "DENY"' in listed
    assert cli.main(["users", "list", *server]) == 0
    users = capsys.readouterr().out
    both = "SCRAM-SHA-256 iterations=4096 SCRAM-SHA-512 iterations=4096"
    assert re.search(rf"^carol\tSCRYPT n=\d+\t{both}$", users, re.M), users
    # A password change that derives SCRAM-SHA-512 only: the SHA-256 credential goes.
    monkeypatch.setattr("sys.stdin", io.StringIO(CAROL_PW + "\n"))
    assert cli.main(["users", "alter", "carol", "--password-stdin", "--mechanism",
                     "SCRAM-SHA-512", "--iterations", "8192", *server]) == 0  # fmt: skip
    capsys.readouterr()
    assert cli.main(["users", "describe", "--output", "json", *server]) == 0
    carol_json = [u for u in json.loads(capsys.readouterr().out) if u["name"] == "carol"]
    assert carol_json[0]["scram"] == [{"mechanism": "SCRAM-SHA-512", "iterations": 8192}]
    with cluster.admin("carol", CAROL_PW) as carol:
        assert "events" in carol.list_topics()
    assert cli.main(["acls", "remove", "--allow-principal", "User:carol", "--topic", "events",
                     *server]) == 0  # fmt: skip
    cluster.settle(lambda have: sum(b.principal == "User:carol" for b in have) == 1)
    with cluster.admin() as admin:
        left = admin.describe_acls(AclBindingFilter(principal="User:carol"))
    assert [b.permission for b in left] == [Permission.DENY]
    with cluster.admin("carol", CAROL_PW) as carol:
        assert "events" not in carol.list_topics()
    assert cli.main(["users", "delete", "carol", *server]) == 0
    cluster.settle(lambda names: "carol" not in names, users=True)
    refused(AuthenticationFailedError, lambda: cluster.admin("carol", CAROL_PW).list_topics())
    # The CLI refuses a password on the command line.
    assert cli.main(["users", "create", "dave", *server]) == 1


def test_acl_changes_apply_to_cluster_resources(cluster: Secured) -> None:
    operator = allow("User:alice", Operation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME)
    cluster.grant([operator])
    with cluster.admin("alice", ALICE_PW) as alice:
        assert {u.name for u in alice.describe_users()} >= {"alice"}
    assert cluster.revoke([AclBindingFilter(resource_type=ResourceType.CLUSTER)]) == [operator]
    with cluster.admin("alice", ALICE_PW) as alice:
        refused(AuthorizationFailedError, alice.describe_users)


def test_streams_are_authenticated_once_and_authorize_every_request(cluster: Secured) -> None:
    """The produce and fetch streams on a SASL listener: a wrong password cannot open one; an
    open stream carries the user's requests, each authorized on its own against the ACLs of the
    moment, so a grant or a revocation applies to the stream already open."""
    topic = "streamed"
    with cluster.admin() as admin:
        admin.create_topics([NewTopic(topic, 1, 3)])
        admin.create_user("dana", DANA_PW)
    cluster.settle(lambda names: "dana" in names, users=True)
    write = allow("User:dana", Operation.WRITE, ResourceType.TOPIC, topic)

    wrong = Producer(cluster.bootstrap, sasl_username="dana", sasl_password=WRONG_PW,
                     streaming=True, delivery_timeout_ms=10_000, **TIMEOUT)  # fmt: skip
    try:
        refused(AuthenticationFailedError, lambda: wrong.send(topic, b"x").result(15))
    finally:
        wrong.close()

    producer = Producer(cluster.bootstrap, sasl_username="dana", sasl_password=DANA_PW,
                        streaming=True, linger_ms=0, delivery_timeout_ms=10_000,
                        **TIMEOUT)  # fmt: skip
    try:
        refused(AuthorizationFailedError, lambda: producer.send(topic, b"no").result(15))
        # Another principal's stream to the same broker meanwhile: each stream keeps its own.
        with Producer(cluster.bootstrap, sasl_username="admin", sasl_password=ADMIN_PW,
                      streaming=True, linger_ms=0, **TIMEOUT) as admin_producer:  # fmt: skip
            admin_producer.send(topic, b"by-admin").result(15)
            refused(AuthorizationFailedError, lambda: producer.send(topic, b"no").result(15))
        cluster.grant([write])
        for i in range(3):
            producer.send(topic, f"s{i}".encode()).result(15)
        streams = list(producer._async.cluster._produce_streams.values())
        assert streams and not any(s.unsupported for s in streams)
        opened = sum(s.opened for s in streams)
        assert opened >= 1, "the producer sent without a stream"
        cluster.revoke([AclBindingFilter(resource_type=ResourceType.TOPIC, resource_name=topic,
                                         principal="User:dana")])  # fmt: skip
        refused(AuthorizationFailedError, lambda: producer.send(topic, b"no").result(15))
        # The grant and the revocation reached the stream that was already open.
        assert sum(s.opened for s in producer._async.cluster._produce_streams.values()) == opened
    finally:
        producer.close()

    consumer = cluster.consumer("dana", DANA_PW, streaming=True)
    try:
        consumer.assign([(topic, 0)])
        refused(AuthorizationFailedError, consumer.poll, 2_000)
        cluster.grant([allow("User:dana", Operation.READ, ResourceType.TOPIC, topic)])
        seen: list[bytes] = []
        eventually(lambda: seen.extend(r.value for r in consumer.poll(500)) or len(seen) >= 4,
                   30, "dana reads on a stream")  # fmt: skip
        assert seen[:4] == [b"by-admin", b"s0", b"s1", b"s2"]
        fetch_streams = list(consumer._async.cluster._fetch_streams.values())
        assert sum(s.opened for s in fetch_streams) >= 1
        assert not any(s.unsupported for s in fetch_streams)
    finally:
        consumer.close()


def kafka_login(cluster: Secured, user: str, password: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": cluster.local.kafka_bootstrap(),
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": user,
        "sasl_plain_password": password,
        "request_timeout_ms": 5_000,
    }


def test_kafka_clients_log_in_with_sasl_plain_and_meet_the_same_acls(cluster: Secured) -> None:
    """The KAFKA listener (SASL_PLAINTEXT here, like the cluster's client listener): kafka-python
    logs in with SASL/PLAIN as a strom user; a wrong password is refused; a topic the user may
    not DESCRIBE is invisible, one it may not WRITE refuses its records."""
    with cluster.admin() as admin:
        admin.create_topics([NewTopic("k-open", 1, 3), NewTopic("k-hidden", 1, 3)])
    cluster.grant([
        allow("User:bob", Operation.DESCRIBE, ResourceType.TOPIC, "k-open"),
        allow("User:bob", Operation.WRITE, ResourceType.TOPIC, "k-open"),
    ])  # fmt: skip
    # kafka-python retries a refused login until its bootstrap timeout (30 s by default).
    with pytest.raises(KafkaError) as wrong:
        KafkaAdminClient(**kafka_login(cluster, "bob", WRONG_PW), bootstrap_timeout_ms=2_000)
    SEEN_ERRORS.append(repr(wrong.value))
    logs = [(cluster.local.node_dir(n) / "node.log").read_text(errors="replace") for n in (1, 2, 3)]
    assert any("SASL authentication failed" in text for text in logs), "refused for the password"
    bob = KafkaAdminClient(**kafka_login(cluster, "bob", BOB_PW))
    try:
        topics = bob.list_topics()
        assert "k-open" in topics and "k-hidden" not in topics
    finally:
        bob.close()
    producer = KafkaProducer(**kafka_login(cluster, "bob", BOB_PW), acks="all", retries=0)
    try:
        assert producer.send("k-open", b"ok").get(timeout=15).offset == 0
        with pytest.raises(KafkaError) as denied:
            producer.send("k-hidden", b"no").get(timeout=15)
        SEEN_ERRORS.append(repr(denied.value))
        assert "Authorization" in type(denied.value).__name__
    finally:
        producer.close()
    with cluster.admin() as admin:
        assert admin.list_offsets([("k-hidden", 0)], -1) == {("k-hidden", 0): 0}


def scram_login(cluster: Secured, mechanism: str, user: str, password: str) -> dict[str, Any]:
    return {**kafka_login(cluster, user, password), "sasl_mechanism": mechanism}


def confluent_login(cluster: Secured, mechanism: str, user: str, password: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": cluster.local.kafka_bootstrap(),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }


def raw_scram_first(cluster: Secured, client_first: bytes) -> tuple[int, str, bool]:
    """SaslHandshake SCRAM-SHA-256, then `client_first` on a bare socket: (error code, error
    message, whether the node closed the connection after answering)."""
    host, port = cluster.local.kafka_bootstrap().split(",")[0].rsplit(":", 1)

    def request(api: Any, version: int, correlation_id: int, body: dict[str, Any]) -> bytes:
        data = struct.pack(">hhih", api.key, version, correlation_id, 4) + b"test"
        data += api.request.encode(body, version)
        return struct.pack(">i", len(data)) + data

    def answer(sock: socket.socket) -> bytes:
        size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
        return sock.recv(size, socket.MSG_WAITALL)[4:]  # after the correlation id

    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request(SASL_HANDSHAKE, 1, 1, {"mechanism": "SCRAM-SHA-256"}))
        assert SASL_HANDSHAKE.response.decode(Reader(answer(sock)), 1)["error_code"] == 0
        sock.sendall(request(SASL_AUTHENTICATE, 0, 2, {"auth_bytes": client_first}))
        body = SASL_AUTHENTICATE.response.decode(Reader(answer(sock)), 0)
        return body["error_code"], body["error_message"], sock.recv(1) == b""


def test_kafka_clients_log_in_with_scram(cluster: Secured) -> None:
    """SASL/SCRAM-SHA-256 and -512 on the KAFKA listener. kafka-python and confluent-kafka log in
    as users made by strom's SDK (SCRAM credentials derived beside the scrypt key) and by Kafka's
    AlterUserScramCredentials (confluent-kafka's admin API, as User:admin); both clients'
    DescribeUserScramCredentials answer; a wrong password is refused and logged; garbage in the
    exchange closes that connection and the node serves on."""
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        bob = KafkaAdminClient(**scram_login(cluster, mechanism, "bob", BOB_PW))
        try:
            assert isinstance(bob.list_topics(), list)
        finally:
            bob.close()
    admin = AdminClient(confluent_login(cluster, "SCRAM-SHA-512", "admin", ADMIN_PW))
    made = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        "kim", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), KIM_PW.encode()
    )])  # fmt: skip
    made["kim"].result(timeout=15)
    described = admin.describe_user_scram_credentials(["kim", "alice"])
    kim = described["kim"].result(timeout=15).scram_credential_infos
    assert [(i.mechanism, i.iterations) for i in kim] == [(ScramMechanism.SCRAM_SHA_256, 8192)]
    alice = described["alice"].result(timeout=15).scram_credential_infos
    assert sorted((i.mechanism.value, i.iterations) for i in alice) == [(1, 4096), (2, 4096)]
    cluster.settle(lambda names: "kim" in names, users=True)
    kim_admin = AdminClient(confluent_login(cluster, "SCRAM-SHA-256", "kim", KIM_PW))
    assert kim_admin.list_topics(timeout=15).brokers  # logged in: metadata answered
    with cluster.admin() as strom_admin:  # a SCRAM-only user: no scrypt key, so no PLAIN login
        (kim_user,) = strom_admin.describe_users(["kim"])
    assert kim_user.mechanism == "" and kim_user.scram == (("SCRAM-SHA-256", 8192),)
    kafka_admin = KafkaAdminClient(**scram_login(cluster, "SCRAM-SHA-256", "admin", ADMIN_PW))
    try:
        listed = kafka_admin.describe_user_scram_credentials(["kim"])
        assert "kim" in str(listed) and "8192" in str(listed)
    finally:
        kafka_admin.close()
    # A wrong password: refused, logged, for both clients.
    errors: list[Any] = []
    wrong = ConfluentProducer(
        {**confluent_login(cluster, "SCRAM-SHA-512", "kim", WRONG_PW), "error_cb": errors.append}
    )
    deadline = time.monotonic() + 15
    while not any(e.code() == ConfluentError._AUTHENTICATION for e in errors):
        assert time.monotonic() < deadline, f"no authentication error: {errors}"
        wrong.poll(0.2)
    SEEN_ERRORS.append(str(errors))
    wrong.close()  # else librdkafka retries its login until the module's cluster is gone
    with pytest.raises(KafkaError) as refused_login:
        KafkaAdminClient(**scram_login(cluster, "SCRAM-SHA-256", "alice", WRONG_PW),
                         bootstrap_timeout_ms=2_000)  # fmt: skip
    SEEN_ERRORS.append(repr(refused_login.value))
    logs = [(cluster.local.node_dir(n) / "node.log").read_text(errors="replace") for n in (1, 2, 3)]
    assert any(
        "SASL authentication failed: authentication failed: wrong username or password" in text
        for text in logs
    )
    # Bad input in the exchange: a clear refusal, the connection closed, the node fine.
    for garbage in (b"\xff\x00garbage", b"n,,n=kim", b"n,,n=kim,r=abc," + b"x" * 5000):
        code, message, closed = raw_scram_first(cluster, garbage)
        assert code == 58 and "SCRAM client-first" in message and closed, (code, message)
        SEEN_ERRORS.append(message)
    assert kim_admin.list_topics(timeout=15).brokers
    kim_again = AdminClient(confluent_login(cluster, "SCRAM-SHA-256", "kim", KIM_PW))
    assert kim_again.list_topics(timeout=15).brokers
    # AdminClient has no close(): drop the handles now, not when the module's cluster is gone.
    del admin, made, described, kim_admin, kim_again
    gc.collect()


def test_allow_everyone_if_no_acl_found(tmp_path: Path) -> None:
    """With the flag on (one node of its own), a resource no ACL names is open to every
    authenticated principal; the first ACL naming it closes it to everyone else."""
    local = LocalCluster(tmp_path / "loose")
    local.create(1, free_base_port(1), {
        **FAST,
        "listener.security.protocol.map": "PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "authorizer.enabled": "true", "allow.everyone.if.no.acl.found": "true",
        "super.users": "User:node", "node.sasl.username": "node", "node.sasl.password": NODE_PW,
    })  # fmt: skip
    local.up()
    try:
        loose = Secured(local)
        with loose.admin("node", NODE_PW) as node:
            eventually(lambda: node.describe_cluster().controller_id > 0, 30, "a controller")
            node.create_user("alice", ALICE_PW)
            node.create_topics([NewTopic("open", 1, 1), NewTopic("other", 1, 1)])
        with loose.producer("alice", ALICE_PW) as producer:
            producer.send("open", b"1").result(15)
            with loose.admin("node", NODE_PW) as node:
                node.create_acls([allow("User:bob", Operation.READ, ResourceType.TOPIC, "open")])
            refused(AuthorizationFailedError, lambda: producer.send("open", b"2").result(15))
            producer.send("other", b"3").result(15)  # still no ACL there
    finally:
        try:
            local.down(timeout_s=10)
        finally:
            local.stop(1, kill=True)


def test_no_secret_in_logs_metrics_or_errors(cluster: Secured) -> None:
    """Runs last (file order): everything above has logged and failed by now."""
    _, nodes = cluster.local.load()
    texts = {}
    for node in nodes:
        node_dir = cluster.local.node_dir(node.node_id)
        for path in node_dir.rglob("*"):
            if (
                path.is_file()
                and path.suffix in (".log", ".yaml", ".txt", ".json", "")
                and ("data" not in path.relative_to(node_dir).parts)
            ):
                texts[str(path)] = path.read_text(errors="replace")
        with urllib.request.urlopen(f"http://{node.admin_address}/metrics", timeout=5) as page:
            texts[f"metrics of node {node.node_id}"] = page.read().decode(errors="replace")
    texts["client errors"] = "\n".join(SEEN_ERRORS)
    assert len(SEEN_ERRORS) >= 10 and any("node.log" in name for name in texts)
    for name, text in texts.items():
        for password in PASSWORDS:
            if name.endswith("node.yaml") and password == NODE_PW:
                continue  # the node's own config file is where its secret is configured
            assert password not in text, f"a password appears in {name}"
    # Nor in the metadata log: only salted hashes go there.
    for node in nodes:
        for path in (cluster.local.node_dir(node.node_id) / "data").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for password in PASSWORDS:
                    assert password.encode() not in data, f"a password appears in {path}"
