"""Credentials (scrypt, the verification cache), principals (SASL metadata, mTLS common name),
the user/ACL records of the metadata image (replay and snapshot), the controller's checks, and
the per-RPC rules with a fake handler."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from strom.client.acl import (
    ANONYMOUS,
    CLUSTER_NAME,
    AclBinding,
    AclBindingFilter,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    binding_to_proto,
)
from strom.client.sasl import (
    PASSWORD_KEY,
    USERNAME_KEY,
    ScryptCredential,
    credential_to_proto,
    derive,
    new_credential,
    sasl_metadata,
)
from strom.node.controller import security as controller_security
from strom.node.controller.errors import ControllerError
from strom.node.metadata.image import MetadataImage, apply_records, decode_snapshot, encode_snapshot
from strom.node.metadata.state import full_delta
from strom.node.security import rules_broker, rules_group
from strom.node.security.access import Access, Denied, cluster_action, split_call
from strom.node.security.authn import AuthenticationError, Authenticator, certificate_principal
from strom.node.security.authorizer import Authorizer, AuthorizerSettings
from strom.node.security.credentials import CredentialVerifier
from strom.v1 import broker_pb2, common_pb2, group_pb2, metadata_pb2

CHEAP = {"n": 1 << 10, "r": 1, "p": 1}  # fast work factors: these tests are not about cost
R = metadata_pb2.MetadataRecord


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---- credentials -----------------------------------------------------------------------------


def test_credential_derivation_and_bounds() -> None:
    cred = new_credential("s3cret", **CHEAP)
    assert cred.problem() is None
    assert derive("s3cret", cred.salt, cred.n, cred.r, cred.p) == cred.hash
    assert derive("s3cret!", cred.salt, cred.n, cred.r, cred.p) != cred.hash
    assert new_credential("s3cret", **CHEAP).salt != cred.salt  # a fresh salt every time
    assert "s3cret" not in repr(cred) and cred.hash.hex() not in repr(cred)
    assert ScryptCredential(cred.salt, 1000, 1, 1, cred.hash).problem()  # not a power of two
    assert ScryptCredential(cred.salt, 1 << 20, 8, 1, cred.hash).problem()  # too costly
    assert ScryptCredential(b"short", 1 << 10, 1, 1, cred.hash).problem()
    with pytest.raises(ValueError):
        new_credential("")


def test_verifier_caches_successes_only_and_follows_changes() -> None:
    users = {"alice": new_credential("pw-1", **CHEAP)}
    verifier = CredentialVerifier(lambda: users)

    async def scenario() -> None:
        assert await verifier.verify("alice", "pw-1")
        assert verifier.derivations == 1
        for _ in range(5):
            assert await verifier.verify("alice", "pw-1")
        assert verifier.derivations == 1  # cached: no scrypt per RPC
        assert not await verifier.verify("alice", "wrong")
        assert not await verifier.verify("alice", "wrong")
        assert verifier.derivations == 3  # failures are never cached
        assert not await verifier.verify("nobody", "pw-1")
        # A new password: the cached success for the old one no longer counts.
        users["alice"] = new_credential("pw-2", **CHEAP)
        assert not await verifier.verify("alice", "pw-1")
        assert await verifier.verify("alice", "pw-2")
        # Deleted: refused at once, and forget() drops its entries.
        del users["alice"]
        assert not await verifier.verify("alice", "pw-2")
        verifier.forget({"alice"})
        assert len(verifier) == 0

    run(scenario())


def test_verifier_cache_is_bounded_and_static_credential_comes_first() -> None:
    users = {f"u{i}": new_credential(f"p{i}", **CHEAP) for i in range(4)}
    users["node"] = new_credential("log-user", **CHEAP)
    verifier = CredentialVerifier(lambda: users, {"node": "static"}, cache_entries_max=2)

    async def scenario() -> None:
        for i in range(4):
            assert await verifier.verify(f"u{i}", f"p{i}")
        assert len(verifier) == 2
        assert await verifier.verify("node", "static")
        assert not await verifier.verify("node", "log-user")

    run(scenario())


# ---- principals ------------------------------------------------------------------------------


def test_principal_per_listener_protocol() -> None:
    users = {"alice": new_credential("pw", **CHEAP)}
    verifier = CredentialVerifier(lambda: users)
    sasl = Authenticator("SASL_PLAINTEXT", verifier)
    good = sasl_metadata("alice", "pw")
    cert = {"x509_common_name": [b"node-1"], "transport_security_type": [b"ssl"]}

    async def scenario() -> None:
        assert await sasl.principal(good, {}) == "User:alice"
        for bad in ((), sasl_metadata("alice", "nope"), sasl_metadata("bob", "pw"),
                    sasl_metadata("alice", "pw", "SCRAM-SHA-256")):  # fmt: skip
            with pytest.raises(AuthenticationError) as refused:
                await sasl.principal(bad, {})
            assert "nope" not in str(refused.value) and "pw" not in str(refused.value)
        assert await Authenticator("PLAINTEXT", None).principal(good, cert) == ANONYMOUS
        assert await Authenticator("SSL", None).principal((), cert) == "User:node-1"
        assert await Authenticator("SSL", None).principal((), {}) == ANONYMOUS
        # SASL_SSL authenticates by SASL even when a certificate is present.
        assert await Authenticator("SASL_SSL", verifier).principal(good, cert) == "User:alice"

    run(scenario())


def test_certificate_principal_reads_the_common_name() -> None:
    assert certificate_principal({"x509_common_name": [b"alice"]}) == "User:alice"
    assert certificate_principal({"x509_common_name": [b""]}) is None
    assert certificate_principal({"transport_security_type": [b"insecure"]}) is None
    assert (USERNAME_KEY, PASSWORD_KEY) == ("strom-sasl-username", "strom-sasl-password")


# ---- metadata image: replay and snapshot -------------------------------------------------------


def binding(name: str, op: Operation = Operation.READ) -> AclBinding:
    return AclBinding(ResourceType.TOPIC, name, PatternType.LITERAL, "User:a", "*", op,
                      Permission.ALLOW)  # fmt: skip


def test_image_replays_users_and_acls_and_snapshots_them() -> None:
    alice, bob = new_credential("a", **CHEAP), new_credential("b", **CHEAP)
    records = [
        R(user_credential=metadata_pb2.UserCredentialRecord(
            name="alice", credential=credential_to_proto(alice))),
        R(user_credential=metadata_pb2.UserCredentialRecord(
            name="bob", credential=credential_to_proto(bob))),
        R(acl=metadata_pb2.AclRecord(binding=binding_to_proto(binding("t")))),
        R(acl=metadata_pb2.AclRecord(binding=binding_to_proto(binding("u")))),
    ]  # fmt: skip
    image, delta = apply_records(MetadataImage(), records, 5, 1)
    assert dict(image.users) == {"alice": alice, "bob": bob}
    assert image.acls == {binding("t"), binding("u")}
    assert delta.changed_users == {"alice", "bob"} and delta.acls_changed
    removal = [
        R(remove_user_credential=metadata_pb2.RemoveUserCredentialRecord(name="bob")),
        R(remove_acl=metadata_pb2.RemoveAclRecord(binding=binding_to_proto(binding("u")))),
    ]
    image2, delta2 = apply_records(image, removal, 6, 1)
    assert set(image2.users) == {"alice"} and image2.acls == {binding("t")}
    assert delta2.changed_users == {"bob"}
    assert image.acls == {binding("t"), binding("u")}  # images are immutable
    restored, cluster_id = decode_snapshot(encode_snapshot(image2, "c1"))
    assert cluster_id == "c1"
    assert dict(restored.users) == dict(image2.users) and restored.acls == image2.acls
    full = full_delta(image, restored)
    assert full.changed_users == {"alice", "bob"} and full.acls_changed
    with pytest.raises(AssertionError):
        apply_records(image2, removal[:1], 7, 1)  # removing an unknown user is a controller bug


def test_controller_checks_users_and_acls() -> None:
    image = MetadataImage()
    cred = new_credential("pw", **CHEAP)
    assert len(controller_security.upsert_user(image, "alice", cred)) == 1
    weak = ScryptCredential(cred.salt, 2, 1, 1, cred.hash)
    with pytest.raises(ControllerError) as bad:
        controller_security.upsert_user(image, "alice", weak)
    assert bad.value.code == common_pb2.UNACCEPTABLE_CREDENTIAL
    for name in ("", "*", " padded", "x" * 300):
        with pytest.raises(ControllerError):
            controller_security.upsert_user(image, name, cred)
    with pytest.raises(ControllerError) as missing:
        controller_security.delete_user(image, "ghost")
    assert missing.value.code == common_pb2.RESOURCE_NOT_FOUND
    with_acl, _ = apply_records(image, controller_security.create_acl(image, binding("t")), 1, 1)
    assert controller_security.create_acl(with_acl, binding("t")) == []  # already there
    with pytest.raises(ControllerError):
        controller_security.create_acl(image, binding(""))
    records, deleted = controller_security.delete_acls(
        with_acl, AclBindingFilter(resource_name="t", pattern_type=PatternType.MATCH)
    )
    assert deleted == [binding("t")] and len(records) == 1


# ---- rules -------------------------------------------------------------------------------------


def access(principal: str, *bindings: AclBinding) -> Access:
    settings = AuthorizerSettings(True, frozenset({"User:node"}))
    return Access(principal, Authorizer(settings, bindings))


class FakeHandler:
    """Answers like the real handlers: one result per requested item, in order."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def produce(self, request: broker_pb2.ProduceRequest) -> broker_pb2.ProduceResponse:
        self.requests.append(request)
        response = broker_pb2.ProduceResponse()
        for t in request.topics:
            out = response.topics.add(name=t.name)
            for p in t.partitions:
                out.partitions.add(partition=p.partition, base_offset=7)
        return response

    async def metadata(self, request: broker_pb2.MetadataRequest) -> broker_pb2.MetadataResponse:
        self.requests.append(request)
        response = broker_pb2.MetadataResponse()
        names = list(request.topics) if request.topics else ["a", "b", "secret"]
        for name in names:
            if name in ("a", "b", "secret"):
                response.topics.add(name=name)
            else:
                response.topics.add(name=name, error_code=common_pb2.UNKNOWN_TOPIC_OR_PARTITION)
        return response


