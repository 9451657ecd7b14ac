"""A Kafka-protocol listener: Kafka's framing over asyncio streams on the node's loop.

Each connection reads one request at a time and answers it before reading the next, so
responses leave in request order (Kafka mutes a channel while its request is in flight, for the
same reason). A frame is a 4-byte big-endian size and that many bytes: the request header
(api key, version, correlation id, client id, then tagged fields at flexible versions) and the
body. A size above `socket.request.max.bytes`, a body that does not decode, an unknown API key
or a version outside what is served (other than ApiVersions, which answers with its range so
the client can fall back) closes that connection with one log line; nothing else is affected.
A connection idle for `connections.max.idle.ms` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Histogram

from strom.client.acl import ANONYMOUS

from .codec import CodecError, Message, Reader, Writer
from .messages import API_VERSIONS, APIS, BEFORE_AUTHENTICATION, Api

log = logging.getLogger("strom.kafka")

_SIZE = struct.Struct(">i")
UNSUPPORTED_VERSION = 35

REQUEST_DURATION = Histogram(
    "strom_kafka_request_duration_seconds",
    "Kafka-protocol requests by API and version, from decoded to answered",
    ["api", "version"],
)


class CloseConnection(Exception):
    """The connection must be closed (the message says why, for the log)."""


@dataclass(slots=True)
class Session:
    """What the handlers know about one connection."""

    peer: str
    listener: str
    principal: str = ANONYMOUS
    client_id: str = ""
    # SASL: the mechanism chosen by SaslHandshake, and whether authentication succeeded.
    sasl_mechanism: str = ""
    authenticated: bool = False
    # A SCRAM exchange between its two rounds (node/security/scram.py ScramExchange).
    scram: Any = None
    # Set by a handler whose answer must be the connection's last (a failed SASL login).
    close_after_response: str = ""


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


Handler = Callable[[Session, Api, int, Message], Awaitable[Message | None]]


def certificate_principal(peercert: Any) -> str | None:
    """`User:<CN>` of a verified client certificate (ssl's getpeercert() form), else None."""
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and value:
                return f"User:{value}"
    return None


def read_header(reader: Reader) -> RequestHeader:
    api_key = reader.int16()
    api_version = reader.int16()
    correlation_id = reader.int32()
    n = reader.int16()  # the client id is a classic (int16-length) string even when flexible
    client_id = None if n < 0 else reader.take(n).decode("utf-8", errors="replace")
    return RequestHeader(api_key, api_version, correlation_id, client_id)


def skip_tagged_fields(reader: Reader) -> None:
    for _ in range(reader.uvarint()):
        reader.uvarint()
        reader.take(reader.uvarint())


def encode_response(api: Api, version: int, correlation_id: int, body: Message) -> bytes:
    writer = Writer()
    writer.int32(0)  # size, patched below
    writer.int32(correlation_id)
    # Response header v1 (tagged fields) at flexible versions, except ApiVersions: a client
    # reads its response before it knows which versions the broker speaks, so always v0.
    if api.is_flexible(version) and api.key != API_VERSIONS.key:
        writer.uvarint(0)
    api.response.write(writer, body, version)
    data = bytearray(writer.getvalue())
    _SIZE.pack_into(data, 0, len(data) - 4)
    return bytes(data)


def api_versions_body(error_code: int) -> Message:
    return {
        "error_code": error_code,
        "api_keys": [
            {"api_key": a.key, "min_version": a.advertised.low, "max_version": a.advertised.high}
            for a in sorted(APIS.values(), key=lambda a: a.key)
        ],
        "throttle_time_ms": 0,
    }


class KafkaListener:
    """Serves one listener endpoint; `handle` answers decoded requests (node/kafka/apis.py)."""

    def __init__(
        self,
        listener: str,
        host: str,
        port: int,
        handle: Handler,
        max_request_bytes: int,
        idle_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
        sasl: bool = False,
    ) -> None:
        """`sasl`: clients must authenticate (SaslHandshake, SaslAuthenticate) before anything
        but ApiVersions is answered."""
        self.listener = listener
        self.host = host
        self.port = port
        self.handle = handle
        self.max_request_bytes = max_request_bytes
        self.idle_timeout_s = idle_timeout_s
        self.ssl_context = ssl_context
        self.sasl = sasl
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, self.host or None, self.port, ssl=self.ssl_context, reuse_address=True
        )

    @property
    def bound_port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        session = Session(peer, self.listener, authenticated=not self.sasl)
        principal = certificate_principal(writer.get_extra_info("peercert"))
        if principal is not None:
            session.principal = principal
        try:
            await self._requests(session, reader, writer)
        except CloseConnection as exc:
            log.warning("kafka %s: closing connection from %s: %s", self.listener, peer, exc)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away (mid-frame or between frames)
        except TimeoutError:
            log.info("kafka %s: closing idle connection from %s", self.listener, peer)
        except Exception:  # a handler's bug ends its connection, never the listener
            log.exception("kafka %s: request from %s failed; closing", self.listener, peer)
        finally:
            self.connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _requests(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation (the
            # listener closing) that arrives in the turn the bytes do.
            async with asyncio.timeout(self.idle_timeout_s):
                head = await reader.readexactly(4)
            (size,) = _SIZE.unpack(head)
            if size < 0 or size > self.max_request_bytes:
                raise CloseConnection(
                    f"request size {size} is outside 0..{self.max_request_bytes} "
                    "(socket.request.max.bytes)"
                )
            frame = await reader.readexactly(size)
            response = await self._answer(session, frame)
            if response is not None:
                writer.write(response)
                await writer.drain()
            if session.close_after_response:
                raise CloseConnection(session.close_after_response)

    async def _answer(self, session: Session, frame: bytes) -> bytes | None:
        reader = Reader(frame)
        try:
            header = read_header(reader)
        except CodecError as exc:
            raise CloseConnection(f"malformed request header: {exc}") from exc
        api = APIS.get(header.api_key)
        if api is None:
            raise CloseConnection(f"unknown API key {header.api_key}")
        version = header.api_version
        if version not in api.served:
            if api.key == API_VERSIONS.key:
                # KIP-511: a v0 body with the error and our range, so newer clients fall back.
                return encode_response(
                    api, 0, header.correlation_id, api_versions_body(UNSUPPORTED_VERSION)
                )
            raise CloseConnection(
                f"{api.name} v{version} is not served (v{api.served.low}-{api.served.high})"
            )
        if not session.authenticated and api.key not in BEFORE_AUTHENTICATION:
            raise CloseConnection(f"{api.name} before SASL authentication")
        try:
            if api.is_flexible(version):
                skip_tagged_fields(reader)
            body = api.request.decode(reader, version)
        except CodecError as exc:
            raise CloseConnection(f"malformed {api.name} v{version} request: {exc}") from exc
        session.client_id = header.client_id or ""
        start = time.perf_counter()
        answer = await self.handle(session, api, version, body)
        REQUEST_DURATION.labels(api.name, str(version)).observe(time.perf_counter() - start)
        if answer is None:
            return None  # Produce with acks=0: no response at all
        try:
            return encode_response(api, version, header.correlation_id, answer)
        except CodecError as exc:
            log.error("kafka: cannot encode the %s v%d response: %s", api.name, version, exc)
            raise CloseConnection(f"internal error answering {api.name}") from exc
