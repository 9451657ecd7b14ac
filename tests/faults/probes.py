"""Client-side probes that `Lab.call_in` runs inside a lab host (never in the root namespace).

An echo probe connects, sends a random token, and waits for it to come back. Its outcome:

    ok           the token came back
    timeout      connect did not complete (a partition in namespace mode: SYNs vanish)
    noreply      connected, but nothing came back in time (a paused node; or a partition in
                 proxy mode, where the link's proxy accepts the connect and holds the bytes)
    refused      connect refused: nothing listens (a killed node in namespace mode)
    reset        the connection was reset or closed early (a killed node behind a proxy)
    error:<ERR>  any other socket error, by errno name
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

UNREACHABLE = frozenset({"timeout", "noreply"})
DOWN = frozenset({"refused", "reset"})


def echo_once(addr: str, port: int, timeout_s: float, marker: str | None = None) -> str:
    """One echo round trip within `timeout_s`; if `marker` is set, that file is created once
    the token has been sent (so a test knows the request is queued before it resumes a node)."""
    token = os.urandom(8).hex().encode()
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((addr, port))
        except TimeoutError:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"
        except ConnectionResetError:  # a proxy that accepted, then found nobody upstream
            return "reset"
        except OSError as exc:
            return f"error:{errno.errorcode.get(exc.errno or 0, exc.errno)}"
        received = b""
        try:
            sock.sendall(token)
            if marker is not None:
                Path(marker).touch()
            while len(received) < len(token):
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(len(token) - len(received))
                if not chunk:
                    return "reset"
                received += chunk
        except TimeoutError:
            return "noreply"
        except OSError:
            return "reset"
    return "ok" if received == token else "error:garbled"


def echo_many(targets: Sequence[tuple[str, int, float]]) -> list[str]:
    """`echo_once` against every (address, port, timeout) at the same time; outcomes in the
    targets' order."""
    outcomes = [""] * len(targets)

    def one(i: int) -> None:
        outcomes[i] = echo_once(*targets[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes
