"""TLS settings: node config keys (global and per listener), the SDK's SecurityOptions, client
properties files (`--command-config`) and the throwaway CA of `cluster up --tls`."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from strom.client.errors import FatalError
from strom.client.properties import (
    CLIENT_PROPERTIES,
    parse_client_properties,
    read_client_properties,
)
from strom.client.tls import SecurityOptions, connection_hint
from strom.node.certs import write_cluster_certs
from strom.node.config import ConfigError, build_config
from strom.node.tls import (
    client_security,
    controller_security,
    inter_broker_security,
    server_credentials,
)

VOTERS = "1@localhost:9093"


def _config(environ: dict[str, str] | None = None, **extra: object):  # type: ignore[no-untyped-def]
    values = {"node.id": 1, "controller.quorum.voters": VOTERS, **extra}
    return build_config({k.replace("__", "."): v for k, v in values.items()}, environ or {})


SSL_MAP = {
    "listeners": "EXTERNAL://:9092,INTERNAL://:19092,CONTROLLER://:9093",
    "listener.security.protocol.map": "EXTERNAL:SSL,INTERNAL:PLAINTEXT,CONTROLLER:SSL",
    "inter.broker.listener.name": "INTERNAL",
}


def _tls(**extra: object):  # type: ignore[no-untyped-def]
    values = {
        "node.id": 1,
        "controller.quorum.voters": VOTERS,
        **SSL_MAP,
        "ssl.certificate.location": "/c/node.crt",
        "ssl.key.location": "/c/node.key",
        "ssl.ca.location": "/c/ca.crt",
        **extra,
    }
    return build_config(values, {})


# ---- node configuration -------------------------------------------------------------------


def test_ssl_defaults_are_off() -> None:
    config = _config()
    assert config["ssl.client.auth"] == "none"
    assert config["ssl.certificate.location"] == ""
    assert not client_security(config, "PLAINTEXT").uses_tls


def test_listener_override_wins_over_the_global_key() -> None:
    config = _tls(**{"listener.name.external.ssl.client.auth": "required"})
    assert config.listener_setting("EXTERNAL", "ssl.client.auth") == "required"
    assert config.listener_setting("CONTROLLER", "ssl.client.auth") == "none"
    assert config.listener_setting("EXTERNAL", "ssl.key.location") == "/c/node.key"


def test_listener_override_from_the_environment() -> None:
    environ = {
        "STROM_LISTENER_NAME_EXTERNAL_SSL_KEY_LOCATION": "/env/ext.key",
        "STROM_SSL_CLIENT_AUTH": "required",
    }
    values = {"node.id": 1, "controller.quorum.voters": VOTERS, **SSL_MAP}
    values |= {"ssl.certificate.location": "/c/n.crt", "ssl.key.location": "/c/n.key"}
    values["ssl.ca.location"] = "/c/ca.crt"
    config = build_config(values, environ)
    assert config.listener_setting("EXTERNAL", "ssl.key.location") == "/env/ext.key"
    assert config.listener_setting("CONTROLLER", "ssl.key.location") == "/c/n.key"
    assert config["ssl.client.auth"] == "required"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"ssl.client.auth": "maybe"}, "ssl.client.auth"),
        ({"listener.name.external.ssl.client.auth": "maybe"}, "ssl.client.auth"),
        ({"listener.name.nowhere.ssl.key.location": "/k"}, "listener.name.nowhere"),
        ({"listener.name.external.ssl.keystore.location": "/k"}, "unknown config key"),
        ({"listener.security.protocol.map": "EXTERNAL:TLS,INTERNAL:PLAINTEXT,CONTROLLER:SSL"},
         "listener.security.protocol.map"),
        ({"ssl.certificate.location": ""}, "ssl.certificate.location"),
        ({"ssl.client.auth": "required", "ssl.ca.location": ""}, "ssl.ca.location"),
    ],
)  # fmt: skip
def test_bad_tls_settings_stop_the_node_naming_the_key(
    extra: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        _tls(**extra)


def test_node_clients_use_the_target_listeners_protocol_and_own_certificate() -> None:
    config = _tls(**{"listener.name.controller.ssl.certificate.location": "/c/ctl.crt"})
    to_controllers = controller_security(config)
    assert to_controllers.security_protocol == "SSL"
    assert to_controllers.ssl_certfile == "/c/ctl.crt"
    assert to_controllers.ssl_keyfile == "/c/node.key"
    assert to_controllers.ssl_cafile == "/c/ca.crt"
    assert not inter_broker_security(config).uses_tls  # INTERNAL is plaintext here


def test_server_credentials_name_the_key_and_path_of_a_missing_file(tmp_path: Path) -> None:
    config = _tls(**{"listener.name.external.ssl.certificate.location": str(tmp_path / "no.crt")})
    with pytest.raises(
        ConfigError, match=r"listener\.name\.external\.ssl\.certificate\.location.*no\.crt"
    ):
        server_credentials(config, "EXTERNAL")
    assert server_credentials(config, "INTERNAL") is None


def test_server_credentials_from_generated_files(tmp_path: Path) -> None:
    files = write_cluster_certs(tmp_path, {"node-1": ["localhost"]})["node-1"]
    config = _tls(
        **{
            "ssl.certificate.location": str(files.certificate),
            "ssl.key.location": str(files.key),
            "ssl.ca.location": str(files.ca),
            "ssl.client.auth": "required",
        }
    )
    assert isinstance(server_credentials(config, "EXTERNAL"), grpc.ServerCredentials)


# ---- SDK options --------------------------------------------------------------------------


def test_security_options_check_their_combination() -> None:
    assert SecurityOptions("ssl").security_protocol == "SSL"
    assert SecurityOptions("SASL_SSL").uses_tls
    assert not SecurityOptions("SASL_PLAINTEXT").uses_tls
    with pytest.raises(FatalError, match="security_protocol"):
        SecurityOptions("TLS")
    with pytest.raises(FatalError, match="go together"):
        SecurityOptions("SSL", ssl_certfile="/c.crt")
    with pytest.raises(FatalError, match="ssl_cafile given but security_protocol is PLAINTEXT"):
        SecurityOptions(ssl_cafile="/ca.crt")
    with pytest.raises(FatalError, match="unknown option.*ssl_ca_file"):
        SecurityOptions.from_options({"ssl_ca_file": "/ca.crt"})


def test_unreadable_or_non_pem_files_are_named_never_shown(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match="ssl_cafile: cannot read"):
        SecurityOptions("SSL", ssl_cafile=str(tmp_path / "missing.crt")).channel_credentials()
    secret = tmp_path / "not-pem.key"
    secret.write_text("hunter2-secret-material")
    with pytest.raises(FatalError) as failure:
        SecurityOptions("SSL", ssl_cafile=str(secret)).channel_credentials()
    assert "not a PEM file" in str(failure.value)
    assert "hunter2" not in str(failure.value)


def test_connection_hints_point_at_the_likely_mismatch() -> None:
    plain, tls = SecurityOptions(), SecurityOptions("SSL")
    assert "security_protocol=SSL" in connection_hint(plain, "... Socket closed")
    assert "client certificate" in connection_hint(tls, "... Socket closed")
    assert "TLS handshake failed" in connection_hint(tls, "Ssl handshake failed: ...")
    assert connection_hint(plain, "Connection refused") == ""


# ---- properties files ---------------------------------------------------------------------


def test_properties_file_maps_kafka_names_to_sdk_options(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text(
        "# comment\n! also a comment\n\nsecurity.protocol = SSL\n"
        "ssl.ca.location=ca.crt\nssl.certificate.location: /abs/me.crt\n"
        "ssl.key.location=keys/me.key\n"
    )
    assert read_client_properties(path) == {
        "security_protocol": "SSL",
        "ssl_cafile": str(tmp_path / "ca.crt"),
        "ssl_certfile": "/abs/me.crt",
        "ssl_keyfile": str(tmp_path / "keys" / "me.key"),
    }
    assert set(CLIENT_PROPERTIES.values()) <= set(SecurityOptions.__dataclass_fields__)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ssl.keystore.location=/secret\n", "unknown property 'ssl.keystore.location'"),
        ("security.protocol\n", "expected key=value"),
        ("security.protocol=SSL\n#\nsecurity.protocol=SSL\n", "set twice"),
    ],
)
def test_bad_properties_are_refused_with_file_and_line(text: str, problem: str) -> None:
    with pytest.raises(FatalError, match=problem) as failure:
        parse_client_properties("# header\n" + text, "my.properties")
    assert "my.properties:2:" in str(failure.value) or "my.properties:4:" in str(failure.value)
    assert "/secret" not in str(failure.value)


# ---- the throwaway CA ---------------------------------------------------------------------


def test_generated_certificates_name_their_hosts_and_keep_keys_private(tmp_path: Path) -> None:
    files = write_cluster_certs(tmp_path, {"strom1": ["strom1", "10.0.0.7"]}, ["alice"])
    node = x509.load_pem_x509_certificate(files["strom1"].certificate.read_bytes())
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"strom1", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} >= {
        "10.0.0.7",
        "127.0.0.1",
    }
    usages = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    client = x509.load_pem_x509_certificate(files["alice"].certificate.read_bytes())
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    client_usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(client_usages) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    for key in tmp_path.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    options = read_client_properties(tmp_path / "client.properties")
    assert options["ssl_certfile"] == str(files["alice"].certificate)
    SecurityOptions(**options).channel_credentials()  # every file is readable PEM


def test_properties_files_are_read_as_java_reads_them() -> None:
    text = (
        "security.protocol SASL_SSL\n"  # the `key value` form
        "sasl.mechanism = SCRAM-\\\n"  # a value continued over lines
        "    SHA-256\n"
        "sasl.username=\\u0061lice\n"  # \uXXXX escapes
        "  # an indented comment\n"
        "sasl.password=p\\=w\\:d\n"
    )
    assert parse_client_properties(text) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": "alice",
        "sasl_password": "p=w:d",
    }


def test_a_problem_after_a_continued_value_names_its_own_line() -> None:
    with pytest.raises(FatalError, match="my.properties:4: unknown property 'nope'"):
        parse_client_properties("sasl.username=a\\\n  b\n\nnope=1\n", "my.properties")
