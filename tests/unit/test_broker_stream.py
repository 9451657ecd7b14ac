"""client/broker_stream.py against an in-process grpc.aio server that plays the broker's part:
answers matched by id whatever their order, the in-flight bound, a broken stream failing what it
carried and the next call opening a new one, and the fallback to unary on UNIMPLEMENTED; and
against a stand-in for grpc.aio's call, the refusal racing a write (which a real server cannot
drive on purpose)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from strom.client.broker_stream import STREAM_ACCEPTED, BrokerStream, rpc_error
from strom.v1 import broker_pb2

SERVICE = "test.Broker"
Handler = Callable[[AsyncIterator[Any], Any], AsyncIterator[Any]]


def _answer(request_id: int, partition: int) -> broker_pb2.ProduceStreamResponse:
    answer = broker_pb2.ProduceResponse()
    answer.topics.add(name="t").partitions.add(partition=partition)
    return broker_pb2.ProduceStreamResponse(id=request_id, response=answer)


def _request(partition: int) -> broker_pb2.ProduceRequest:
    request = broker_pb2.ProduceRequest(acks=1)
    request.topics.add(name="t").partitions.add(partition=partition)
    return request


async def _unary(request: broker_pb2.ProduceRequest, context: Any) -> broker_pb2.ProduceResponse:
    answer = broker_pb2.ProduceResponse()
    answer.topics.add(name="unary").partitions.add(
        partition=request.topics[0].partitions[0].partition
    )
    return answer


async def _with_server(
    stream_handler: Handler | None, body: Callable[[BrokerStream[Any, Any]], Awaitable[None]]
) -> None:
    handlers = {
        "Produce": grpc.unary_unary_rpc_method_handler(
            _unary,
            broker_pb2.ProduceRequest.FromString,
            broker_pb2.ProduceResponse.SerializeToString,
        )
    }
    if stream_handler is not None:
        handlers["ProduceStream"] = grpc.stream_stream_rpc_method_handler(
            stream_handler,
            broker_pb2.ProduceStreamRequest.FromString,
            broker_pb2.ProduceStreamResponse.SerializeToString,
        )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary(
                f"/{SERVICE}/Produce",
                broker_pb2.ProduceRequest.SerializeToString,
                broker_pb2.ProduceResponse.FromString,
            )
            open_stream = channel.stream_stream(
                f"/{SERVICE}/ProduceStream",
                broker_pb2.ProduceStreamRequest.SerializeToString,
                broker_pb2.ProduceStreamResponse.FromString,
            )
            stream: BrokerStream[Any, Any] = BrokerStream(
                open_stream, broker_pb2.ProduceStreamRequest, unary, in_flight_max=2
            )
            try:
                await asyncio.wait_for(body(stream), 10)
            finally:
                await stream.close()
    finally:
        await server.stop(None)


def _partition(response: broker_pb2.ProduceResponse) -> int:
    return response.topics[0].partitions[0].partition


def test_answers_find_their_callers_in_any_order_and_in_flight_is_bounded() -> None:
    seen: list[int] = []
    release = asyncio.Event()

    async def reversed_answers(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        await context.send_initial_metadata((STREAM_ACCEPTED,))
        held = []
        async for envelope in requests:
            partition = envelope.request.topics[0].partitions[0].partition
            seen.append(partition)
            held.append((envelope.id, partition))
            if len(held) == 2:
                await release.wait()
                for request_id, p in reversed(held):  # the second answered first
                    yield _answer(request_id, p)
                held.clear()

    async def body(stream: BrokerStream[Any, Any]) -> None:
        calls = [asyncio.create_task(stream.call(_request(p))) for p in (0, 1, 2)]
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert seen == [0, 1], "a third request went out past the bound of two"
        release.set()
        first, second = await asyncio.gather(*calls[:2])
        assert (_partition(first), _partition(second)) == (0, 1)
        while len(seen) < 3:  # the third goes out once a slot is free
            await asyncio.sleep(0.01)
        assert seen == [0, 1, 2]
        calls[2].cancel()

    asyncio.run(_with_server(reversed_answers, body))


def test_a_broken_stream_fails_what_it_carried_and_the_next_call_opens_another() -> None:
    streams = 0

    async def breaks_first(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        nonlocal streams
        streams += 1
        await context.send_initial_metadata((STREAM_ACCEPTED,))
        async for envelope in requests:
            if streams == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "broker going away")
            yield _answer(envelope.id, envelope.request.topics[0].partitions[0].partition)

    async def body(stream: BrokerStream[Any, Any]) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stream.call(_request(0))
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _partition(await stream.call(_request(1))) == 1
        assert stream.opened == 2 and not stream.unsupported

    asyncio.run(_with_server(breaks_first, body))


def test_a_broker_without_the_stream_is_called_unary() -> None:
    async def body(stream: BrokerStream[Any, Any]) -> None:
        first = await stream.call(_request(3))
        assert stream.unsupported and first.topics[0].name == "unary"
        second = await stream.call(_request(4))
        assert _partition(second) == 4 and stream.opened == 1  # no second try at a stream

    asyncio.run(_with_server(None, body))


def test_a_handler_that_refuses_the_stream_gets_unary_calls() -> None:
    """A server that has the method but refuses it UNIMPLEMENTED before accepting (as the
    security interceptor refuses a stream) is a broker without the stream."""

    async def refuses(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not on this listener")
        yield  # an async generator, as a stream handler is

    async def body(stream: BrokerStream[Any, Any]) -> None:
        assert (await stream.call(_request(5))).topics[0].name == "unary"
        assert stream.unsupported and stream.opened == 1

    asyncio.run(_with_server(refuses, body))


def test_unimplemented_after_the_broker_accepted_is_a_failure_not_a_refusal() -> None:
    """Only a stream refused before it was accepted means "not offered": an accepted stream
    that later ends UNIMPLEMENTED fails the requests it carried, and the next call streams."""
    streams = 0

    async def fails_after_accepting(
        requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        nonlocal streams
        streams += 1
        await context.send_initial_metadata((STREAM_ACCEPTED,))
        async for envelope in requests:
            if streams == 1:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a handler's own status")
            yield _answer(envelope.id, envelope.request.topics[0].partitions[0].partition)

    async def body(stream: BrokerStream[Any, Any]) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stream.call(_request(0))
        assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert not stream.unsupported
        assert _partition(await stream.call(_request(1))) == 1 and stream.opened == 2

    asyncio.run(_with_server(fails_after_accepting, body))


class _RefusedCall:
    """grpc.aio's stream-stream call at the moment the race happens: the server's refusal
    (UNIMPLEMENTED, trailers-only) has reached gRPC's core but its status is not read yet. A
    message written now fails in the core, and grpc.aio's `_write` marks the call INTERNAL
    (`set_internal_error`, grpc/aio/_call.py) before the real status is read; that INTERNAL is
    what `read` then raises. The writer takes the request iterator as gRPC's own task does."""

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self.status = grpc.StatusCode.UNIMPLEMENTED
        self.written: list[Any] = []
        self._writer = asyncio.get_running_loop().create_task(self._write_all(requests))

    async def _write_all(self, requests: AsyncIterator[Any]) -> None:
        async for envelope in requests:
            self.written.append(envelope)
            self.status = grpc.StatusCode.INTERNAL

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()  # a refusal carries none

    async def read(self) -> Any:
        for _ in range(5):  # the status arrives a few event loop turns later
            await asyncio.sleep(0)
        details = "Failed execute_batch: SendMessageOperation"
        if self.status == grpc.StatusCode.UNIMPLEMENTED:
            details = "Method not found!"
        raise rpc_error(self.status, details)

    def cancel(self) -> bool:
        return self._writer.cancel()


def test_a_refusal_cannot_race_a_write_into_an_internal_error() -> None:
    """The race seen once against a SASL listener: the request iterator's write met the refusal
    and the call failed INTERNAL, so the client did not fall back. The client writes nothing
    before the broker accepted the stream, so the refusal is read as UNIMPLEMENTED."""
    calls: list[_RefusedCall] = []

    def open_stream(requests: AsyncIterator[Any]) -> _RefusedCall:
        calls.append(_RefusedCall(requests))
        return calls[-1]

    async def unary(request: Any) -> broker_pb2.ProduceResponse:
        return await _unary(request, None)

    async def scenario() -> None:
        stream: BrokerStream[Any, Any] = BrokerStream(
            open_stream, broker_pb2.ProduceStreamRequest, unary
        )
        try:
            answer = await asyncio.wait_for(stream.call(_request(6)), 5)
        finally:
            await stream.close()
        assert calls[0].written == [], "a request was written before the broker accepted"
        assert stream.unsupported and answer.topics[0].name == "unary"

    asyncio.run(scenario())
