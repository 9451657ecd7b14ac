"""SASL/SCRAM: the stored credentials (client/scram.py) against RFC 7677's example and scramp, the
server side of the exchange (node/security/scram.py) against kafka-python's and scramp's SCRAM
clients, the metadata records (image, snapshot), the controller's rules, and the Kafka
listener's handlers (SaslHandshake/SaslAuthenticate rounds, DescribeUserScramCredentials and
AlterUserScramCredentials over a real single-voter controller)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import pytest
import scramp  # type: ignore[import-untyped]
from kafka.net.sasl.scram import ScramClient as KafkaPythonScramClient
from test_controller_service import running_quorum

from strom.client import scram
from strom.client.sasl import new_credential as new_scrypt_credential
from strom.node.broker.admin_service import AdminServicer
from strom.node.controller import security as controller_security
from strom.node.controller.errors import ControllerError
from strom.node.kafka.apis import SASL_AUTHENTICATION_FAILED, KafkaApis
from strom.node.kafka.listener import Session
from strom.node.metadata.image import MetadataImage, apply_records, decode_snapshot, encode_snapshot
from strom.node.security.access import AccessControl
from strom.node.security.authorizer import AuthorizerSettings
from strom.node.security.credentials import CredentialVerifier
from strom.node.security.scram import WRONG_CREDENTIALS, ScramFailed, ScramLogins
from strom.v1 import common_pb2, metadata_pb2

SHA256, SHA512 = metadata_pb2.SCRAM_SHA_256, metadata_pb2.SCRAM_SHA_512
CHEAP_SCRYPT = {"n": 1 << 10, "r": 1, "p": 1}
R = metadata_pb2.MetadataRecord


def records_of(image: MetadataImage, records: list[Any], index: int = 1) -> MetadataImage:
    return apply_records(image, records, index, 1)[0]


def user_image(**passwords: str) -> MetadataImage:
    """An image whose users have scrypt credentials and both SCRAM credentials."""
    image = MetadataImage()
    for name, password in passwords.items():
        scrypt = new_scrypt_credential(password, **CHEAP_SCRYPT)
        both = [scram.new_credential(m, password) for m in (SHA256, SHA512)]
        image = records_of(image, controller_security.upsert_user(image, name, scrypt, both))
    return image


def logins_for(image: MetadataImage, node: dict[str, str] | None = None) -> ScramLogins:
    return ScramLogins(lambda name, m: image.scram.get((name, m)), node)


def kafka_python_login(logins: ScramLogins, mechanism: str, user: str, password: str) -> str:
    """A whole exchange with kafka-python's client; returns the authenticated name."""
    client = KafkaPythonScramClient(user, password, mechanism)
    exchange = logins.start(mechanism)
    client.process_server_first_message(exchange.first(client.first_message()))
    server_final = exchange.final(client.final_message())
    client.process_server_final_message(server_final)  # checks the server signature
    assert exchange.username is not None
    return exchange.username


# ---- credentials ---------------------------------------------------------------------------


def test_credentials_match_rfc_7677_and_scramp() -> None:
    # RFC 7677 section 3: user "user", password "pencil", this salt, 4096 iterations.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    mine = scram.new_credential(SHA256, "pencil", 4096, salt)
    client = scramp.ScramClient(["SCRAM-SHA-256"], "user", "pencil", c_nonce="rOprNGfwEbeRWgbNEkqO")
    server = scramp.ScramMechanism("SCRAM-SHA-256").make_server(
        lambda _: (mine.salt, mine.stored_key, mine.server_key, mine.iterations),
        s_nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    )
    server.set_client_first(client.get_client_first())
    client.set_server_first(server.get_server_first())
    final = client.get_client_final()
    assert final.endswith("p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")  # the RFC's proof
    server.set_client_final(final)
    assert server.get_server_final() == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    for mechanism, name in ((SHA256, "SCRAM-SHA-256"), (SHA512, "SCRAM-SHA-512")):
        salt = bytes(range(20))
        expected = scramp.ScramMechanism(name).make_auth_info("pw", 4096, salt)
        made = scram.new_credential(mechanism, "pw", 4096, salt)
        assert (made.salt, made.stored_key, made.server_key, made.iterations) == expected
        # Kafka's AlterUserScramCredentials path: the salted password, turned into keys here.
        salted = hashlib.pbkdf2_hmac(scram.HASHES[mechanism], b"pw", salt, 4096)
        assert scram.from_salted_password(mechanism, salt, 4096, salted) == made
        assert made.problem() is None and "pw" not in repr(made) and "salt" not in repr(made)
    good = scram.new_credential(SHA256, "pw")
    assert scram.ScramCredential(
        SHA256, good.salt, 4095, good.stored_key, good.server_key
    ).problem()
    assert scram.ScramCredential(
        SHA256, good.salt, 16385, good.stored_key, good.server_key
    ).problem()
    assert scram.ScramCredential(SHA256, b"short", 4096, good.stored_key, good.server_key).problem()
    assert scram.ScramCredential(
        SHA512, good.salt, 4096, good.stored_key, good.server_key
    ).problem()
    assert scram.ScramCredential(7, good.salt, 4096, good.stored_key, good.server_key).problem()
    with pytest.raises(ValueError, match="unknown SCRAM mechanism"):
        scram.mechanism_number("SCRAM-SHA-1")
    with pytest.raises(ValueError, match="iterations"):
        scram.new_credential(SHA256, "pw", 100)


