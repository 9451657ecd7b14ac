"""The fault lab: one host per node, real processes, real process and network faults.

    with Lab(["n1", "n2", "n3", "client"], ports=[9092]) as lab:
        lab.spawn("n1", [python, "node.py", lab.addr("n1"), "9092"])
        lab.wait_listening("n1", 9092)
        lab.partition(["n1", "n2"], ["n3"])        # live when the call returns
        lab.call_in("client", probe, [(lab.peer_addr("client", "n1"), 9092)], 1.0)
        lab.heal()

Modes (`lab.mode`, chosen by `mode="auto"`; `lab.mode_reason` says why namespaces were not used):

- "netns" (root, `ip`, `nft`, `setpriv`): netns.py. A switch namespace with a bridge and one
  namespace per host on 10.77.<net>.<i>/24. Network faults are one nftables `bridge` table in
  the switch with a set of blocked (source . destination) pairs: packets vanish silently and
  connects time out, like a real partition. `ip netns exec` execs, so the pid is the node's.
- "proxy" (no root needed): proxy.py. Hosts listen on 127.<base>.0.<i>; every directed link is
  a TCP proxy that holds bytes of blocked pairs. Processes must dial `peer_addr(src, dst)` and
  every service port must be declared in `ports`. A connect to a blocked peer succeeds here and
  then hangs (it times out in netns mode): tests accept both as "unreachable".

Where clients run (the chosen approach): test clients run *inside a lab host*, never in the
root namespace. The root namespace has a default route, so a packet to a lab address sent from
it would leave the machine. So the test process never dials a lab address itself; it runs
client code with `call_in(host, fn, *args)` (a picklable module-level function run by a fresh
interpreter inside the host's namespace, result pickled back) or `run_in(host, argv)`, or starts
a long-lived client with `spawn` on a dedicated client host (which then writes its history as
JSON lines, see history.py). Re-executing pytest under `unshare --net` was the alternative; it
would need its own pytest invocation outside `make test`, so the lab works inside any process.

Process faults: `kill` (SIGKILL by default: the kernel closes sockets, peers see refusals at
once; for a host crash, `isolate` first, then `kill`), `pause`/`resume` (SIGSTOP/SIGCONT: connects
still succeed, nothing replies), `restart`. Signals go to the node's process group, and `pause`
and `resume` return only once /proc shows the new state.

Cleanup always happens, in this order of defence: the lab registers itself for cleanup before
creating anything; a failed setup cleans up what it made and re-raises; `close()` (the context
manager's exit, also on exceptions) kills every node (SIGCONT + SIGKILL to its group), then for
each namespace `ip netns pids` → SIGCONT + SIGKILL → `ip netns del`, and then verifies nothing
is left (`leftovers()`); an `atexit` hook closes labs still open at interpreter exit; nodes carry
a parent-death SIGKILL, so they die with the test process even after its SIGKILL; and every lab
start runs `sweep()`, which removes namespaces whose owner process is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from . import netns, procs
from .netns import sweep
from .procs import RemoteCallError
from .proxy import LinkProxies

__all__ = ["Lab", "LabError", "RemoteCallError", "sweep"]

_T = TypeVar("_T")
Mode = Literal["netns", "proxy"]
FaultHook = Callable[[str, dict[str, Any]], object]

HOSTS_MAX = 250
STATE_WAIT_S_MAX = 5.0
POLL_INTERVAL_S = 0.005
_HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
_lab_numbers = itertools.count(1)  # 0 is the availability probe's (netns.available)
_open_labs: set[Lab] = set()
_open_labs_lock = threading.Lock()


class LabError(RuntimeError):
    """The lab could not do what was asked (setup, a fault, or a complete cleanup)."""


@dataclass(slots=True)
class _Node:
    argv: tuple[str, ...]
    env: dict[str, str] | None
    stdout: Path
    stderr: Path
    cwd: Path | None
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False


class Lab:
    """Hosts, their processes, and the faults between them. See the module docstring."""

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        mode: Literal["auto", "netns", "proxy"] = "auto",
        ports: Sequence[int] = (),
        workdir: Path | None = None,
        on_fault: FaultHook | None = None,
    ) -> None:
        bad = [host for host in hosts if not _HOST_RE.match(host) or host == netns.SWITCH]
        assert not bad, f"host names must match {_HOST_RE.pattern} and not be 'sw': {bad}"
        assert len(set(hosts)) == len(hosts), "host names must be unique"
        assert 1 <= len(hosts) <= HOSTS_MAX
        self.hosts: tuple[str, ...] = tuple(hosts)
        self.ports: tuple[int, ...] = tuple(ports)
        self.requested_mode = mode
        self.mode: Mode | None = None
        self.mode_reason: str | None = None
        # Given: kept after close. Not given: a temporary folder, made by open(), removed by close().
        self.workdir = workdir if workdir is not None else Path(tempfile.gettempdir())
        self._tmpdir: Path | None = None
        self._workdir_given = workdir is not None
        self._on_fault = on_fault
        self._lock = threading.RLock()
        self._index = {host: i + 1 for i, host in enumerate(hosts)}
        self._nodes: dict[str, _Node] = {}
        self._started: list[tuple[int, int | None]] = []  # (pid, start ticks) of every node
        self._blocked: frozenset[tuple[str, str]] = frozenset()
        self._namespaces: dict[str, str] = {}
        self._name_prefix: str | None = None
        self._switch: str | None = None
        self._net = 0
        self._proxies: LinkProxies | None = None
        self._parent: procs.ParentThread | None = None
        self._opened = False
        self._closed = False

    # --- lifecycle ---

    def __enter__(self) -> Lab:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except LabError as err:
            if exc is None:
                raise
            exc.add_note(f"and the lab's cleanup failed too: {err}")

    def open(self) -> None:
        """Build the hosts. On any failure, everything built so far is removed, then it raises."""
        assert not self._opened, "a Lab opens once"
        self._opened = True
        with _open_labs_lock:
            _open_labs.add(self)  # registered before anything exists to clean up
        try:
            self._setup()
        except BaseException as exc:
            try:
                self.close()
            except LabError as err:
                exc.add_note(f"and the lab's cleanup failed too: {err}")
            raise

    def _setup(self) -> None:
        if not self._workdir_given:
            self.workdir = self._tmpdir = Path(tempfile.mkdtemp(prefix="stromlab-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._parent = procs.ParentThread("lab-parent")
        reason = netns.available() if self.requested_mode != "proxy" else "proxy mode requested"
        if self.requested_mode == "netns" and reason is not None:
            raise LabError(f"namespace mode is not available: {reason}")
        self.mode_reason = reason
        if reason is None:
            self.mode = "netns"
            self._setup_netns()
        else:
            self.mode = "proxy"
            self._setup_proxy()

    def _setup_netns(self) -> None:
        netns.sweep()
        number = next(_lab_numbers)
        owner = netns.owner_token()
        self._net = 1 + (os.getpid() + number) % 250
        self._name_prefix = netns.namespace_name(owner, number, "")
        self._switch = netns.namespace_name(owner, number, netns.SWITCH)
        netns.create_switch(self._switch)
        for host, i in self._index.items():
            name = netns.namespace_name(owner, number, host)
            self._namespaces[host] = name
            netns.create_host(name, self._switch, f"v{i}", f"{self.addr(host)}/24")

    def _setup_proxy(self) -> None:
        number = next(_lab_numbers)
        for attempt in range(16):
            base = 2 + (os.getpid() * 31 + number * 7 + attempt) % 253
            proxies = LinkProxies(base, self.hosts, self.ports)
            self._proxies = proxies
            try:
                proxies.start()
                return
            except OSError as exc:
                proxies.close()
                self._proxies = None
                if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    raise
        raise LabError("no free 127.<base>/16 for the link proxies after 16 tries")

    def close(self) -> None:
        """Kill every process, remove every namespace, verify nothing remains. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        errors: list[str] = []
        for host, node in self._nodes.items():
            try:
                self._reap(node)
            except (OSError, LabError, subprocess.TimeoutExpired) as exc:
                errors.append(f"node on {host}: {exc}")
        if self._parent is not None:
            self._parent.stop()
        if self._proxies is not None:
            self._proxies.close()
        for name in self._our_namespaces():
            try:
                netns.remove_namespace(name)
            except netns.NetnsError as exc:
                errors.append(str(exc))
        errors.extend(self.leftovers())
        with _open_labs_lock:
            _open_labs.discard(self)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        if errors:
            raise LabError("cleanup incomplete:\n" + "\n".join(errors))

    def _our_namespaces(self) -> list[str]:
        if self._name_prefix is None:
            return []
        return [name for name in netns.list_namespaces() if name.startswith(self._name_prefix)]

    def leftovers(self) -> list[str]:
        """What of this lab still exists: namespaces and live processes (empty after close)."""
        found = [f"namespace {name} remains" for name in self._our_namespaces()]
        for pid, ticks in self._started:
            if ticks is not None and netns.process_start_ticks(pid) == ticks:
                found.append(f"process {pid} is still alive")
        return found

    # --- addresses ---

    def addr(self, host: str) -> str:
        """The address `host`'s processes listen on."""
        i = self._index[host]
        if self.mode == "proxy":
            assert self._proxies is not None
            return self._proxies.host_addr(host)
        return f"10.77.{self._net}.{i}"

    def peer_addr(self, src: str, dst: str) -> str:
        """The address a process on `src` dials to reach `dst` (through the link's proxy)."""
        if self.mode == "proxy":
            assert self._proxies is not None
            return self._proxies.link_addr(src, dst)
        assert src in self._index
        return self.addr(dst)

    def namespace(self, host: str) -> str | None:
        """The host's network namespace name (None in proxy mode)."""
        return self._namespaces.get(host) if self.mode == "netns" else None

    def _exec_prefix(self, host: str) -> list[str]:
        assert host in self._index, f"unknown host {host!r}"
        assert self._opened and not self._closed, "the lab is not open"
        if self.mode == "netns":
            return netns.exec_prefix(self._namespaces[host])
        return []

    # --- processes ---

    def spawn(
        self,
        host: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdout: Path | None = None,
        stderr: Path | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Start `host`'s node process; return its pid. `env` overlays os.environ; output is
        appended to `stdout`/`stderr` (default `<workdir>/<host>.out` / `.err`)."""
        with self._lock:
            node = self._nodes.get(host)
            assert node is None or not self._alive(node), f"{host} already runs a node"
            self._nodes[host] = node = _Node(
                argv=tuple(argv),
                env=None if env is None else {**os.environ, **env},
                stdout=stdout or self.workdir / f"{host}.out",
                stderr=stderr or self.workdir / f"{host}.err",
                cwd=cwd,
            )
            return self._start(host, node)

    def _start(self, host: str, node: _Node) -> int:
        prefix = procs.pdeathsig_prefix()
        argv = [*self._exec_prefix(host), *prefix, *node.argv]
        preexec = None if prefix else procs.prctl_pdeathsig

        def fork() -> subprocess.Popen[bytes]:
            with contextlib.ExitStack() as files:
                out = files.enter_context(node.stdout.open("ab"))
                err = out if node.stderr == node.stdout else node.stderr.open("ab")
                if err is not out:
                    files.enter_context(err)
                return subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=node.env,
                    cwd=node.cwd,
                    start_new_session=True,  # its own process group: faults hit all of it
                    preexec_fn=preexec,
                )

        assert self._parent is not None
        node.proc = proc = self._parent.run(fork)
        node.paused = False
        self._started.append((proc.pid, netns.process_start_ticks(proc.pid)))
        # Return only once the launchers (`ip`, `setpriv`) have exec'd the node itself.
        launchers = [*argv[: len(argv) - len(node.argv)]]
        deadline = time.monotonic() + STATE_WAIT_S_MAX
        while not procs.past_prefix(proc.pid, launchers) and proc.poll() is None:
            if time.monotonic() > deadline:
                raise LabError(f"{host}: {launchers} did not exec {node.argv[0]}")
            time.sleep(POLL_INTERVAL_S / 5)
        return proc.pid

    def pid(self, host: str) -> int | None:
        """The pid of `host`'s node while it runs, else None."""
        node = self._nodes.get(host)
        return node.proc.pid if node is not None and node.proc and self._alive(node) else None

    @staticmethod
    def _alive(node: _Node) -> bool:
        return node.proc is not None and node.proc.poll() is None

    def _signal(self, node: _Node, sig: signal.Signals) -> None:
        assert node.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, sig)

    def kill(
        self, host: str, sig: signal.Signals = signal.SIGKILL, *, timeout_s: float = 10.0
    ) -> int | None:
        """Signal `host`'s node and wait until it exits; return its exit status (None if it
        was not running). A paused node is resumed after the signal so that it can act on it."""
        with self._lock:
            code = self._kill(host, sig, timeout_s)
        self._fault("kill", {"host": host, "signal": sig.name})
        return code

    def _kill(self, host: str, sig: signal.Signals, timeout_s: float) -> int | None:
        node = self._nodes[host]
        if not self._alive(node):
            return None if node.proc is None else node.proc.returncode
        assert node.proc is not None
        self._signal(node, sig)
        if node.paused:
            self._signal(node, signal.SIGCONT)
            node.paused = False
        try:
            return node.proc.wait(timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{host} ignored {sig.name} for {timeout_s} s") from exc

    def pause(self, host: str) -> None:
        """SIGSTOP `host`'s node; returns once the kernel shows it stopped."""
        self._set_stopped(host, stopped=True)
        self._fault("pause", {"host": host})

    def resume(self, host: str) -> None:
        """SIGCONT `host`'s node; returns once it runs again."""
        self._set_stopped(host, stopped=False)
        self._fault("resume", {"host": host})

    def _set_stopped(self, host: str, *, stopped: bool) -> None:
        with self._lock:
            node = self._nodes[host]
            assert node.proc is not None and self._alive(node), f"{host} runs no node"
            self._signal(node, signal.SIGSTOP if stopped else signal.SIGCONT)
            deadline = time.monotonic() + STATE_WAIT_S_MAX
            while procs.is_stopped(node.proc.pid) != stopped:
                if time.monotonic() > deadline:
                    raise LabError(f"{host} did not {'stop' if stopped else 'continue'}")
                time.sleep(POLL_INTERVAL_S)
            node.paused = stopped

    def restart(self, host: str, *, sig: signal.Signals = signal.SIGKILL) -> int:
        """Stop `host`'s node with `sig` if it runs, start it again as spawned; return the pid."""
        with self._lock:
            node = self._nodes[host]
            self._kill(host, sig, STATE_WAIT_S_MAX)
            pid = self._start(host, node)
        self._fault("restart", {"host": host})
        return pid

    def _reap(self, node: _Node) -> None:
        if node.proc is None:
            return
        if node.proc.poll() is None:
            self._signal(node, signal.SIGCONT)
            self._signal(node, signal.SIGKILL)
        node.proc.wait(STATE_WAIT_S_MAX)

    def wait_listening(self, host: str, port: int, *, timeout_s: float = 10.0) -> None:
        """Wait until `host`'s node listens on `port` (read from /proc, no connection made)."""
        node = self._nodes[host]
        assert node.proc is not None
        deadline = time.monotonic() + timeout_s
        while not procs.is_listening(node.proc.pid, self.addr(host), port):
            if node.proc.poll() is not None:
                tail = node.stderr.read_text(errors="replace")[-2000:]
                raise LabError(f"{host} exited {node.proc.returncode} before listening:\n{tail}")
            if time.monotonic() > deadline:
                raise LabError(f"{host} is not listening on {port} after {timeout_s} s")
            time.sleep(POLL_INTERVAL_S)

    def run_in(
        self, host: str, argv: Sequence[str], *, timeout_s: float = 30.0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside `host` and wait for it (output captured, exit code not checked)."""
        full = [*self._exec_prefix(host), *procs.pdeathsig_prefix(), *argv]
        return subprocess.run(
            full, input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False
        )

    def call_in(self, host: str, fn: Callable[..., _T], *args: Any, timeout_s: float = 30.0) -> _T:
        """Run `fn(*args)` in a fresh interpreter inside `host`; return its result.

        `fn` must be a module-level function and its arguments and result picklable. Raises
        RemoteCallError with the remote traceback when it raises."""
        fd, result_name = tempfile.mkstemp(prefix="call-", dir=self.workdir)
        os.close(fd)
        result_path = Path(result_name)
        argv, env = procs.python_call_argv(result_path)
        try:
            done = subprocess.run(
                [*self._exec_prefix(host), *procs.pdeathsig_prefix(), *argv],
                input=procs.call_payload(fn, args),
                capture_output=True,
                timeout=timeout_s,
                env=env,
                check=False,
            )
            stderr = done.stderr.decode(errors="replace")
            result: _T = procs.read_call_result(result_path, done.returncode, stderr)
            return result
        finally:
            result_path.unlink(missing_ok=True)

    # --- network faults ---

    @property
    def blocked(self) -> frozenset[tuple[str, str]]:
        """The (source host, destination host) pairs whose packets are dropped now."""
        return self._blocked

    def isolate(self, host: str) -> None:
        """Cut `host` off from every other host, both ways."""
        others = [other for other in self.hosts if other != host]
        self._block({(host, o) for o in others} | {(o, host) for o in others})
        self._fault("isolate", {"host": host})

    def partition(self, group_a: Iterable[str], group_b: Iterable[str]) -> None:
        """Cut every link between the two groups, both ways (hosts in neither keep theirs)."""
        a, b = set(group_a), set(group_b)
        assert not a & b, f"groups overlap: {a & b}"
        self._block({(x, y) for x in a for y in b} | {(y, x) for x in a for y in b})
        self._fault("partition", {"groups": [sorted(a), sorted(b)]})

    def block(self, src: str, dst: str) -> None:
        """Drop packets from `src` to `dst` only (TCP then fails both ways: no handshake)."""
        self._block({(src, dst)})
        self._fault("block", {"src": src, "dst": dst})

    def heal(self) -> None:
        """Remove every network fault."""
        self._apply(frozenset())
        self._fault("heal", {})

    def _block(self, pairs: set[tuple[str, str]]) -> None:
        unknown = {host for pair in pairs for host in pair} - set(self.hosts)
        assert not unknown, f"unknown hosts {sorted(unknown)}"
        self._apply(self._blocked | pairs)

    def _apply(self, pairs: frozenset[tuple[str, str]]) -> None:
        with self._lock:
            assert self._opened and not self._closed, "the lab is not open"
            if self.mode == "netns":
                assert self._switch is not None
                netns.set_blocked(self._switch, {(self.addr(a), self.addr(b)) for a, b in pairs})
            else:
                assert self._proxies is not None
                self._proxies.set_blocked(pairs)
            self._blocked = pairs

    def reset_connections(self, src: str, dst: str) -> int:
        """Proxy mode only: abort live connections between two hosts with an RST."""
        if self._proxies is None:
            raise LabError("reset_connections needs proxy mode (nftables drops, it never resets)")
        return self._proxies.reset({(src, dst)})

    def _fault(self, name: str, details: dict[str, Any]) -> None:
        if self._on_fault is not None:
            self._on_fault(name, details)


@atexit.register
def _close_open_labs() -> None:
    with _open_labs_lock:
        labs = list(_open_labs)
    for lab in labs:
        try:
            lab.close()
        except LabError as exc:
            print(f"strom fault lab: {exc}", file=sys.stderr)
