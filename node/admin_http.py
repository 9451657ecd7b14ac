"""The admin HTTP listener (`admin.listener`): `/metrics`, `/healthz` and `/readyz`.

A deliberately small HTTP/1.1 server on the node's event loop (`asyncio.start_server`): one GET
per connection, answered with `Connection: close`. It runs on the loop rather than in
prometheus_client's thread so that the scrape-time collector reads the node's state from the
thread that owns it (DESIGN.md §3).

- `GET /healthz`: 200 while the process serves at all (liveness).
- `GET /readyz`: 200 when the node can do its job, else 503 with a one-line reason. A broker is
  ready when it is registered, unfenced and has caught up with the metadata log (acts on a current
  image); a controller-only node when its Raft driver knows a leader. A stopping node is not ready.
- `GET /metrics`: Prometheus' text format (`strom.node.metrics`).

Bounds: a request head is at most `REQUEST_HEAD_BYTES_MAX`, read within `REQUEST_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry

from strom.node.metrics import NO_RAFT_LEADER, exposition

log = logging.getLogger("strom.admin")

REQUEST_HEAD_BYTES_MAX = 8192
REQUEST_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}  # fmt: skip


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` (an empty host means every interface); ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]"), int(port)


def readiness(node: Any) -> tuple[bool, str]:
    """(ready, reason) for `node` (a `strom.node.server.Node` or an object shaped like it)."""
    if getattr(node, "stopping", False):
        return False, "shutting down"
    if node.config.is_broker:
        lifecycle, manager = node.lifecycle, node.manager
        if lifecycle is None or manager is None:
            return False, "broker starting"
        if lifecycle.broker_epoch < 0:
            return False, "broker not registered with the controller"
        if lifecycle.fenced:
            return False, "broker fenced (not caught up with the metadata log or not heartbeating)"
        if not manager.caught_up:
            return False, "broker catching up with the metadata log"
        return True, "ready"
    driver = node.driver
    if driver is None:
        return False, "controller starting"
    if driver.leader_id == NO_RAFT_LEADER:
        return False, "no Raft leader known"
    return True, "ready"


class AdminHttpServer:
    def __init__(
        self,
        address: str,
        ready: Callable[[], tuple[bool, str]],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.host, self.port = parse_address(address)
        self.ready = ready
        self.registry = registry
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host or None, self.port, limit=REQUEST_HEAD_BYTES_MAX
        )
        # Port 0 asks the OS for a free port (tests): report the one bound.
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("admin listener on %s:%d (/metrics, /healthz, /readyz)", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
                return  # too large, cut short or too slow: not worth an answer
            status, body, content_type = self.respond(head)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def respond(self, head: bytes) -> tuple[int, bytes, str]:
        """(status, body, content type) for one request head."""
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            return 400, b"malformed request line\n", "text/plain"
        method, target, _ = parts
        if method != "GET":
            return 405, b"only GET\n", "text/plain"
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return 200, exposition(self.registry), CONTENT_TYPE_LATEST
        if path == "/healthz":
            return 200, b"ok\n", "text/plain"
        if path == "/readyz":
            ok, reason = self.ready()
            return (200 if ok else 503), reason.encode() + b"\n", "text/plain"
        return 404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain"
