"""Answering one RPC's requests on a long-lived bidirectional stream (ProduceStream, FetchStream).

A unary call costs both ends 0.5–1 ms of CPU in Python gRPC (a new HTTP/2 stream, a server task,
the interceptor chain); a message on an open stream costs a fraction of that. The stream carries
envelopes: the client's id and the same request message the unary RPC takes; every answer
repeats the id, and answers leave as they are ready (a long-polling fetch does not hold up
another).

The stream reuses the unary handler's own logic (`answer(request)`), so validation and
per-partition errors are the same by construction. What the unary handler reports as a status
(`InvalidRequest`: INVALID_ARGUMENT) comes back as that request's `error`, and the stream goes
on; an exception no handler chose is that request's UNKNOWN, as gRPC reports it for a unary call.
A message the stream cannot read (not a valid envelope, or above the listener's message size
cap) is gRPC's to refuse: it ends this stream with a status and touches nothing else.

The broker accepts a stream by sending its initial metadata with `STREAM_ACCEPTED` at once,
before any answer; the client writes nothing until it has seen that (client/broker_stream.py).
A listener that does not offer the stream refuses it (UNIMPLEMENTED) before the client wrote a
message, so the client always sees that status and falls back to unary calls. (A write racing
the refusal would otherwise turn it into INTERNAL: grpc.aio's `_write` marks a call whose core
has already finished as failed with "Failed execute_batch".)

On a secured listener the security interceptor authenticates the stream once, when it opens,
and puts the listener's per-request check in `REQUEST_CHECK` for the stream's task: every
request is then authorized on its own, by the same rule as the unary call, against the ACLs of
the moment (as Kafka authorizes each request of an authenticated connection). A refused request
is answered with its status (`RequestRefused`: PERMISSION_DENIED) and the stream goes on.

At most `STREAM_IN_FLIGHT_MAX` requests of one stream are worked on at once; past that the
handler stops reading, and HTTP/2 flow control holds the client back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc

from strom.client.broker_stream import STREAM_ACCEPTED
from strom.v1 import broker_pb2

log = logging.getLogger("strom.broker")

# Above the clients' own bound (client/broker_stream.py), so a well-behaved client is never
# held back by it; it exists for the one that is not.
STREAM_IN_FLIGHT_MAX = 128

T = TypeVar("T")

Answer = Callable[[Any], Awaitable[Any]]
# The listener's check of one request of a stream: (request, answer) -> the answer, or raises
# RequestRefused. Set by the security interceptor in the context of the stream's own task (each
# gRPC call runs in a task of its own), so it reaches this stream's requests and no other call.
REQUEST_CHECK: ContextVar[Callable[[Any, Answer], Awaitable[Any]] | None] = ContextVar(
    "strom_stream_request_check", default=None
)


class RequestRefused(Exception):
    """One request of a stream is refused with `status` (the unary call would end with it)."""

    def __init__(self, status: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = status


class InvalidRequest(Exception):
    """The request as a whole is malformed: the unary call ends with INVALID_ARGUMENT and this
    message; on a stream, that request is answered so."""


async def answer_unary(context: grpc.aio.ServicerContext, answer: Awaitable[T]) -> T:
    try:
        return await answer
    except InvalidRequest as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise AssertionError("unreachable") from exc


def _error(status: grpc.StatusCode, message: str) -> broker_pb2.StreamError:
    return broker_pb2.StreamError(status_code=status.value[0], message=message)


async def serve_stream(
    requests: AsyncIterator[Any],
    context: grpc.aio.ServicerContext,
    answer: Callable[[Any], Awaitable[Any]],
    reply: Callable[..., Any],
    in_flight_max: int = STREAM_IN_FLIGHT_MAX,
) -> AsyncIterator[Any]:
    """Accept the stream (initial metadata with `STREAM_ACCEPTED`), then answer every envelope
    of `requests` (a *StreamRequest: `id`, `request`) with `reply(id=..., response=answer(request))`
    or `reply(id=..., error=StreamError)`, concurrently up to `in_flight_max`, in the order the
    answers are ready. Ends when the client ends its side and every answer is out; a failure to
    read the stream ends it with that failure (the client fails what it still waits for)."""
    await context.send_initial_metadata((STREAM_ACCEPTED,))
    check = REQUEST_CHECK.get()
    out: asyncio.Queue[Any] = asyncio.Queue()
    slots = asyncio.Semaphore(in_flight_max)
    working: set[asyncio.Task[None]] = set()
    finished = object()

    async def one(envelope: Any) -> None:
        try:
            if not envelope.HasField("request"):
                error = _error(grpc.StatusCode.INVALID_ARGUMENT, "stream message has no request")
                out.put_nowait(reply(id=envelope.id, error=error))
                return
            request = envelope.request
            try:
                response = await (answer(request) if check is None else check(request, answer))
                out.put_nowait(reply(id=envelope.id, response=response))
            except InvalidRequest as exc:
                error = _error(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                out.put_nowait(reply(id=envelope.id, error=error))
            except RequestRefused as exc:
                out.put_nowait(reply(id=envelope.id, error=_error(exc.status, str(exc))))
            except Exception as exc:  # a bug: this request's answer, as gRPC's unary UNKNOWN
                log.exception("stream request %d failed", envelope.id)
                error = _error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}: {exc}")
                out.put_nowait(reply(id=envelope.id, error=error))
        finally:
            slots.release()

    async def read() -> None:
        try:
            async for envelope in requests:
                await slots.acquire()
                # Tasks start in creation order, so requests are taken up in arrival order
                # (a partition's batches reach its log in the order the client sent them).
                task = asyncio.get_running_loop().create_task(one(envelope))
                working.add(task)
                task.add_done_callback(working.discard)
            while working:
                await asyncio.wait(set(working))
        finally:
            out.put_nowait(finished)

    reader = asyncio.get_running_loop().create_task(read())
    try:
        while (item := await out.get()) is not finished:
            yield item
        await reader  # a failure to read the stream ends it with that failure
    finally:
        for task in (reader, *working):
            task.cancel()
