"""Process plumbing for the fault lab: parent-death signals, /proc probes, Python in a host.

- Every long-lived process the lab starts is forked by one `ParentThread`. PR_SET_PDEATHSIG
  (set by `setpriv --pdeathsig KILL`, or prctl when setpriv is missing) fires when the *thread*
  that forked the child exits, not the process: forking from whatever thread called `spawn` (a
  nemesis thread, an executor worker) would kill the node when that thread ends.
- `is_stopped` and `is_listening` read /proc, so they cost no subprocess. /proc/<pid>/net/tcp
  shows the sockets of <pid>'s network namespace, so `is_listening` works in either lab mode.
- `python_call_argv` + `read_call_result` run a picklable, importable function in a fresh
  interpreter (started inside a host's namespace by the caller) and bring back its result or
  its traceback. A fresh interpreter, not fork: the parent may hold threads and gRPC state.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import queue
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")
PR_SET_PDEATHSIG = 1
TCP_LISTEN = "0A"


def pdeathsig_prefix() -> list[str]:
    """argv prefix that makes the exec'd program die with SIGKILL when its parent thread dies."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def prctl_pdeathsig() -> None:
    """preexec_fn fallback for machines without setpriv (only used when the prefix is empty)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


class ParentThread:
    """One long-lived thread that runs every fork of long-lived children (see module doc)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, job: Callable[[], _T]) -> _T:
        assert self._thread.is_alive(), "the parent thread has stopped"
        future: Future[_T] = Future()
        self._jobs.put((job, future))
        return future.result()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    def _serve(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)


def past_prefix(pid: int, prefix: list[str]) -> bool:
    """True once `pid` no longer runs a program of `prefix` (so setpriv has set its parent-death
    signal), or has exited. Popen returns when the *first* program is exec'd: a parent that died
    before setpriv ran would leave the node without its parent-death signal."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    if not cmdline:
        # Mid-exec (the new image's arguments are not mapped yet) or exited: the caller
        # polls the process for the latter.
        return False
    return cmdline.split(b"\0", 1)[0].decode(errors="replace") not in prefix


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def is_stopped(pid: int) -> bool:
    """True when `pid` is in the stopped state (SIGSTOP took effect)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] in ("T", "t")


def _hex_ipv4(addr: str) -> str:
    """/proc/net/tcp spells 10.77.0.1 as 01004D0A (little-endian hex)."""
    return "".join(f"{int(octet):02X}" for octet in reversed(addr.split(".")))


def is_listening(pid: int, addr: str, port: int) -> bool:
    """True when a TCP socket in `pid`'s network namespace listens on addr:port (or any:port)."""
    wanted = {f"{_hex_ipv4(addr)}:{port:04X}", f"00000000:{port:04X}"}
    # gRPC binds an IPv4 address as a dual-stack socket: it shows as ::ffff:a.b.c.d in tcp6
    # (four 32-bit words, each in host byte order, so the ffff word reads FFFF0000).
    wanted6 = {f"{'0' * 32}:{port:04X}", f"0000000000000000FFFF0000{_hex_ipv4(addr)}:{port:04X}"}
    for table, keys in (("tcp", wanted), ("tcp6", wanted6)):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == TCP_LISTEN and fields[1] in keys:
                return True
    return False


_RUNNER = """
import pickle, sys, traceback
fn, args = pickle.load(sys.stdin.buffer)
try:
    outcome = (True, fn(*args))
except BaseException:
    outcome = (False, traceback.format_exc())
with open(sys.argv[1], "wb") as out:
    try:
        pickle.dump(outcome, out)
    except Exception:
        out.seek(0)
        out.truncate()
        pickle.dump((False, traceback.format_exc()), out)
"""


class RemoteCallError(RuntimeError):
    """The function run by `Lab.call_in` raised, or its interpreter died; carries the traceback."""


def python_call_argv(result_path: Path) -> tuple[list[str], dict[str, str]]:
    """argv and environment of an interpreter that runs a pickled (fn, args) read from stdin.

    The child gets this process's sys.path, so it imports the function's module exactly as the
    caller did (test packages included).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    return [sys.executable, "-c", _RUNNER, str(result_path)], env


def call_payload(fn: Callable[..., Any], args: tuple[Any, ...]) -> bytes:
    return pickle.dumps((fn, args))


def read_call_result(result_path: Path, returncode: int, stderr: str) -> Any:
    """The function's return value; RemoteCallError when it raised or its interpreter died."""
    try:
        raw = result_path.read_bytes()
    except FileNotFoundError:
        raw = b""
    if not raw:
        raise RemoteCallError(f"interpreter exited {returncode} without a result:\n{stderr}")
    ok, value = pickle.loads(raw)
    if not ok:
        raise RemoteCallError(f"the remote function raised:\n{value}")
    return value
