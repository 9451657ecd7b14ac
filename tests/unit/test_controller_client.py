"""ControllerClient finds the active controller, and a stalled one costs a fraction of a call.

Issue #14, defect 10: the client tried the last known controller first with a per-try timeout
(2 s) longer than a heartbeat's whole deadline (0.6 s in the fault suite), so with the active
controller paused it never tried another voter, never learnt of the new controller, and the new
controller fenced every broker. These tests drive the real ControllerClient over scripted voters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from strom.client.tls import PLAINTEXT, SecurityOptions
from strom.node.peers import ControllerClient, ControllerRefused, ControllerUnavailable
from strom.v1 import common_pb2, controller_pb2

VOTERS = {1: "n1:9093", 2: "n2:9093", 3: "n3:9093"}


def _rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "scripted")


class ScriptedVoters:
    """A Peers whose voters answer as scripted: 'paused' hangs until the caller's timeout,
    'down' refuses the connection, otherwise the voter is active or names `leader`."""

    def __init__(self, active: int, paused: set[int], down: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.active = active
        self.paused = paused
        self.down = down
        self.calls: list[int] = []

    def stub(self, stub_type: Callable[[Any], Any], address: str, security: SecurityOptions) -> Any:
        node_id = next(n for n, a in VOTERS.items() if a == address)
        voters = self

        class Stub:
            async def BrokerHeartbeat(
                self, request: Any, timeout: float
            ) -> controller_pb2.BrokerHeartbeatResponse:
                voters.calls.append(node_id)
                if node_id in voters.paused:
                    await asyncio.sleep(timeout)
                    raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED)
                if node_id in voters.down:
                    raise _rpc_error(grpc.StatusCode.UNAVAILABLE)
                if node_id != voters.active:
                    return controller_pb2.BrokerHeartbeatResponse(
                        status=controller_pb2.ControllerStatus(
                            error_code=common_pb2.NOT_CONTROLLER, controller_id=voters.active
                        )
                    )
                return controller_pb2.BrokerHeartbeatResponse(is_fenced=False)

        return Stub()

    async def close(self) -> None:
        return None


def _heartbeat(client: ControllerClient, deadline_s: float) -> Any:
    return client.call(
        lambda s: s.BrokerHeartbeat, controller_pb2.BrokerHeartbeatRequest(), deadline_s
    )


def test_a_paused_last_controller_does_not_use_up_the_deadline() -> None:
    async def scenario() -> tuple[bool, list[int]]:
        voters = ScriptedVoters(active=2, paused={1})
        client = ControllerClient(VOTERS, voters, request_timeout_s=2.0, security=PLAINTEXT)
        client.controller_id = 1  # it answered last, then froze
        response = await _heartbeat(client, deadline_s=0.6)
        return not response.is_fenced, voters.calls

    answered, calls = asyncio.run(scenario())
    assert answered
    assert calls == [1, 2]


def test_the_quorum_leader_is_asked_before_the_last_controller() -> None:
    async def scenario() -> list[int]:
        voters = ScriptedVoters(active=3, paused={1})
        client = ControllerClient(VOTERS, voters, request_timeout_s=2.0, quorum_leader=lambda: 3)
        client.controller_id = 1
        await _heartbeat(client, deadline_s=0.6)
        return voters.calls

    assert asyncio.run(scenario()) == [3]


def test_a_voter_that_timed_out_is_tried_last() -> None:
    async def scenario() -> list[int]:
        voters = ScriptedVoters(active=2, paused={1})
        client = ControllerClient(VOTERS, voters, request_timeout_s=2.0)
        client.controller_id = 1
        await _heartbeat(client, deadline_s=0.6)  # 1 times out, 2 answers
        voters.calls.clear()
        voters.active = 3
        client.controller_id = 1  # named again by a voter that has not noticed the pause
        await _heartbeat(client, deadline_s=0.6)
        return voters.calls

    assert asyncio.run(scenario()) == [2, 3]


def test_no_controller_answers_within_the_deadline() -> None:
    async def scenario() -> None:
        voters = ScriptedVoters(active=0, paused={1, 2, 3})
        client = ControllerClient(VOTERS, voters, request_timeout_s=2.0)
        await _heartbeat(client, deadline_s=0.3)

    try:
        asyncio.run(scenario())
    except ControllerUnavailable as exc:
        assert "no active controller" in str(exc)
    else:
        raise AssertionError("expected ControllerUnavailable")


def test_a_refusal_of_the_request_itself_is_not_retried() -> None:
    """Found by the RPC fuzz: an UNIMPLEMENTED answer was retried on every voter until the
    deadline, so the caller waited it out and then heard UNAVAILABLE."""

    class Refusing(ScriptedVoters):
        def stub(self, stub_type: Callable[[Any], Any], address: str, security: Any) -> Any:
            voters = self

            class Stub:
                async def BrokerHeartbeat(self, request: Any, timeout: float) -> Any:
                    voters.calls.append(1)
                    raise _rpc_error(grpc.StatusCode.UNIMPLEMENTED)

            return Stub()

    async def scenario() -> tuple[BaseException | None, list[int]]:
        voters = Refusing(active=1, paused=set())
        client = ControllerClient(VOTERS, voters, request_timeout_s=2.0, security=PLAINTEXT)
        try:
            await _heartbeat(client, deadline_s=5.0)
        except ControllerUnavailable as exc:
            return exc, voters.calls
        return None, voters.calls

    refused, calls = asyncio.run(scenario())
    assert isinstance(refused, ControllerRefused) and refused.code == grpc.StatusCode.UNIMPLEMENTED
    assert calls == [1]  # one answer is enough
