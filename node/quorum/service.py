"""The metadata quorum over gRPC: the transport that carries Raft messages between voters, the
Raft service that receives them, and the log feed observers (broker-only nodes) fetch from.

Observers are served from memory, never from the Raft store the driver is writing in a worker
thread: recent committed entries from the driver's bounded buffer, and, for an observer further
behind, a snapshot of the current image (DESIGN.md §1, §5).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import grpc

from strom.client.tls import PLAINTEXT, SecurityOptions
from strom.node.clock import SYSTEM_CLOCK, Clock
from strom.node.metadata.state import MetadataState
from strom.node.peers import Peers
from strom.node.quorum.codec import (
    entry_to_proto,
    message_from_proto,
    message_to_proto,
)
from strom.node.quorum.driver import RaftDriver
from strom.raft.types import Message
from strom.v1 import common_pb2, raft_pb2, raft_pb2_grpc

log = logging.getLogger("strom.raft")

PEER_QUEUE_MAX = 1_000
FETCH_LOG_BYTES_MAX = 8 * 1024 * 1024


class RaftTransport:
    """One bounded queue and one sender task per peer; each Step call carries every queued
    message. A full queue drops the oldest messages: Raft retries what matters."""

    def __init__(
        self,
        cluster_id: str,
        addresses: dict[int, str],
        peers: Peers,
        timeout_s: float,
        security: SecurityOptions = PLAINTEXT,
    ) -> None:
        self.cluster_id = cluster_id
        self.addresses = addresses
        self.peers = peers
        self.timeout_s = timeout_s
        self.security = security
        self._queues: dict[int, deque[Message]] = {
            p: deque(maxlen=PEER_QUEUE_MAX) for p in addresses
        }
        self._ready = {p: asyncio.Event() for p in addresses}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for peer in self.addresses:
            self._tasks.append(asyncio.create_task(self._sender(peer), name=f"raft-send-{peer}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def send(self, peer: int, messages: list[Message]) -> None:
        queue = self._queues.get(peer)
        if queue is None:
            log.warning("dropping Raft messages to unknown node %d", peer)
            return
        queue.extend(messages)
        self._ready[peer].set()

    async def _sender(self, peer: int) -> None:
        stub = self.peers.stub(raft_pb2_grpc.RaftStub, self.addresses[peer], self.security)
        queue, ready = self._queues[peer], self._ready[peer]
        failures = 0
        while True:
            await ready.wait()
            ready.clear()
            if not queue:
                continue
            batch = [queue.popleft() for _ in range(len(queue))]
            request = raft_pb2.RaftMessages(
                cluster_id=self.cluster_id, messages=[message_to_proto(m) for m in batch]
            )
            try:
                response = await stub.Step(request, timeout=self.timeout_s)
                if response.error_code != common_pb2.NONE:
                    log.warning("node %d refused Raft messages: %s", peer, response.error_message)
                failures = 0
            except grpc.aio.AioRpcError as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.info("node %d unreachable (%s): %s", peer, exc.code().name, exc.details())
                # The messages are lost, as on a real network; back off a little so a dead peer
                # does not cost a connect attempt per tick.
                await asyncio.sleep(min(0.5, 0.05 * failures))


class RaftServicer(raft_pb2_grpc.RaftServicer):
    def __init__(
        self,
        cluster_id: str,
        driver: RaftDriver,
        metadata: MetadataState,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.cluster_id = cluster_id
        self.driver = driver
        self.recent = driver.recent
        self.metadata = metadata
        self.clock = clock

    async def Step(
        self, request: raft_pb2.RaftMessages, context: grpc.aio.ServicerContext
    ) -> raft_pb2.StepResponse:
        if request.cluster_id != self.cluster_id:
            return raft_pb2.StepResponse(
                error_code=common_pb2.INCONSISTENT_CLUSTER_ID,
                error_message=f"this node belongs to cluster {self.cluster_id}, "
                f"not {request.cluster_id}",
            )
        try:
            messages = [message_from_proto(m) for m in request.messages]
        except (ValueError, KeyError, TypeError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed Raft message: {exc}")
            raise AssertionError("unreachable") from exc
        self.driver.step(messages)
        return raft_pb2.StepResponse()

    async def FetchLog(
        self, request: raft_pb2.FetchLogRequest, context: grpc.aio.ServicerContext
    ) -> raft_pb2.FetchLogResponse:
        if request.cluster_id != self.cluster_id:
            return raft_pb2.FetchLogResponse(
                error_code=common_pb2.INCONSISTENT_CLUSTER_ID,
                error_message=f"this node belongs to cluster {self.cluster_id}",
            )
        if request.fetch_index < 1 or request.max_bytes < 0 or request.max_wait_ms < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "fetch_index must be >= 1, max_bytes and max_wait_ms >= 0",
            )
        self.driver.observer_progress[request.observer_id] = (
            request.fetch_index - 1,
            self.clock.now_ms(),
        )
        applied = self.driver.applied
        if applied.value < request.fetch_index and request.max_wait_ms > 0:
            await applied.wait_for(request.fetch_index, min(request.max_wait_ms, 30_000) / 1000)
        bytes_max = min(request.max_bytes or FETCH_LOG_BYTES_MAX, FETCH_LOG_BYTES_MAX)
        response = raft_pb2.FetchLogResponse(
            leader_id=self.driver.leader_id,
            term=self.driver.term,
            commit_index=applied.value,
        )
        entries = self.recent.since(request.fetch_index, bytes_max)
        if entries is None:
            image = self.metadata.image
            response.snapshot.index = applied.value
            response.snapshot.term = image.last_term
            response.snapshot.data = self.metadata.snapshot()
        else:
            response.entries.extend(entry_to_proto(e) for e in entries)
        return response
