"""TLS and mutual TLS on a real three-node cluster (`LocalCluster.create(tls=True)`).

One fully TLS cluster for the module (every listener SSL, client certificates required on the
client, inter-broker and CONTROLLER listeners), plus one mixed cluster: plaintext CONTROLLER
inside, TLS outside, configured with per-listener keys (`listener.name.ssl.ssl.*`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cluster_harness import FAST, Cluster, eventually, free_base_port
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic as KafkaNewTopic
from kafka.errors import KafkaError

from strom.client.admin import Admin, NewTopic
from strom.client.consumer import Consumer
from strom.client.errors import StromError
from strom.client.producer import Producer
from strom.node.certs import create_authority, write_authority, write_identity
from strom.node.local_cluster import LocalCluster

SHORT_MS = 2_000  # refused clients give up after this (bounded, and keeps the tests fast)


def _start(local: LocalCluster) -> Cluster:
    local.up()
    cluster = Cluster(local)
    cluster.wait_healthy()
    return cluster


def _teardown(local: LocalCluster) -> None:
    try:
        local.down(timeout_s=10)
    finally:
        for node in local.load()[1]:
            local.stop(node.node_id, kill=True)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    local = LocalCluster(tmp_path_factory.mktemp("tls") / "cluster")
    local.create(3, free_base_port(4), dict(FAST), tls=True)
    try:
        yield _start(local)
    finally:
        _teardown(local)


def _round_trip(bootstrap: str, topic: str, options: dict[str, str]) -> list[bytes]:
    with Admin(bootstrap, request_timeout_ms=10_000, **options) as admin:
        admin.create_topics([NewTopic(topic, 2, 3)])
    with Producer(bootstrap, linger_ms=0, **options) as producer:
        for i in range(10):
            producer.send(topic, f"v{i}".encode(), key=str(i).encode())
        producer.flush()
    with Consumer(bootstrap, auto_offset_reset="earliest", **options) as consumer:
        consumer.assign([(topic, 0), (topic, 1)])
        seen: list[bytes] = []

        def all_read() -> bool:
            seen.extend(r.value or b"" for r in consumer.poll(timeout_ms=500))
            return len(seen) >= 10

        eventually(all_read, 20, "ten records consumed over TLS")
    return seen


def test_client_with_certificate_creates_produces_and_consumes(tls_cluster: Cluster) -> None:
    seen = _round_trip(tls_cluster.bootstrap, "secure", tls_cluster.local.client_options())
    assert sorted(seen) == sorted(f"v{i}".encode() for i in range(10))


def test_streams_over_mutual_tls(tls_cluster: Cluster) -> None:
    """The produce and fetch streams on a TLS listener with client certificates: the stream is
    authenticated by the certificate when it opens, and carries the records."""
    options = tls_cluster.local.client_options()
    bootstrap = tls_cluster.bootstrap
    with Admin(bootstrap, request_timeout_ms=10_000, **options) as admin:
        admin.create_topics([NewTopic("streamed-tls", 1, 3)])
    with Producer(bootstrap, linger_ms=0, streaming=True, **options) as producer:
        for i in range(10):
            producer.send("streamed-tls", f"s{i}".encode()).result(15)
        produce_streams = list(producer._async.cluster._produce_streams.values())
    with Consumer(bootstrap, auto_offset_reset="earliest", streaming=True, **options) as consumer:
        consumer.assign([("streamed-tls", 0)])
        seen: list[bytes] = []

        def all_read() -> bool:
            seen.extend(r.value or b"" for r in consumer.poll(timeout_ms=500))
            return len(seen) >= 10

        eventually(all_read, 20, "ten records consumed on a stream over TLS")
        fetch_streams = list(consumer._async.cluster._fetch_streams.values())
    assert seen == [f"s{i}".encode() for i in range(10)]
    for streams in (produce_streams, fetch_streams):
        assert sum(s.opened for s in streams) >= 1
        assert not any(s.unsupported for s in streams)


def test_kafka_client_with_certificate_over_the_tls_kafka_listener(tls_cluster: Cluster) -> None:
    """kafka-python on the KAFKA listener (SSL, client certificates required like every
    listener of a --tls cluster): the same client properties work; no certificate, no entry."""
    options = tls_cluster.local.client_options()
    tls = {
        k: options[k] for k in ("security_protocol", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
    }
    bootstrap = tls_cluster.local.kafka_bootstrap()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **tls)
    try:
        admin.create_topics([KafkaNewTopic("tls-kafka", 1, 3)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **tls)
    assert producer.send("tls-kafka", b"sealed").get(timeout=15).offset == 0
    producer.close()
    no_cert = {"security_protocol": "SSL", "ssl_cafile": options["ssl_cafile"]}
    # kafka-python retries a refused handshake until its bootstrap timeout (30 s by default).
    with pytest.raises(KafkaError):
        KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=3_000, bootstrap_timeout_ms=2_000,
            **no_cert,
        )  # fmt: skip


def test_plaintext_client_against_tls_listener_fails_clearly(tls_cluster: Cluster) -> None:
    with (
        Admin(tls_cluster.bootstrap, request_timeout_ms=SHORT_MS) as admin,
        pytest.raises(StromError) as failure,
    ):
        admin.list_topics()
    assert "security_protocol=SSL" in str(failure.value)


def test_client_without_certificate_is_refused(tls_cluster: Cluster) -> None:
    options = tls_cluster.local.client_options()
    no_cert = {"security_protocol": "SSL", "ssl_cafile": options["ssl_cafile"]}
    with (
        Admin(tls_cluster.bootstrap, request_timeout_ms=SHORT_MS, **no_cert) as admin,
        pytest.raises(StromError) as failure,
    ):
        admin.list_topics()
    assert failure.value.name in ("REQUEST_TIMED_OUT", "NETWORK_EXCEPTION")
    assert "client certificate" in str(failure.value)


def test_client_trusting_another_ca_refuses_the_servers(
    tls_cluster: Cluster, tmp_path: Path
) -> None:
    rogue = create_authority("rogue-ca")
    write_authority(tmp_path, rogue)
    mine = write_identity(tmp_path, rogue, "intruder", server=False)
    options = {
        "security_protocol": "SSL",
        "ssl_cafile": str(mine.ca),
        "ssl_certfile": str(mine.certificate),
        "ssl_keyfile": str(mine.key),
    }
    with (
        Admin(tls_cluster.bootstrap, request_timeout_ms=SHORT_MS, **options) as admin,
        pytest.raises(StromError) as failure,
    ):
        admin.list_topics()
    assert "TLS handshake failed" in str(failure.value)


def test_node_with_certificate_from_another_ca_does_not_join(
    tls_cluster: Cluster, tmp_path: Path
) -> None:
    """A broker whose certificate another CA signed (but which trusts the cluster's CA) is
    refused by the controllers' mutual TLS: it never registers, and the cluster carries on."""
    local = tls_cluster.local
    node = local.add_broker(4)
    rogue = create_authority("rogue-ca")
    write_authority(tmp_path, rogue)
    identity = write_identity(tmp_path, rogue, "node-4", ["localhost", "127.0.0.1"])
    config_path = local.node_dir(node.node_id) / "node.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["ssl.certificate.location"] = str(identity.certificate)
    config["ssl.key.location"] = str(identity.key)
    config_path.write_text(yaml.safe_dump(config))
    local.start(node.node_id)
    try:
        log = local.node_dir(node.node_id) / "node.log"
        eventually(
            lambda: log.read_text().count("registration pending") >= 2,
            30,
            "node 4 retrying its registration",
        )
        with tls_cluster.admin() as admin:
            assert 4 not in {b.node_id for b in admin.describe_cluster().brokers}
            quorum = admin.describe_quorum()
        assert 4 not in {o.replica_id for o in quorum.observers}, "its Raft fetches are refused"
        # The others keep working.
        seen = _round_trip(tls_cluster.bootstrap, "after-intruder", local.client_options())
        assert len(seen) == 10
    finally:
        local.stop(node.node_id, kill=True)


def test_no_private_key_in_logs(tls_cluster: Cluster) -> None:
    """Runs last in the module: every node (and the refused one) has logged by now."""
    local = tls_cluster.local
    secrets = []
    for key_file in local.tls_dir.glob("*.key"):
        body = "".join(key_file.read_text().splitlines()[1:-1])
        secrets.append(body[:40])
        assert base64.b64decode(body)  # a real PEM body
    for node_dir in local.dir.glob("node-*"):
        text = (node_dir / "node.log").read_text(errors="replace")
        assert "PRIVATE KEY" not in text
        for secret in secrets:
            assert secret not in text


def test_plaintext_controller_inside_tls_outside(tmp_path: Path) -> None:
    """Mixed: Raft and broker-to-controller traffic in plaintext, clients and replication over
    mutual TLS, with the TLS settings given per listener (`listener.name.ssl.ssl.*`)."""
    local = LocalCluster(tmp_path / "mixed")
    local.create(3, free_base_port(3), dict(FAST), tls=True)
    for node_dir in local.dir.glob("node-*"):
        path = node_dir / "node.yaml"
        config = yaml.safe_load(path.read_text())
        config["listener.security.protocol.map"] = "SSL:SSL,CONTROLLER:PLAINTEXT,KAFKA:PLAINTEXT"
        for key in ("ssl.certificate.location", "ssl.key.location", "ssl.ca.location"):
            config[f"listener.name.ssl.{key}"] = config.pop(key)
        path.write_text(yaml.safe_dump(config))
    try:
        cluster = _start(local)
        seen = _round_trip(cluster.bootstrap, "mixed", local.client_options())
        assert len(seen) == 10
        log = cluster.log_of(1)
        assert "CONTROLLER on localhost" in log and "(PLAINTEXT)" in log
        assert "(SSL)" in log
    finally:
        _teardown(local)


def test_sasl_over_tls_with_mutual_tls_between_nodes(tmp_path: Path) -> None:
    """SASL_SSL for clients (a login over an encrypted connection, client certificates still
    required), mutual TLS between nodes on CONTROLLER, the authorizer on: the nodes log in to
    each other's SASL_SSL listener as `node`, the first admin is created with that login, and a
    wrong password is refused over TLS."""
    node_pw, admin_pw = "n0de-Pw-7f3a91", "adm1n-Pw-2b8e44"
    local = LocalCluster(tmp_path / "sasl-ssl")
    overrides = {
        **FAST,
        "authorizer.enabled": "true",
        # Node principals: `node` on SASL_SSL, each certificate's CN on the mTLS CONTROLLER.
        "super.users": "User:admin;User:node;User:node-1;User:node-2;User:node-3",
        "node.sasl.username": "node",
        "node.sasl.password": node_pw,
    }
    local.create(3, free_base_port(3), overrides, tls=True)
    for node_dir in local.dir.glob("node-*"):
        path = node_dir / "node.yaml"
        config = yaml.safe_load(path.read_text())
        config["listener.security.protocol.map"] = "SSL:SASL_SSL,CONTROLLER:SSL,KAFKA:SASL_SSL"
        path.write_text(yaml.safe_dump(config))
    certs = local.client_options()
    try:
        local.up()
        node_login = {**certs, "security_protocol": "SASL_SSL", "sasl_username": "node",
                      "sasl_password": node_pw}  # fmt: skip
        bootstrap = local.bootstrap()

        def admin_created() -> bool:
            with Admin(bootstrap, request_timeout_ms=SHORT_MS, **node_login) as admin:
                admin.create_user("admin", admin_pw)
            return True

        eventually(admin_created, 60, "the first admin user created over SASL_SSL")
        admin_login = {**node_login, "sasl_username": "admin", "sasl_password": admin_pw}

        def all_unfenced() -> bool:
            with Admin(bootstrap, request_timeout_ms=SHORT_MS, **admin_login) as admin:
                return len([b for b in admin.describe_cluster().brokers if not b.fenced]) == 3

        eventually(all_unfenced, 60, "three brokers unfenced (they log in to each other)")
        seen = _round_trip(bootstrap, "sasl-ssl", admin_login)
        assert sorted(seen) == sorted(f"v{i}".encode() for i in range(10))
        wrong = {**admin_login, "sasl_password": "not-" + admin_pw}
        with (
            Admin(bootstrap, request_timeout_ms=SHORT_MS, **wrong) as admin,
            pytest.raises(StromError) as refused,
        ):
            admin.list_topics()
        assert refused.value.name == "SASL_AUTHENTICATION_FAILED"
        assert admin_pw not in str(refused.value)
    finally:
        _teardown(local)
