"""Helpers for tests with real node processes: a local cluster with short timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from strom.client.admin import Admin
from strom.client.consumer import AsyncConsumer
from strom.client.errors import StromError
from strom.client.producer import AsyncProducer
from strom.client.records import TopicPartition
from strom.node import local_cluster
from strom.node.local_cluster import LocalCluster

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


def free_base_port(nodes: int) -> int:
    """Room for one node more than asked: some tests add a broker to a running cluster."""
    return local_cluster.free_base_port(nodes + 1)


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


def read_partition(
    bootstrap: str, topic: str, partition: int, count: int
) -> list[tuple[int, bytes]]:
    async def run() -> list[tuple[int, bytes]]:
        async with AsyncConsumer(bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([TopicPartition(topic, partition)])
            out: list[tuple[int, bytes]] = []
            for _ in range(100):
                out += [(r.offset, r.value or b"") for r in await consumer.poll(timeout_ms=300)]
                if len(out) >= count:
                    break
            return out

    return asyncio.run(run())


class SteadyProducer:
    """Produces numbered values to one partition from a thread until stopped; records every
    acknowledgement (offset, value) and every error the application sees."""

    def __init__(self, bootstrap: str, topic: str, partition: int, acks: str = "all") -> None:
        self.bootstrap, self.topic, self.partition, self.acks = bootstrap, topic, partition, acks
        self.acked: list[tuple[int, bytes]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with AsyncProducer(
            self.bootstrap, acks=self.acks, linger_ms=2, delivery_timeout_ms=60_000
        ) as producer:
            n = 0
            while not self._stop.is_set():
                futures = []
                for _ in range(20):
                    value = f"v{n}".encode()
                    n += 1
                    futures.append(
                        (value, await producer.send(self.topic, value, partition=self.partition))
                    )
                for value, future in futures:
                    try:
                        self.acked.append(((await future).offset, value))
                    except StromError as exc:
                        self.errors.append(exc.name)
                await asyncio.sleep(0.01)

    def __enter__(self) -> SteadyProducer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


def assert_seed_tables(out: str) -> None:
    """`strom demo`'s output holds the seed document's tables (the same for any cluster)."""
    for message, partition in [("M1", "P0"), ("M2", "P1"), ("M3", "P2"), ("M4", "P0")]:
        assert f"| {message}      | {partition}        |" in out
    assert "| C1       | P0, P1              |" in out
    assert "| C1       | M1, M2, M4, M5 |" in out
    assert "| C2       | M3, M6         |" in out
    assert "| C3       | P2                  |" in out
    assert "| C1       | P0, P1, P2          |" in out
    assert "| Consumer-A | Order1, Order2, Order4, Order5 |" in out
    assert out.count("Order1, Order2, Order3, Order4, Order5, Order6") >= 3  # fan-out, replay
    assert "pay-Order1, pay-Order2" in out