def produce_request(*topics: str) -> broker_pb2.ProduceRequest:
    request = broker_pb2.ProduceRequest(acks=-1)
    for t in topics:
        request.topics.add(name=t).partitions.add(partition=0, records=b"x")
    return request


def test_authorizing_a_request_of_many_topics_lets_the_loop_run() -> None:
    """#15 defect 5, behind the authorizer: 20,000 topic entries were decided in one go (three
    times each) before the handler started; now once each, in slices between loop turns."""
    from strom.node.loop_turns import ITEMS_PER_TURN_MAX

    names = [f"t{i}" if i % 2 else "a" for i in range(20_000)]
    calls = 0

    def counting(item: Any) -> bool:
        nonlocal calls
        calls += 1
        return bool(item.name == "a")

    async def scenario() -> tuple[int, Any]:
        turns = 0
        done = False

        async def probe() -> None:
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(probe())
        await asyncio.sleep(0)
        handler = FakeHandler()
        response = await split_call(
            produce_request(*names), "topics", counting, handler.produce, "topics",
            lambda t: broker_pb2.TopicProduceResponse(name=t.name), broker_pb2.ProduceResponse,
        )  # fmt: skip
        done = True
        await task
        return turns, response

    turns, response = run(scenario())
    assert [t.name for t in response.topics] == names
    assert calls == len(names)  # each decided once
    assert turns >= 2 * len(names) // ITEMS_PER_TURN_MAX - 2, turns


