"""Helpers for tests with real node processes: a local cluster with short timeouts."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from strom.client.admin import Admin
from strom.client.errors import StromError
from strom.node.local_cluster import PORT_STRIDE, LocalCluster

T = TypeVar("T")

# Short timeouts so failures are detected in a second or two (CI budget).
FAST = {
    "controller.quorum.election.timeout.ms": "1000",
    "controller.quorum.tick.ms": "100",
    "broker.session.timeout.ms": "2000",
    "broker.heartbeat.interval.ms": "300",
    "replica.lag.time.max.ms": "2000",
    "replica.fetch.wait.max.ms": "200",
    "log.retention.check.interval.ms": "500",
    "leader.imbalance.check.interval.seconds": "2",
    "group.consumer.session.timeout.ms": "3000",
    "group.consumer.heartbeat.interval.ms": "300",
    "group.initial.rebalance.delay.ms": "500",
}


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_base_port(nodes: int) -> int:
    # Start the search at a place that depends on this process, so two test runs on one machine
    # (engineers' worktrees) do not both pick the first free range at the same moment.
    ranges = list(range(20092, 60000, 1000))
    start = os.getpid() % len(ranges)
    for base in ranges[start:] + ranges[:start]:
        if all(_free(base + i * PORT_STRIDE + d) for i in range(nodes + 1) for d in (0, 1)):
            return base
    raise RuntimeError("no free port range")


def eventually(check: Callable[[], T], timeout_s: float = 20.0, what: str = "condition") -> T:
    """Retry `check` until it returns a truthy value without raising; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except (StromError, AssertionError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout_s} s (last: {last!r})")


class Cluster:
    def __init__(self, local: LocalCluster) -> None:
        self.local = local

    @property
    def bootstrap(self) -> str:
        return self.local.bootstrap()

    def admin(self) -> Admin:
        # A `--tls` cluster hands out its client certificate; plaintext clusters need nothing.
        return Admin(self.bootstrap, request_timeout_ms=5_000, **self.local.client_options())

    def wait_healthy(self, node_ids: list[int] | None = None, timeout_s: float = 30.0) -> None:
        _, nodes = self.local.load()
        wanted = set(node_ids or [n.node_id for n in nodes])

        def healthy() -> bool:
            with self.admin() as admin:
                description = admin.describe_cluster()
                ready = {b.node_id for b in description.brokers if not b.fenced}
                return wanted <= ready and description.controller_id > 0

        eventually(healthy, timeout_s, f"brokers {sorted(wanted)} unfenced")

    def controller_id(self) -> int:
        with self.admin() as admin:
            return admin.describe_quorum().leader_id

    def log_of(self, node_id: int) -> str:
        return (self.local.node_dir(node_id) / "node.log").read_text(errors="replace")
