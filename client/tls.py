"""How the SDK (and a node, as a client of other nodes) reaches a listener: plaintext or TLS.

`SecurityOptions` holds kafka-python's option names: `security_protocol` (PLAINTEXT, SSL,
SASL_PLAINTEXT, SASL_SSL), `ssl_cafile`, `ssl_certfile`, `ssl_keyfile`. SSL and SASL_SSL use
TLS; the SASL_ variants add credentials on top (the SASL part is not in this module). With TLS:

- `ssl_cafile` is the PEM bundle of CAs the client trusts; without it, the system's roots.
- `ssl_certfile` + `ssl_keyfile` (both or neither) are the client's own certificate chain and
  key, presented when the listener asks for one (`ssl.client.auth=required`).
- gRPC checks the server's certificate against the host name dialled, so a certificate must
  list that host (or IP address) among its subject alternative names.

- `sasl_username` + `sasl_password` (`sasl_mechanism` PLAIN) go as call metadata on every call
  of the channel (client/sasl.py), for SASL_PLAINTEXT / SASL_SSL listeners; credentials given
  without a security_protocol mean SASL_PLAINTEXT. The password is never part of `repr`.

`open_channel` is the one place the SDK and the node open client channels. PEM files are read
when a channel is opened (channels are cached per address), so a renewed certificate is picked
up by new connections. File contents never appear in errors or logs: only paths do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc

from strom.v1 import common_pb2

from .errors import FatalError
from .sasl import sasl_interceptors

# Kafka's security.protocol values: the one definition, used by the node's config too.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})


@dataclass(frozen=True, slots=True)
class SecurityOptions:
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        protocol = self.security_protocol.upper()
        if self.sasl_username and protocol == "PLAINTEXT":
            protocol = "SASL_PLAINTEXT"  # credentials given: the caller means SASL
        if protocol not in SECURITY_PROTOCOLS:
            raise FatalError(
                common_pb2.INVALID_CONFIG,
                f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                f"got {self.security_protocol!r}",
            )
        object.__setattr__(self, "security_protocol", protocol)
        self.interceptors()  # refuses a username without a password, an unknown mechanism
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise FatalError(
                common_pb2.INVALID_CONFIG,
                "ssl_certfile and ssl_keyfile go together: give both (client certificate) or "
                "neither",
            )
        given = [
            f.name for f in fields(self) if f.name.startswith("ssl_") and getattr(self, f.name)
        ]
        if given and not self.uses_tls:
            raise FatalError(
                common_pb2.INVALID_CONFIG,
                f"{', '.join(given)} given but security_protocol is {protocol}: "
                "use SSL (or SASL_SSL) to connect with TLS",
            )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SecurityOptions:
        """From keyword arguments; an unknown name is refused with the known ones listed."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise FatalError(
                common_pb2.INVALID_CONFIG,
                f"unknown option(s) {', '.join(unknown)}; security options are "
                f"{', '.join(sorted(known))}",
            )
        return cls(**options)

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in TLS_PROTOCOLS

    def interceptors(self) -> list[Any]:
        """Client interceptors a channel needs: SASL credentials on every call, or none."""
        try:
            return list(sasl_interceptors(self.sasl_username, self.sasl_password,
                                          self.sasl_mechanism))  # fmt: skip
        except ValueError as exc:
            raise FatalError(common_pb2.INVALID_CONFIG, str(exc)) from None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        assert self.uses_tls, "plaintext needs no credentials"
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem("ssl_cafile", self.ssl_cafile),
            private_key=_read_pem("ssl_keyfile", self.ssl_keyfile),
            certificate_chain=_read_pem("ssl_certfile", self.ssl_certfile),
        )


PLAINTEXT = SecurityOptions()


def _read_pem(option: str, path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FatalError(
            common_pb2.INVALID_CONFIG, f"{option}: cannot read {path}: {exc.strerror}"
        ) from None
    if b"-----BEGIN " not in data:
        raise FatalError(common_pb2.INVALID_CONFIG, f"{option}: {path} is not a PEM file")
    return data


def open_channel(
    address: str, security: SecurityOptions, options: list[tuple[str, int]]
) -> grpc.aio.Channel:
    """An asyncio channel to `address`, over TLS when `security` says so."""
    interceptors = security.interceptors() or None
    if security.uses_tls:
        return grpc.aio.secure_channel(
            address, security.channel_credentials(), options=options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


def open_sync_channel(
    address: str, security: SecurityOptions, options: list[tuple[str, int]] | None = None
) -> grpc.Channel:
    """A blocking channel (CLI one-shots such as `strom node health`)."""
    if security.uses_tls:
        return grpc.secure_channel(address, security.channel_credentials(), options=options)
    return grpc.insecure_channel(address, options=options)


def connection_hint(security: SecurityOptions, details: str) -> str:
    """A sentence to add to a transport failure when a TLS mismatch is the likely cause."""
    lowered = details.lower()
    if security.uses_tls:
        if "handshake" in lowered or "ssl" in lowered or "certificate" in lowered:
            return (
                " (TLS handshake failed: check ssl_cafile trusts the server's CA, that the "
                "server's certificate names this host, and, if the listener requires client "
                "certificates, ssl_certfile/ssl_keyfile)"
            )
        if "socket closed" in lowered:
            return (
                " (the server closed the connection: it may refuse this client certificate, "
                "or the listener may not use TLS)"
            )
        return ""
    if "socket closed" in lowered or "connection reset" in lowered:
        return (
            " (the server closed the connection: if this listener uses TLS, connect with "
            "security_protocol=SSL)"
        )
    return ""
