"""The fallback network: loopback addresses and a TCP proxy per directed link.

For machines without network namespaces or root. Every address is on 127/8, which any user may
bind. With the lab's base octet B and hosts numbered 1..n:

    127.B.0.<d>          where host d's processes listen (`host_addr`)
    127.B.<s>.<d>:<port> the link s→d: a listener that forwards to 127.B.0.<d>:<port>
                         (`link_addr`); a process on host s reaches host d only through it

so a process must be told `Lab.peer_addr(s, d)` for each peer, and every port a service listens
on must be declared up front (a proxy can only listen on ports it knows).

Faults mirror the nftables set of namespace mode: the blocked set holds (source host,
destination host) pairs, and bytes travelling from source to destination are *held* (not lost:
TCP would retransmit them anyway) until the pair leaves the set. One proxy connection carries
both directions, so each direction is gated by its own pair. A new connection on a link whose
either direction is blocked is accepted (here the client's connect succeeds, unlike a real
partition, where it times out) but its upstream connect waits until both directions are open,
as a TCP handshake would. `reset` aborts live connections with an RST, as a rebooted middlebox
does. Every change is applied on the proxy's event loop before the call returns, so the next
byte forwarded already sees it.

One asyncio loop in one daemon thread runs every listener and connection; `close()` aborts all
connections and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")
CHUNK_BYTES_MAX = 64 * 1024
CALL_TIMEOUT_S = 10.0


def _abort(writer: asyncio.StreamWriter | None) -> None:
    """Close with an RST (SO_LINGER 0) instead of a FIN, like a host that forgot the connection."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False, slots=True)
class _Conn:
    src: str
    dst: str
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = field(default=None)

    def abort(self) -> None:
        _abort(self.client)
        _abort(self.upstream)


class LinkProxies:
    """Every directed link's TCP proxy for `hosts`, on ports `ports`, under 127.<base>/16."""

    def __init__(self, base: int, hosts: Sequence[str], ports: Sequence[int]) -> None:
        assert 2 <= base <= 254, "127.0/16 and 127.255/16 are left alone"
        assert 1 <= len(hosts) <= 254
        self.base = base
        self._index = {host: i + 1 for i, host in enumerate(hosts)}
        self._ports = tuple(ports)
        self._blocked: frozenset[tuple[str, str]] = frozenset()
        self._conns: set[_Conn] = set()
        self._servers: list[asyncio.Server] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="lab-proxies", daemon=True
        )
        self._changed: asyncio.Event | None = None
        self._closed = False

    def host_addr(self, host: str) -> str:
        return f"127.{self.base}.0.{self._index[host]}"

    def link_addr(self, src: str, dst: str) -> str:
        return f"127.{self.base}.{self._index[src]}.{self._index[dst]}"

    def start(self) -> None:
        """Bind every link's listener; raises OSError (e.g. EADDRINUSE) when one cannot bind."""
        self._thread.start()
        assert not self._closed, "the proxies are closed"
        self._call(self._start())

    def set_blocked(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Replace the blocked (source host, destination host) pairs; live when this returns."""
        assert not self._closed, "the proxies are closed"
        self._call(self._set_blocked(frozenset(pairs)))

    def reset(self, pairs: Iterable[tuple[str, str]]) -> int:
        """Abort with RST every live connection between the hosts of any pair; return how many."""
        assert not self._closed, "the proxies are closed"
        return self._call(self._reset(frozenset(pairs)))

    def connection_count(self) -> int:
        assert not self._closed, "the proxies are closed"
        return self._call(self._count())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CALL_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    # --- on the proxy's loop ---

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    async def _count(self) -> int:
        return len(self._conns)

    async def _start(self) -> None:
        self._changed = asyncio.Event()
        try:
            for src in self._index:
                for dst in self._index:
                    if src == dst:
                        continue
                    for port in self._ports:
                        self._servers.append(await self._listen(src, dst, port))
        except OSError:
            await self._shutdown()
            raise

    async def _listen(self, src: str, dst: str, port: int) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._handle(src, dst, port, reader, writer)

        return await asyncio.start_server(handle, self.link_addr(src, dst), port)

    async def _set_blocked(self, pairs: frozenset[tuple[str, str]]) -> None:
        unknown = {host for pair in pairs for host in pair} - set(self._index)
        assert not unknown, f"unknown hosts {unknown}"
        self._blocked = pairs
        assert self._changed is not None
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_open(self, a: str, b: str) -> None:
        while (a, b) in self._blocked:
            assert self._changed is not None
            await self._changed.wait()

    async def _reset(self, pairs: frozenset[tuple[str, str]]) -> int:
        doomed = [
            conn
            for conn in self._conns
            if (conn.src, conn.dst) in pairs or (conn.dst, conn.src) in pairs
        ]
        for conn in doomed:
            conn.abort()
            self._conns.discard(conn)  # gone now, not when its handler next runs
        return len(doomed)

    async def _handle(
        self,
        src: str,
        dst: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        conn = _Conn(src, dst, writer, task=asyncio.current_task())
        self._conns.add(conn)
        try:
            # A handshake needs both directions.
            await self._wait_open(src, dst)
            await self._wait_open(dst, src)
            try:
                up_reader, conn.upstream = await asyncio.open_connection(self.host_addr(dst), port)
            except OSError:
                conn.abort()  # refused upstream: the client sees a reset
                return
            await asyncio.gather(
                self._pump(reader, conn.upstream, src, dst, conn),
                self._pump(up_reader, writer, dst, src, conn),
            )
        finally:
            self._conns.discard(conn)
            for end in (conn.client, conn.upstream):
                if end is not None:
                    end.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        a: str,
        b: str,
        conn: _Conn,
    ) -> None:
        """Copy bytes travelling from host a to host b, holding them while (a, b) is blocked."""
        try:
            while data := await reader.read(CHUNK_BYTES_MAX):
                await self._wait_open(a, b)
                writer.write(data)
                await writer.drain()
            if not writer.transport.is_closing() and writer.can_write_eof():
                writer.write_eof()
        except OSError:
            conn.abort()  # a reset on one side resets the other, as it would end to end

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        tasks = [conn.task for conn in self._conns if conn.task is not None]
        for conn in list(self._conns):
            conn.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
