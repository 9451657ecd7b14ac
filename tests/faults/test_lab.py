"""The fault lab against stand-in nodes: echo servers on n1..n3, probes from `client` or a node.

Every scenario runs in both modes where the mode is available: "netns" (root; CI) and the
"proxy" fallback. Expected outcomes are sets because the two modes show some faults differently
(a partitioned connect times out in netns mode but hangs after connecting in proxy mode; see
probes.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pytest

from . import netns, procs
from .checker import check
from .history import Recorder
from .lab import Lab, LabError, Mode, RemoteCallError
from .probes import DOWN, UNREACHABLE, echo_many, echo_once

pytestmark = pytest.mark.faults

PORT = 7000
NODES = ("n1", "n2", "n3")
ECHO = Path(__file__).with_name("echo_server.py")
# A probe expected to fail silently waits this long: no amount of load makes a blocked link
# answer, so it can be short. Any other probe may wait long (it returns as soon as it has its
# answer), so a loaded 2-core machine never turns a healthy link into a false "noreply".
SILENT_PROBE_S = 0.75
ANSWER_PROBE_S = 15.0


@pytest.fixture(params=["netns", "proxy"])
def mode(request: pytest.FixtureRequest) -> Mode:
    if request.param == "netns":
        netns.require()
    return cast(Mode, request.param)


@pytest.fixture
def lab(mode: Mode, tmp_path: Path) -> Iterator[Lab]:
    with Lab([*NODES, "client"], mode=mode, ports=[PORT], workdir=tmp_path) as lab:
        for host in NODES:
            lab.spawn(host, [sys.executable, str(ECHO), lab.addr(host), str(PORT)])
        for host in NODES:
            lab.wait_listening(host, PORT)
        yield lab


def reach(
    lab: Lab, routes: Mapping[str, tuple[tuple[str, float], ...]]
) -> dict[tuple[str, str], str]:
    """Echo from each source host to each (destination, timeout), all sources at once."""

    def from_src(src: str) -> list[str]:
        targets = [(lab.peer_addr(src, dst), PORT, wait_s) for dst, wait_s in routes[src]]
        return lab.call_in(src, echo_many, targets, timeout_s=ANSWER_PROBE_S + 30)

    with ThreadPoolExecutor(len(routes)) as pool:
        results = dict(zip(routes, pool.map(from_src, routes), strict=True))
    return {(src, dst): results[src][i] for src in routes for i, (dst, _) in enumerate(routes[src])}


def assert_reach(lab: Lab, expected: Mapping[tuple[str, str], frozenset[str]]) -> None:
    routes: dict[str, tuple[tuple[str, float], ...]] = {}
    for (src, dst), outcomes in expected.items():
        wait_s = SILENT_PROBE_S if outcomes <= UNREACHABLE else ANSWER_PROBE_S
        routes[src] = (*routes.get(src, ()), (dst, wait_s))
    seen = reach(lab, routes)
    wrong = {link: seen[link] for link in expected if seen[link] not in expected[link]}
    assert not wrong, f"unexpected outcomes {wrong} (all: {seen})"


OK = frozenset({"ok"})


def test_namespace_mode_runs_as_root() -> None:
    """CI runs as root: the namespace mode must be the one that runs there, not the fallback."""
    if os.geteuid() != 0:
        pytest.skip("not root: the proxy fallback is expected")
    netns.require()  # root without the tools: skip (fail in CI) with the reason
    with Lab(["a"]) as lab:
        assert lab.mode == "netns", lab.mode_reason


def test_isolate_and_heal(lab: Lab) -> None:
    everyone = {(s, d): OK for s in ("client", "n1") for d in NODES if s != d}
    assert_reach(lab, everyone)
    lab.isolate("n3")
    assert lab.blocked == {
        (a, b) for a in lab.hosts for b in lab.hosts if "n3" in (a, b) and a != b
    }
    assert_reach(
        lab,
        {
            ("client", "n1"): OK,
            ("client", "n2"): OK,
            ("client", "n3"): UNREACHABLE,
            ("n1", "n3"): UNREACHABLE,
            ("n3", "n1"): UNREACHABLE,
            ("n1", "n2"): OK,
        },
    )
    lab.heal()
    assert lab.blocked == frozenset()
    assert_reach(lab, {**everyone, ("n3", "n1"): OK})


def test_minority_majority_split(lab: Lab) -> None:
    lab.partition(["n1", "n2"], ["n3"])
    assert_reach(
        lab,
        {
            ("n1", "n2"): OK,
            ("n2", "n1"): OK,
            ("n1", "n3"): UNREACHABLE,
            ("n3", "n1"): UNREACHABLE,
            ("n3", "n2"): UNREACHABLE,
            ("client", "n3"): OK,  # the client is in neither group
        },
    )
    lab.heal()
    assert_reach(lab, {("n3", "n1"): OK, ("n1", "n3"): OK})


def test_one_way_block_breaks_tcp_both_ways(lab: Lab) -> None:
    lab.block("n1", "n2")
    assert_reach(
        lab,
        {
            ("n1", "n2"): UNREACHABLE,  # the SYN is dropped
            ("n2", "n1"): UNREACHABLE,  # the SYN-ACK is dropped
            ("n1", "n3"): OK,
            ("n3", "n2"): OK,
        },
    )
    lab.heal()
    assert_reach(lab, {("n1", "n2"): OK, ("n2", "n1"): OK})


def test_pause_queues_requests_until_resume(lab: Lab, tmp_path: Path) -> None:
    pid = lab.pid("n1")
    assert pid is not None
    lab.pause("n1")
    assert procs.is_stopped(pid)
    # The kernel still completes the handshake; nobody answers.
    assert_reach(lab, {("client", "n1"): frozenset({"noreply"}), ("client", "n2"): OK})
    marker = tmp_path / "sent"
    outcome: list[str] = []
    target = (lab.peer_addr("client", "n1"), PORT, 30.0, str(marker))
    waiter = threading.Thread(
        target=lambda: outcome.append(lab.call_in("client", echo_once, *target))
    )
    waiter.start()
    deadline = time.monotonic() + 20
    while not marker.exists() and waiter.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), f"the request was never sent: {outcome}"
    assert not outcome, "a stopped process answered"
    lab.resume("n1")
    assert not procs.is_stopped(pid)
    waiter.join()
    assert outcome == ["ok"]


def test_kill_and_restart(lab: Lab) -> None:
    old = lab.pid("n1")
    assert lab.kill("n1") == -signal.SIGKILL
    assert lab.pid("n1") is None
    assert lab.kill("n1") == -signal.SIGKILL  # killing a dead node only reports its status
    assert_reach(lab, {("client", "n1"): DOWN, ("client", "n2"): OK})
    new = lab.restart("n1")
    assert new != old
    lab.wait_listening("n1", PORT)
    assert_reach(lab, {("client", "n1"): OK})
    # A graceful stop reports the node's own exit status.
    assert lab.kill("n2", signal.SIGTERM) == -signal.SIGTERM


def test_faults_are_recorded_in_the_history(tmp_path: Path) -> None:
    recorder = Recorder()
    with Lab(["a", "b"], workdir=tmp_path, on_fault=recorder.fault) as lab:
        lab.spawn("a", ["sleep", "600"])
        lab.isolate("b")
        lab.pause("a")
        lab.resume("a")
        lab.kill("a")
        lab.heal()
    assert [op.f for op in recorder.ops] == ["isolate", "pause", "resume", "kill", "heal"]
    assert recorder.ops[0].value == {"host": "b"}
    assert check(recorder.ops).faults == dict.fromkeys(
        ["isolate", "pause", "resume", "kill", "heal"], 1
    )


def test_call_in_reports_remote_failures(lab: Lab) -> None:
    with pytest.raises(RemoteCallError, match="ValueError"):
        lab.call_in("client", int, "not a number")
    assert lab.call_in("client", os.getpid) != os.getpid()


def test_wait_listening_reports_a_node_that_died(lab: Lab) -> None:
    lab.spawn("client", [sys.executable, "-c", "import sys; sys.exit('boom')"])
    with pytest.raises(LabError, match="boom"):
        lab.wait_listening("client", PORT)


def _root_links() -> set[str]:
    """Names of the root namespace's links (the lab must never add one)."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (stopped processes are alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_cleanup_after_the_body_raises(mode: Mode, tmp_path: Path) -> None:
    links_before = _root_links()
    lab = Lab(["n1", "n2"], mode=mode, ports=[PORT], workdir=tmp_path)
    with pytest.raises(RuntimeError, match="test body failed"), lab:
        pids = [lab.spawn(h, ["sleep", "600"]) for h in ("n1", "n2")]
        lab.pause("n2")  # a stopped process must be killed too
        lab.isolate("n1")
        names = [lab.namespace(h) for h in lab.hosts]
        raise RuntimeError("test body failed")
    assert lab.leftovers() == []
    assert not [pid for pid in pids if _alive(pid)]
    remaining = netns.list_namespaces()
    assert not [name for name in names if name is not None and name in remaining]
    assert _root_links() == links_before
    with pytest.raises(AssertionError, match="not open"):
        lab.isolate("n1")


