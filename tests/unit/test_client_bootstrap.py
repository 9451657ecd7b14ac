"""A bootstrap address nobody listens on (issue #19): with `bootstrap_timeout_ms` (the CLI's
setting) the client says so, naming the address, once that long has passed without any
connection; without it, the request timeout applies as before."""

from __future__ import annotations

import asyncio
import socket

import pytest

from strom.client.cluster import ClusterClient
from strom.client.errors import KafkaTimeoutError, RetriableError
from strom.v1 import broker_pb2


def refused_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: connections are refused


async def metadata(cluster: ClusterClient) -> object:
    try:
        return await cluster.call_any(
            lambda a: cluster.broker_stub(a).Metadata, broker_pb2.MetadataRequest()
        )
    finally:
        await cluster.close()


def test_an_unreachable_bootstrap_is_named_after_the_bootstrap_timeout() -> None:
    address = refused_address()
    cluster = ClusterClient(address, request_timeout_ms=60_000, bootstrap_timeout_ms=300)
    with pytest.raises(RetriableError) as raised:
        asyncio.run(metadata(cluster))
    assert raised.value.name == "NETWORK_EXCEPTION"
    assert "cannot reach the cluster" in str(raised.value) and address in str(raised.value)


def test_without_a_bootstrap_timeout_the_request_timeout_applies() -> None:
    cluster = ClusterClient(refused_address(), request_timeout_ms=600)
    with pytest.raises(KafkaTimeoutError) as raised:
        asyncio.run(metadata(cluster))
    assert "no broker answered within 0.6 s" in str(raised.value)


def test_a_cancel_that_meets_the_answer_is_not_lost() -> None:
    """A call whose answer arrives in the same loop turn as a cancel of its task must end with
    CancelledError. (`asyncio.wait_for` on Python 3.11 returns the answer and drops the cancel;
    a group's heartbeat task that lost its cancel so ran for ever, and the consumer's close()
    waited on it: `strom demo` hung now and then.)"""

    async def run() -> str:
        client = ClusterClient(["localhost:1"])
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        try:
            caller = asyncio.create_task(
                client.call("localhost:1", lambda _request: answer, None, 5.0)
            )
            await asyncio.sleep(0)  # the call now waits for its answer
            answer.set_result("answered")
            caller.cancel()  # in the same turn
            try:
                return await caller
            except asyncio.CancelledError:
                return "cancelled"
        finally:
            await client.close()

    assert asyncio.run(run()) == "cancelled"