# ---- the exchange ----------------------------------------------------------------------------


def test_kafka_python_and_scramp_clients_log_in_with_each_mechanism() -> None:
    image = user_image(alice="wonderland", bob="builder")
    logins = logins_for(image, {"node": "node-secret"})
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        assert kafka_python_login(logins, mechanism, "alice", "wonderland") == "alice"
        assert kafka_python_login(logins, mechanism, "node", "node-secret") == "node"
        client = scramp.ScramClient([mechanism], "bob", "builder")
        exchange = logins.start(mechanism)
        client.set_server_first(exchange.first(client.get_client_first().encode()).decode())
        client.set_server_final(exchange.final(client.get_client_final().encode()).decode())
        assert exchange.username == "bob"


def test_wrong_password_and_unknown_user_are_refused_alike() -> None:
    image = user_image(alice="wonderland")
    logins = logins_for(image, {"node": "node-secret"})
    for user, password in (("alice", "wrong"), ("mallory", "wonderland"), ("node", "wrong")):
        with pytest.raises(ScramFailed) as refused:
            kafka_python_login(logins, "SCRAM-SHA-256", user, password)
        assert str(refused.value) == WRONG_CREDENTIALS and refused.value.reason == "credentials"
    # An unknown user's server-first looks like a real one, with the same salt on every try.
    firsts = []
    for _ in range(2):
        client = KafkaPythonScramClient("mallory", "x", "SCRAM-SHA-512")
        answer = logins.start("SCRAM-SHA-512").first(client.first_message()).decode()
        firsts.append(dict(part.split("=", 1) for part in answer.split(",")))
    assert firsts[0]["s"] == firsts[1]["s"] and firsts[0]["i"] == "4096"
    # A user with a SHA-256 credential only is refused on SHA-512, as an unknown user is.
    only256 = [scram.new_credential(SHA256, "pw")]
    carol = records_of(image, controller_security.alter_scram(image, "carol", only256, []), 2)
    assert kafka_python_login(logins_for(carol), "SCRAM-SHA-256", "carol", "pw") == "carol"
    with pytest.raises(ScramFailed, match="wrong username or password"):
        kafka_python_login(logins_for(carol), "SCRAM-SHA-512", "carol", "pw")


@pytest.mark.parametrize(
    "first, problem",
    [
        (b"", "client-first"),
        (b"garbage", "client-first"),
        (b"\xff\xfe", "not UTF-8"),
        (b"n,,n=alice", "client-first"),  # no nonce
        (b"n,a=bob,n=alice,r=abc", "client-first"),  # an authorization id
        (b"p=tls-unique,,n=alice,r=abc", "client-first"),  # channel binding
        (b"n,,n=alice,r=abc," + b"x" * 5000, "longer than"),
    ],
)
def test_malformed_client_first_is_refused(first: bytes, problem: str) -> None:
    logins = logins_for(user_image(alice="wonderland"))
    exchange = logins.start("SCRAM-SHA-256")
    with pytest.raises(ScramFailed, match=problem) as refused:
        exchange.first(first)
    assert refused.value.reason == "malformed"
    with pytest.raises(ScramFailed, match="unexpected"):  # the exchange is over
        exchange.final(b"c=biws,r=abc,p=AAAA")


def test_wrong_nonce_or_order_is_refused() -> None:
    logins = logins_for(user_image(alice="wonderland"))
    client = KafkaPythonScramClient("alice", "wonderland", "SCRAM-SHA-256")
    exchange = logins.start("SCRAM-SHA-256")
    server_first = exchange.first(client.first_message())
    client.process_server_first_message(server_first)
    forged = client.final_message().replace(b"r=", b"r=X", 1)
    with pytest.raises(ScramFailed, match="client-final") as refused:
        exchange.final(forged)
    assert refused.value.reason == "malformed" and exchange.username is None
    with pytest.raises(ScramFailed, match="unexpected"):
        exchange.final(client.final_message())  # no second try on the same exchange
    out_of_order = logins.start("SCRAM-SHA-256")
    with pytest.raises(ScramFailed, match="unexpected SCRAM client-final"):
        out_of_order.final(client.final_message())