def test_failed_setup_removes_what_it_built(monkeypatch: pytest.MonkeyPatch) -> None:
    netns.require()
    made: list[str] = []
    real = netns.create_host

    def second_host_fails(name: str, switch: str, port: str, cidr: str) -> None:
        made.append(name)
        if len(made) == 2:
            raise netns.NetnsError("injected failure")
        real(name, switch, port, cidr)

    monkeypatch.setattr(netns, "create_host", second_host_fails)
    lab = Lab(["n1", "n2", "n3"], mode="netns")
    with pytest.raises(netns.NetnsError, match="injected"):
        lab.open()
    owner = netns.owner_token()
    assert len(made) == 2 and lab.leftovers() == []
    assert not [n for n in netns.list_namespaces() if n.startswith(f"stromlab-{owner}-")]


def test_sweep_removes_namespaces_of_dead_owners() -> None:
    netns.require()
    # The stale namespace's owner is a helper process that lives until the namespace holds a
    # process, then dies. (A parallel run's sweep may remove it before ours: same outcome.)
    owner = subprocess.Popen(["sleep", "600"])
    stale = netns.namespace_name(netns.owner_token(owner.pid), 1, "n1")
    mine = netns.namespace_name(netns.owner_token(), 999_999, "n1")
    netns.run(["ip", "netns", "add", stale])
    netns.run(["ip", "netns", "add", mine])
    try:
        sleeper = subprocess.Popen([*netns.exec_prefix(stale), "sleep", "600"])
        deadline = time.monotonic() + 10
        while not netns.namespace_pids(stale) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert netns.namespace_pids(stale) == [sleeper.pid]
        owner.kill()
        owner.wait()
        netns.sweep()
        assert sleeper.wait(10) == -signal.SIGKILL
        assert stale not in netns.list_namespaces()
        assert mine in netns.list_namespaces(), "a live owner's namespace was swept"
    finally:
        owner.kill()
        netns.remove_namespace(mine)
        netns.remove_namespace(stale)


_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path[:0] = {path!r}
    from faults.lab import Lab
    lab = Lab(["n1"], mode={mode!r})
    lab.open()
    lab.spawn("n1", ["sleep", "600"])
    print(lab.pid("n1"), lab.namespace("n1"), flush=True)
    if sys.argv[1] == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_a_test_process_that_never_closes_its_lab(mode: Mode, ending: str) -> None:
    """Normal exit: atexit cleans up. SIGKILL: the parent-death signal kills the node, and the
    next lab's sweep removes the namespaces."""
    tests_dir = str(Path(__file__).resolve().parents[1])
    script = _ORPHAN_SCRIPT.format(path=[tests_dir], mode=mode)
    done = subprocess.run(
        [sys.executable, "-c", script, ending], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == (-signal.SIGKILL if ending == "sigkill" else 0), done.stderr
    pid_text, name = done.stdout.split()
    deadline = time.monotonic() + 10
    while _alive(int(pid_text)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(int(pid_text)), "the node outlived its test process"
    if mode == "netns":
        # After SIGKILL the namespaces remain until a sweep (ours, or a parallel run's).
        netns.sweep()
        assert name not in netns.list_namespaces()
