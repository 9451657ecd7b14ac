"""The simulated network of the node simulation: in-memory `Peers` and `Listeners` for real nodes.

A node's services are registered here by address (`SimListeners`, the node's `Listeners`), and
its stubs (`SimPeers`, the node's `Peers`) call them: the request is serialized, carried over a
directed link after a seeded delay, parsed, handed to the target node's real servicer method in a
task owned by that node (node_sim_loop.Incarnation), and the response comes back the same way.
What a caller sees is what grpc.aio gives it: the response, or a `grpc.aio.AioRpcError` with
DEADLINE_EXCEEDED (nothing came back in time: loss, a partition, a crashed or paused host) or
UNAVAILABLE (nothing listens there: a node that stopped cleanly or has not started), or the
status a handler aborted with. As in gRPC, a call whose deadline passes is cancelled on the
server too.

Faults, all drawn from the simulation's seeded `random.Random`:
- delay per message, uniform in [delay_min_s, delay_max_s], plus a rare spike (reordering);
- loss per message (a lost request or response is a call that times out);
- duplication of Raft messages (gRPC over HTTP/2 never duplicates a call; the duplicates the rest
  of the code sees are its own retries: producers, AlterPartition, ControllerClient);
- partitions as a set of blocked directed links (src, dst), checked when a message is sent and
  when it arrives, so one-way, non-transitive and majority/minority splits are all one set;
- lost answers: the next answer of a given method is dropped after the call was served (the
  caller cannot tell a committed request from a lost one);
- slow links: extra delay on some directed links (a congested or asymmetric path), so nodes
  learn the same news at very different times.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from random import Random
from typing import Any

import grpc
from node_sim_loop import OWNER, Incarnation

from strom.node.listeners import ListenerServices

NO_DEADLINE_S = 120.0  # a call without a deadline: gRPC keepalive would notice a dead peer
REFUSED_CODE = grpc.StatusCode.UNAVAILABLE


@dataclass(slots=True)
class LinkFaults:
    delay_min_s: float = 0.0005
    delay_max_s: float = 0.005
    spike_p: float = 0.0
    spike_max_s: float = 0.0
    loss_p: float = 0.0
    raft_dup_p: float = 0.0


class HandlerError(Exception):
    """A servicer raised something other than an abort: a bug in the node."""


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


class SimServicerContext:
    """The parts of grpc.aio.ServicerContext the handlers use."""

    def __init__(self, peer: str, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        self._peer = peer
        self._deadline = deadline
        self._loop = loop
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str = "", *_: Any) -> None:
        self.code, self.details = code, details
        raise grpc.aio.AbortError(f"{code.name}: {details}")

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - self._loop.time())

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


class SimNetwork:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rng: Random,
        faults: LinkFaults,
        on_handler_error: Callable[[str, BaseException], None],
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.faults = faults
        self.on_handler_error = on_handler_error
        self.hosts: dict[str, int] = {}  # host name -> endpoint id (nodes and clients)
        self.listeners: dict[str, tuple[Incarnation, Mapping[str, Any]]] = {}
        self.blocked: set[tuple[int, int]] = set()
        self.slow: dict[tuple[int, int], float] = {}  # directed link -> extra delay up to (s)
        self.stats: Counter[str] = Counter()
        # Method name -> how many of its next answers are lost on the way back: the call was
        # served (a write may have committed) and the caller only sees its deadline pass.
        self.answers_to_lose: Counter[str] = Counter()
        # Messages in flight belong to no node: they arrive even if their sender crashed.
        self._context = contextvars.Context()

    # ---- topology -----------------------------------------------------------------------

    def add_host(self, host: str, endpoint_id: int) -> None:
        self.hosts[host] = endpoint_id

    def serve(self, address: str, owner: Incarnation, servicers: Mapping[str, Any]) -> None:
        self.listeners[address] = (owner, servicers)

    def unserve(self, address: str, owner: Incarnation) -> None:
        current = self.listeners.get(address)
        if current is not None and current[0] is owner:
            del self.listeners[address]

    def reachable(self, src: int, dst: int) -> bool:
        return (src, dst) not in self.blocked

    # ---- messages -----------------------------------------------------------------------

    def _delay(self, src: int, dst: int) -> float:
        f = self.faults
        delay = f.delay_min_s + self.rng.random() * (f.delay_max_s - f.delay_min_s)
        if f.spike_p and self.rng.random() < f.spike_p:
            delay += self.rng.random() * f.spike_max_s
        slow = self.slow.get((src, dst))
        if slow:
            delay += self.rng.random() * slow
        return delay

    def _send(self, src: int, dst: int, deliver: Callable[[], None], copies: int = 1) -> None:
        """Carry one message from `src` to `dst`; `deliver` runs on arrival, unless the link was
        cut at either end of the trip or the message was lost."""
        if not self.reachable(src, dst):
            self.stats["blocked"] += 1
            return
        if self.faults.loss_p and self.rng.random() < self.faults.loss_p:
            self.stats["lost"] += 1
            return

        def arrive() -> None:
            if self.reachable(src, dst):
                deliver()
            else:
                self.stats["blocked"] += 1

        for _ in range(copies):
            self.loop.call_at(
                self.loop.time() + self._delay(src, dst), arrive, context=self._context
            )

    async def call(
        self,
        src: int,
        address: str,
        service: str,
        method: str,
        request: Any,
        timeout: float | None,
    ) -> Any:
        loop = self.loop
        deadline = loop.time() + (NO_DEADLINE_S if timeout is None else timeout)
        host = address.rsplit(":", 1)[0]
        dst = self.hosts.get(host)
        if dst is None:
            raise rpc_error(REFUSED_CODE, f"DNS resolution failed for {address}")
        answer: asyncio.Future[Any] = loop.create_future()
        # A caller that died (its node crashed or stopped) never retrieves a late error; the
        # callback runs as the network, since a dead node runs nothing.
        answer.add_done_callback(_retrieved, context=self._context)
        data = request.SerializeToString()
        self.stats[f"call {service.rsplit('.', 1)[-1]}.{method}"] += 1
        copies = 1
        if (
            method == "Step"
            and self.faults.raft_dup_p
            and self.rng.random() < self.faults.raft_dup_p
        ):
            copies = 2
            self.stats["duplicated"] += 1

        def arrive() -> None:
            self._arrive(src, dst, address, service, method, type(request), data, deadline, answer)

        self._send(src, dst, arrive, copies)
        try:
            async with asyncio.timeout_at(deadline):
                return await answer  # cancelled on timeout: a late answer is then dropped
        except TimeoutError:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None

    def _arrive(
        self,
        src: int,
        dst: int,
        address: str,
        service: str,
        method: str,
        request_type: Any,
        data: bytes,
        deadline: float,
        answer: asyncio.Future[Any],
    ) -> None:
        listener = self.listeners.get(address)
        servicer = None if listener is None else listener[1].get(service)
        if listener is None or servicer is None:
            # Nothing listens there: the connection is refused, which the caller learns at once.
            error = rpc_error(REFUSED_CODE, f"failed to connect to {address}")
            self._send(dst, src, lambda: _settle(answer, error=error))
            return
        owner = listener[0]
        if deadline <= self.loop.time() or not owner.alive:
            return  # a crashed host answers nothing
        request = request_type.FromString(data)
        context = SimServicerContext(f"ipv4:{_host_of(self, src)}:40000", deadline, self.loop)
        handler = getattr(servicer, method)
        node_context = contextvars.Context()
        node_context.run(OWNER.set, owner)
        name = f"{service}.{method}"

        def start() -> None:
            # Runs as the node (held while it is paused, never if it dies first).
            task = self.loop.create_task(
                self._serve(owner, handler, request, context, src, dst, answer, name)
            )
            # gRPC cancels the server side of a call whose deadline passed.
            self.loop.call_at(deadline, _cancel, task, context=self._context)

        self.loop.call_soon(start, context=node_context)

    async def _serve(
        self,
        owner: Incarnation,
        handler: Callable[..., Any],
        request: Any,
        context: SimServicerContext,
        src: int,
        dst: int,
        answer: asyncio.Future[Any],
        name: str,
    ) -> None:
        try:
            response = await handler(request, context)
        except grpc.aio.AbortError:
            code = context.code or grpc.StatusCode.UNKNOWN
            error = rpc_error(code, context.details)
            self._send(dst, src, lambda: _settle(answer, error=error))
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.on_handler_error(f"{owner} {name}", exc)
            error = rpc_error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}")
            self._send(dst, src, lambda: _settle(answer, error=error))
            return
        method = name.rsplit(".", 1)[-1]
        if self.answers_to_lose[method] > 0:
            self.answers_to_lose[method] -= 1
            self.stats[f"answer lost {method}"] += 1
            return
        data = response.SerializeToString()
        response_type = type(response)
        self._send(dst, src, lambda: _settle(answer, result=response_type.FromString(data)))


def _host_of(network: SimNetwork, endpoint_id: int) -> str:
    for host, known in network.hosts.items():
        if known == endpoint_id:
            return host
    return f"e{endpoint_id}"


def _settle(
    answer: asyncio.Future[Any], result: Any = None, error: BaseException | None = None
) -> None:
    if answer.done():
        return  # the caller gave up (deadline) or a duplicate answered first
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _cancel(task: asyncio.Task[Any]) -> None:
    if not task.done():
        task.cancel()


class _SimStub:
    """Stands in for a generated `*Stub`: `await stub.Method(request, timeout=...)`."""

    def __init__(self, network: SimNetwork, src: int, address: str, service: str) -> None:
        self._network = network
        self._src = src
        self._address = address
        self._service = service

    def __getattr__(self, method: str) -> Callable[..., Any]:
        network, src, address, service = self._network, self._src, self._address, self._service

        def invoke(request: Any, timeout: float | None = None, **_: Any) -> Any:
            return network.call(src, address, service, method, request, timeout)

        return invoke


def service_of(stub_type: Any) -> str:
    """`strom.v1.Raft` for `raft_pb2_grpc.RaftStub`."""
    name = stub_type.__name__
    assert name.endswith("Stub"), stub_type
    return f"strom.v1.{name[: -len('Stub')]}"


class SimPeers:
    """One node's (or client's) `Peers`: stubs whose calls travel over the simulated network."""

    def __init__(self, network: SimNetwork, endpoint_id: int) -> None:
        self.network = network
        self.endpoint_id = endpoint_id

    def stub(self, stub_type: Any, address: str, security: Any) -> Any:
        return _SimStub(self.network, self.endpoint_id, address, service_of(stub_type))

    async def close(self) -> None:
        return None


class SimListeners:
    """One node's `Listeners`: its servicers, registered on the simulated network by address.
    The owner is the incarnation running `Node.start` (its context's OWNER)."""

    def __init__(self, network: SimNetwork) -> None:
        self.network = network
        self.addresses: list[tuple[str, Incarnation]] = []

    async def start(self, services: ListenerServices) -> None:
        owner = OWNER.get()
        assert owner is not None, "a node starts in its incarnation's context"
        assert not services.interceptors, "the simulation runs PLAINTEXT without an authorizer"
        address = f"{services.endpoint.host}:{services.endpoint.port}"
        self.network.serve(address, owner, services.servicers)
        self.addresses.append((address, owner))

    async def stop(self, grace_s: float) -> None:
        for address, owner in self.addresses:
            self.network.unserve(address, owner)
        self.addresses.clear()