# ---- records, image, snapshot, controller rules -----------------------------------------------


def test_records_replay_and_snapshot_with_the_users() -> None:
    image = user_image(alice="a")
    assert set(image.scram) == {("alice", SHA256), ("alice", SHA512)}
    extra = [scram.new_credential(SHA512, "d", 8192)]
    image = records_of(image, controller_security.alter_scram(image, "dave", extra, []), 2)
    restored, _ = decode_snapshot(encode_snapshot(image, "c1"))
    assert dict(restored.scram) == dict(image.scram) and dict(restored.users) == dict(image.users)
    assert restored.user_names() == {"alice", "dave"}
    assert restored.scram[("dave", SHA512)].iterations == 8192
    removal = controller_security.delete_user(image, "dave")
    after, delta = apply_records(image, removal, 3, 1)
    assert after.user_names() == {"alice"} and delta.changed_users == {"dave"}
    with pytest.raises(AssertionError):  # removing a credential that is not there: a bug
        apply_records(after, removal, 4, 1)


def test_controller_rules_for_scram_credentials() -> None:
    image = user_image(alice="old")
    scrypt = new_scrypt_credential("new", **CHEAP_SCRYPT)
    # A password change that derives SHA-256 only removes the old SHA-512 credential.
    only256 = [scram.new_credential(SHA256, "new")]
    changed = records_of(image, controller_security.upsert_user(image, "alice", scrypt, only256))
    assert set(changed.scram_of("alice")) == {SHA256}
    # ...and one without SCRAM credentials (an older SDK) removes them all.
    bare = records_of(changed, controller_security.upsert_user(changed, "alice", scrypt), 2)
    assert bare.scram_of("alice") == {} and "alice" in bare.users
    with pytest.raises(ControllerError) as twice:
        controller_security.upsert_user(image, "alice", scrypt, only256 * 2)
    assert twice.value.code == common_pb2.DUPLICATE_RESOURCE

    def refused(upserts: list[Any], deletes: list[int], name: str = "alice") -> int:
        with pytest.raises(ControllerError) as error:
            controller_security.alter_scram(image, name, upserts, deletes)
        return error.value.code

    good = scram.new_credential(SHA256, "x")
    weak = scram.ScramCredential(SHA256, good.salt, 1000, good.stored_key, good.server_key)
    assert refused([good], [SHA256]) == common_pb2.DUPLICATE_RESOURCE
    assert refused([weak], []) == common_pb2.UNACCEPTABLE_CREDENTIAL
    assert refused([], [9]) == common_pb2.UNSUPPORTED_SASL_MECHANISM
    assert refused([], [SHA256], "ghost") == common_pb2.RESOURCE_NOT_FOUND
    assert refused([good], [], "") == common_pb2.INVALID_REQUEST
    # Deleting the last credential of a SCRAM-only user removes the user.
    made = records_of(
        MetadataImage(), controller_security.alter_scram(MetadataImage(), "k", [good], [])
    )
    gone = records_of(made, controller_security.alter_scram(made, "k", [], [SHA256]), 2)
    assert made.user_names() == {"k"} and gone.user_names() == set()
    # `strom users delete` of a user with both kinds removes everything.
    deleted = records_of(image, controller_security.delete_user(image, "alice"), 3)
    assert deleted.user_names() == set() and not deleted.scram


# ---- the Kafka listener's handlers ------------------------------------------------------------


def kafka_apis(image: MetadataImage, mechanisms: tuple[str, ...], admin: Any = None) -> KafkaApis:
    settings = AuthorizerSettings(False, frozenset())
    return KafkaApis(
        None, None, admin, None,  # type: ignore[arg-type]
        AccessControl(settings, lambda: image),
        CredentialVerifier(lambda: image.users),
        scram_logins=logins_for(image),
        sasl_mechanisms=mechanisms,
    )  # fmt: skip