def test_produce_refuses_per_topic_and_forwards_the_rest() -> None:
    handler = FakeHandler()
    who = access("User:a", binding("a", Operation.WRITE))
    response = run(rules_broker.produce(who, produce_request("b", "a", "c"), handler.produce))
    assert [t.name for t in handler.requests[0].topics] == ["a"]
    codes = [(t.name, t.partitions[0].error_code) for t in response.topics]
    assert codes == [("b", common_pb2.TOPIC_AUTHORIZATION_FAILED), ("a", common_pb2.NONE),
                     ("c", common_pb2.TOPIC_AUTHORIZATION_FAILED)]  # fmt: skip
    # Nothing allowed: the handler is not called at all.
    handler2 = FakeHandler()
    run(rules_broker.produce(access("User:z"), produce_request("a"), handler2.produce))
    assert handler2.requests == []


def test_metadata_reveals_nothing_about_undescribable_topics() -> None:
    handler = FakeHandler()
    who = access("User:a", binding("a"))
    listed = run(rules_broker.metadata(who, broker_pb2.MetadataRequest(all_topics=True),
                                       handler.metadata))  # fmt: skip
    assert [t.name for t in listed.topics] == ["a"]
    named = run(rules_broker.metadata(
        who, broker_pb2.MetadataRequest(topics=["secret", "a", "nonexistent"],
                                        allow_auto_topic_creation=True), handler.metadata))  # fmt: skip
    answers = {t.name: (t.error_code, t.error_message) for t in named.topics}
    # An existing topic and a missing one look exactly alike to someone who may not see them.
    assert (
        answers["secret"][0] == answers["nonexistent"][0] == common_pb2.TOPIC_AUTHORIZATION_FAILED
    )
    assert answers["secret"][1].replace("secret", "X") == answers["nonexistent"][1].replace(
        "nonexistent", "X"
    )
    assert answers["a"][0] == common_pb2.NONE
    # Only describable topics reach the handler, and auto-creation needs CREATE.
    assert list(handler.requests[-1].topics) == ["a"]
    assert not handler.requests[-1].allow_auto_topic_creation


