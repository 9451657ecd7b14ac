"""A real Node in this process, on its own event loop in a thread, with real gRPC listeners on
free localhost ports: for tests that need a whole node but not separate processes (the RPC fuzz,
the controller listener's admission)."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

from strom.node.config import build_config
from strom.node.loop_turns import LoopStallWatchdog
from strom.node.meta_properties import format_directories
from strom.node.server import Node

CLUSTER_ID = "c2ltdWxhdGVkLWNsdXN0ZX"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeThread:
    """A real Node on its own event loop in a thread, so the test can call it synchronously."""

    def __init__(
        self,
        tmp_path: Path,
        client_listener: str = "PLAINTEXT",
        overrides: dict[str, Any] | None = None,
    ) -> None:
        """One combined node (id 1); `overrides` are more config keys."""
        self.client_port, self.controller_port = _free_port(), _free_port()
        data = tmp_path / "data"
        format_directories([data], CLUSTER_ID, 1)
        self.config = build_config(
            {
                "node.id": 1,
                "process.roles": "broker,controller",
                "controller.quorum.voters": f"1@localhost:{self.controller_port}",
                "listeners": f"{client_listener}://localhost:{self.client_port},"
                f"CONTROLLER://localhost:{self.controller_port}",
                "log.dirs": str(data),
                "offsets.topic.replication.factor": 1,
                "offsets.topic.num.partitions": 2,
                "controller.quorum.election.timeout.ms": 500,
                "controller.quorum.tick.ms": 50,
                "broker.heartbeat.interval.ms": 200,
                "broker.session.timeout.ms": 3000,
                **(overrides or {}),
            },
            environ={},
        )
        self.loop = asyncio.new_event_loop()
        self.node = Node(self.config)
        self.watchdog = LoopStallWatchdog(stall_ms=1000)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> NodeThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> None:
        self.watchdog.start()  # a stalled loop is logged with its stack: the clue to a freeze
        await self.node.start()
        # Ready means registered and unfenced: a test's first CreateTopics before then is refused
        # with INVALID_REPLICATION_FACTOR (0 available brokers), as Kafka's controller refuses it.
        if self.node.lifecycle is not None:
            await asyncio.wait_for(self.node.lifecycle.unfenced.wait(), timeout=20)

    async def _stop(self) -> None:
        try:
            await self.node.stop()
        finally:
            await self.watchdog.stop()

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
