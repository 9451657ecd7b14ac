"""TLS for a node's listeners and for the node's own client channels, from its configuration.

Server side: a listener whose security protocol is SSL or SASL_SSL serves TLS with
`ssl.certificate.location` + `ssl.key.location` (each overridable per listener as
`listener.name.<name>.ssl.*`, node/config.py). `ssl.client.auth`:

- `required`: the client must present a certificate signed by a CA in `ssl.ca.location`; a
  handshake without one, or with one from another CA, fails (mutual TLS).
- `requested`: gRPC Python offers only "require and verify" or "do not ask" (checked with grpcio
  1.85: with `require_client_auth=False` no client certificate is requested, even when
  `root_certificates` is given), so `requested` behaves as `none`; the node logs a warning.
- `none`: no client certificate is asked for.

PLAINTEXT and SASL_PLAINTEXT listeners serve plaintext.

Client side: a node talks to the controllers on the first of `controller.listener.names` and to
other brokers (replica fetch, group coordinator look-ups) on `inter.broker.listener.name`, with
the protocol and TLS settings of *that listener* in its own configuration, presenting its own
certificate as the client certificate (as a Kafka broker does with its keystore). Every channel
is opened by `strom.client.tls.open_channel`.

PEM files are read at start; a missing or unreadable file stops the node with a `ConfigError`
that names the key and the path, never the contents.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import grpc

from strom.client.errors import StromError
from strom.client.tls import PLAINTEXT, TLS_PROTOCOLS, SecurityOptions
from strom.node.config import ConfigError, NodeConfig, listener_key

log = logging.getLogger("strom.tls")


def uses_tls(config: NodeConfig, listener: str) -> bool:
    return config.security_protocols.get(listener, "PLAINTEXT") in TLS_PROTOCOLS


def _read(config: NodeConfig, listener: str, key: str) -> bytes:
    path = config.listener_setting(listener, key)
    name = key if config[key] == path else listener_key(listener, key)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{name}: {path} is not a PEM file")
    return data


def server_credentials(config: NodeConfig, listener: str) -> grpc.ServerCredentials | None:
    """Credentials for `listener`'s server, or None when it serves plaintext."""
    if not uses_tls(config, listener):
        return None
    certificate = _read(config, listener, "ssl.certificate.location")
    key = _read(config, listener, "ssl.key.location")
    client_auth = config.listener_setting(listener, "ssl.client.auth")
    roots = None
    if config.listener_setting(listener, "ssl.ca.location"):
        roots = _read(config, listener, "ssl.ca.location")
    return grpc.ssl_server_credentials(
        [(key, certificate)],
        root_certificates=roots,
        require_client_auth=client_auth == "required",
    )


def server_ssl_context(config: NodeConfig, listener: str) -> ssl.SSLContext | None:
    """An SSLContext for a KAFKA listener (asyncio streams), the same files and client
    authentication as `server_credentials`; None when it serves plaintext."""
    if not uses_tls(config, listener):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(
        config.listener_setting(listener, "ssl.certificate.location"),
        config.listener_setting(listener, "ssl.key.location"),
    )
    if config.listener_setting(listener, "ssl.ca.location"):
        context.load_verify_locations(config.listener_setting(listener, "ssl.ca.location"))
    auth = config.listener_setting(listener, "ssl.client.auth")
    context.verify_mode = {"required": ssl.CERT_REQUIRED, "requested": ssl.CERT_OPTIONAL}.get(
        auth, ssl.CERT_NONE
    )
    return context


def client_security(config: NodeConfig, listener: str) -> SecurityOptions:
    """How this node connects to other nodes' `listener`."""
    protocol = config.security_protocols.get(listener, "PLAINTEXT")
    # On a SASL listener this node logs in as itself (node.sasl.username / node.sasl.password).
    sasl = (
        {
            "sasl_username": config["node.sasl.username"],
            "sasl_password": config["node.sasl.password"],
        }
        if protocol.startswith("SASL_") and config["node.sasl.username"]
        else {}
    )
    if protocol not in TLS_PROTOCOLS:
        return PLAINTEXT if protocol == "PLAINTEXT" else SecurityOptions(protocol, **sasl)

    def setting(key: str) -> str | None:
        value: str = config.listener_setting(listener, key)
        return value or None

    return SecurityOptions(
        protocol,
        ssl_cafile=setting("ssl.ca.location"),
        ssl_certfile=setting("ssl.certificate.location"),
        ssl_keyfile=setting("ssl.key.location"),
        **sasl,
    )


def controller_security(config: NodeConfig) -> SecurityOptions:
    """How this node reaches the controllers (Raft, registration, heartbeats, forwarding)."""
    return client_security(config, config.controller_listener_names[0])


def inter_broker_security(config: NodeConfig) -> SecurityOptions:
    """How this broker reaches other brokers (replica fetch, offsets look-ups)."""
    return client_security(config, config.inter_broker_listener_name)


def check_files(config: NodeConfig) -> None:
    """Read every PEM file once at start, so a bad path stops the node before it does anything
    rather than failing every connection later."""
    for endpoint in config.listeners:
        server_credentials(config, endpoint.listener)
        auth = config.listener_setting(endpoint.listener, "ssl.client.auth")
        if uses_tls(config, endpoint.listener) and auth == "requested":
            log.warning(
                "listener %s: ssl.client.auth=requested acts as none (gRPC cannot ask for an "
                "optional client certificate); use required for mutual TLS",
                endpoint.listener,
            )
    listeners = {config.controller_listener_names[0]}
    if config.is_broker:
        listeners.add(config.inter_broker_listener_name)
    for listener in sorted(listeners):
        security = client_security(config, listener)
        if not security.uses_tls:
            continue
        try:
            security.channel_credentials()
        except StromError as exc:
            raise ConfigError(f"listener {listener} (as a client): {exc.message}") from None