async def authenticate(
    apis: KafkaApis, mechanism: str, user: str, password: str
) -> tuple[Session, dict[str, Any]]:
    session = Session("127.0.0.1:1", "KAFKA", authenticated=False)
    handshake = await apis.sasl_handshake(session, 1, {"mechanism": mechanism})
    assert handshake["error_code"] == 0, handshake
    client = KafkaPythonScramClient(user, password, mechanism)
    first = await apis.sasl_authenticate(session, 2, {"auth_bytes": client.first_message()})
    if first["error_code"]:
        return session, first
    assert not session.authenticated and not session.close_after_response
    client.process_server_first_message(first["auth_bytes"])
    final = await apis.sasl_authenticate(session, 2, {"auth_bytes": client.final_message()})
    if final["error_code"] == 0:
        client.process_server_final_message(final["auth_bytes"])
    return session, final


def test_sasl_handshake_and_two_round_authenticate() -> None:
    async def scenario() -> None:
        image = user_image(alice="wonderland")
        apis = kafka_apis(image, ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            session, answer = await authenticate(apis, mechanism, "alice", "wonderland")
            assert answer["error_code"] == 0 and session.authenticated
            assert session.principal == "User:alice"
        session, answer = await authenticate(apis, "SCRAM-SHA-256", "alice", "wrong")
        assert answer["error_code"] == SASL_AUTHENTICATION_FAILED
        assert answer["error_message"] == WRONG_CREDENTIALS and not session.authenticated
        assert "SASL authentication failed" in session.close_after_response  # closes, logged
        garbage = Session("127.0.0.1:2", "KAFKA", authenticated=False)
        await apis.sasl_handshake(garbage, 1, {"mechanism": "SCRAM-SHA-512"})
        refused = await apis.sasl_authenticate(garbage, 2, {"auth_bytes": b"\x00\x01junk"})
        assert refused["error_code"] == SASL_AUTHENTICATION_FAILED
        assert "malformed SCRAM client-first" in refused["error_message"]
        assert garbage.close_after_response
        # A listener configured for PLAIN only offers and accepts PLAIN only.
        plain_only = kafka_apis(image, ("PLAIN",))
        session = Session("127.0.0.1:3", "KAFKA", authenticated=False)
        offered = await plain_only.sasl_handshake(session, 1, {"mechanism": "SCRAM-SHA-256"})
        assert offered == {"error_code": common_pb2.UNSUPPORTED_SASL_MECHANISM,
                           "mechanisms": ["PLAIN"]}  # fmt: skip

    asyncio.run(scenario())


class ImageAdmin:
    """The Admin servicer's user RPCs over a real single-voter controller: AlterUserCredentials
    goes to the controller, DescribeUsers is AdminServicer's own code over its image."""

    def __init__(self, quorum: Any) -> None:
        self.quorum = quorum

    def image(self) -> MetadataImage:
        return self.quorum.metadata.image  # type: ignore[no-any-return]

    async def AlterUserCredentials(self, request: Any, context: Any) -> Any:
        return await self.quorum.service.AlterUserCredentials(request, context)

    async def DescribeUsers(self, request: Any, context: Any) -> Any:
        return await AdminServicer.DescribeUsers(self, request, context)  # type: ignore[arg-type]


def test_alter_and_describe_user_scram_credentials_like_kafka() -> None:
    async def scenario() -> None:
        async with running_quorum() as quorum:
            admin = ImageAdmin(quorum)
            apis = kafka_apis(MetadataImage(), ("SCRAM-SHA-256",), admin)
            apis.scram_logins = ScramLogins(lambda n, m: admin.image().scram.get((n, m)))
            session = Session("127.0.0.1:1", "KAFKA")
            salt = bytes(range(24))

            def upsert(name: str, mechanism: int, password: bytes, iterations: int = 4096) -> Any:
                salted = hashlib.pbkdf2_hmac(scram.HASHES.get(mechanism, "sha256"), password,
                                             salt, iterations)  # fmt: skip
                return {"name": name, "mechanism": mechanism, "iterations": iterations,
                        "salt": salt, "salted_password": salted}  # fmt: skip

            alter = apis._handlers[51]
            answer = await alter(session, 0, {"deletions": [], "upsertions": [
                upsert("kim", SHA256, b"k-pw"), upsert("kim", SHA512, b"k-pw", 8192),
                upsert("lee", 3, b"x"),  # an unknown mechanism
                upsert("max", SHA256, b"x", 100),  # too few iterations
                upsert("ned", SHA256, b"x"), upsert("ned", SHA256, b"y"),  # twice
                upsert("", SHA256, b"x"),  # no name
            ]})  # fmt: skip
            codes = {r["user"]: r["error_code"] for r in answer["results"]}
            assert codes == {"kim": 0, "lee": common_pb2.UNSUPPORTED_SASL_MECHANISM,
                             "max": common_pb2.UNACCEPTABLE_CREDENTIAL,
                             "ned": common_pb2.DUPLICATE_RESOURCE,
                             "": common_pb2.UNACCEPTABLE_CREDENTIAL}  # fmt: skip
            image = admin.image()
            assert set(image.scram) == {("kim", SHA256), ("kim", SHA512)}
            assert b"k-pw" not in encode_snapshot(image, "c")  # neither password...
            salted = hashlib.pbkdf2_hmac("sha256", b"k-pw", salt, 4096)
            assert salted not in encode_snapshot(image, "c")  # ...nor salted password stored
            # Kim logs in with what Kafka's admin API set.
            session2, ok = await authenticate(apis, "SCRAM-SHA-256", "kim", "k-pw")
            assert ok["error_code"] == 0 and session2.principal == "User:kim"

            describe = apis._handlers[50]
            every = await describe(session, 0, {"users": None})
            assert every["results"] == [{"user": "kim", "error_code": 0, "error_message": None,
                                         "credential_infos": [
                                             {"mechanism": SHA256, "iterations": 4096},
                                             {"mechanism": SHA512, "iterations": 8192}]}]  # fmt: skip
            named = await describe(session, 0, {"users": [{"name": "zed"}, {"name": "kim"},
                                                          {"name": "x"}, {"name": "x"}]})  # fmt: skip
            codes = {r["user"]: r["error_code"] for r in named["results"]}
            assert codes == {"zed": common_pb2.RESOURCE_NOT_FOUND, "kim": 0,
                             "x": common_pb2.DUPLICATE_RESOURCE}  # fmt: skip
            # Deleting one mechanism, and one the user does not have (all-or-nothing per user).
            gone = await alter(
                session,
                0,
                {
                    "upsertions": [],
                    "deletions": [
                        {"name": "kim", "mechanism": SHA512},
                        {"name": "zed", "mechanism": SHA256},
                    ],
                },
            )
            codes = {r["user"]: r["error_code"] for r in gone["results"]}
            assert codes == {"kim": 0, "zed": common_pb2.RESOURCE_NOT_FOUND}
            assert set(admin.image().scram) == {("kim", SHA256)}

    asyncio.run(scenario())


class NeverCalled:
    async def AlterUserCredentials(self, request: Any, context: Any) -> Any:
        raise AssertionError("the authorization rule must refuse first")

    DescribeUsers = AlterUserCredentials


def test_scram_admin_apis_need_alter_and_describe_on_the_cluster() -> None:
    async def scenario() -> None:
        image = MetadataImage()
        settings = AuthorizerSettings(True, frozenset({"User:admin"}))
        apis = kafka_apis(image, ("SCRAM-SHA-256",), admin=NeverCalled())
        apis.access_control = AccessControl(settings, lambda: image)
        session = Session("127.0.0.1:1", "KAFKA", principal="User:alice")
        salted = hashlib.pbkdf2_hmac("sha256", b"pw", bytes(16), 4096)
        answer = await apis._handlers[51](session, 0, {"deletions": [], "upsertions": [
            {"name": "eve", "mechanism": SHA256, "iterations": 4096, "salt": bytes(16),
             "salted_password": salted}]})  # fmt: skip
        assert answer["results"][0]["error_code"] == common_pb2.CLUSTER_AUTHORIZATION_FAILED
        described = await apis._handlers[50](session, 0, {"users": None})
        assert described["error_code"] == common_pb2.CLUSTER_AUTHORIZATION_FAILED
        assert described["results"] == []

    asyncio.run(scenario())


def test_sasl_enabled_mechanisms_config() -> None:
    from strom.node.config import ConfigError, build_config

    base = {
        "node.id": 1,
        "controller.quorum.voters": "1@localhost:9093",
        "listeners": "PLAINTEXT://:9092,CONTROLLER://:9093,KAFKA://:9095",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "KAFKA:SASL_PLAINTEXT",
        "listener.wire.protocol.map": "KAFKA:KAFKA",
    }
    default = build_config(base, environ={})
    assert default.listener_setting("KAFKA", "sasl.enabled.mechanisms") == [
        "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512",
    ]  # fmt: skip
    one = build_config(
        base, environ={"STROM_LISTENER_NAME_KAFKA_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-512"}
    )
    assert one.listener_setting("KAFKA", "sasl.enabled.mechanisms") == ["SCRAM-SHA-512"]
    assert one["sasl.enabled.mechanisms"] == default["sasl.enabled.mechanisms"]
    for bad in ("GSSAPI", "SCRAM-SHA-1,PLAIN", ""):
        with pytest.raises(ConfigError, match="sasl.enabled.mechanisms"):
            build_config({**base, "sasl.enabled.mechanisms": bad}, environ={})