def test_group_and_inter_node_rules() -> None:
    async def never(request: Any) -> Any:
        raise AssertionError("the handler must not run")

    who = access("User:a", binding("t"))
    commit = group_pb2.OffsetCommitRequest(group_id="g")
    answer = run(rules_group.offset_commit(who, commit, never))
    assert answer.error_code == common_pb2.GROUP_AUTHORIZATION_FAILED
    find = run(rules_group.find_coordinator(who, group_pb2.FindCoordinatorRequest(key="g"), never))
    assert find.error_code == common_pb2.GROUP_AUTHORIZATION_FAILED
    with pytest.raises(Denied):
        run(cluster_action(who, object(), never))

    async def echo(request: Any) -> Any:
        return "called"

    assert run(cluster_action(access("User:node"), object(), echo)) == "called"
    granted = AclBinding(ResourceType.CLUSTER, CLUSTER_NAME, PatternType.LITERAL, "User:n2", "*",
                         Operation.CLUSTER_ACTION, Permission.ALLOW)  # fmt: skip
    assert run(cluster_action(access("User:n2", granted), object(), echo)) == "called"


def test_transactions_need_write_on_their_transactional_id() -> None:
    """Kafka's TRANSACTIONAL_ID resource: WRITE on the id for every producer request, DESCRIBE
    to find its coordinator or see it; the topics and the group are checked too."""
    from strom.node.security import rules_txn
    from strom.v1 import txn_pb2

    def txn_binding(name: str, op: Operation, pattern: PatternType = PatternType.LITERAL,
                    permission: Permission = Permission.ALLOW) -> AclBinding:  # fmt: skip
        return AclBinding(ResourceType.TRANSACTIONAL_ID, name, pattern, "User:a", "*", op,
                          permission)  # fmt: skip

    async def never(request: Any) -> Any:
        raise AssertionError("the handler must not run")

    seen: list[Any] = []

    async def handler(request: Any) -> Any:
        seen.append(request)
        return txn_pb2.TxnResponse()

    failed = common_pb2.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    nobody = access("User:a", binding("orders", Operation.WRITE))
    app = access(
        "User:a", binding("orders", Operation.WRITE), binding("in", Operation.READ),
        txn_binding("app-", Operation.WRITE, PatternType.PREFIXED),
        txn_binding("app-secret", Operation.ALL, permission=Permission.DENY),
        AclBinding(ResourceType.GROUP, "g", PatternType.LITERAL, "User:a", "*", Operation.READ,
                   Permission.ALLOW),
    )  # fmt: skip
    init = txn_pb2.TxnInitProducerIdRequest(transactional_id="app-1", transaction_timeout_ms=1)
    assert run(rules_txn.init_producer_id(nobody, init, never)).error_code == failed
    run(rules_txn.init_producer_id(app, init, handler))
    denied = txn_pb2.TxnInitProducerIdRequest(transactional_id="app-secret")
    assert run(rules_txn.init_producer_id(app, denied, never)).error_code == failed

    def add(*topics: str) -> txn_pb2.AddPartitionsToTxnRequest:
        return txn_pb2.AddPartitionsToTxnRequest(
            transactional_id="app-1", producer_id=1,
            partitions=[txn_pb2.TxnTopicPartition(topic=t) for t in topics],
        )  # fmt: skip

    assert run(rules_txn.add_partitions(nobody, add("orders"), never)).error_code == failed
    assert run(rules_txn.add_partitions(app, add("orders", "in"), never)).error_code == (
        common_pb2.TOPIC_AUTHORIZATION_FAILED  # READ is not WRITE
    )
    run(rules_txn.add_partitions(app, add("orders"), handler))
    end = txn_pb2.EndTxnRequest(transactional_id="app-1", commit=True)
    assert run(rules_txn.end_txn(nobody, end, never)).error_code == failed
    run(rules_txn.end_txn(app, end, handler))
    offsets = txn_pb2.AddOffsetsToTxnRequest(transactional_id="app-1", group_id="other")
    assert run(rules_txn.add_offsets(app, offsets, never)).error_code == (
        common_pb2.GROUP_AUTHORIZATION_FAILED
    )
    commit = txn_pb2.TxnOffsetCommitRequest(transactional_id="app-1", group_id="g")
    commit.topics.add(name="in").partitions.add(partition=0, offset=5)
    commit.topics.add(name="orders").partitions.add(partition=1, offset=7)  # WRITE, not READ

    async def commit_handler(request: Any) -> Any:
        seen.append(request)
        response = txn_pb2.TxnOffsetCommitResponse()
        for t in request.topics:
            response.topics.add(name=t.name).partitions.add(partition=t.partitions[0].partition)
        return response

    answered = run(rules_txn.txn_offset_commit(app, commit, commit_handler))
    assert [t.name for t in seen[-1].topics] == ["in"]
    assert [(t.name, t.partitions[0].error_code) for t in answered.topics] == [
        ("in", common_pb2.NONE), ("orders", common_pb2.TOPIC_AUTHORIZATION_FAILED)
    ]  # fmt: skip
    assert run(rules_txn.txn_offset_commit(nobody, commit, never)).error_code == failed
    # WRITE implies DESCRIBE: app may find its coordinator, nobody may not
    find = group_pb2.FindCoordinatorRequest(key="app-1", key_type=group_pb2.TRANSACTION)
    assert run(rules_group.find_coordinator(nobody, find, never)).error_code == failed

    async def found(request: Any) -> Any:
        return group_pb2.FindCoordinatorResponse(node_id=1)

    assert run(rules_group.find_coordinator(app, find, found)).node_id == 1

    async def listing(request: Any) -> Any:
        response = txn_pb2.ListTransactionsResponse()
        for tid in ("app-1", "app-secret", "other"):
            response.transactions.add(transactional_id=tid)
        return response

    listed = run(rules_txn.list_transactions(app, txn_pb2.ListTransactionsRequest(), listing))
    assert [t.transactional_id for t in listed.transactions] == ["app-1"]

    async def describing(request: Any) -> Any:
        return txn_pb2.DescribeTransactionsResponse(
            transactions=[txn_pb2.TransactionDescription(transactional_id=t, state="Empty")
                          for t in request.transactional_ids]
        )  # fmt: skip

    described = run(rules_txn.describe_transactions(
        app, txn_pb2.DescribeTransactionsRequest(transactional_ids=["other", "app-2"]),
        describing,
    ))  # fmt: skip
    assert [(d.transactional_id, d.error_code) for d in described.transactions] == [
        ("other", failed), ("app-2", common_pb2.NONE)
    ]  # fmt: skip
    bad = AclBinding(ResourceType.TRANSACTIONAL_ID, "", PatternType.LITERAL, "User:a", "*",
                     Operation.WRITE, Permission.ALLOW)  # fmt: skip
    assert bad.problem() is not None and txn_binding("x", Operation.WRITE).problem() is None


