"""The fallback's link proxies up close: held bytes are delayed, never lost; reset sends RSTs.

Everything here is on 127/8 (proxy mode's addresses), so the test process may dial it itself.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterator

import pytest

from .echo_server import _Echo, _Server
from .proxy import LinkProxies

pytestmark = pytest.mark.faults

PORT = 7001
# How long a held direction must stay silent to count as held (a negative can only be timed).
SILENCE_S = 0.3


class _CountingServer(_Server):
    accepted = 0

    def verify_request(self, request: object, client_address: object) -> bool:
        self.accepted += 1
        return True


@pytest.fixture
def link() -> Iterator[tuple[LinkProxies, _CountingServer]]:
    for base in range(211, 231):
        proxies = LinkProxies(base, ["a", "b"], [PORT])
        try:
            proxies.start()
            break
        except OSError as exc:
            proxies.close()
            if exc.errno != errno.EADDRINUSE:
                raise
    else:
        pytest.fail("no free 127.<base>/16 for the proxies")
    server = _CountingServer((proxies.host_addr("b"), PORT), _Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield proxies, server
    finally:
        proxies.close()
        server.shutdown()
        server.server_close()


def _connect(proxies: LinkProxies) -> socket.socket:
    sock = socket.create_connection((proxies.link_addr("a", "b"), PORT), timeout=5)
    sock.settimeout(5)
    return sock


def _silent(sock: socket.socket) -> bool:
    sock.settimeout(SILENCE_S)
    try:
        data = sock.recv(16)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)
    raise AssertionError(f"received {data!r} through a blocked link")


def test_addresses_are_per_link(link: tuple[LinkProxies, _CountingServer]) -> None:
    proxies, _ = link
    assert proxies.host_addr("b") == f"127.{proxies.base}.0.2"
    assert proxies.link_addr("a", "b") == f"127.{proxies.base}.1.2"
    assert proxies.link_addr("b", "a") == f"127.{proxies.base}.2.1"


def test_each_direction_is_held_then_released(link: tuple[LinkProxies, _CountingServer]) -> None:
    proxies, _ = link
    with _connect(proxies) as sock:
        sock.sendall(b"one")
        assert sock.recv(16) == b"one"
        proxies.set_blocked({("a", "b")})  # requests held
        sock.sendall(b"two")
        assert _silent(sock)
        proxies.set_blocked(set())
        assert sock.recv(16) == b"two"  # held, not lost
        proxies.set_blocked({("b", "a")})  # replies held
        sock.sendall(b"three")
        assert _silent(sock)
        proxies.set_blocked(set())
        assert sock.recv(16) == b"three"


def test_new_connections_wait_for_both_directions(
    link: tuple[LinkProxies, _CountingServer],
) -> None:
    proxies, server = link
    proxies.set_blocked({("b", "a")})
    with _connect(proxies) as sock:
        sock.sendall(b"hello")
        assert _silent(sock)
        assert server.accepted == 0, "the upstream connect went through a blocked link"
        proxies.set_blocked(set())
        assert sock.recv(16) == b"hello"
        assert server.accepted == 1


def test_reset_aborts_live_connections(link: tuple[LinkProxies, _CountingServer]) -> None:
    proxies, _ = link
    with _connect(proxies) as sock:
        sock.sendall(b"x")
        assert sock.recv(16) == b"x"
        assert proxies.connection_count() == 1
        assert proxies.reset({("b", "a")}) == 1  # either direction names the connection
        with pytest.raises(ConnectionResetError):
            sock.recv(16)
    assert proxies.connection_count() == 0
    with _connect(proxies) as sock:  # the link itself still works
        sock.sendall(b"y")
        assert sock.recv(16) == b"y"


def test_a_dead_upstream_resets_the_client(link: tuple[LinkProxies, _CountingServer]) -> None:
    proxies, server = link
    server.shutdown()
    server.server_close()
    # The RST may beat the client's own connect() to the finish: any of the three may see it.
    with pytest.raises((ConnectionResetError, BrokenPipeError)), _connect(proxies) as sock:
        sock.sendall(b"x")
        sock.recv(16)
