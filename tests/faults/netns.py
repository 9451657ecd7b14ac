"""Linux network namespaces for the fault lab: one switch, one namespace per host, nftables.

Layout (shared/FAULTS.md): nothing is created in the root namespace.

    <prefix>-sw     the switch: bridge `br0`, one veth port `v<i>` per host, and one nftables
                    table `bridge lab` whose set `blocked` holds (source IP . destination IP)
                    pairs; the forward chain drops every bridged IPv4 packet whose pair is in it.
    <prefix>-<h>    host h: `lo` and `eth0` (the other end of `v<i>`) with 10.77.<net>.<i>/24.
                    Only the on-link /24 route exists: no default route, so nothing leaves.

Names are `stromlab-<owner pid>-<owner start time>-<n>-<host>`. The owner's start time (clock
ticks since boot, /proc/<pid>/stat field 22) tells a live owner from a recycled pid, so `sweep()`
removes exactly the namespaces whose owner process is gone, and parallel runs never collide.

Removing a namespace is `ip netns pids` → SIGCONT + SIGKILL → wait until empty → `ip netns del`:
a named namespace outlives its processes, and `ip netns del` alone leaves them running.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

NETNS_DIR = Path("/run/netns")
NAME_PREFIX = "stromlab"
SWITCH = "sw"
NFT_TABLE = "bridge lab"
NFT_SET = "blocked"
# Commands are quick (~5 ms); a generous bound only stops a wedged `ip` from hanging a test.
COMMAND_TIMEOUT_S = 20.0
KILL_WAIT_S_MAX = 10.0

_NAME_RE = re.compile(rf"^{NAME_PREFIX}-(\d+)-(\d+)-\d+-[a-z0-9]+$")


class NetnsError(RuntimeError):
    """An `ip` or `nft` command failed: the message carries the command and its stderr."""


def run(argv: Sequence[str], *, stdin: str | None = None) -> str:
    """Run one command, return its stdout; raise NetnsError with its stderr on failure."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def process_start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def owner_token(pid: int | None = None) -> str:
    """`<pid>-<start ticks>` of this (or the given) process: the owner part of lab names."""
    pid = os.getpid() if pid is None else pid
    ticks = process_start_ticks(pid)
    assert ticks is not None, f"process {pid} has no /proc entry"
    return f"{pid}-{ticks}"


def namespace_name(owner: str, lab_number: int, host: str) -> str:
    return f"{NAME_PREFIX}-{owner}-{lab_number}-{host}"


def list_namespaces() -> list[str]:
    """Names of every named network namespace on the machine (ours or not)."""
    try:
        return sorted(entry.name for entry in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def namespace_pids(name: str) -> list[int]:
    """Live processes whose network namespace is `name` (zombies have none and are skipped)."""
    try:
        out = run(["ip", "netns", "pids", name])
    except NetnsError:
        if name not in list_namespaces():
            return []
        raise
    return [int(word) for word in out.split()]


def remove_namespace(name: str) -> None:
    """Kill every process inside `name` (stopped ones too), then delete the name."""
    deadline = time.monotonic() + KILL_WAIT_S_MAX
    while pids := namespace_pids(name):
        for pid in pids:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        if time.monotonic() > deadline:
            raise NetnsError(f"processes {pids} in namespace {name} survive SIGKILL")
        time.sleep(0.005)
    try:
        run(["ip", "netns", "del", name])
    except NetnsError:
        if name in list_namespaces():
            raise  # else a parallel run's sweep removed it first: done all the same


def sweep() -> list[str]:
    """Remove lab namespaces whose owner process is gone; return the names removed."""
    removed = []
    for name in list_namespaces():
        match = _NAME_RE.match(name)
        if match is None:
            continue
        pid, ticks = int(match.group(1)), int(match.group(2))
        if process_start_ticks(pid) == ticks:
            continue  # the owner is alive: a parallel run's lab, not ours to touch
        remove_namespace(name)
        removed.append(name)
    return removed


def create_switch(name: str) -> None:
    """The switch namespace: a bridge and the nftables table that drops blocked pairs."""
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", name, "link", "set", "br0", "up"])
    ruleset = (
        f"table {NFT_TABLE} {{\n"
        f"  set {NFT_SET} {{ type ipv4_addr . ipv4_addr; }}\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        f"    ip saddr . ip daddr @{NFT_SET} drop\n"
        "  }\n"
        "}\n"
    )
    run(["ip", "netns", "exec", name, "nft", "-f", "-"], stdin=ruleset)


def create_host(name: str, switch: str, port: str, cidr: str) -> None:
    """A host namespace whose `eth0` is plugged into the switch's bridge as `port`."""
    run(["ip", "netns", "add", name])
    veth = ["type", "veth", "peer", "name", port, "netns", switch]
    run(["ip", "link", "add", "eth0", "netns", name, *veth])
    run(["ip", "-n", switch, "link", "set", port, "master", "br0", "up"])
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    run(["ip", "-n", name, "addr", "add", cidr, "dev", "eth0"])
    run(["ip", "-n", name, "link", "set", "eth0", "up"])


def set_blocked(switch: str, pairs: Iterable[tuple[str, str]]) -> None:
    """Replace the blocked set by `pairs` of (source IP, destination IP) in one transaction.

    `nft -f` applies the whole script atomically and the rule is live when it returns.
    """
    script = f"flush set {NFT_TABLE} {NFT_SET}\n"
    elements = ", ".join(f"{src} . {dst}" for src, dst in sorted(pairs))
    if elements:
        script += f"add element {NFT_TABLE} {NFT_SET} {{ {elements} }}\n"
    run(["ip", "netns", "exec", switch, "nft", "-f", "-"], stdin=script)


def exec_prefix(name: str) -> list[str]:
    """argv prefix that runs a command inside namespace `name` (exec, so the pid is kept)."""
    return ["ip", "netns", "exec", name]


def require() -> None:
    """Skip the calling test when namespace mode cannot run here, with one line saying why and
    how to fix it; under CI (CI=true) fail instead, since CI must run the fault suite."""
    import pytest

    reason = available()
    if reason is None:
        return
    message = (
        f"fault suite skipped: network namespaces unavailable ({reason}); run as root with "
        "tests/system/ensure.sh's packages installed (make test installs them as root)"
    )
    if os.environ.get("CI"):
        pytest.fail(message.replace("skipped", "cannot run in CI"))
    pytest.skip(message)


def available() -> str | None:
    """None when namespace mode can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "nft", "setpriv"):
        if not any(Path(d, tool).exists() for d in os.get_exec_path()):
            return f"`{tool}` is not installed"
    # Named like a lab's namespace (lab number 0 is never a lab's), so `sweep` finds it if the
    # process dies between the two commands.
    probe = namespace_name(owner_token(), 0, "probe")
    try:
        run(["ip", "netns", "add", probe])
    except NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    run(["ip", "netns", "del", probe])
    return None
