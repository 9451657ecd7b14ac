"""Real `strom.node.server.Node` objects on the virtual loop and the simulated network.

`SimCluster` formats one data directory per node (real files, under a temporary folder), builds
each node's configuration with short timeouts (so a seed covers many elections, fencings and ISR
changes in little virtual time), and starts, crashes, pauses, resumes, stops and restarts nodes:

- start: a new `Incarnation` owns everything the node does (node_sim_loop); the node gets a
  `LoopClock`, `SimPeers`, `SimListeners` and its own seeded `random.Random`.
- crash: the incarnation dies (none of its tasks, timers or handlers ever runs again: no flush,
  no clean-shutdown marker), and its file descriptors are closed as the kernel would. What was
  written stays on disk, as after SIGKILL; nothing is lost that the page cache held.
- pause/resume: the incarnation's callbacks are held, then run in order (SIGSTOP/SIGCONT);
  traffic to it waits, and calls to it time out meanwhile.
- stop: `Node.stop()` (controlled shutdown: leaderships moved away, Raft leadership handed over).
- restart: a new Node over the same directories.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node_sim_loop import OWNER, Incarnation, VirtualLoop
from node_sim_net import SimListeners, SimNetwork, SimPeers

from strom.node.clock import LoopClock
from strom.node.config import NodeConfig, build_config
from strom.node.meta_properties import format_directories
from strom.node.server import Node

CLUSTER_ID = "c2ltdWxhdGVkLWNsdXN0ZX"  # 22 base64url characters
EPOCH_MS = 1_767_225_600_000  # 2026-01-01: virtual wall time starts here


@dataclass(frozen=True, slots=True)
class Timing:
    """Node timeouts of one seed, drawn so that faults of a few seconds matter."""

    tick_ms: int = 50
    election_ms: int = 500
    request_timeout_ms: int = 500
    heartbeat_ms: int = 200
    session_ms: int = 1_500
    lag_ms: int = 1_000
    fetch_wait_ms: int = 200
    group_session_ms: int = 1_500
    group_heartbeat_ms: int = 250


@dataclass(slots=True)
class SimNode:
    node_id: int
    config: NodeConfig
    node: Node | None = None
    owner: Incarnation | None = None
    incarnations: int = 0
    context: contextvars.Context | None = None
    stopping: bool = False
    start_task: asyncio.Task[Any] | None = None
    history: list[str] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return self.owner is not None and self.owner.alive and self.node is not None

    @property
    def running(self) -> bool:
        return self.up and self.owner is not None and not self.owner.paused


class SimCluster:
    def __init__(
        self,
        loop: VirtualLoop,
        network: SimNetwork,
        root: Path,
        seed: int,
        node_count: int,
        voter_count: int,
        timing: Timing,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.loop = loop
        self.network = network
        self.root = root
        self.seed = seed
        self.timing = timing
        self.voter_ids = tuple(range(1, voter_count + 1))
        self.nodes: dict[int, SimNode] = {}
        self.generation = 0  # moves whenever a node starts, crashes or stops
        voters = ",".join(f"{i}@n{i}:9093" for i in self.voter_ids)
        for node_id in range(1, node_count + 1):
            network.add_host(f"n{node_id}", node_id)
            data = root / f"n{node_id}"
            format_directories([data], CLUSTER_ID, node_id)
            config = build_config(
                self._config(node_id, voters, data, node_id in self.voter_ids, overrides or {}),
                environ={},
            )
            self.nodes[node_id] = SimNode(node_id, config)
        self.node_list = list(self.nodes.values())

    def _config(
        self, node_id: int, voters: str, data: Path, voter: bool, overrides: dict[str, Any]
    ) -> dict[str, Any]:
        t = self.timing
        listeners = f"PLAINTEXT://n{node_id}:9092"
        if voter:
            listeners += f",CONTROLLER://n{node_id}:9093"
        return {
            "node.id": node_id,
            "process.roles": "broker,controller" if voter else "broker",
            "controller.quorum.voters": voters,
            "listeners": listeners,
            "log.dirs": str(data),
            "num.partitions": 2,
            "default.replication.factor": 3,
            "min.insync.replicas": 2,
            "offsets.topic.num.partitions": 2,
            "offsets.topic.replication.factor": 3,
            "log.segment.bytes": 2048,
            # The cleaner rewrites each replica on its own schedule, so replicas of a compacted
            # topic legitimately differ byte for byte: the checks compare logs, so it is off.
            "log.cleaner.backoff.ms": 10**9,
            "controller.quorum.tick.ms": t.tick_ms,
            "controller.quorum.election.timeout.ms": t.election_ms,
            "controller.quorum.request.timeout.ms": t.request_timeout_ms,
            "broker.heartbeat.interval.ms": t.heartbeat_ms,
            "broker.session.timeout.ms": t.session_ms,
            "replica.lag.time.max.ms": t.lag_ms,
            "replica.fetch.wait.max.ms": t.fetch_wait_ms,
            "request.timeout.ms": 3_000,
            "group.consumer.session.timeout.ms": t.group_session_ms,
            "group.consumer.heartbeat.interval.ms": t.group_heartbeat_ms,
            "group.initial.rebalance.delay.ms": 0,
            "leader.imbalance.check.interval.seconds": 3,
            "log.level": "WARNING",
            **overrides,
        }

    # ---- life cycle ---------------------------------------------------------------------

    def start(self, node_id: int) -> None:
        sim = self.nodes[node_id]
        assert not sim.up, f"node {node_id} is already up"
        sim.incarnations += 1
        owner = Incarnation(node_id, sim.incarnations)
        context = contextvars.Context()
        context.run(OWNER.set, owner)
        rng = random.Random(f"{self.seed}/{node_id}/{sim.incarnations}")
        node = Node(
            sim.config,
            clock=LoopClock(self.loop, EPOCH_MS),
            peers=SimPeers(self.network, node_id),
            rng=rng,
            listeners=SimListeners(self.network),
        )
        sim.node, sim.owner, sim.context, sim.stopping = node, owner, context, False
        self.generation += 1
        sim.start_task = self.loop.create_task(node.start(), context=context)

    def crash(self, node_id: int) -> None:
        sim = self.nodes[node_id]
        assert sim.owner is not None and sim.node is not None
        sim.owner.alive = False
        sim.owner.held.clear()
        release_files_like_a_crash(sim.node)
        sim.node = None
        self.generation += 1

    def pause(self, node_id: int) -> None:
        sim = self.nodes[node_id]
        assert sim.owner is not None
        sim.owner.paused = True

    def resume(self, node_id: int) -> None:
        sim = self.nodes[node_id]
        assert sim.owner is not None
        self.loop.resume(sim.owner)

    async def stop(self, node_id: int) -> None:
        """A controlled shutdown (SIGTERM), run as the node itself."""
        sim = self.nodes[node_id]
        assert sim.node is not None and sim.context is not None and sim.owner is not None
        sim.stopping = True
        node, owner = sim.node, sim.owner
        task = self.loop.create_task(node.stop(), context=sim.context)
        await asyncio.wait({task})
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        owner.alive = False  # the process exits: anything left over never runs
        if sim.owner is owner:
            sim.node = None
        self.generation += 1

    def release_all(self) -> None:
        """End of a run: every live node's files closed (as at process exit)."""
        for sim in self.nodes.values():
            if sim.owner is not None:
                sim.owner.alive = False
            if sim.node is not None:
                release_files_like_a_crash(sim.node)
                sim.node = None


def release_files_like_a_crash(node: Node) -> None:
    """Close the node's open files without writing anything, as the kernel does when a process
    dies: segment descriptors (the page cache keeps what was written; indexes not flushed are
    lost and rebuilt by recovery) and the data-directory lock."""
    logs = node.logs
    if logs is None:
        return
    for plog in list(logs._logs.values()):
        for segment in plog._local.segments:
            segment.close_without_index_flush()
    if logs._lock_fd >= 0:
        os.close(logs._lock_fd)
        logs._lock_fd = -1