# ---- configuration and coverage ----------------------------------------------------------------


def test_every_strom_rpc_has_an_authorization_rule() -> None:
    """A new RPC without a rule would be open to super users only: keep the table complete."""
    from strom.node.security.interceptor import RULES
    from strom.v1 import (
        admin_pb2,
        broker_pb2,
        controller_pb2,
        group_pb2,
        raft_pb2,
        replica_pb2,
        txn_pb2,
    )

    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (
            admin_pb2,
            broker_pb2,
            controller_pb2,
            group_pb2,
            raft_pb2,
            replica_pb2,
            txn_pb2,
        )
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        # Streams are refused on secured listeners (the interceptor authorizes unary calls
        # only; clients fall back to them): they need no rule.
        if not method.client_streaming
    }
    assert methods == set(RULES)


def test_security_config_keys() -> None:
    from strom.node.config import ConfigError, build_config

    base = {"node.id": 1, "controller.quorum.voters": "1@localhost:9093"}
    config = build_config({**base, "super.users": "User:admin;User:node"}, environ={})
    assert config["authorizer.enabled"] is False
    assert config["allow.everyone.if.no.acl.found"] is False
    sasl_map = {"listener.security.protocol.map": "PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"}
    for bad in (
        {"super.users": "admin"},
        {"listener.security.protocol.map": "PLAINTEXT:KERBEROS,CONTROLLER:PLAINTEXT"},
        {"node.sasl.username": "node"},  # without a password
        sasl_map,  # the inter-broker listener is SASL but the node has no credentials
    ):
        with pytest.raises(ConfigError):
            build_config({**base, **bad}, environ={})
    secret = "hunter2-secret"
    ok = build_config(
        {**base, **sasl_map, "node.sasl.username": "node", "node.sasl.password": secret},
        environ={},
    )
    assert ok["node.sasl.username"] == "node"
    with pytest.raises(ConfigError) as bad_type:
        build_config({**base, "node.sasl.password": [secret]}, environ={})
    assert secret not in str(bad_type.value)


