"""How a node reaches other nodes: one pool of client stubs, and the active controller.

Every node-to-node call goes through a `Peers`: the Raft transport and metadata observers
(controller listener), replica fetchers and group look-ups (inter-broker listener), and
`ControllerClient`, which finds the active controller. Nothing else in node/ opens a channel.

`GrpcPeers` keeps one gRPC channel per (address, security options) and one stub per service on
it, for the node's whole life. The deterministic simulation (tests/sim) gives each node an
in-memory `Peers` instead, whose stubs call servicers in the same process across a simulated
network; the code that calls a stub cannot tell the difference (a failed call raises
`grpc.aio.AioRpcError` either way).

`ControllerClient` asks, in order: the controller the metadata quorum currently reports (a
voter's own Raft driver, or an observer's latest FetchLog answer), the one that last answered,
then the other voters, with voters that recently timed out or refused the connection last. While
other voters remain to be tried, one try gets at most half of the time left, so a stalled
controller costs a fraction of one call, never the whole deadline: a broker finds a new
controller within a heartbeat or two of its election (Kafka's brokers learn it from the quorum
the same way).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from strom.client.cluster import channel_options
from strom.client.tls import PLAINTEXT, SecurityOptions, open_channel
from strom.v1 import common_pb2, controller_pb2_grpc

log = logging.getLogger("strom.peers")

T = TypeVar("T")
S = TypeVar("S")

# A voter that timed out or refused the connection is tried last for this long.
SUSPECT_MS = 10_000
# The smallest slice of a deadline a try gets, so a healthy but busy controller can still answer.
TRY_TIMEOUT_MIN_S = 0.2


class Peers(Protocol):
    def stub(self, stub_type: Callable[[Any], S], address: str, security: SecurityOptions) -> S:
        """A client stub of `stub_type` (a generated `*Stub` class) for the node at `address`."""
        ...

    async def close(self) -> None: ...


class GrpcPeers:
    """One channel per (address, security options), opened on first use, closed at stop."""

    def __init__(self) -> None:
        self._channels: dict[tuple[str, SecurityOptions], grpc.aio.Channel] = {}
        self._stubs: dict[tuple[Any, str, SecurityOptions], Any] = {}

    def stub(self, stub_type: Callable[[Any], S], address: str, security: SecurityOptions) -> S:
        key = (stub_type, address, security)
        stub = self._stubs.get(key)
        if stub is None:
            channel = self._channels.get((address, security))
            if channel is None:
                channel = open_channel(address, security, channel_options())
                self._channels[(address, security)] = channel
            stub = self._stubs[key] = stub_type(channel)
        return stub

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


class ControllerUnavailable(Exception):
    """No active controller answered within the deadline."""


class ControllerRefused(ControllerUnavailable):
    """The active controller refused the request itself (a gRPC status no other voter would
    answer differently, such as UNIMPLEMENTED or INVALID_ARGUMENT): asking again cannot help."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


# Statuses a controller gives for the request itself, whichever voter answers: not retried.
REFUSAL_STATUSES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


def _no_hint() -> int:
    return -1


class ControllerClient:
    def __init__(
        self,
        voters: dict[int, str],
        peers: Peers,
        request_timeout_s: float,
        security: SecurityOptions = PLAINTEXT,
        quorum_leader: Callable[[], int] = _no_hint,
    ) -> None:
        self.voters = voters
        self.peers = peers
        self.security = security
        self.request_timeout_s = request_timeout_s
        self.quorum_leader = quorum_leader
        self.controller_id = -1
        self._suspect_until: dict[int, float] = {}

    def _stub(self, node_id: int) -> controller_pb2_grpc.ControllerStub:
        return self.peers.stub(
            controller_pb2_grpc.ControllerStub, self.voters[node_id], self.security
        )

    def candidates(self, now: float) -> list[int]:
        """Voters in the order to try them: the quorum's leader, the last controller that
        answered, then the rest, voters that recently failed to answer last."""

        def suspect(node_id: int) -> bool:
            return self._suspect_until.get(node_id, 0.0) > now

        order: list[int] = []
        leader = self.quorum_leader()
        if leader in self.voters:
            order.append(leader)  # even if suspect: the quorum says it leads (it may have resumed)
        if self.controller_id in self.voters and not suspect(self.controller_id):
            order.append(self.controller_id)
        for node_id in sorted(self.voters, key=lambda v: (suspect(v), v)):
            if node_id not in order:
                order.append(node_id)
        return order

    async def call(
        self,
        method: Callable[[controller_pb2_grpc.ControllerStub], Callable[..., Awaitable[T]]],
        request: Any,
        deadline_s: float,
    ) -> T:
        """Send to the active controller; the response's `status` must not be NOT_CONTROLLER.

        Each round tries every voter once, following NOT_CONTROLLER answers to the controller
        they name; rounds repeat, with a short backoff, until the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        tried: set[int] = set()
        rounds = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ControllerUnavailable(
                    f"no active controller among voters {sorted(self.voters)} answered"
                )
            order = [n for n in self.candidates(loop.time()) if n not in tried]
            if not order:
                tried.clear()
                rounds += 1
                await asyncio.sleep(min(remaining, 0.05 * min(rounds, 10)))
                continue
            node_id = order[0]
            tried.add(node_id)
            try_s = min(remaining, self.request_timeout_s)
            if len(order) > 1:
                try_s = min(try_s, max(TRY_TIMEOUT_MIN_S, remaining / 2))
            try:
                response = await method(self._stub(node_id))(request, timeout=try_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in REFUSAL_STATUSES:
                    raise ControllerRefused(exc.code(), exc.details() or "") from exc
                if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    self._suspect_until[node_id] = loop.time() + SUSPECT_MS / 1000
                    if self.controller_id == node_id:
                        self.controller_id = -1
                continue
            self._suspect_until.pop(node_id, None)
            status = getattr(response, "status", None)
            if status is not None and status.error_code == common_pb2.NOT_CONTROLLER:
                named = status.controller_id
                if named in self.voters and named != node_id:
                    self.controller_id = named
                elif self.controller_id == node_id:
                    self.controller_id = -1
                continue
            self.controller_id = node_id
            return response
