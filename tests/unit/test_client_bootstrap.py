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
