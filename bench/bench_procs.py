"""Server processes for the benchmarks: free loopback ports, start, wait, always stop.

Every server the benchmarks start goes through one `ProcessGroup`, used as a context manager:
on leaving it (normally, by an exception, by Ctrl-C, or by SIGTERM/SIGHUP turned into
SystemExit by `exit_on_signals`) each process still running gets SIGTERM, then SIGKILL after
`stop_timeout_s`. Processes run in their own session so a Ctrl-C at the terminal reaches only
this script, which then stops them in order. Output goes to a log file per process, whose last
lines are quoted when a server fails to come up.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType


class ServerError(Exception):
    """A server could not be started or did not become ready; the message says which and why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (held open together so the kernel cannot repeat one)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP raise SystemExit, SIGINT KeyboardInterrupt, so that `finally` blocks
    stop the servers."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    # A shell without job control starts background commands with SIGINT ignored; Ctrl-C (or
    # kill -INT) must still stop the benchmark and its servers.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ProcessGroup:
    """Owns the server processes it started; stops all of them on exit, newest first."""

    def __init__(self, stop_timeout_s: float = 5.0) -> None:
        self.stop_timeout_s = stop_timeout_s
        self._procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs.append((proc, log))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(self.stop_timeout_s)
        self._procs = [(p, log) for p, log in self._procs if p is not proc]

    def stop_all(self) -> None:
        # Block further SIGTERM/SIGINT interruptions while stopping: a second Ctrl-C must
        # not leave half the servers running.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for proc, _log in reversed(list(self._procs)):
                try:
                    self.stop(proc)
                except Exception as e:  # keep stopping the others
                    print(f"warning: could not stop pid {proc.pid}: {e}", file=sys.stderr)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def wait_port(self, proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
        """Until 127.0.0.1:port accepts connections; ServerError if the process dies first."""
        deadline = time.monotonic() + timeout_s
        log = next((lg for p, lg in self._procs if p is proc), None)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerError(
                    f"{proc.args[0]} exited with {proc.returncode}: {tail(log) if log else ''}"
                )
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise ServerError(f"{proc.args[0]} did not listen on port {port} within {timeout_s:.0f} s")