def test_the_controller_listener_admits_only_nodes_where_it_authenticates() -> None:
    from strom.node.config import build_config
    from strom.node.security.interceptor import NodeSecurity, admits

    base = {
        "node.id": 1,
        "controller.quorum.voters": "1@localhost:9093",
        "listeners": "PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093",
    }
    sasl = {
        "listener.security.protocol.map": "PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "node.sasl.username": "node",
        "node.sasl.password": "secret",
        "super.users": "User:admin",
    }

    def guard(config: dict[str, Any], listener: str) -> frozenset[str] | None:
        security = NodeSecurity(build_config({**base, **config}, environ={}), MetadataImage)
        interceptors = security.server_interceptors(listener)
        return interceptors[0].nodes_only if interceptors else None

    # SASL: by default the super users and the nodes' own user; never on the client listener.
    assert guard(sasl, "CONTROLLER") == {"User:admin", "User:node"}
    assert guard(sasl, "PLAINTEXT") is None
    explicit = {**sasl, "controller.allowed.principals": "User:node"}
    assert guard(explicit, "CONTROLLER") == {"User:node"}
    # A listener that cannot tell callers apart is not guarded (everyone is ANONYMOUS there).
    assert guard({}, "CONTROLLER") is None
    assert admits(frozenset({"User:node-*"}), "User:node-7")
    assert not admits(frozenset({"User:node-*"}), "User:strom-admin")
